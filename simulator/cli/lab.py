"""``edgesim lab``: bring a lab up, check it, bring it down."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from simulator import aioloop
from simulator.cli._common import (
    CERTS_OPTION,
    NAME_OPTION,
    RULES_OPTION,
    STATE_OPTION,
    Obj,
    RunnersGroup,
    console,
    make_runner,
    parse_rules,
    print_notices,
    progress_bar,
    runner_option,
)
from simulator.lab.flowcheck import RowFlows, check_rows
from simulator.lab.inspection import run_middlebox
from simulator.lab.plan import AppliancePlan, appliance_plans
from simulator.lab.runners.base import LabName, LabStatus, ListenerCheck
from simulator.lab.runners.compose import build_context, render_compose
from simulator.lab.session import UpResult, check_host, lab_up, serve_host, status_and_checks


@click.group(cls=RunnersGroup)
def lab() -> None:
    """Bring the lab up and down."""


# ------------------------------------------------------------------ rendering

_STATE_STYLE = {"running": "green", "routing": "green", "up": "green"}


def render_status(status: LabStatus, checks: list[ListenerCheck] | None = None) -> Table:
    """One row per host and firewall: where it lives, its addresses, what it listens on (and
    whether it answers, when ``checks`` are given) and its state. A lab in one process shows
    neither (its addresses are those it listens on)."""
    table = Table(title=f"Lab {status.lab} ({status.runner} runner)", title_justify="left")
    separate = status.node_kind != "process"
    table.add_column("node", style="bold", no_wrap=True)
    if separate:
        table.add_column(status.node_kind, overflow="fold")
        table.add_column("addresses", overflow="fold")
    table.add_column("listens on", overflow="fold", ratio=3)
    table.add_column("state", overflow="fold", ratio=2)
    by_listener = {(c.host, c.listener.label): c for c in checks or []}
    for st in status.nodes:
        listens: list[str] = []
        style = _STATE_STYLE.get(st.state, "red")
        state = ["[green]up[/] (no services)"] if st.state == "up" else [f"[{style}]{st.state}[/]"]
        for svc in st.services:
            if svc.state != "running":
                detail = f" [dim]{escape(svc.detail)}[/]" if svc.detail else ""
                state.append(f"[yellow]{svc.service}: {svc.state}[/]{detail}")
                continue
            if not svc.listeners:
                state.append(f"{svc.service}: running (no listener)")
            for lst in svc.listeners:
                mark = ""
                result = by_listener.get((st.node, lst.label))
                if result is not None:
                    mark = (
                        " [green]answers[/]" if result.ok else f" [red]{escape(result.detail)}[/]"
                    )
                listens.append(f"{lst.label} ({lst.proto}){mark}")
        for c in checks or []:
            if c.host == st.node and c.listener.label == "-":
                state.append(f"[red]{escape(c.detail)}[/]")
        where = [st.where, "\n".join(st.addresses)] if separate else []
        table.add_row(st.node, *where, "\n".join(listens) or "-", "\n".join(state))
    return table


def checks_summary(checks: list[ListenerCheck]) -> str:
    failed = [c for c in checks if not c.ok]
    if failed:
        return f"[red]{len(failed)} of {len(checks)} listeners did not answer[/]"
    return f"[green]all {len(checks)} listeners answer[/]"


def render_up(result: UpResult) -> None:
    console.print(render_status(result.status, result.checks if result.checked else None))
    missing = sorted({s.service for s in result.status.services if s.state != "running"})
    if missing:
        console.print(
            f"[yellow]{len(missing)} service(s) not available yet[/]: " + ", ".join(missing)
        )
    if result.checked:
        console.print(checks_summary(result.checks))


# ------------------------------------------------------------------ commands


@lab.command("up")
@runner_option("local", "How to run the lab.")
@click.option(
    "--check", is_flag=True, help="Start, verify every listener answers, stop; exit 0 or 1."
)
@RULES_OPTION
@click.option(
    "--inspect-tls",
    is_flag=True,
    help="SSL inspection: a TLS-intercepting middlebox (its own CA, made per run) on the "
    "external firewall's TCP 443 path to the Edge (netns runner).",
)
@CERTS_OPTION
@NAME_OPTION
@STATE_OPTION
@click.pass_obj
def up(
    obj: Obj,
    runner: str,
    check: bool,
    rule_items: tuple[str, ...],
    inspect_tls: bool,
    certs_dir: Path,
    lab_name: str,
    state_dir: Path | None,
) -> None:
    """Start the lab and print what listens where.

    With the local runner the lab runs in this process until Ctrl-C or SIGTERM; `edgesim
    probe`, `scenario run` and `run` in another shell use it. Ports below 1024 (443, 53) need
    root or sysctl net.ipv4.ip_unprivileged_port_start=0: without, the lab listens 8000
    higher (8443, 8053) and says so (EDGESIM_PORTS=real|moved forces a choice).

    With --runner netns (root) the lab is built from network namespaces, a bridge per zone and
    nftables firewalls, its services run in the background, and the command returns; stop it
    with `edgesim lab down --runner netns`. --name runs another netns lab beside it. With
    --runner compose it runs `docker compose up -d --wait` on the repository's
    docker-compose.yml. --rules loads your rule file into a firewall (nftables or
    iptables-save, checked first) instead of its topology file. --inspect-tls (netns) puts a
    TLS-inspecting middlebox in the external firewall's path to the Edge's TCP 443 (client SIP
    over TLS, TURN over TLS, MS-TURN pseudo-TLS): it re-signs with its own CA, made per run
    and written to the lab's state directory; probes and scenarios then say what it breaks
    ("intercepted by a TLS-inspecting middlebox", docs/firewall.md).

    \b
    Examples:
      edgesim lab up
      edgesim lab up --check
      edgesim --topology my-lab.toml lab up --certs /tmp/certs
      sudo edgesim lab up --runner netns
      sudo edgesim lab up --runner netns --check
      sudo edgesim lab up --runner netns --name ci2     # a second netns lab
      sudo edgesim lab up --runner netns --rules fw-external=my-edge.nft
      sudo edgesim lab up --runner netns --inspect-tls  # SSL inspection on TCP 443
    """
    rules = own_rules(obj, parse_rules(obj.topology, rule_items))
    lab_runner = make_runner(
        obj,
        runner,
        certs_dir=certs_dir,
        lab_name=lab_name,
        state_dir=state_dir,
        rules=rules,
        join=False,
        inspect_tls=inspect_tls,
    )
    if rules and not lab_runner.has_firewalls:
        raise click.UsageError(f"--rules: the {runner} lab has no firewall (--runner netns)")
    if inspect_tls and not lab_runner.inspects_tls:
        raise click.UsageError(
            f"--inspect-tls: the {runner} lab cannot put a middlebox in a firewall's path "
            "(--runner netns)"
        )
    print_notices(lab_runner)
    spinner = progress_bar(f"bringing the {runner} lab up")
    spinner.start()

    def on_up(result: UpResult) -> None:
        spinner.stop()
        render_up(result)

    def on_waiting() -> None:
        console.print("lab is up; press Ctrl-C (or send SIGTERM) to stop")

    try:
        result = aioloop.run(lab_up(lab_runner, check=check, on_up=on_up, on_waiting=on_waiting))
    finally:
        spinner.stop()
    if result.stopped:
        console.print("lab stopped")
    else:
        more = LabName(lab_name).cli_args()
        console.print(
            f"lab is up; `edgesim lab status --runner {runner}{more}` shows it, "
            f"`edgesim lab down --runner {runner}{more}` stops it"
        )
    sys.exit(1 if result.failed else 0)


@lab.command("down")
@runner_option("netns", "Which lab.", persistent=True)
@CERTS_OPTION
@NAME_OPTION
@STATE_OPTION
@click.pass_obj
def down(obj: Obj, runner: str, certs_dir: Path, lab_name: str, state_dir: Path | None) -> None:
    """Stop the lab and remove everything it made (idempotent, also after a crash).

    netns: every process, namespace, link and rule of the lab is found by its namespace prefix
    (`es-`, or `es<NAME>-` with --name) and removed; other labs are left alone. compose:
    `docker compose down` (containers and networks).

    \b
    Examples:
      sudo edgesim lab down
      sudo edgesim lab down --name ci2
      edgesim lab down --runner compose
    """
    lab_runner = make_runner(
        obj, runner, certs_dir=certs_dir, lab_name=lab_name, state_dir=state_dir
    )
    removed = aioloop.run(lab_runner.down())
    kind = lab_runner.node_kind
    console.print(f"removed {len(removed)} {kind}(s)" if removed else "nothing to remove")


@lab.command("status")
@runner_option("netns", "Which lab.", persistent=True)
@click.option("--no-check", is_flag=True, help="Do not ask each listener whether it answers.")
@CERTS_OPTION
@NAME_OPTION
@STATE_OPTION
@click.pass_obj
def status(
    obj: Obj,
    runner: str,
    no_check: bool,
    certs_dir: Path,
    lab_name: str,
    state_dir: Path | None,
) -> None:
    """Show each host, its addresses, what it listens on and whether it answers."""
    lab_runner = make_runner(
        obj, runner, certs_dir=certs_dir, lab_name=lab_name, state_dir=state_dir
    )
    result = aioloop.run(status_and_checks(lab_runner, check=not no_check))
    console.print(render_status(result.status, result.checks if result.checked else None))


@lab.command("reload-firewall")
@runner_option("netns", "Which lab.", has_firewalls=True)
@RULES_OPTION
@CERTS_OPTION
@NAME_OPTION
@STATE_OPTION
@click.pass_obj
def reload_firewall(
    obj: Obj,
    runner: str,
    rule_items: tuple[str, ...],
    certs_dir: Path,
    lab_name: str,
    state_dir: Path | None,
) -> None:
    """Load the firewalls' rule files again (after an edit of lab/firewall/*.nft), or yours.

    Each file is checked first: one nft or iptables-restore refuses stops with its message
    (file, line) and the firewall keeps its rules. A firewall given no --rules gets its
    topology file again (netns: the file it loaded last).

    \b
    Examples:
      sudo edgesim lab reload-firewall
      sudo edgesim lab reload-firewall --rules fw-external=my-external.nft
      sudo edgesim lab reload-firewall --rules fw-external=rules.v4  # iptables-save
      edgesim lab reload-firewall --runner compose
    """
    rules = own_rules(obj, parse_rules(obj.topology, rule_items))
    lab_runner = make_runner(
        obj, runner, certs_dir=certs_dir, lab_name=lab_name, state_dir=state_dir
    )
    for fw_id in lab_runner.our_firewalls():
        loaded = lab_runner.load_rules(fw_id, rules.get(fw_id))
        console.print(f"{loaded.firewall}: loaded {loaded.path}")
        if loaded.detail:
            console.print(f"[yellow]{escape(loaded.detail)}[/]")


def own_rules(obj: Obj, rules: dict[str, Path]) -> dict[str, Path]:
    """``--rules`` for a lab: never for the user's own device (its rules live on it)."""
    for fw_id in rules:
        if obj.topology.firewall(fw_id).external:
            raise click.BadParameter(
                f"{fw_id} is your own device (external = true): load its rules there",
                param_hint="--rules",
            )
    return rules


