"""``edgesim certs``: write the lab PKI."""

from __future__ import annotations

from pathlib import Path

import click

from simulator.cli._common import CERTS_DEFAULT_HELP, Obj, console
from simulator.paths import default_certs_dir
from simulator.pki import ensure_pki


@click.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=default_certs_dir,
    show_default=CERTS_DEFAULT_HELP,
    help="Directory to write the PKI to.",
)
@click.option("--force", is_flag=True, help="Reissue everything, CAs included.")
@click.pass_obj
def certs(obj: Obj, out: Path, force: bool) -> None:
    """Write the lab PKI: CAs, one certificate per host, and deliberately bad ones.

    Idempotent: certificates that still match the topology, verify against their CA and are
    more than 30 days from expiry are kept; the rest are (re)issued. See certs/README.md for
    the layout.

    \b
    Examples:
      edgesim certs
      edgesim certs --out /tmp/lab-certs --force
      openssl verify -CAfile certs/ca/public.crt certs/hosts/edge-public.crt
    """
    report = ensure_pki(
        obj.topology, out, force=force, progress=lambda msg: console.print(f"  {msg}")
    )
    console.print(
        f"PKI in {report.directory}: {len(report.written)} written, {len(report.kept)} kept"
    )
