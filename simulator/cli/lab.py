"""``edgesim lab``: bring a lab up, check it, bring it down."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from simulator.cli._common import Obj, console
from simulator.errors import LabError
from simulator.lab.compose import (
    ComposeLab,
    compose_command,
    compose_exec,
    configure_container_network,
    render_compose,
)
from simulator.lab.runners.local import ListenerCheck, LocalLab, ServiceStatus
from simulator.lab.runners.netns import DEFAULT_STATE_DIR, NetnsLab
from simulator.lab.services import BoundListener, ServiceContext, load_service

RUNNERS = ("local", "netns", "compose")
STATE_OPTION = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=lambda: os.environ.get("EDGESIM_STATE_DIR", str(DEFAULT_STATE_DIR)),
    show_default="/run/edgesim or $EDGESIM_STATE_DIR",
    help="Where the netns runner keeps pids, logs and ready files.",
)
CERTS_OPTION = click.option(
    "--certs",
    "certs_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("certs"),
    show_default=True,
    help="Lab PKI directory (created or completed as needed).",
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
    "--runner",
    type=click.Choice(RUNNERS),
    default="local",
    show_default=True,
    help="How to run the lab.",
)
@click.option(
    "--check", is_flag=True, help="Start, verify every listener answers, stop; exit 0 or 1."
)
@CERTS_OPTION
@STATE_OPTION
@click.pass_obj
def up(obj: Obj, runner: str, check: bool, certs_dir: Path, state_dir: Path) -> None:
    """Start the lab and print what listens where.

    With the local runner the lab runs in this process until Ctrl-C or SIGTERM. Ports below
    1024 (443, 53) need root or sysctl net.ipv4.ip_unprivileged_port_start=0.

    With --runner netns (root) the lab is built from network namespaces, a bridge per zone and
    nftables firewalls, its services run in the background, and the command returns; stop it
    with `edgesim lab down --runner netns`. With --runner compose it runs
    `docker compose up -d` on the repository's docker-compose.yml.

    \b
    Examples:
      edgesim lab up
      edgesim lab up --check
      edgesim --topology my-lab.toml lab up --certs /tmp/certs
      sudo edgesim lab up --runner netns
      sudo edgesim lab up --runner netns --check
    """
    if runner == "netns":
        sys.exit(_netns_up(obj, certs_dir, state_dir, check))
    if runner == "compose":
        _compose_ready()
        image = os.environ.get("EDGESIM_IMAGE", "edgesim:latest")
        inspect = subprocess.run(["docker", "image", "inspect", image], capture_output=True)
        if inspect.returncode != 0:
            raise LabError(
                f"no image {image}: build it with scripts/build-image.sh (docs/lab.md: Images)"
            )
        sys.exit(_compose(["up", "-d", "--wait"]))
    sys.exit(asyncio.run(_local_up(obj, certs_dir, check)))


# ------------------------------------------------------------------ netns runner


def _netns_up(obj: Obj, certs_dir: Path, state_dir: Path, check: bool) -> int:
    netns = NetnsLab(obj.topology, certs_dir=certs_dir, state_dir=state_dir)
    with console.status("building the lab in network namespaces"):
        netns.up()
    console.print(render_netns_status(netns, check=check))
    if not check:
        console.print(
            "lab is up; `edgesim lab status` shows it, `edgesim lab down --runner netns` stops it"
        )
        return 0
    failed = _failed_checks(netns)
    with console.status("stopping the lab"):
        netns.down()
    console.print("lab stopped")
    return 1 if failed else 0


def _netns_checks(netns: NetnsLab | ComposeLab) -> dict[str, list[dict[str, Any]]]:
    results: dict[str, list[dict[str, Any]]] = {}
    for st in netns.status():
        if st.kind == "host" and st.running:
            try:
                results[st.node] = netns.check_host(st.node)
            except LabError as exc:
                results[st.node] = [{"listener": "-", "ok": False, "detail": str(exc)}]
    return results


def _failed_checks(netns: NetnsLab | ComposeLab) -> int:
    return sum(not c["ok"] for checks in _netns_checks(netns).values() for c in checks)


def render_netns_status(netns: NetnsLab | ComposeLab, check: bool = True) -> Table:
    checks = _netns_checks(netns) if check else {}
    table = Table(title=f"Lab ({netns.runner} runner)", title_justify="left")
    table.add_column("node", style="bold")
    table.add_column("namespace" if netns.runner == "netns" else "container")
    table.add_column("addresses")
    table.add_column("listens on")
    table.add_column("state")
    for st in netns.status():
        listens: list[str] = []
        states: list[str] = []
        by_listener = {c["listener"]: c for c in checks.get(st.node, [])}
        for svc in st.services:
            if svc["state"] != "running":
                states.append(f"[yellow]{svc['service']}: {svc['state']}[/]")
                continue
            if not svc["listeners"]:
                states.append(f"{svc['service']}: running (no listener)")
            for lst in svc["listeners"]:  # type: ignore[attr-defined]
                label = lst["label"]
                result = by_listener.get(label)
                mark = ""
                if result is not None:
                    mark = " [green]answers[/]" if result["ok"] else f" [red]{result['detail']}[/]"
                listens.append(f"{label} ({lst['proto']}){mark}")
        if not st.present:
            states.insert(0, "[red]absent[/]")
        elif st.kind == "firewall":
            states.insert(0, "[green]routing[/]")
        elif netns.runner == "compose":
            states.insert(0, "[green]running[/]" if st.running else "[red]not running[/]")
        elif st.pid is not None:
            states.insert(0, "[green]running[/]" if st.running else "[red]exited[/]")
        else:
            states.insert(0, "[green]up[/] (no services)")
        table.add_row(
            st.node,
            st.namespace,
            "\n".join(st.addresses),
            "\n".join(listens) or "-",
            "\n".join(states),
        )
    return table


RUNNER_OPTION = click.option(
    "--runner",
    type=click.Choice(("netns", "compose")),
    default="netns",
    show_default=True,
    help="Which lab.",
)


@lab.command("down")
@RUNNER_OPTION
@CERTS_OPTION
@STATE_OPTION
@click.pass_obj
def down(obj: Obj, runner: str, certs_dir: Path, state_dir: Path) -> None:
    """Stop the lab and remove everything it made (idempotent, also after a crash).

    netns: every process, namespace, link and rule of the lab is found by its `es-` prefix and
    removed. compose: `docker compose down` (containers and networks).
    """
    if runner == "compose":
        sys.exit(_compose(["down", "--remove-orphans", "--timeout", "5"]))
    netns = NetnsLab(obj.topology, certs_dir=certs_dir, state_dir=state_dir)
    deleted = netns.down()
    console.print(f"removed {len(deleted)} namespace(s)" if deleted else "nothing to remove")


@lab.command("status")
@RUNNER_OPTION
@click.option("--no-check", is_flag=True, help="Do not ask each listener whether it answers.")
@CERTS_OPTION
@STATE_OPTION
@click.pass_obj
def status(obj: Obj, runner: str, no_check: bool, certs_dir: Path, state_dir: Path) -> None:
    """Show each host, its addresses, what it listens on and whether it answers."""
    lab_: NetnsLab | ComposeLab
    if runner == "compose":
        _compose_ready()
        lab_ = ComposeLab(obj.topology)
    else:
        lab_ = NetnsLab(obj.topology, certs_dir=certs_dir, state_dir=state_dir)
    console.print(render_netns_status(lab_, check=not no_check))


@lab.command("reload-firewall")
@RUNNER_OPTION
@click.option(
    "--rules",
    "overrides",
    multiple=True,
    metavar="FIREWALL=FILE",
    help="Load FILE into FIREWALL instead of its topology file (repeatable), "
    "e.g. fw-external=lab/firewall/broken/external.nft.",
)
@CERTS_OPTION
@STATE_OPTION
@click.pass_obj
def reload_firewall(
    obj: Obj, runner: str, overrides: tuple[str, ...], certs_dir: Path, state_dir: Path
) -> None:
    """Load the firewalls' rule files again (after an edit of lab/firewall/*.nft)."""
    rules: dict[str, Path] = {}
    for item in overrides:
        fw_id, sep, path = item.partition("=")
        if not sep or not path:
            raise click.BadParameter(f"'{item}' is not FIREWALL=FILE", param_hint="--rules")
        if fw_id not in {fw.id for fw in obj.topology.firewalls}:
            raise click.BadParameter(f"no firewall '{fw_id}' in the topology", param_hint="--rules")
        rules[fw_id] = Path(path)
    if runner == "compose":
        code = 0
        for fw in obj.topology.firewalls:
            target = f"/etc/edgesim/firewall/{Path(fw.rules).name}"
            if fw.id in rules:
                raise click.UsageError("--rules works with the netns runner only; edit the file")
            code |= _compose(["exec", "-T", fw.id, "nft", "-f", target])
        sys.exit(code)
    netns = NetnsLab(obj.topology, certs_dir=certs_dir, state_dir=state_dir, rules=rules)
    for fw_id, loaded in netns.load_firewalls().items():
        console.print(f"{fw_id}: loaded {loaded}")


