"""Connection helpers shared by the probes: bound sockets, a deadline, timed phases."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable
from typing import Any, Protocol, TypeVar

from simulator.probes.base import Outcome, Phase, Verdict
from simulator.probes.spec import ProbeSpec
from simulator.tls import TlsProblem, client_context, interception

T = TypeVar("T")


class Steps:
    """Runs a probe's steps against one deadline, recording each step's duration and phase."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.loop = asyncio.get_running_loop()
        self.deadline = self.loop.time() + timeout
        self.phase = Phase.CONNECT
        self.timings: dict[str, float] = {}

    async def run(self, name: str, phase: Phase, aw: Awaitable[T]) -> T:
        self.phase = phase
        started = time.perf_counter()
        try:
            async with asyncio.timeout_at(self.deadline):
                return await aw
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - started

    def remaining(self) -> float:
        return max(0.0, self.deadline - self.loop.time())


def local_addr(spec: ProbeSpec) -> tuple[str, int] | None:
    return (spec.bind, 0) if spec.bind else None


async def open_tcp(
    steps: Steps, spec: ProbeSpec, port: int | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await steps.run(
        "connect",
        Phase.CONNECT,
        asyncio.open_connection(spec.address, port or spec.port, local_addr=local_addr(spec)),
    )


def tls_context(spec: ProbeSpec, *, mtls: bool) -> ssl.SSLContext:
    ctx = client_context(
        spec.trust, cert=spec.client_cert if mtls else None, check_hostname=spec.fqdn is not None
    )
    if not spec.trust:
        ctx.load_default_certs()  # a real deployment without a CA bundle: the system's CAs
    return ctx


async def start_tls(
    steps: Steps, writer: asyncio.StreamWriter, ctx: ssl.SSLContext, spec: ProbeSpec
) -> None:
    await steps.run(
        "tls",
        Phase.TLS,
        writer.start_tls(ctx, server_hostname=spec.fqdn or spec.address),
    )


class _HasExtraInfo(Protocol):
    def get_extra_info(self, name: str, default: Any = None) -> Any: ...


def tls_facts(writer: _HasExtraInfo) -> dict[str, str]:
    obj = writer.get_extra_info("ssl_object")
    if obj is None:
        return {}
    facts = {"tls_version": str(obj.version())}
    cert = obj.getpeercert()
    if cert:
        subject = dict(x[0] for x in cert.get("subject", ()))
        issuer = dict(x[0] for x in cert.get("issuer", ()))
        facts["server_cert"] = str(subject.get("commonName", ""))
        facts["server_issuer"] = str(issuer.get("commonName", ""))
    return facts


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        async with asyncio.timeout(0.5):
            await writer.wait_closed()
    except (OSError, TimeoutError, ssl.SSLError):
        pass


def closed_after_tls13_handshake(
    outcome: Outcome, exc: BaseException, steps: Steps, *, mtls: bool
) -> Outcome:
    """In TLS 1.3 the server checks our certificate after *our* handshake is done.

    A server that refuses it without sending an alert (asyncio's TLS servers do that: they close
    without flushing the alert) looks like a close right after the handshake, with no answer.
    """
    if (
        mtls
        and steps.phase is Phase.PROTOCOL
        and isinstance(exc, (EOFError, ConnectionResetError))
        and outcome.details.get("tls_version") == "TLSv1.3"
    ):
        return Outcome(
            Verdict.TLS_FAILED,
            f"TLS failed: {TlsProblem.CLIENT_CERT_REJECTED.value} (the peer closed the connection"
            " right after the TLS 1.3 handshake, without an alert or an answer)",
            outcome.details,
            outcome.timings,
            TlsProblem.CLIENT_CERT_REJECTED,
        )
    return outcome


def stream_failure(
    exc: BaseException, steps: Steps, timeout: float, *, mtls: bool, details: dict[str, Any]
) -> Outcome:
    """The verdict for a TCP/TLS stream probe that failed with ``exc`` in ``steps.phase``."""
    outcome = Outcome.from_error(exc, steps.phase, timeout, mtls=mtls, **details)
    outcome.timings = steps.timings
    return closed_after_tls13_handshake(outcome, exc, steps, mtls=mtls)


INTERCEPTION_CHECK = 1.5
"""Seconds the interception check may take at least (a TLS handshake on the same path)."""


async def intercepted(outcome: Outcome, spec: ProbeSpec, steps: Steps) -> Outcome:
    """A TLS path to a lab destination failed: when the certificate presented on it comes from
    no CA of the lab, a TLS-inspecting middlebox re-signed it, and the verdict says so (what the
    probe itself saw follows). Otherwise ``outcome`` as it was."""
    if not spec.lab_cas or outcome.verdict is Verdict.PASSED:
        return outcome
    found = await interception(
        spec.address,
        spec.port,
        spec.lab_cas,
        server_hostname=spec.fqdn,
        local_addr=local_addr(spec),
        timeout=max(steps.remaining(), INTERCEPTION_CHECK),
    )
    if found is None:
        return outcome
    return Outcome(
        Verdict.TLS_FAILED,
        f"TLS failed: {found.describe()} (the probe saw: {outcome.reason})",
        {**outcome.details, "intercepted_by": found.issuer},
        outcome.timings,
        TlsProblem.INTERCEPTED,
    )
