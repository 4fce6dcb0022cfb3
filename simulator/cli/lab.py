"""``edgesim lab``: bring a lab up, check it, bring it down."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from simulator.cli._common import Obj, console
from simulator.errors import LabError
from simulator.lab.runners.local import ListenerCheck, LocalLab, ServiceStatus

RUNNERS = ("local", "netns", "compose")
CERTS_OPTION = click.option(
    "--certs", "certs_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("certs"),
    show_default=True, help="Lab PKI directory (created or completed as needed).",
)


@click.group()
def lab() -> None:
    """Bring the lab up and down.

    \b
    Runners:
      local    one process, each host on its own loopback address (default; no firewall)
      netns    network namespaces and nftables firewalls (root)
      compose  docker compose (see docker-compose.yml)
    """


def render_statuses(statuses: list[ServiceStatus]) -> Table:
    table = Table(title="Lab services", title_justify="left")
    table.add_column("host", style="bold")
    table.add_column("service")
    table.add_column("listens on")
    table.add_column("state")
    for st in statuses:
        where = "\n".join(f"{b} ({b.listener.proto})" for b in st.listeners) or "-"
        state = "[green]running[/]" if st.state == "running" else f"[yellow]{st.state}[/]"
        if st.detail:
            state += f"\n[dim]{escape(st.detail)}[/]"
        table.add_row(st.host, st.service, where, state)
    return table


def render_checks(checks: list[ListenerCheck]) -> Table:
    table = Table(title="Listener check", title_justify="left")
    table.add_column("host", style="bold")
    table.add_column("service")
    table.add_column("listener")
    table.add_column("result")
    for c in checks:
        result = "[green]answers[/]" if c.ok else f"[red]FAILED[/]: {escape(c.detail)}"
        table.add_row(c.host, c.service, f"{c.bound} ({c.bound.listener.proto})", result)
    return table


async def _wait_for_signal(ready_message: str) -> None:
    """Print ``ready_message`` once SIGINT and SIGTERM are handled, then wait for one."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        console.print(ready_message)
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _local_up(obj: Obj, certs_dir: Path, check: bool) -> int:
    local = LocalLab(obj.topology, certs_dir)
    with console.status("starting the lab"):
        statuses = await local.start()
    try:
        console.print(render_statuses(statuses))
        missing = [s for s in statuses if s.state != "running"]
        if missing:
            console.print(
                f"[yellow]{len(missing)} service(s) not available yet[/]: "
                + ", ".join(sorted({s.service for s in missing}))
            )
        if check:
            checks = await local.check()
            console.print(render_checks(checks))
            failed = [c for c in checks if not c.ok]
            if failed:
                console.print(f"[red]{len(failed)} of {len(checks)} listeners did not answer[/]")
                return 1
            console.print(f"[green]all {len(checks)} listeners answer[/]")
            return 0
        await _wait_for_signal("lab is up; press Ctrl-C (or send SIGTERM) to stop")
        return 0
    finally:
        with console.status("stopping the lab"):
            await local.stop()
        console.print("lab stopped")


@lab.command("up")
@click.option(
    "--runner", type=click.Choice(RUNNERS), default="local", show_default=True,
    help="How to run the lab.",
)
@click.option("--check", is_flag=True, help="Start, verify every listener answers, stop; exit 0 or 1.")
@CERTS_OPTION
@click.pass_obj
def up(obj: Obj, runner: str, check: bool, certs_dir: Path) -> None:
    """Start the lab and print what listens where.

    With the local runner the lab runs in this process until Ctrl-C or SIGTERM. Ports below
    1024 (443, 53) need root or sysctl net.ipv4.ip_unprivileged_port_start=0.

    \b
    Examples:
      edgesim lab up
      edgesim lab up --check
      edgesim --topology my-lab.toml lab up --certs /tmp/certs
    """
    if runner != "local":
        raise LabError(f"the {runner} runner arrives with issue #6 (lab runners); use --runner local")
    sys.exit(asyncio.run(_local_up(obj, certs_dir, check)))