@lab.command("flows")
@RUNNER_OPTION
@click.option("--row", "row_ids", multiple=True, metavar="ROW", help="Only this row (repeatable).")
@click.option(
    "--timeout",
    type=float,
    default=1.5,
    show_default=True,
    help="Seconds each flow waits for its answer (a dropped flow takes this long).",
)
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
@click.pass_obj
def flows(obj: Obj, runner: str, row_ids: tuple[str, ...], timeout: float, as_json: bool) -> None:
    """Try every matrix row as plain TCP/UDP across the running lab's firewalls.

    For each row, an echo listener at the destination (or the lab service already listening
    there) and a connection or datagram from the source host's own address: open rows must get
    through, negative rows must be dropped. This checks the packet filter, not the protocols.
    Exit 0 when every row meets its expectation, 1 otherwise.

    \b
    Examples:
      sudo edgesim lab flows
      edgesim lab flows --runner compose --row msn-stun-in-3478
    """
    from simulator.lab import flowcheck
    from simulator.lab.runners.netns import check_flows, lab_namespaces

    planned = flowcheck.matrix_flows(obj.topology)
    if row_ids:
        unknown = set(row_ids) - {mf.row for mf in planned}
        if unknown:
            raise click.BadParameter(f"no row '{sorted(unknown)[0]}'", param_hint="--row")
        planned = [mf for mf in planned if mf.row in row_ids]
    if runner == "netns":
        if not lab_namespaces():
            raise LabError("the netns lab is not up: `edgesim lab up --runner netns`")
        results = check_flows(planned, timeout=timeout)
    else:
        _compose_ready()
        results = flowcheck.check_flows(planned, compose_exec, timeout=timeout)
    by_row: dict[str, list[flowcheck.FlowResult]] = {mf.row: [] for mf in planned}
    for r in results:
        by_row.setdefault(r.flow.row, []).append(r)
    report: list[dict[str, Any]] = []
    for row_id, items in by_row.items():
        expected = items[0].flow.expect_open
        passed = [r.ok for r in items]
        got = "open" if all(passed) else "blocked" if not any(passed) else "partly open"
        report.append(
            {
                "row": row_id,
                "expect": "open" if expected else "blocked",
                "got": got,
                "ok": got == ("open" if expected else "blocked"),
                "flows": [
                    {"flow": str(r.flow.flow), "ok": r.ok, "detail": r.detail} for r in items
                ],
            }
        )
    if as_json:
        click.echo(json.dumps({"runner": runner, "rows": report}, indent=2))
    else:
        title = f"Matrix rows across the firewalls ({runner} lab)"
        table = Table(title=title, title_justify="left")
        for col in ("row", "expect", "got", "flows"):
            table.add_column(col)
        for item in report:
            mark = "[green]" if item["ok"] else "[red]"
            flows_text = "\n".join(f"{f['flow']}: {f['detail']}" for f in item["flows"])
            table.add_row(item["row"], item["expect"], f"{mark}{item['got']}[/]", flows_text)
        console.print(table)
    bad = [item["row"] for item in report if not item["ok"]]
    if bad and not as_json:
        console.print(f"[red]{len(bad)} of {len(report)} rows differ from the matrix[/]")
    sys.exit(1 if bad else 0)


