"""``python3 -m tests.probes.edgesim_cli``: edgesim's command line with ``probe`` registered
(until the lead adds it to simulator/cli/__init__.py), for the netns executor test."""

from simulator.cli import cli
from simulator.cli.probe import probe

if "probe" not in cli.commands:
    cli.add_command(probe)

if __name__ == "__main__":
    cli.main(prog_name="edgesim")