@lab.command("flows")
@runner_option("netns", "Which lab.", has_firewalls=True)
@click.option("--row", "row_ids", multiple=True, metavar="ROW", help="Only this row (repeatable).")
@click.option(
    "--timeout",
    type=float,
    default=1.5,
    show_default=True,
    help="Seconds each flow waits for its answer (a dropped flow takes this long).",
)
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
@NAME_OPTION
@click.pass_obj
def flows(
    obj: Obj, runner: str, row_ids: tuple[str, ...], timeout: float, as_json: bool, lab_name: str
) -> None:
    """Try every matrix row as plain TCP/UDP across the running lab's firewalls.

    For each row, an echo listener at the destination (or the lab service already listening
    there) and a connection or datagram from the source host's own address: open rows must get
    through, negative rows must be dropped. This checks the packet filter, not the protocols.
    Exit 0 when every row meets its expectation, 1 otherwise.

    \b
    Examples:
      sudo edgesim lab flows
      sudo edgesim lab flows --name ci2
      edgesim lab flows --runner compose --row msn-stun-in-3478
    """
    lab_runner = make_runner(obj, runner, lab_name=lab_name)
    report = check_rows(lab_runner, row_ids, timeout=timeout)
    if as_json:
        rows = [item.to_dict() for item in report]
        click.echo(json.dumps({"runner": runner, "rows": rows}, indent=2))
    else:
        console.print(render_flows(report, runner))
    bad = [item.row for item in report if not item.ok]
    if bad and not as_json:
        console.print(f"[red]{len(bad)} of {len(report)} rows differ from the matrix[/]")
    sys.exit(1 if bad else 0)