# ------------------------------------------------------------------ one host's services


def _ready_payload(host: str, statuses: list[ServiceStatus]) -> dict[str, Any]:
    return {
        "host": host,
        "pid": os.getpid(),
        "services": [
            {
                "service": st.service,
                "state": st.state,
                "detail": st.detail,
                "listeners": [
                    {
                        "label": str(b),
                        "interface": b.listener.interface,
                        "proto": b.listener.proto,
                        "port_low": b.listener.port_low,
                        "transport": b.transport,
                        "address": b.address,
                        "port": b.port,
                    }
                    for b in st.listeners
                ],
            }
            for st in statuses
        ],
    }


async def _wait_for_termination() -> None:
    """Wait for SIGTERM or SIGINT (how `lab down` and `docker compose stop` end a host)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _serve(obj: Obj, host: str, runner: str, certs_dir: Path, ready_file: Path | None) -> int:
    if runner == "compose":
        configure_container_network(obj.topology, obj.topology.host(host))
    services = LocalLab(obj.topology, certs_dir, hosts=[host])
    services.runner = runner
    # Every host's `lab serve` checks the shared PKI on start: one at a time (a read-only PKI
    # directory, e.g. mounted into a container, needs no lock).
    with contextlib.ExitStack() as stack:
        try:
            certs_dir.mkdir(parents=True, exist_ok=True)
            lock = stack.enter_context(open(certs_dir / ".lock", "a"))
            fcntl.flock(lock, fcntl.LOCK_EX)
        except OSError:
            pass
        statuses = await services.start()
    try:
        payload = json.dumps(_ready_payload(host, statuses), indent=2)
        if ready_file is not None:
            ready_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = ready_file.with_suffix(".tmp")
            tmp.write_text(payload)
            tmp.replace(ready_file)
        else:
            click.echo(payload)
        await _wait_for_termination()
        return 0
    finally:
        await services.stop()


@lab.command("serve", hidden=True)
@click.option("--host", "host_id", required=True, help="The topology host to run.")
@click.option("--runner", type=click.Choice(("netns", "compose")), default="netns")
@click.option("--ready-file", type=click.Path(dir_okay=False, path_type=Path), default=None)
@CERTS_OPTION
@click.pass_obj
def serve(obj: Obj, host_id: str, runner: str, ready_file: Path | None, certs_dir: Path) -> None:
    """Run one host's services with its real lab addresses until SIGTERM (advanced).

    The netns runner starts this inside each host's namespace; compose containers run it as
    their command. --ready-file receives the bound listeners (JSON) once all are listening.
    """
    try:
        obj.topology.host(host_id)
    except KeyError:
        raise click.BadParameter(
            f"no host '{host_id}' in the topology", param_hint="--host"
        ) from None
    sys.exit(asyncio.run(_serve(obj, host_id, runner, certs_dir, ready_file)))


async def _check_host(
    obj: Obj, host_id: str, runner: str, certs_dir: Path, ready: dict[str, Any]
) -> list[dict[str, Any]]:
    from simulator.pki import LabPki, service_settings

    host = obj.topology.host(host_id)
    results: list[dict[str, Any]] = []
    for svc in ready.get("services", []):
        factory = load_service(svc["service"]) if svc["state"] == "running" else None
        if factory is None:
            continue
        pki = LabPki(certs_dir)
        settings = service_settings(obj.topology, svc["service"], certs_dir)
        ctx = ServiceContext(obj.topology, host, svc["service"], pki, runner, settings)
        instance = factory(ctx)
        status = ServiceStatus(host_id, svc["service"], "running", instance=instance)
        for item in svc["listeners"]:
            listener = next(
                lst
                for lst in host.listeners
                if lst.interface == item["interface"]
                and lst.proto == item["proto"]
                and lst.port_low == item["port_low"]
                and lst.service == svc["service"]
            )
            bound = BoundListener(listener, item["transport"], item["address"], item["port"])
            probe = LocalLab(obj.topology, certs_dir)
            check = await probe._check_one(status, bound)
            results.append({"listener": item["label"], "ok": check.ok, "detail": check.detail})
    return results


@lab.command("check-host", hidden=True)
@click.option("--host", "host_id", required=True)
@click.option("--runner", type=click.Choice(("netns", "compose")), default="netns")
@click.option(
    "--ready-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True
)
@CERTS_OPTION
@click.pass_obj
def check_host(obj: Obj, host_id: str, runner: str, ready_file: Path, certs_dir: Path) -> None:
    """Check, from the host's own network, that each listener in READY_FILE answers (JSON)."""
    ready = json.loads(ready_file.read_text())
    results = asyncio.run(_check_host(obj, host_id, runner, certs_dir, ready))
    click.echo(json.dumps(results))


# ------------------------------------------------------------------ compose runner


@lab.command("compose-render")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("docker-compose.yml"),
    show_default=True,
    help="Where to write the compose file.",
)
@click.pass_obj
def compose_render(obj: Obj, out: Path) -> None:
    """Write docker-compose.yml for the topology (the repository's file is this output).

    A network per zone on its subnet, the firewalls as routing containers enforcing
    lab/firewall/*.nft, every host as a container with its fixed addresses.
    """
    topology_path = None
    if obj.topology_path is not None:
        topology_path = Path(os.path.relpath(obj.topology.path, out.resolve().parent))
    out.write_text(render_compose(obj.topology, topology_path))
    console.print(f"wrote {out}")


def _compose(args: list[str]) -> int:
    _compose_ready()
    return subprocess.run(compose_command(*args)).returncode


def _compose_ready() -> None:
    if shutil.which("docker") is None:
        raise LabError("docker is not installed: scripts/setup-docker.sh installs and starts it")
    if not Path("docker-compose.yml").is_file():
        raise LabError(
            "no docker-compose.yml here: run this at the repository root "
            "(or write one with `edgesim lab compose-render`)"
        )
