"""``edgesim secrets``: the lab's generated passwords and shared secrets."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table

from simulator.cli._common import Obj, certs_option, console, fail
from simulator.pki import ensure_pki, lab_credentials


@click.command()
@certs_option("The lab PKI directory; the secrets live beside the certificates (secrets.json).")
@click.option(
    "--show",
    "name",
    metavar="NAME",
    default=None,
    help="Print only this secret, e.g. av-edge/users/edgesim or av-edge/shared_secret "
    "(for scripts).",
)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.pass_obj
def secrets(obj: Obj, certs_dir: Path, name: str | None, fmt: str) -> None:
    """Show the lab's passwords and shared secrets.

    No secret that works ships with edgesim: each lab generates its users' passwords, the
    A/V Edge's MRAS shared secret and the XMPP dialback secrets the first time they are needed
    (with `edgesim certs`), and keeps them in secrets.json beside the PKI (mode 0600). Use them
    to sign a real client in, or to run coturn's tools against the A/V Edge.

    \b
    Examples:
      edgesim secrets
      edgesim secrets --show av-edge/users/edgesim     # for turnutils_uclient -w
      edgesim secrets --certs /run/edgesim/certs --format json
    """
    ensure_pki(obj.topology, certs_dir)
    rows = lab_credentials(obj.topology, certs_dir)
    names = {
        (f"{svc}/users/{what[5:]}" if what.startswith("user ") else f"{svc}/{what}"): value
        for svc, what, value in rows
    }
    if name is not None:
        if name not in names:
            fail(f"no secret {name!r} in this lab (known: {', '.join(names)})", 2)
        click.echo(names[name])
        return
    if fmt == "json":
        click.echo(json.dumps(names, indent=2))
        return
    table = Table(title=f"Lab secrets ({certs_dir / 'secrets.json'})", title_justify="left")
    table.add_column("name", no_wrap=True)
    table.add_column("secret", no_wrap=True)
    for key, value in names.items():
        table.add_row(key, value)
    console.print(table)
