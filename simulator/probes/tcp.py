"""``tcp-connect``: a TCP handshake to the port, or to sampled ports of a range.

A range is sampled (first, last and a few evenly spaced between), every sample concurrently.
The row's port counts as open when any sample completes a handshake; otherwise it is ``blocked``
when any sample timed out (dropped) and ``refused`` when every one was reset.
"""

from __future__ import annotations

import asyncio

from simulator.probes.base import Outcome, Phase, Verdict, classify
from simulator.probes.net import Steps, close, local_addr
from simulator.probes.spec import ProbeSpec

SAMPLES_BETWEEN = 3


def sample_ports(low: int, high: int | None, between: int = SAMPLES_BETWEEN) -> list[int]:
    """First, last and ``between`` evenly spaced ports of ``low-high`` (deterministic)."""
    if high is None or high <= low:
        return [low]
    step = (high - low) / (between + 1)
    ports = [low, *(low + round(step * i) for i in range(1, between + 1)), high]
    return sorted(dict.fromkeys(ports))


async def _connect_one(spec: ProbeSpec, port: int, steps: Steps) -> tuple[int, Verdict, str]:
    try:
        _reader, writer = await steps.run(
            f"connect:{port}",
            Phase.CONNECT,
            asyncio.open_connection(spec.address, port, local_addr=local_addr(spec)),
        )
    except (OSError, TimeoutError) as exc:
        c = classify(exc, Phase.CONNECT, spec.timeout)
        return port, c.verdict, c.reason
    await close(writer)
    return port, Verdict.PASSED, "TCP handshake completed"


async def probe_tcp_connect(spec: ProbeSpec) -> Outcome:
    steps = Steps(spec.timeout)
    ports = sample_ports(spec.port, spec.port_high)
    results = await asyncio.gather(*(_connect_one(spec, p, steps) for p in ports))
    details = {"ports": {str(p): v.value for p, v, _ in results}}
    opened = [p for p, v, _ in results if v is Verdict.PASSED]
    if opened:
        which = ", ".join(map(str, opened))
        return Outcome(
            Verdict.PASSED,
            f"TCP handshake completed on port {which} of {len(ports)} sampled",
            details,
            steps.timings,
        )
    errors = [(p, r) for p, v, r in results if v is Verdict.ERROR]
    if errors:
        return Outcome(Verdict.ERROR, errors[0][1], details, steps.timings)
    dropped = [p for p, v, _ in results if v is Verdict.BLOCKED]
    if dropped:
        return Outcome(
            Verdict.BLOCKED,
            f"no answer within {spec.timeout:g} s: dropped "
            f"({len(dropped)} of {len(ports)} sampled ports)",
            details,
            steps.timings,
        )
    reason = next(r for _, _, r in results)
    sampled = f" on all {len(ports)} sampled ports" if len(ports) > 1 else ""
    return Outcome(Verdict.REFUSED, reason + sampled, details, steps.timings)
