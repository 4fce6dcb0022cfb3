"""``edgesim load``: many concurrent federation sessions and relay allocations across a lab."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import click
from rich.table import Table

from simulator.cli._common import (
    CERTS_OPTION,
    NAME_OPTION,
    F,
    Obj,
    console,
    make_runner,
    runner_option,
)
from simulator.load import MAX_COUNT, MAX_HOLD
from simulator.load.run import ROWS, LoadReport, drive_inside, run_load, summary


def _count_option(flag: str, what: str) -> Callable[[F], F]:
    """How many of ``what`` are held at once, 100 by default."""
    return click.option(
        flag,
        type=int,
        default=100,
        show_default=True,
        help=f"{what} held at once; at most {MAX_COUNT}.",
    )


@click.command()
@runner_option("netns", "Which lab (one with firewalls).", has_firewalls=True, persistent=True)
@_count_option("--sessions", f"Federation sessions (MTLS 5061, row {ROWS['federation']})")
@_count_option("--allocations", f"TURN relay allocations over UDP 3478 (row {ROWS['relay']})")
@click.option(
    "--hold",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds every session is held open and every allocation stays silent, before each "
    f"is tried again; at most {MAX_HOLD:g}.",
)
@click.option(
    "--rate", type=float, default=50.0, show_default=True, help="New sessions per second."
)
@click.option(
    "--timeout", type=float, default=10.0, show_default=True, help="Seconds for each step."
)
@click.option("--json", "as_json", is_flag=True, help="JSON instead of tables.")
@click.option("--inside", is_flag=True, hidden=True)
@click.option("--kind", type=click.Choice(sorted(ROWS)), default=None, hidden=True)
@click.option("--count", type=int, default=0, hidden=True)
@CERTS_OPTION
@NAME_OPTION
@click.pass_obj
def load(
    obj: Obj,
    runner: str,
    sessions: int,
    allocations: int,
    hold: float,
    rate: float,
    timeout: float,
    as_json: bool,
    inside: bool,
    kind: str | None,
    count: int,
    certs_dir: Path,
    lab_name: str,
) -> None:
    """Hold many federation sessions and relay allocations across the lab's firewalls.

    From the federated partner's host, MTLS sessions to the Access Edge (each answers an
    OPTIONS, is held --hold seconds, then asked again); from the Live Messenger-style client's
    host, relay allocations on the A/V Edge, each with its own MRAS-style username (each relays
    a datagram to a peer and back, stays silent --hold seconds, then the peer sends first:
    does the firewall's UDP state still let it in?). Meanwhile each lab firewall's connection
    tracking is sampled. Bounded in count and time; lab addresses only. In a swarm lab the
    load runs in the source hosts' tasks, on the nodes labelled for their zone.

    \b
    Examples:
      sudo edgesim load --sessions 200 --allocations 200
      edgesim load --runner compose --hold 130 --allocations 20 --sessions 0
      edgesim load --runner swarm --json > load.json
    """
    if inside:
        if kind is None:
            raise click.UsageError("--inside needs --kind")
        result = asyncio.run(
            drive_inside(
                obj.topology, kind, certs_dir, count=count, hold=hold, rate=rate, timeout=timeout
            )
        )
        click.echo(json.dumps(result.to_dict()))
        return
    lab_runner = make_runner(obj, runner, certs_dir=certs_dir, lab_name=lab_name)
    with console.status("load running"):
        report = asyncio.run(
            run_load(
                lab_runner,
                sessions=sessions,
                allocations=allocations,
                hold=hold,
                rate=rate,
                timeout=timeout,
            )
        )
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    render_load(report)


def render_load(report: LoadReport) -> None:
    table = Table(title=f"Load on the {report.runner} lab", title_justify="left")
    for col in ("load", "held at once", "failed, why", "setup ms p50/p95/max", "after the hold"):
        table.add_column(col, overflow="fold")
    for r in report.results:
        ms = summary(r)["setup_ms"]
        what = "sessions" if r.kind == "federation" else "allocations"
        after = f"{r.after_hold} of {r.established} answered after {r.hold:g} s"
        if r.after_hold_failures:
            after += "; " + "; ".join(f"{n}x {why}" for why, n in r.after_hold_failures.items())
        table.add_row(
            f"{r.kind}: {r.requested} {what}\n{r.source} -> {r.destination}",
            f"{r.peak} of {r.requested}",
            "\n".join(f"{n}x {why}" for why, n in r.failures.most_common()) or "-",
            f"{ms['p50']}/{ms['p95']}/{ms['max']}" if ms else "-",
            after,
        )
    console.print(table)
    fws = Table(title="Firewalls: connection tracking", title_justify="left")
    for col in ("firewall", "entries before/peak/after", "limits"):
        fws.add_column(col, overflow="fold")
    for fw in report.firewalls:
        counts = "/".join("-" if v is None else str(v) for v in (fw.before, fw.peak, fw.after))
        limits = ", ".join(f"{k} {v}" for k, v in fw.limits.items())
        fws.add_row(fw.firewall, fw.note or counts, limits or "-")
    console.print(fws)
    console.print(f"{report.duration:.1f} s")
