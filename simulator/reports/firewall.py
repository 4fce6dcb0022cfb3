"""Terminal tables of ``edgesim firewall audit`` and ``diff``: per row what the firewall decided
and by which rule, then the openings no row explains."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from simulator.firewall.audit import AuditReport, RowResult
from simulator.firewall.diff import DiffReport
from simulator.firewall.trace import Decision, first_fates

GOT_STYLE = {
    "allowed": "green",
    "blocked": "cyan",
    "partly allowed": "yellow",
    "reply dropped": "yellow",
    "unsettled": "yellow",
    "crosses no firewall": "dim",
}


def short(decision: Decision) -> str:
    """``fw-external: external.nft:34`` or ``fw-external: policy drop (ip filter FORWARD)``."""
    return f"{decision.firewall}: {decision.where}"


def fate_lines(decisions: Sequence[Decision]) -> list[str]:
    """Per firewall and direction, the first packet's fate in one short line:
    ``fw-external request accepted: external.nft:34``."""
    lines = []
    for direction in ("request", "reply"):
        for d in first_fates(decisions, direction):
            lines.append(f"{d.firewall} {direction} {d.action}: {d.where}")
    return lines


def _decided(row: RowResult) -> Text:
    text = Text()
    for n, d in enumerate(row.deciding):
        if n:
            text.append("\n")
        if row.met:
            text.append(short(d), style="dim")
        else:
            text.append(d.describe())
    return text


def _rules_line(rules: dict[str, Path]) -> str:
    return ", ".join(f"{fw}={path}" for fw, path in rules.items())


def render_audit(report: AuditReport) -> RenderableType:
    table = Table(
        title=f"Firewall audit: {_rules_line(report.rules)}", title_justify="left", expand=False
    )
    table.add_column("row")
    table.add_column("expect")
    table.add_column("got", no_wrap=True)
    table.add_column("decided by", overflow="fold")
    for row in report.rows:
        mark = "✓" if row.met else "✗"
        style = GOT_STYLE.get(row.got, "") if row.met else "bold red"
        label = Text(row.row.id)
        label.append(f"\n{row.row.label}", style="dim")
        table.add_row(
            label, row.row.expect.value, Text(f"{mark} {row.got}", style=style), _decided(row)
        )
    parts: list[RenderableType] = [table]
    if report.openings:
        opened = Table(title="Open beyond the matrix (no row explains these)", title_justify="left")
        for col in ("from", "to", "port", "let through by"):
            opened.add_column(col, overflow="fold")
        for o in report.openings:
            opened.add_row(
                o.flow.source,
                o.flow.destination,
                o.flow.label,
                "\n".join(d.describe() for d in o.result.deciding),
            )
        parts.append(opened)
    parts += [Text(line, style="yellow") for line in report.problems]
    parts.append(Text(audit_summary(report), style="green" if report.ok else "bold red"))
    return Group(*parts)


def audit_summary(report: AuditReport) -> str:
    met = sum(r.met for r in report.rows)
    head = f"{met} of {len(report.rows)} rows meet their expectation"
    if report.failing:
        head += f" ({len(report.failing)} do not: {', '.join(r.row.id for r in report.failing)})"
    openings = len(report.openings)
    tail = (
        f"; {openings} flow(s) open beyond the matrix" if openings else "; nothing open beyond it"
    )
    return f"{head}{tail}. {report.flows} flows in {report.duration:.2f} s"


def render_diff(report: DiffReport) -> RenderableType:
    parts: list[RenderableType] = []
    table = Table(
        title=f"Your rules ({_rules_line(report.yours.rules)}) against the rendered ones",
        title_justify="left",
    )
    for col in ("row", "expect", "rendered", "yours"):
        table.add_column(col, overflow="fold")
    for d in report.rows:
        label = Text(d.row.id)
        label.append(f"\n{d.row.label}", style="dim")
        rendered = Text(d.rendered)
        for decision in d.rendered_by:
            rendered.append(f"\n{short(decision)}", style="dim")
        yours = Text(d.yours, style="bold")
        for decision in d.yours_by:
            yours.append(f"\n{decision.describe()}")
        table.add_row(label, d.row.expect.value, rendered, yours)
    if report.rows:
        parts.append(table)
    if report.openings:
        opened = Table(title="Flows no row explains, decided differently", title_justify="left")
        for col in ("from", "to", "port", "rendered", "yours"):
            opened.add_column(col, overflow="fold")
        for o in report.openings:
            f = o.yours.flow
            opened.add_row(
                f.source,
                f.destination,
                f.label,
                o.rendered.status,
                "\n".join([o.yours.status, *(d.describe() for d in o.yours.deciding)]),
            )
        parts.append(opened)
    if report.same:
        summary = "your rules decide every row and every probed opening as the rendered ones do"
    else:
        summary = (
            f"{len(report.rows)} row(s) and {len(report.openings)} other flow(s) decided "
            "differently"
        )
    parts.append(
        Text(f"{summary} ({report.duration:.2f} s)", style="green" if report.same else "bold red")
    )
    return Group(*parts)
