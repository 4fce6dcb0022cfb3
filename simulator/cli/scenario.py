"""``edgesim scenario``: list and run scenario scripts."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from simulator.cli._common import NAME_OPTION, Obj, console, make_runner, runner_option
from simulator.lab.runners.base import Runner
from simulator.scenario.report import print_results, results_html, results_json
from simulator.scenario.run import DEFAULT_DIR, discover, missing_services, run_on, select

DIR_OPTION = click.option(
    "--dir", "directory", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_DIR,
    show_default=True, help="Directory of scenario scripts.",
)  # fmt: skip


@click.group()
def scenario() -> None:
    """Scenario scripts: whole federation flows across the lab, drawn as ladders."""


@scenario.command("list")
@DIR_OPTION
def list_(directory: Path) -> None:
    """Show the scenarios, what each exercises (matrix rows) and whether it can run here.

    \b
    Examples:
      edgesim scenario list
      edgesim scenario list --dir my-scenarios
    """
    scenarios, broken = discover(directory)
    table = Table(title=f"Scenarios in {directory}", title_justify="left")
    table.add_column("name", style="bold", overflow="fold")
    table.add_column("what it exercises", overflow="fold")
    table.add_column("rows", overflow="fold")
    table.add_column("can run", overflow="fold")
    for item in scenarios:
        missing = missing_services(item)
        state = "[green]yes[/]" if not missing else "[yellow]needs " + ", ".join(missing) + "[/]"
        if item.firewall:
            state += "\n[dim]with a firewall runner[/]"
        table.add_row(item.name, escape(item.description), ", ".join(item.rows), state)
    console.print(table)
    for b in broken:
        console.print(f"[red]broken[/] {escape(str(b.path))}: {escape(b.reason)}")
    if broken:
        sys.exit(1)


async def _run(
    obj: Obj, directory: Path, names: tuple[str, ...], ladder: bool, html_file: Path | None,
    fmt: str, lab_runner: Runner, trace_file: Path | None = None,
) -> int:  # fmt: skip
    topology = obj.topology
    scenarios, broken = discover(directory)
    chosen = select(scenarios, names)
    runner = lab_runner.name
    with console.status(f"running {len(chosen)} scenario(s) on the {runner} lab"):
        results = await run_on(lab_runner, chosen, trace_file=trace_file)
    if fmt == "json":
        click.echo(results_json(results, runner))
    else:
        print_results(console, results, topology, runner, ladder)
        for b in broken:
            console.print(f"[red]broken[/] {escape(str(b.path))}: {escape(b.reason)}")
    if html_file is not None:
        html_file.parent.mkdir(parents=True, exist_ok=True)
        html_file.write_text(results_html(results, topology, runner), encoding="utf-8")
        if fmt != "json":
            console.print(f"ladders written to {html_file}")
    failed = sum(not r.ok for r in results) + (len(broken) if not names else 0)
    return 1 if failed else 0


@scenario.command("run")
@click.argument("names", nargs=-1)
@DIR_OPTION
@click.option(
    "--certs", "certs_dir", type=click.Path(file_okay=False, path_type=Path),
    default=Path("certs"), show_default=True, help="Lab PKI directory.",
)  # fmt: skip
@click.option("--ladder", is_flag=True, help="Print each scenario's messages as a text ladder.")
@click.option(
    "--html", "html_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Write every scenario's ladder diagram to this HTML file.",
)  # fmt: skip
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@runner_option(
    "local",
    "local: start the embedded lab for the run. netns / compose: use the running lab "
    "(root); clients leave from their host's network namespace (compose: its container's) "
    "and cross the lab's firewalls.",
)
@NAME_OPTION
@click.option(
    "--trace-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="netns: the trace file the lab's processes append to (start the lab with "
    "EDGESIM_TRACE_FILE=FILE); the servers' side of each message joins the ladders.",
)  # fmt: skip
@click.pass_obj
def run(
    obj: Obj, names: tuple[str, ...], directory: Path, certs_dir: Path, ladder: bool,
    html_file: Path | None, fmt: str, runner: str, lab_name: str, trace_file: Path | None,
) -> None:  # fmt: skip
    """Run scenarios (all, or those NAMED) and print passed/failed with the failing step.

    With --runner local (the default) the embedded lab (one process, loopback addresses) is
    started for the run; scenarios that need a firewall are skipped. With --runner netns the
    scenarios run against the lab `sudo edgesim lab up --runner netns` started, with its real
    addresses; the --certs directory must be the one the lab was started with. With --runner
    compose they run against `docker compose up` at the repository root, with the PKI copied
    from the lab's containers. Scenarios whose
    services are not available yet are skipped with the reason. Exit code 0 when none failed.

    \b
    Examples:
      edgesim scenario run
      edgesim scenario run partner-discovery --ladder
      edgesim scenario run --html artifacts/ladders.html
      sudo edgesim scenario run av-call av-fallback --runner netns --ladder
      sudo edgesim scenario run --runner netns --name ci2
      sudo EDGESIM_TRACE_FILE=/run/edgesim/trace.jsonl edgesim lab up --runner netns
      sudo edgesim scenario run --runner netns --trace-file /run/edgesim/trace.jsonl
      sudo edgesim scenario run --runner compose --html artifacts/compose-ladders.html
    """
    lab_runner = make_runner(obj, runner, certs_dir=certs_dir, lab_name=lab_name)
    sys.exit(
        asyncio.run(_run(obj, directory, names, ladder, html_file, fmt, lab_runner, trace_file))
    )