def render_flows(report: list[RowFlows], runner: str) -> Table:
    table = Table(title=f"Matrix rows across the firewalls ({runner} lab)", title_justify="left")
    for col in ("row", "expect", "got", "flows"):
        table.add_column(col)
    for item in report:
        mark = "[green]" if item.ok else "[red]"
        flows_text = "\n".join(f"{r.flow.flow}: {r.detail}" for r in item.results)
        table.add_row(item.row, item.expect, f"{mark}{item.got}[/]", flows_text)
    return table


@lab.command("plan")
@click.option(
    "--firewall",
    "firewalls",
    multiple=True,
    metavar="FIREWALL",
    help="Only this firewall (repeatable); default: the external ones, or every firewall "
    "when none is external.",
)
@click.option("--json", "as_json", is_flag=True, help="JSON instead of tables.")
@click.pass_obj
def plan(obj: Obj, firewalls: tuple[str, ...], as_json: bool) -> None:
    """What your own firewall needs to stand between the lab's zones.

    For each firewall the topology marks `external = true`: its interface per zone (the link
    of this machine the zone is on, its address and prefix, the lab hosts routing through
    it), its routes, and the port matrix as the rule list to enter, in order, each rule naming
    its matrix row; then return traffic, then deny. Derived from the topology and the matrix,
    as the lab's own nftables files are (`edgesim firewall render`).

    \b
    Examples:
      edgesim --topology my-appliance.toml lab plan
      edgesim lab plan --firewall fw-external
      edgesim --topology my-appliance.toml lab plan --json > appliance.json
    """
    plans = appliance_plans(obj.topology, firewalls)
    if as_json:
        click.echo(json.dumps({"firewalls": [p.to_dict() for p in plans]}, indent=2))
        return
    for item in plans:
        render_plan(item)


