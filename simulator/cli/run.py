"""``edgesim run``: the main job on the embedded lab."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from simulator.cli._common import (
    CERTS_OPTION,
    Obj,
    console,
    make_runner,
    print_notices,
    progress,
)
from simulator.cli.lab import checks_summary, render_status
from simulator.matrix import load_matrix, resolve_all
from simulator.probes.run import run_probes_cli
from simulator.scenario.run import run_scenarios_cli


async def _run(obj: Obj, certs_dir: Path) -> int:
    failures = 0
    console.rule("edgesim: embedded lab")
    local = make_runner(obj, "local", certs_dir=certs_dir)
    topology = local.config.topology  # with the privileged ports moved where they must be
    print_notices(local)
    with progress("starting the lab (one process, loopback addresses)"):
        await local.up()
    try:
        console.rule("listeners")
        status = await local.status()
        checks = await local.check()
        console.print(render_status(status, checks))
        console.print(checks_summary(checks))
        failures += sum(not c.ok for c in checks)

        console.rule("port matrix")
        resolved = resolve_all(load_matrix(), topology)
        unresolved = [r for r in resolved if not r.resolved]
        console.print(f"{len(resolved)} matrix rows, {len(unresolved)} unresolved in this topology")
        failures += await run_probes_cli(topology, local, console)

        console.rule("scenarios")
        failures += await run_scenarios_cli(topology, local, console, progress)
    finally:
        with progress("stopping the lab"):
            await local.down()
    console.rule("report")
    running = [s for s in status.services if s.state == "running"]
    missing = [s for s in status.services if s.state != "running"]
    console.print(
        f"services: {len(running)} running, {len(missing)} not available yet"
        + (f" ({', '.join(sorted({s.service for s in missing}))})" if missing else "")
    )
    console.print(f"listeners: {sum(c.ok for c in checks)} of {len(checks)} answer")
    if failures:
        console.print(f"[red]{failures} check(s) failed[/]")
        return 1
    console.print("[green]every check that ran passed[/]")
    return 0


@click.command()
@CERTS_OPTION
@click.pass_obj
def run(obj: Obj, certs_dir: Path) -> None:
    """Run the main job on the embedded lab: up, check, probe, scenarios, report, down.

    Brings up every service of the topology in this process (each host on its own loopback
    address), writes the lab PKI if needed, verifies every listener, probes every matrix row,
    runs the scenarios, prints the report and stops the lab. Exit code 0 when every check that
    ran passed, 1 otherwise.

    \b
    Examples:
      edgesim run
      edgesim --topology my-lab.toml run --certs /tmp/certs
    """
    sys.exit(asyncio.run(_run(obj, certs_dir)))
