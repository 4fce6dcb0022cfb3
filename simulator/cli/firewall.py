"""``edgesim firewall``: render the lab firewalls' nftables rules from the port matrix."""

from __future__ import annotations

from pathlib import Path

import click

from simulator.cli._common import Obj, console
from simulator.firewall.render import render_all, render_broken_external

BROKEN_PATH = Path("lab/firewall/broken/external.nft")


@click.group()
def firewall() -> None:
    """The lab firewalls' nftables rules (lab/firewall/*.nft)."""


@firewall.command("render")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write the files into this directory (default: the topology's paths, e.g. "
    "lab/firewall/external.nft, relative to the current directory).",
)
@click.option(
    "--stdout", "to_stdout", is_flag=True, help="Print the rules instead of writing files."
)
@click.option(
    "--broken-example",
    is_flag=True,
    help="Also write the deliberately broken external.nft (UDP 3478 removed, TCP 23456 open to "
    "the internet) used by negative tests, as broken/external.nft.",
)
@click.pass_obj
def render(obj: Obj, out_dir: Path | None, to_stdout: bool, broken_example: bool) -> None:
    """Write one nftables rule file per firewall of the topology.

    Each file lets through exactly the matrix rows expected open between the zones the
    firewall joins (concrete addresses and ports, stateful: return traffic is allowed) and
    drops everything else. Load one with `nft -f FILE`; loading again replaces the table.

    \b
    Examples:
      edgesim firewall render
      edgesim firewall render --out /tmp/rules
      edgesim firewall render --stdout
    """
    files = render_all(obj.topology, out_dir)
    if broken_example:
        base = out_dir if out_dir is not None else BROKEN_PATH.parent.parent
        files[base / "broken" / "external.nft"] = render_broken_external(obj.topology)
    for path, text in files.items():
        if to_stdout:
            click.echo(text, nl=False)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        console.print(f"wrote {path}")
