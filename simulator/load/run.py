"""A load run: the drivers inside their source hosts, the firewalls watched meanwhile.

:func:`run_load` starts one ``edgesim load --inside`` per kind of load in the source host of its
matrix row (through the runner, as probes run), samples each lab firewall's connection-tracking
table (``nf_conntrack_count`` in its namespace or container) while they run, and returns a
:class:`LoadReport`. :func:`drive_inside` is what runs in the host.

The user's own firewall (``external = true``) is not entered: its connection tracking is not
visible from here, and the report says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulator.errors import LabError, UsageError
from simulator.lab.runners.base import Runner
from simulator.lab.topology import Topology
from simulator.load import MAX_COUNT, MAX_HOLD, MAX_RATE
from simulator.load.drive import DriveResult, federation_sessions, relay_allocations
from simulator.matrix import load_matrix, resolve
from simulator.matrix.model import Endpoint
from simulator.pki import LabPki, service_settings
from simulator.records import Record, record
from simulator.tls import client_context

ROWS = {"federation": "fed-in-5061", "relay": "msn-stun-in-3478"}
"""The matrix row whose source and destination each kind of load uses."""
SAMPLE_EVERY = 0.5
CONNTRACK = "/proc/sys/net/netfilter"
GRACE = 60.0
"""Seconds a driver may take beyond its own bounds (start-up, closing)."""


def endpoints(topology: Topology, kind: str) -> tuple[Endpoint, Endpoint]:
    """(source, destination) of ``kind``'s row in ``topology``."""
    row = load_matrix().row(ROWS[kind])
    resolved = resolve(row, topology)
    if not resolved.resolved:
        raise UsageError(f"row {row.id} does not resolve in this topology: load {kind} cannot run")
    return resolved.sources[0], resolved.destinations[0]


def check_bounds(count: int, hold: float, rate: float, timeout: float) -> None:
    if not 0 <= count <= MAX_COUNT:
        raise UsageError(f"count {count}: at most {MAX_COUNT} sessions or allocations")
    if not 0 <= hold <= MAX_HOLD:
        raise UsageError(f"hold {hold:g}: at most {MAX_HOLD:g} seconds")
    if not 0 < rate <= MAX_RATE:
        raise UsageError(f"rate {rate:g}: more than 0, at most {MAX_RATE:g} per second")
    if not 0 < timeout <= 60:
        raise UsageError(f"timeout {timeout:g}: more than 0, at most 60 seconds")


# ------------------------------------------------------------------ inside the source host


async def drive_inside(
    topology: Topology,
    kind: str,
    certs: Path,
    *,
    count: int,
    hold: float,
    rate: float,
    timeout: float,
) -> DriveResult:
    """One driver, in this (the source host's) network, from the host's lab address."""
    check_bounds(count, hold, rate, timeout)
    source, destination = endpoints(topology, kind)
    pki = LabPki(certs)
    row = load_matrix().row(ROWS[kind])
    if kind == "federation":
        iface = topology.interface(source.ref)
        context = client_context([pki.trust_bundle], cert=pki.interface_cert(iface))
        return await federation_sessions(
            source=source.address,
            destination=(destination.address, row.port_low),
            server_name=destination.fqdn or destination.address,
            context=context,
            domain=topology.host(source.host).domain or "edgesim.invalid",
            count=count,
            hold=hold,
            rate=rate,
            timeout=timeout,
        )
    settings = service_settings(topology, "av-edge", certs)
    secret = settings.get("shared_secret")
    if not isinstance(secret, str) or not secret:
        raise LabError("the A/V Edge's shared secret is not in the lab's secrets (edgesim secrets)")
    realm = settings.get("realm")
    return await relay_allocations(
        source=source.address,
        server=(destination.address, row.port_low),
        secret=secret.encode(),
        realm=realm if isinstance(realm, str) else None,
        count=count,
        hold=hold,
        rate=rate,
        timeout=timeout,
    )


# ------------------------------------------------------------------ the run


@dataclass
class FirewallLoad(Record):
    """A lab firewall's connection tracking during the run."""

    firewall: str
    before: int | None = field(default=None, metadata=record(key="conntrack_before"))
    peak: int | None = field(default=None, metadata=record(key="conntrack_peak"))
    after: int | None = field(default=None, metadata=record(key="conntrack_after"))
    limits: dict[str, int] = field(default_factory=dict)
    """``nf_conntrack_max`` and the UDP/TCP timeouts (seconds) as the firewall has them."""
    note: str = ""


@dataclass
class LoadReport:
    runner: str
    lab: str
    results: list[DriveResult]
    firewalls: list[FirewallLoad]
    duration: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "runner": self.runner,
            "lab": self.lab,
            "duration": round(self.duration, 3),
            "results": [{**r.to_dict(), **summary(r)} for r in self.results],
            "firewalls": [f.to_dict() for f in self.firewalls],
        }


