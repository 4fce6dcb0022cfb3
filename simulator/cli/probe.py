"""``edgesim probe``: every matrix row checked at protocol level, from its source zone."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from simulator import aioloop
from simulator.cli._common import (
    CERTS_OPTION,
    NAME_OPTION,
    PCAP_OPTION,
    WIDTH_OPTION,
    Obj,
    console,
    err_console,
    file_option,
    format_option,
    make_runner,
    print_notices,
    runner_option,
    set_width,
    timeout_option,
)
from simulator.probes.run import (
    DEFAULT_CONCURRENCY,
    DEFAULT_TIMEOUT,
    ProbeRun,
    adjust_for,
    load_target,
    nothing_answered,
    plan_probes,
    probe_matrix,
)
from simulator.reports.html import to_html
from simulator.reports.json_report import to_json
from simulator.reports.junit import to_junit
from simulator.reports.table import render_run, run_with_progress


@click.command()
@runner_option(
    "local",
    "Which lab; probes run from each row's source host: local (this process, each source's "
    "loopback address), netns (inside the host's namespace), compose (inside its container).",
)
@file_option(
    "--target",
    "target_file",
    "Probe a real deployment described in FILE (addresses, FQDNs, CA bundle, client certificate).",
)
@click.option("--row", "rows", multiple=True, metavar="ID", help="Only this row (repeatable).")
@format_option()
@file_option("--junit", "junit_file", "Also write JUnit XML (one test case per row) to FILE.")
@file_option("--html", "html_file", "Also write a self-contained HTML report to FILE.")
@timeout_option(0.1, 120, DEFAULT_TIMEOUT, "Seconds per probe (a blocked row costs this once).")
@click.option(
    "--concurrency",
    type=click.IntRange(1, 1024),
    default=DEFAULT_CONCURRENCY,
    show_default=True,
    metavar="N",
    help="Probes in flight at once.",
)
@file_option("--compose-file", "compose_file", "docker compose file of the lab (compose runner).")
@click.option(
    "--no-trace",
    is_flag=True,
    help="Do not trace the lab's firewalls: verdicts from what the endpoints saw only (a "
    "negative row a host resets then counts as refused, even if the firewall let it through).",
)
@click.option(
    "--inside",
    is_flag=True,
    hidden=True,
    help="Probe from this namespace with the lab's addresses (what the netns and compose "
    "runners run inside each source host).",
)
@click.option(
    "--source",
    "source_ref",
    hidden=True,
    metavar="HOST:IFACE",
    help="Leave from this source endpoint (set by the netns/compose runners).",
)
@PCAP_OPTION
@WIDTH_OPTION
@CERTS_OPTION
@NAME_OPTION
@click.pass_obj
def probe(
    obj: Obj,
    runner: str,
    target_file: Path | None,
    rows: tuple[str, ...],
    fmt: str,
    junit_file: Path | None,
    html_file: Path | None,
    timeout: float,
    concurrency: int,
    compose_file: Path | None,
    no_trace: bool,
    inside: bool,
    source_ref: str | None,
    pcap_dir: Path | None,
    width: int | None,
    certs_dir: Path,
    lab_name: str,
) -> None:
    """Probe every row of the port matrix at protocol level and report a verdict per row.

    Each row is probed from a host of its source zone: SIP OPTIONS over TLS/MTLS, XMPP stream and
    STARTTLS, STUN binding, TURN allocate and relayed round trips, TCP connects on sampled relay
    ports, DNS SRV. Verdicts: passed, blocked (dropped), refused (reset / ICMP unreachable), TLS
    failed (unknown CA, name mismatch, no client certificate accepted, expired, handshake reset),
    protocol failed, open where it must not be.

    On the netns and compose labs every firewall is traced while the probes run (nftables
    `meta nftrace`, the kernel's own decisions): each row says which firewall accepted, dropped
    or rejected its request or reply, by which rule (file and line) or policy. A row that must
    stay blocked is open where it must not be once its packet crossed a firewall, whatever the
    destination answered. Against --target, verdicts come from the endpoints.

    Exit code 0 only when every probed row meets its expectation (an open row passed, a blocked
    row was blocked or refused), 1 otherwise, 2 for bad usage or configuration.

    \b
    Examples:
      edgesim probe                     # the embedded lab `edgesim lab up` runs
      edgesim probe --runner netns --html report.html --junit junit.xml
      edgesim probe --runner netns --name ci2    # the netns lab named ci2
      edgesim probe --row pic-in-5061 --row xmpp-in-5269 --format json
      edgesim probe --target contoso-prod.toml --timeout 5
      sudo edgesim probe --runner netns --pcap pcap   # pcap/probe.pcapng
    """
    set_width(width)
    target = load_target(target_file) if target_file else None
    lab_runner = make_runner(
        obj, runner, certs_dir=certs_dir, lab_name=lab_name, compose_file=compose_file
    )
    topology = lab_runner.config.topology  # the embedded lab's may have moved ports
    if not inside and target is None:
        print_notices(lab_runner)
    builder, executor = plan_probes(
        lab_runner,
        lab_runner.config.certs_dir,
        inside=inside,
        timeout=timeout,
        source_ref=source_ref,
        target=target,
        trace=not no_trace,
    )
    kwargs: dict[str, Any] = {"rows": rows, "target": target, "concurrency": concurrency}

    async def probe_all() -> ProbeRun:
        if target is None and not inside:
            kwargs["adjust"] = await adjust_for(lab_runner)
        if fmt == "table":
            return await run_with_progress(console, topology, executor, builder, **kwargs)
        return await probe_matrix(topology, executor, builder, **kwargs)

    async def captured() -> ProbeRun:
        if pcap_dir is None:
            return await probe_all()
        async with lab_runner.capture(pcap_dir / "probe.pcapng") as capture:
            run = await probe_all()
        err_console.print(f"wrote {escape(capture.summary())}")
        for problem in capture.problems:
            err_console.print(f"[yellow]{escape(problem)}[/]", soft_wrap=True)
        return run

    run: ProbeRun = aioloop.run(captured())
    if fmt == "table":
        console.print(render_run(run, console.width))
        hint = nothing_answered(run, lab_runner)
        if hint is not None:
            err_console.print(f"[yellow]{hint}[/]", soft_wrap=True)
    else:
        click.echo(to_json(run))
    for path, text in ((junit_file, to_junit), (html_file, to_html)):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text(run), "utf-8")
            err_console.print(f"wrote {path}")
    sys.exit(1 if run.failures else 0)
