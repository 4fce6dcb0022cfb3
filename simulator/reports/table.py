"""The terminal report: one table per seed table, verdicts coloured, then a summary line."""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from simulator.lab.topology import Topology
from simulator.probes.base import ProbeResult, Verdict
from simulator.probes.run import Executor, JobBuilder, ProbeRun, Target, probe_matrix
from simulator.reports.firewall import fate_lines

STYLE: dict[Verdict, str] = {
    Verdict.PASSED: "green",
    Verdict.BLOCKED: "cyan",
    Verdict.REFUSED: "cyan",
    Verdict.TLS_FAILED: "red",
    Verdict.PROTOCOL_FAILED: "red",
    Verdict.OPEN_UNEXPECTED: "bold red",
    Verdict.ERROR: "magenta",
    Verdict.SKIPPED: "dim",
}


def verdict_text(result: ProbeResult) -> Text:
    mark = "✓" if result.met else ("·" if result.verdict is Verdict.SKIPPED else "✗")
    style = STYLE[result.verdict] if result.met or result.verdict is Verdict.SKIPPED else "bold red"
    return Text(f"{mark} {result.verdict.title}", style=style)


def _short(endpoint: str) -> str:
    """``host:iface`` of ``host:iface address:port/proto`` (narrow terminals)."""
    head, _, rest = endpoint.partition(" ")
    if ":" not in head:
        return endpoint
    port = rest.rsplit(":", 1)[-1] if ":" in rest and " via " not in rest else ""
    return f"{head} :{port}" if port else head


def render_run(run: ProbeRun, width: int = 200) -> RenderableType:
    """One table per seed table; below ``width`` 140 the endpoints are shown without addresses."""
    compact = width < 140
    by_row = {r.row_id: r for r in run.results}
    parts: list[RenderableType] = []
    for seed_id, rows in run.matrix.by_seed().items():
        results = [by_row[r.id] for r in rows if r.id in by_row]
        if not results:
            continue
        seed = run.matrix.seeds[seed_id]
        table = Table(title=f"{seed.title} ({seed.document})", title_justify="left", expand=False)
        table.add_column("row", no_wrap=not compact)
        table.add_column("from → to")
        table.add_column("verdict", no_wrap=True)
        table.add_column("reason", overflow="fold", min_width=20)
        for row in rows:
            result = by_row.get(row.id)
            if result is None:
                continue
            src, dst = result.source, result.destination
            if compact:
                src, dst = _short(src), _short(dst)
            label = Text(row.id)
            label.append(f"\n{row.label}\nexpect {row.expect.value}", style="dim")
            reason = Text(result.reason)
            for line in fate_lines(result.firewall):
                reason.append(f"\n{line}", style="dim")
            table.add_row(label, f"{src}\n→ {dst}", verdict_text(result), reason)
        parts.append(table)
    parts.append(Text(summary(run), style="green" if not run.failures else "bold red"))
    parts += [Text(note, style="yellow") for note in run.notes]
    return Group(*parts)


def summary(run: ProbeRun) -> str:
    counts = ", ".join(f"{n} {Verdict(v).title}" for v, n in sorted(run.counts.items()))
    met = sum(r.met for r in run.results)
    failing = len(run.failures)
    head = f"{met} of {len(run.results)} rows meet their expectation"
    tail = f"; {failing} do not" if failing else ""
    return f"{head}{tail} ({counts}) in {run.duration:.2f} s, runner {run.runner}"


async def run_with_progress(
    console: Console,
    topology: Topology,
    executor: Executor,
    builder: JobBuilder,
    **kwargs: Any,
) -> ProbeRun:
    """:func:`probe_matrix` with a progress bar when ``console`` is a terminal."""
    if not console.is_terminal:
        return await probe_matrix(topology, executor, builder, **kwargs)
    with Progress(
        TextColumn("probing"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("", total=None)

        def start(n: int) -> None:
            progress.update(task, total=n)

        def done(result: ProbeResult) -> None:
            progress.update(task, advance=1, description=result.row_id)

        return await probe_matrix(
            topology, executor, builder, on_start=start, on_done=done, **kwargs
        )


__all__ = ["Target", "render_run", "run_with_progress", "summary"]