def render_plan(item: AppliancePlan) -> None:
    fw = item.firewall
    kind = "your own device (external)" if fw.external else "a lab firewall"
    console.print(
        f"[bold]{fw.id}[/]: {kind}" + (f" - {escape(fw.description)}" if fw.description else "")
    )
    table = Table(title="Interfaces", title_justify="left")
    for col in ("interface", "zone", "address", "on link", "lab hosts routing through it"):
        table.add_column(col, overflow="fold")
    for iface in item.interfaces:
        table.add_row(
            iface.name,
            f"{iface.zone} ({iface.subnet})",
            iface.address,
            iface.parent or "-",
            ", ".join(iface.routed_by) or "-",
        )
    console.print(table)
    console.print(
        "Routes: the connected subnets only; none to "
        + (", ".join(item.unrouted) or "-")
        + " (they stay unreachable across this device)"
    )
    rules = Table(title=f"Rules, in order ({len(item.rules)} allow)", title_justify="left")
    for col in ("#", "action", "proto", "source", "destination", "port", "matrix row"):
        rules.add_column(col, overflow="fold")
    for rule in item.rules:
        side = "" if rule.port_side == "destination" else " (source port)"
        rules.add_row(
            str(rule.number), "allow", rule.transport, rule.source, rule.destination,
            f"{rule.ports}{side}", f"{rule.row} {rule.label}",
        )  # fmt: skip
    n = len(item.rules)
    rules.add_row(
        str(n + 1), "allow", "any", "any", "any", "-", "return traffic: established, related"
    )
    rules.add_row(str(n + 2), "deny", "any", "any", "any", "-", "everything else")
    console.print(rules)
    if item.blocked_rows:
        console.print("Must stay blocked across it (no rule): " + ", ".join(item.blocked_rows))
    for note in item.notes:
        console.print(f"- {note}")
    console.print()


