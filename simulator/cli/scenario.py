"""``edgesim scenario``: list and run scenario scripts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from simulator.cli._common import Obj, console
from simulator.errors import EdgesimError
from simulator.lab.runners.local import LocalLab
from simulator.lab.runners.netns import lab_namespaces, ns_name, requirements_problem
from simulator.lab.topology import Topology
from simulator.pki import LabPki
from simulator.scenario.report import print_results, results_html, results_json
from simulator.scenario.run import (
    DEFAULT_DIR,
    ScenarioResult,
    discover,
    missing_services,
    run_all,
    run_one,
    select,
)
from simulator.trace import TraceRecorder

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


def merge_trace_file(result: ScenarioResult, path: Path, start: float, end: float) -> None:
    """Add what the lab's own processes recorded in ``path`` between ``start`` and ``end``
    (the servers' side of each message) to ``result``; events already there are kept once."""
    rec = TraceRecorder()
    rec.extend_from_files([path], since=start)
    known = set(result.events)
    extra = [e for e in rec.events if e.time <= end and e not in known]
    result.events = sorted([*result.events, *extra], key=lambda e: e.time)


def running_netns_lab(topology: Topology) -> None:
    """Raise a one-line EdgesimError unless a netns lab of ``topology`` is up."""
    problem = requirements_problem()
    if problem is not None:
        raise EdgesimError(f"--runner netns: {problem}")
    present = set(lab_namespaces())
    missing = [h.id for h in topology.hosts if ns_name(h.id) not in present]
    if len(missing) == len(topology.hosts):
        raise EdgesimError(
            "no netns lab is up: start one with `sudo edgesim lab up --runner netns`"
        )
    if missing:
        raise EdgesimError(
            f"the running netns lab lacks {', '.join(ns_name(m) for m in missing)}: "
            "was it started with another topology?"
        )


CONTAINER_PKI = "/var/lib/edgesim/certs"


def _docker(*args: str) -> str:
    try:
        done = subprocess.run(
            ["docker", *args], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EdgesimError(f"--runner compose: cannot run docker: {exc}") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise EdgesimError(f"--runner compose: docker {args[0]} failed: {last}")
    return done.stdout


def running_compose_lab(topology: Topology, pki_dir: Path) -> dict[str, str]:
    """The network namespace of every host's and firewall's container, by id; copies the
    lab's PKI (issued inside the image) to ``pki_dir``. One-line errors when no lab is up."""
    nodes = [h.id for h in topology.hosts] + [fw.id for fw in topology.firewalls]
    services: dict[str, str] = {}
    for line in _docker("compose", "ps", "--format", "json").splitlines():
        with contextlib.suppress(ValueError):
            item = json.loads(line)
            for entry in item if isinstance(item, list) else [item]:
                if entry.get("State") == "running":
                    services[entry["Service"]] = entry["ID"]
    if not services:
        raise EdgesimError(
            "no compose lab is up here: `docker compose up -d --wait` at the repository root"
        )
    missing = [n for n in nodes if n not in services]
    if missing:
        raise EdgesimError(f"the compose lab has no running container for {', '.join(missing)}")
    pids = _docker("inspect", "-f", "{{.State.Pid}}", *(services[n] for n in nodes)).split()
    namespaces = {node: f"/proc/{pid}/ns/net" for node, pid in zip(nodes, pids, strict=True)}
    pki_dir.mkdir(parents=True, exist_ok=True)
    _docker("cp", f"{services[topology.hosts[0].id]}:{CONTAINER_PKI}/.", str(pki_dir))
    return namespaces


async def _run(
    obj: Obj, directory: Path, names: tuple[str, ...], certs_dir: Path, ladder: bool,
    html_file: Path | None, fmt: str, runner: str, trace_file: Path | None = None,
) -> int:  # fmt: skip
    topology = obj.topology
    scenarios, broken = discover(directory)
    chosen = select(scenarios, names)
    if runner in ("netns", "compose"):
        namespaces: dict[str, str] = {}
        pki = LabPki(certs_dir)
        if runner == "netns":
            running_netns_lab(topology)
        else:
            pki = LabPki(Path(tempfile.mkdtemp(prefix="edgesim-compose-pki-")))
            namespaces = running_compose_lab(topology, pki.directory)
        results = []
        for item in chosen:
            started = time.time()
            result = await run_one(
                item, topology, runner, pki, firewall=True, namespaces=namespaces
            )
            if trace_file is not None:
                merge_trace_file(result, trace_file, started, time.time())
            results.append(result)
    else:
        lab = LocalLab(topology, certs_dir)
        with console.status("starting the embedded lab"):
            await lab.start()
        try:
            results = await run_all(chosen, topology, lab.runner, lab.pki, firewall=False)
        finally:
            await lab.stop()
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
@click.option(
    "--runner", type=click.Choice(["local", "netns", "compose"]), default="local",
    show_default=True,
    help="local: start the embedded lab for the run. netns / compose: use the running lab "
    "(root); clients leave from their host's network namespace (compose: its container's) "
    "and cross the lab's firewalls.",
)  # fmt: skip
@click.option(
    "--trace-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="netns: the trace file the lab's processes append to (start the lab with "
    "EDGESIM_TRACE_FILE=FILE); the servers' side of each message joins the ladders.",
)  # fmt: skip
@click.pass_obj
def run(
    obj: Obj, names: tuple[str, ...], directory: Path, certs_dir: Path, ladder: bool,
    html_file: Path | None, fmt: str, runner: str, trace_file: Path | None,
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
      sudo EDGESIM_TRACE_FILE=/run/edgesim/trace.jsonl edgesim lab up --runner netns
      sudo edgesim scenario run --runner netns --trace-file /run/edgesim/trace.jsonl
      sudo edgesim scenario run --runner compose --html artifacts/compose-ladders.html
    """
    sys.exit(
        asyncio.run(
            _run(obj, directory, names, certs_dir, ladder, html_file, fmt, runner, trace_file)
        )
    )
