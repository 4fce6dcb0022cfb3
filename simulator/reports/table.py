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
    """One table per seed table; below ``width`` 140 the endpoints are shown without addresses.

    Ids (rows, ``host:interface``) never wrap: their columns are at least as wide as the
    longest one; the reason column folds into what is left (80 columns are enough).
    """
    compact = width < 140
    by_row = {r.row_id: r for r in run.results}
    parts: list[RenderableType] = []
    for seed_id, rows in run.matrix.by_seed().items():
        results = [by_row[r.id] for r in rows if r.id in by_row]
        if not results:
            continue
        seed = run.matrix.seeds[seed_id]
        ends = [(r.source, r.destination) for r in results]
        if compact:
            ends = [(_short(src), _short(dst)) for src, dst in ends]
        refs = [word for src, dst in ends for word in (*src.split(), *dst.split())]
        table = Table(title=f"{seed.title} ({seed.document})", title_justify="left", expand=compact)
        shown = [row for row in rows if row.id in by_row]
        row_width = max(len(w) for r in shown for w in (r.id, r.label))
        ends_width = 2 + max(map(len, refs), default=0)
        # Narrow: fixed widths for the id columns, the reason takes what is left.
        table.add_column("row", min_width=row_width, width=row_width if compact else None)
        table.add_column("from → to", min_width=ends_width, width=ends_width if compact else None)
        table.add_column("verdict", min_width=8, max_width=12 if compact else None)
        table.add_column("reason", overflow="fold", min_width=12, ratio=1)
        for row, (src, dst) in zip([row for row in rows if row.id in by_row], ends, strict=True):
            result = by_row[row.id]
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