def summary(result: DriveResult) -> dict[str, Any]:
    """Setup latency percentiles (milliseconds) of the established ones."""
    if not result.setup:
        return {"setup_ms": {}}
    ordered = sorted(result.setup)
    q = statistics.quantiles(ordered, n=20) if len(ordered) > 1 else [ordered[0]] * 19
    return {
        "setup_ms": {
            "p50": round(statistics.median(ordered) * 1000, 1),
            "p95": round(q[18] * 1000, 1),
            "max": round(ordered[-1] * 1000, 1),
        }
    }


LIMIT_KEYS = {
    "conntrack_max": "nf_conntrack_max",
    "udp_timeout": "nf_conntrack_udp_timeout",
    "udp_stream_timeout": "nf_conntrack_udp_timeout_stream",
    "tcp_established_timeout": "nf_conntrack_tcp_timeout_established",
}


async def _read(runner: Runner, firewall: str, names: list[str]) -> list[int | None]:
    script = "; ".join(f"cat {CONNTRACK}/{n} 2>/dev/null || echo -" for n in names)
    try:
        proc = await asyncio.create_subprocess_exec(
            *runner.exec_argv(firewall), "sh", "-c", script,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
            env=runner.exec_env(),
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), 10)
    except (OSError, TimeoutError, LabError):
        return [None] * len(names)
    values = out.decode().split()
    return [int(v) if v.isdigit() else None for v in values] + [None] * (len(names) - len(values))


async def _watch(runner: Runner, fw: FirewallLoad, stop: asyncio.Event) -> None:
    while not stop.is_set():
        (count,) = await _read(runner, fw.firewall, ["nf_conntrack_count"])
        if count is not None:
            fw.peak = max(fw.peak or 0, count)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SAMPLE_EVERY)


async def _drive(
    runner: Runner, kind: str, count: int, hold: float, rate: float, timeout: float
) -> DriveResult:
    source, _ = endpoints(runner.config.topology, kind)
    argv = [
        *runner.edgesim_argv(source.host), "load", "--inside", "--kind", kind,
        "--count", str(count), "--hold", f"{hold:g}", "--rate", f"{rate:g}",
        "--timeout", f"{timeout:g}", "--certs", runner.node_certs,
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=runner.exec_env(),
    )  # fmt: skip
    bound = count / rate + hold + 2 * timeout + GRACE
    try:
        out, err = await asyncio.wait_for(proc.communicate(), bound)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise LabError(
            f"load {kind} in {source.host} did not finish within {bound:.0f} s"
        ) from None
    try:
        return DriveResult.from_dict(json.loads(out))
    except (ValueError, KeyError, TypeError):
        last = (err.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
        raise LabError(f"load {kind} in {source.host} failed: {last}") from None


async def run_load(
    runner: Runner,
    *,
    sessions: int,
    allocations: int,
    hold: float,
    rate: float,
    timeout: float,
) -> LoadReport:
    """Federation sessions and relay allocations at once (either may be 0), bounded."""
    for count in (sessions, allocations):
        check_bounds(count, hold, rate, timeout)
    if not runner.has_firewalls or runner.in_process:
        raise UsageError("load runs across a lab's firewalls: --runner netns, compose or swarm")
    runner.require_up()
    topology = runner.config.topology
    ours = runner.our_firewalls()
    firewalls = [FirewallLoad(fw) for fw in ours]
    firewalls += [
        FirewallLoad(fw.id, note="your own device: its connection tracking is not visible here")
        for fw in topology.external_firewalls
    ]
    for fw in firewalls[: len(ours)]:
        values = await _read(runner, fw.firewall, ["nf_conntrack_count", *LIMIT_KEYS.values()])
        fw.before = values[0]
        fw.limits = {k: v for k, v in zip(LIMIT_KEYS, values[1:], strict=True) if v is not None}
    stop = asyncio.Event()
    watchers = [asyncio.create_task(_watch(runner, fw, stop)) for fw in firewalls[: len(ours)]]
    t0 = time.perf_counter()
    jobs = [(k, n) for k, n in (("federation", sessions), ("relay", allocations)) if n > 0]
    try:
        results = await asyncio.gather(
            *(_drive(runner, kind, n, hold, rate, timeout) for kind, n in jobs)
        )
    finally:
        stop.set()
        await asyncio.gather(*watchers)
    duration = time.perf_counter() - t0
    for fw in firewalls[: len(ours)]:
        (fw.after,) = await _read(runner, fw.firewall, ["nf_conntrack_count"])
    return LoadReport(runner.name, runner.config.name, list(results), firewalls, duration)
