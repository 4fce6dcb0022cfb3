"""The ``edgesim`` command line: parse arguments, render output, call library functions.

Exit codes (every command):
  0  success (for checks: everything met its expectation)
  1  a check failed, or the lab could not start or stop
  2  bad usage or a bad configuration file (topology, matrix)
"""

from __future__ import annotations

import importlib
import logging
import sys

import click

from simulator import __version__
from simulator.cli._common import EdgesimGroup, Obj

#: Each command's module is imported when the command runs (or help lists it): a probe process
#: started inside every lab namespace then loads what probing needs, not the whole CLI.
COMMANDS = {
    "certs": "simulator.cli.certs:certs",
    "firewall": "simulator.cli.firewall:firewall",
    "lab": "simulator.cli.lab:lab",
    "load": "simulator.cli.load:load",
    "matrix": "simulator.cli.matrix:matrix",
    "probe": "simulator.cli.probe:probe",
    "run": "simulator.cli.run:run",
    "scenario": "simulator.cli.scenario:scenario",
    "secrets": "simulator.cli.secrets:secrets",
}


class _LazyGroup(EdgesimGroup):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module, _, attr = COMMANDS[cmd_name].partition(":")
            self.add_command(getattr(importlib.import_module(module), attr), cmd_name)
        return super().get_command(ctx, cmd_name)


HELP = """Lab simulator of the Lync Server 2013 Edge Server.

edgesim emulates the Edge's listeners (Access Edge SIP on 443/5061, the XMPP proxy on
5269/23456, the A/V Edge's STUN/TURN relay on 3478/443 with media on 50000-59999) and the
peers around it, so you can put your firewall rules between the lab's zones and see, flow by
flow, what gets through.

\b
Quick start:
  edgesim run              the embedded lab: up, check, probe, scenarios, down
  edgesim matrix           the port matrix the Edge needs
  edgesim certs            the lab PKI (certs/ here, else ~/.local/share)
  edgesim secrets          the lab's generated passwords and shared secrets
  edgesim lab up           until Ctrl-C (--runner netns|compose: firewalls)
  edgesim firewall render  nftables rules that let exactly the matrix through
  edgesim probe            every matrix row checked at protocol level
  edgesim scenario run     whole federation flows, drawn as ladders
  edgesim load             many sessions and relays across the firewalls

Without root, the embedded lab moves ports below 1024 by 8000 (443 -> 8443) and says so.

\b
Exit codes: 0 success, 1 a check failed or the lab failed, 2 bad usage or
configuration.
"""


@click.group(cls=_LazyGroup, help=HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--topology",
    type=click.Path(dir_okay=False, path_type=str),
    default=None,
    metavar="FILE",
    help="Topology TOML file (default: the lab shipped with edgesim).",
)
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.version_option(__version__, prog_name="edgesim")
@click.pass_context
def cli(ctx: click.Context, topology: str | None, verbose: int) -> None:
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    ctx.obj = Obj(topology_path=topology)


def main() -> None:
    sys.exit(cli.main(prog_name="edgesim", standalone_mode=True))
