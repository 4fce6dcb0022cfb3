"""``edgesim firewall``: render the lab firewalls' rules; audit and diff a user's rules."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn, TypeVar

import click
from rich.console import RenderableType

from simulator.cli._common import (
    RULES_OPTION,
    F,
    Obj,
    console,
    format_option,
    parse_rules,
    timeout_option,
)
from simulator.firewall.audit import DEFAULT_TIMEOUT, AuditReport, audit
from simulator.firewall.diff import DiffReport, diff
from simulator.firewall.render import render_all, render_broken_external
from simulator.reports.firewall import render_audit, render_diff

BROKEN_PATH = Path("lab/firewall/broken/external.nft")


R = TypeVar("R", AuditReport, DiffReport)


def _check_options(command: F) -> F:
    """What ``audit`` and ``diff`` take: --rules, --timeout, --format."""
    timeout = timeout_option(0.05, 30, DEFAULT_TIMEOUT, "Seconds each flow waits for its answer.")
    return RULES_OPTION(timeout(format_option()(command)))


def _print_report(fmt: str, report: R, render: Callable[[R], RenderableType], ok: bool) -> NoReturn:
    """``report`` as JSON or rendered, on stdout; exit 0 when ``ok``, else 1."""
    if fmt == "json":
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        console.print(render(report))
    sys.exit(0 if ok else 1)


@click.group()
def firewall() -> None:
    """The lab firewalls' rules: render them from the matrix, audit and diff your own.

    \b
    Examples:
      edgesim firewall render
      sudo edgesim firewall audit --rules fw-external=/etc/nftables.conf
      sudo edgesim firewall diff --rules fw-external=edge-fw.iptables
    """


@firewall.command("render")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write the files into this directory (default: the topology's paths, e.g. "
    "lab/firewall/external.nft, relative to the current directory).",
)
@click.option(
    "--stdout", "to_stdout", is_flag=True, help="Print the rules instead of writing files."
)
@click.option(
    "--broken-example",
    is_flag=True,
    help="Also write the deliberately broken external.nft (UDP 3478 removed, TCP 23456 open to "
    "the internet) used by negative tests, as broken/external.nft.",
)
@click.pass_obj
def render(obj: Obj, out_dir: Path | None, to_stdout: bool, broken_example: bool) -> None:
    """Write one nftables rule file per firewall of the topology.

    Each file lets through exactly the matrix rows expected open between the zones the
    firewall joins (concrete addresses and ports, stateful: return traffic is allowed) and
    drops everything else; each rule's comment is the matrix row it was rendered for. Load one
    with `nft -f FILE`; loading again replaces the table.

    \b
    Examples:
      edgesim firewall render
      edgesim firewall render --out /tmp/rules
      edgesim firewall render --stdout
    """
    files = render_all(obj.topology, out_dir)
    if broken_example:
        base = out_dir if out_dir is not None else BROKEN_PATH.parent.parent
        files[base / "broken" / "external.nft"] = render_broken_external(obj.topology)
    for path, text in files.items():
        if to_stdout:
            click.echo(text, nl=False)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        console.print(f"wrote {path}")


@firewall.command("audit")
@_check_options
@click.pass_obj
def audit_command(obj: Obj, rule_items: tuple[str, ...], timeout: float, fmt: str) -> None:
    """Walk every matrix row through your rules, in the kernel, without a lab (root).

    The topology's firewalls are built in network namespaces of their own with your files
    loaded as written (a file nft or iptables-restore refuses stops here with its message),
    and stand-in hosts send every row's flows through them. Each firewall traces the packets
    (nftables `meta nftrace`), so each row says: allowed or blocked, the rule that decided
    (file, line, text, comment) or the chain's policy, and whether that meets the matrix. A
    row that must stay blocked fails when a packet crossed, whatever the destination did.

    It also tries what no row explains: from each zone to every host of the zones inside it,
    the ports the topology's listeners use and RDP 3389, SMB 445, SQL 1433, LDAP 389/636,
    Lync's 5062, 5063, 444, 8057 and SSH 22; each one let through is "open beyond the matrix".

    Exit 0 when every row meets its expectation and nothing is open beyond the matrix, 1
    otherwise, 2 for bad usage.

    \b
    Examples:
      sudo edgesim firewall audit
      sudo edgesim firewall audit --rules fw-external=my-edge.nft
      sudo edgesim firewall audit --rules fw-external=fw.iptables --format json
    """
    rules = parse_rules(obj.topology, rule_items)
    report = asyncio.run(audit(obj.topology, rules, timeout=timeout))
    _print_report(fmt, report, render_audit, report.ok)


@firewall.command("diff")
@_check_options
@click.pass_obj
def diff_command(obj: Obj, rule_items: tuple[str, ...], timeout: float, fmt: str) -> None:
    """Show, row by row, where your rules decide differently from the rendered ones (root).

    Both rule sets are audited side by side (see `edgesim firewall audit`): the rules
    `edgesim firewall render` writes, and yours. Each row whose flows met a different fate
    (let through, or the request or the reply dropped) is listed with the rule that decided on
    each side, then the other flows the two let through differently.

    Exit 0 when they decide alike, 1 otherwise, 2 for bad usage.

    \b
    Examples:
      sudo edgesim firewall diff --rules fw-external=my-edge.nft
      sudo edgesim firewall diff --rules fw-internal=lan.iptables --format json
    """
    rules = parse_rules(obj.topology, rule_items)
    if not rules:
        raise click.UsageError("give your rules: --rules FIREWALL=FILE")
    report = asyncio.run(diff(obj.topology, rules, timeout=timeout))
    _print_report(fmt, report, render_diff, report.same)