# ------------------------------------------------------------------ inside a node


@lab.command("serve", hidden=True)
@click.option("--host", "host_id", required=True, help="The topology host to run.")
@runner_option("netns", "The lab this host is part of.", persistent=True)
@click.option("--ready-file", type=click.Path(dir_okay=False, path_type=Path), default=None)
@CERTS_OPTION
@click.pass_obj
def serve(obj: Obj, host_id: str, runner: str, ready_file: Path | None, certs_dir: Path) -> None:
    """Run one host's services with its real lab addresses until SIGTERM (advanced).

    The netns runner starts this inside each host's namespace; compose containers run it as
    their command. --ready-file receives the bound listeners (JSON) once all are listening.
    """
    _known_host(obj, host_id)
    node = make_runner(obj, runner, certs_dir=certs_dir)
    aioloop.run(serve_host(node, host_id, ready_file, click.echo))


@lab.command("middlebox", hidden=True)
@click.option("--state", "state", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--ca-out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option(
    "--trust", type=click.Path(exists=True, dir_okay=False, path_type=Path), multiple=True
)
@click.option("--ready-file", type=click.Path(dir_okay=False, path_type=Path), default=None)
def middlebox(state: Path, ca_out: Path, trust: tuple[Path, ...], ready_file: Path | None) -> None:
    """Run the TLS-inspecting middlebox until SIGTERM (the netns runner starts it in its
    namespace with --inspect-tls): a fresh CA whose certificate goes to --ca-out, upstream
    servers verified against --trust."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logging.getLogger("simulator.middlebox").addHandler(handler)
    logging.getLogger("simulator.middlebox").setLevel(logging.INFO)
    aioloop.run(run_middlebox(state, ca_out, trust, ready_file))


@lab.command("check-host", hidden=True)
@click.option("--host", "host_id", required=True)
@runner_option("netns", "The lab this host is part of.", persistent=True)
@click.option(
    "--ready-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True
)
@CERTS_OPTION
@click.pass_obj
def check_host_cmd(obj: Obj, host_id: str, runner: str, ready_file: Path, certs_dir: Path) -> None:
    """Check, from the host's own network, that each listener in READY_FILE answers (JSON)."""
    _known_host(obj, host_id)
    checks = aioloop.run(check_host(obj.topology, host_id, runner, certs_dir, ready_file))
    click.echo(json.dumps([c.to_dict() for c in checks]))


def _known_host(obj: Obj, host_id: str) -> None:
    if all(h.id != host_id for h in obj.topology.hosts):
        raise click.BadParameter(f"no host '{host_id}' in the topology", param_hint="--host")


# ------------------------------------------------------------------ compose file


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
    lab/firewall/*.nft, every host as a container with its fixed addresses, and a build
    section that makes the image from the edgesim source (the Dockerfile; base image
    $EDGESIM_BASE, default python:3.11-slim).
    """
    topology_path = None
    if obj.topology_path is not None:
        topology_path = Path(os.path.relpath(obj.topology.path, out.resolve().parent))
    out.write_text(render_compose(obj.topology, topology_path, build_context(out)))
    console.print(f"wrote {out}")
