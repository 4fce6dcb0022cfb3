"""Scenario results as a terminal table, text ladders, JSON and a self-contained HTML page."""

from __future__ import annotations

import contextlib
import html
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from simulator import __version__
from simulator.lab.runners.base import Runner
from simulator.lab.topology import Topology
from simulator.scenario.ladder import LADDER_CSS, render_svg, render_text
from simulator.scenario.run import ScenarioResult, discover, run_all, scenario_dirs

STATUS_STYLE = {"passed": "green", "failed": "red", "error": "red", "skipped": "yellow"}


def results_table(results: list[ScenarioResult]) -> Table:
    """One row per scenario; names and row ids never wrap (one row id per line), the reason
    folds into what is left of the width."""
    table = Table(title="Scenarios", title_justify="left")
    names = [r.scenario.name for r in results]
    ids = [row for r in results for row in r.scenario.rows]
    table.add_column(
        "scenario", style="bold", no_wrap=True, min_width=max(map(len, names), default=8)
    )
    table.add_column("result", no_wrap=True)
    table.add_column("rows", no_wrap=True, min_width=max(map(len, ids), default=4))
    table.add_column("step that failed, and why", overflow="fold", ratio=1)
    for r in results:
        style = STATUS_STYLE[r.status]
        why = ""
        if r.status in ("failed", "error"):
            why = f"{escape(r.step or '(before the first step)')}: {escape(r.reason)}"
        elif r.status == "skipped":
            why = escape(r.reason)
        table.add_row(
            r.scenario.name,
            f"[{style}]{r.status}[/]\n[dim]{r.duration:.2f}s[/]",
            "\n".join(r.scenario.rows),
            why,
        )
    return table


def print_results(
    console: Console, results: list[ScenarioResult], topology: Topology, runner: str, ladder: bool
) -> None:
    console.print(results_table(results))
    if ladder:
        for r in results:
            if r.events:
                console.print()
                console.print(
                    render_text(r.ladder(topology, runner), console.width),
                    markup=False,
                    highlight=False,
                    crop=False,
                )


def results_json(results: list[ScenarioResult], runner: str) -> str:
    return json.dumps({"runner": runner, "scenarios": [r.to_dict() for r in results]}, indent=2)


def results_html(
    results: list[ScenarioResult], topology: Topology, runner: str, page: Path | None = None
) -> str:
    """The HTML page; ``page`` (where it is written) makes each capture's link relative."""
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<title>edgesim scenarios</title><style>",
        "body{font-family:system-ui,sans-serif;margin:2em;color:#24292f}",
        "h2{margin-top:2em} .passed{color:#1a7f37} .failed,.error{color:#cf222e}",
        ".skipped{color:#9a6700} .why{background:#fff8c5;padding:.5em 1em;border-radius:4px}",
        "table.sum{border-collapse:collapse} table.sum td,table.sum th{border:1px solid #d0d7de;",
        "padding:4px 10px;text-align:left} .ladder-wrap{overflow-x:auto}",
        LADDER_CSS,
        "</style></head><body>",
        f"<h1>edgesim scenarios</h1><p>runner <b>{html.escape(runner)}</b>, topology "
        f"<code>{html.escape(str(topology.path))}</code>, {when}, edgesim {__version__}</p>",
        "<table class='sum'><tr><th>scenario</th><th>result</th><th>rows</th><th>why</th></tr>",
    ]
    for r in results:
        why = r.reason if r.status != "passed" else ""
        parts.append(
            f"<tr><td><a href='#{html.escape(r.scenario.name)}'>{html.escape(r.scenario.name)}</a>"
            f"</td><td class='{r.status}'>{r.status}</td>"
            f"<td>{html.escape(', '.join(r.scenario.rows))}</td><td>{html.escape(why)}</td></tr>"
        )
    parts.append("</table>")
    for r in results:
        parts.append(
            f"<h2 id='{html.escape(r.scenario.name)}'>{html.escape(r.scenario.name)} "
            f"<span class='{r.status}'>{r.status}</span></h2>"
            f"<p>{html.escape(r.scenario.description)}</p>"
        )
        if r.capture is not None:
            target = r.capture.path.resolve()
            if page is not None:
                target = Path(os.path.relpath(target, page.resolve().parent))
            link = html.escape(target.as_posix())
            parts.append(
                f"<p class='capture'>capture: <a href='{link}'>{html.escape(r.capture.path.name)}</a>"
                " (pcapng with the TLS secrets: Wireshark shows SIP and XMPP decrypted)</p>"
            )
        if r.status in ("failed", "error", "skipped"):
            step = f"<b>{html.escape(r.step)}</b>: " if r.step else ""
            parts.append(f"<p class='why'>{step}{html.escape(r.reason)}</p>")
        if r.events:
            parts.append(f"<div class='ladder-wrap'>{render_svg(r.ladder(topology, runner))}</div>")
    parts.append("</body></html>")
    return "\n".join(parts)


async def run_scenarios_cli(
    topology: Topology, runner: Runner, console: Any, progress: Any = None
) -> int:
    """``edgesim run``'s scenario step: every shipped scenario against the running embedded
    lab (``progress(what, total)``: a context manager yielding ``advance(label)``)."""
    scenarios, broken = discover(*scenario_dirs())
    for b in broken:
        console.print(f"[red]broken scenario script[/] {b.path}: {b.reason}", markup=True)
    vantage = await runner.vantage()
    with contextlib.ExitStack() as stack:
        advance = None
        if progress is not None:
            advance = stack.enter_context(progress("scenarios", len(scenarios)))
        results = await run_all(
            scenarios, topology, vantage.runner, vantage.pki,
            on_done=(lambda r: advance(r.scenario.name)) if advance else None,
        )  # fmt: skip
    print_results(console, results, topology, vantage.runner, ladder=False)
    return sum(not r.ok for r in results) + len(broken)
