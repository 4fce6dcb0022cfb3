"""``edgesim scenario``: list and run scenario scripts."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from simulator import aioloop
from simulator.cli._common import (
    NAME_OPTION,
    PCAP_OPTION,
    WIDTH_OPTION,
    Obj,
    certs_option,
    console,
    file_option,
    format_option,
    make_runner,
    print_notices,
    progress,
    runner_option,
    set_width,
)
from simulator.lab.runners.base import Runner
from simulator.scenario.report import print_results, results_html, results_json
from simulator.scenario.run import discover, missing_services, run_on, scenario_dirs, select

DIR_OPTION = click.option(
    "--dir", "directories", type=click.Path(file_okay=False, path_type=Path), multiple=True,
    metavar="DIR", help="Also the scenario scripts in DIR (repeatable); the scenarios shipped "
    "with edgesim are always there.",
)  # fmt: skip


@click.group()
def scenario() -> None:
    """Scenario scripts: whole federation flows across the lab, drawn as ladders."""


@scenario.command("list")
@DIR_OPTION
def list_(directories: tuple[Path, ...]) -> None:
    """Show the scenarios, what each exercises (matrix rows) and whether it can run here.

    \b
    Examples:
      edgesim scenario list
      edgesim scenario list --dir my-scenarios
    """
    scenarios, broken = discover(*scenario_dirs(directories))
    where = ", ".join(["shipped with edgesim", *map(str, directories)])
    table = Table(title=f"Scenarios ({where})", title_justify="left")
    longest = max((len(w) for s in scenarios for w in (s.name, *s.rows)), default=4)
    table.add_column("name", style="bold", no_wrap=True)
    table.add_column("what it exercises", overflow="fold", ratio=1)
    table.add_column("rows", no_wrap=True, min_width=longest)  # one id a line, never cut
    table.add_column("can run", overflow="fold", max_width=14)
    for item in scenarios:
        missing = missing_services(item)
        state = "[green]yes[/]" if not missing else "[yellow]needs " + ", ".join(missing) + "[/]"
        if item.firewall:
            state += "\n[dim]with a firewall runner[/]"
        table.add_row(item.name, escape(item.description), "\n".join(item.rows), state)
    console.print(table)
    for b in broken:
        console.print(f"[red]broken[/] {escape(str(b.path))}: {escape(b.reason)}")
    if broken:
        sys.exit(1)


async def _run(
    directories: tuple[Path, ...], names: tuple[str, ...], ladder: bool, html_file: Path | None,
    fmt: str, lab_runner: Runner, trace_file: Path | None = None, pcap_dir: Path | None = None,
) -> int:  # fmt: skip
    topology = lab_runner.config.topology  # the embedded lab's may have moved ports
    scenarios, broken = discover(*scenario_dirs(directories))
    print_notices(lab_runner)
    chosen = select(scenarios, names)
    runner = lab_runner.name
    with progress(f"{len(chosen)} scenario(s) on the {runner} lab", len(chosen)) as advance:
        results = await run_on(
            lab_runner, chosen, trace_file=trace_file, pcap_dir=pcap_dir,
            on_done=lambda r: advance(f"{r.scenario.name} {r.status}"),
        )  # fmt: skip
    if fmt == "json":
        click.echo(results_json(results, runner))
    else:
        print_results(console, results, topology, runner, ladder)
        for b in broken:
            console.print(f"[red]broken[/] {escape(str(b.path))}: {escape(b.reason)}")
        for r in results:
            if r.capture is not None:
                console.print(f"capture {escape(r.capture.summary())}", soft_wrap=True)
                for problem in r.capture.problems:
                    console.print(f"  [yellow]{escape(problem)}[/]", soft_wrap=True)
    if html_file is not None:
        html_file.parent.mkdir(parents=True, exist_ok=True)
        html_file.write_text(results_html(results, topology, runner, html_file), encoding="utf-8")
        if fmt != "json":
            console.print(f"ladders written to {html_file}")
    failed = sum(not r.ok for r in results) + (len(broken) if not names else 0)
    return 1 if failed else 0


@scenario.command("run")
@click.argument("names", nargs=-1)
@DIR_OPTION
@certs_option("Lab PKI directory.")
@click.option("--ladder", is_flag=True, help="Print each scenario's messages as a text ladder.")
@file_option(
    "--html",
    "html_file",
    "Write every scenario's ladder diagram (and a link to its capture) to this HTML file.",
)
@PCAP_OPTION
@format_option(None)
@WIDTH_OPTION
@runner_option(
    "local",
    "local: the embedded lab (the one `edgesim lab up` runs in another shell, else one started "
    "for the run). netns / compose: the running lab (root); clients leave from their host's "
    "network namespace (compose: its container's) and cross the lab's firewalls.",
)
@NAME_OPTION
@click.option(
    "--trace-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="netns: the trace file the lab's processes append to (start the lab with "
    "EDGESIM_TRACE_FILE=FILE); the servers' side of each message joins the ladders.",
)  # fmt: skip
@click.pass_obj
def run(
    obj: Obj, names: tuple[str, ...], directories: tuple[Path, ...], certs_dir: Path,
    ladder: bool, html_file: Path | None, pcap_dir: Path | None, fmt: str, width: int | None,
    runner: str, lab_name: str, trace_file: Path | None,
) -> None:  # fmt: skip
    """Run scenarios (all, or those NAMED) and print passed/failed with the failing step.

    The scenarios shipped with edgesim are always there; --dir adds your own. With --runner
    local (the default) the scenarios use the embedded lab `edgesim lab up` runs in another
    shell, or one started for the run (one process, loopback addresses); scenarios that need
    a firewall are skipped. With --runner netns the scenarios run against the lab `sudo
    edgesim lab up --runner netns` started, with its real addresses; the --certs directory
    must be the one the lab was started with. With --runner compose they run against `docker
    compose up` at the repository root, with the PKI copied from the lab's containers.
    Scenarios whose services are not available yet are skipped with the reason.

    --pcap DIR writes DIR/NAME.pcapng per scenario that ran: every packet the lab's hosts sent,
    with the TLS secrets of the lab and of the clients embedded, so Wireshark (or tshark)
    shows SIP and XMPP decrypted; --html links each. Capturing needs root (tcpdump).

    Exit code 0 when none failed.

    \b
    Examples:
      edgesim scenario run
      edgesim scenario run partner-discovery --ladder
      edgesim scenario run --html artifacts/ladders.html --dir my-scenarios
      sudo edgesim scenario run federation-im --pcap pcap --html l.html
      sudo edgesim scenario run av-call av-fallback --runner netns --ladder
      sudo edgesim scenario run --runner netns --name ci2
      sudo EDGESIM_TRACE_FILE=/tmp/t.jsonl edgesim lab up --runner netns
      sudo edgesim scenario run --runner netns --trace-file /tmp/t.jsonl
      sudo edgesim scenario run --runner compose --html compose.html
    """
    set_width(width)
    lab_runner = make_runner(obj, runner, certs_dir=certs_dir, lab_name=lab_name)
    sys.exit(
        aioloop.run(
            _run(directories, names, ladder, html_file, fmt, lab_runner, trace_file, pcap_dir)
        )
    )
