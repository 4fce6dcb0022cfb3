"""TURN probes: Allocate with long-term credentials (:rfc:`8656#section-7`) over UDP, TCP or
TLS, a relayed UDP round trip, and an RFC 6062 TCP relay connection to a peer.

* ``turn-tcp`` / ``turn-tls``: Allocate over a TCP / TLS control connection, then free it.
* ``turn-relay-udp``: Allocate over UDP, CreatePermission, a Send indication to the peer and
  the peer's echo back in a Data indication.
* ``relay-tcp-egress``: Allocate with REQUESTED-TRANSPORT TCP, Connect to the peer
  (:rfc:`6062#section-4.3`), ConnectionBind on a second connection and an echo over it. A server
  without RFC 6062 answers 442 and the row is ``protocol-failed`` saying so.

Without credentials a 401 carrying REALM and NONCE is enough to show a TURN server answers.

Rows whose protocol names ``MSTURN`` are probed in [MS-TURN], as a Lync client speaks to a Lync
A/V Edge (which ignores RFC TURN): the Magic Cookie attribute, 16-byte transaction ids, Send
requests; over TCP the pseudo-TLS exchange ([MS-TURN] section 2.1.1) instead of TLS. The
outcome's ``dialect`` detail says which dialect answered.
The client is the media package's (:class:`simulator.media.aio.AsyncTurnClient`).
"""

from __future__ import annotations

import asyncio
import secrets
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from simulator.errors import EdgesimError
from simulator.media.actions import Address
from simulator.media.aio import AsyncTurnClient
from simulator.media.auth import LongTermCredentials, MsTurnCredentials, parse_time_limited
from simulator.media.client import ClientConfig
from simulator.media.dialect import RFC
from simulator.media.errors import NotStunError, RemoteProtocolError, RequestRefused
from simulator.media.events import PeerDataReceived
from simulator.media.msturn import MS_TURN
from simulator.probes.base import Outcome, Phase, Verdict, describe_bytes
from simulator.probes.net import Steps, intercepted, tls_context, tls_facts
from simulator.probes.spec import ProbeSpec
from simulator.probes.stun import not_stun, udp_config

PAYLOAD = b"edgesim relay probe "
SEND_INTERVAL = 0.3
"""Seconds between Send indications of the relayed round trip (UDP: one may be lost)."""


def ms_turn(spec: ProbeSpec) -> bool:
    """The row names MSTURN: probe as a Lync client, in [MS-TURN] (over TCP with the pseudo-TLS
    exchange of its section 2.1.1, as Lync clients open TCP 443)."""
    return spec.extra.get("dialect") == "ms-turn"


def _credentials(spec: ProbeSpec) -> LongTermCredentials | None:
    if spec.turn is None:
        return None
    if ms_turn(spec):
        username, password = spec.turn.username, spec.turn.password
        if parse_time_limited(username) is not None:
            return MsTurnCredentials.from_mras(username, password)
        return MsTurnCredentials(username, password.encode(), spec.turn.realm)
    return LongTermCredentials(spec.turn.username, spec.turn.password, spec.turn.realm)


def _dialect(spec: ProbeSpec) -> str:
    """Which dialect the probe spoke (and so which one answered): ``MS-TURN`` or ``TURN``."""
    return "MS-TURN" if ms_turn(spec) else "TURN"


def refusal(exc: RequestRefused, spec: ProbeSpec) -> str:
    """What a refusal means for the probe: wrong credentials, none to send, or the error."""
    text = f"{exc.code} {exc.reason}".strip()
    if exc.code == 401 and exc.authenticated:
        return f"{exc.method} refused our credentials: {text}"
    if exc.code in (401, 438) and spec.turn is None:
        return f"{text} (realm {exc.realm!r}; no credentials to go further)"
    return str(exc)


async def _open(steps: Steps, spec: ProbeSpec, transport: str) -> AsyncTurnClient:
    """The client's connection: UDP, or TCP then (for ``tls``) the handshake, each a step."""
    creds = _credentials(spec)
    server = (spec.address, spec.port)
    dialect = MS_TURN if ms_turn(spec) else RFC
    if transport == "udp":
        return await AsyncTurnClient.open(
            server,
            "udp",
            credentials=creds,
            local_address=spec.bind,
            config=udp_config(spec),
            dialect=dialect,
        )
    client = await steps.run(
        "connect",
        Phase.CONNECT,
        AsyncTurnClient.open(
            server,
            "tcp",
            credentials=creds,
            local_address=spec.bind,
            config=ClientConfig(stream=True, timeout=spec.timeout),
            dialect=dialect,
            pseudo_tls=dialect is MS_TURN,
        ),
    )
    if transport == "tls" and dialect is RFC:
        try:
            await steps.run(
                "tls",
                Phase.TLS,
                client.start_tls(tls_context(spec, mtls=False), spec.fqdn or spec.address),
            )
        except BaseException:
            await client.close()
            raise
    return client


def _relayed(client: AsyncTurnClient) -> str:
    relayed = client.relayed
    return f"{relayed[0]}:{relayed[1]}" if relayed else "?"


def _failure(exc: BaseException, steps: Steps, spec: ProbeSpec, details: dict[str, Any]) -> Outcome:
    if isinstance(exc, RequestRefused):
        return Outcome(Verdict.PROTOCOL_FAILED, refusal(exc, spec), details, steps.timings)
    if isinstance(exc, NotStunError) and "pseudo-TLS" in str(exc):
        return Outcome(Verdict.PROTOCOL_FAILED, str(exc), details, steps.timings)
    if isinstance(exc, NotStunError):
        return Outcome(Verdict.PROTOCOL_FAILED, not_stun(exc), details, steps.timings)
    if isinstance(exc, RemoteProtocolError):
        return Outcome(Verdict.PROTOCOL_FAILED, str(exc), details, steps.timings)
    if isinstance(exc, EdgesimError):
        return Outcome(Verdict.ERROR, str(exc), details, steps.timings)
    if isinstance(exc, ConnectionRefusedError) and details.get("transport") == "udp":
        return Outcome(Verdict.REFUSED, "ICMP port unreachable", details, steps.timings)
    outcome = Outcome.from_error(exc, steps.phase, spec.timeout, **details)
    outcome.timings = steps.timings
    return outcome


PROBE_ERRORS = (
    RemoteProtocolError,
    RequestRefused,
    EdgesimError,
    OSError,
    TimeoutError,
    EOFError,
    ssl.SSLError,
)

STREAM_KINDS = ("turn-tls", "turn-tcp")
"""Probes over a TCP stream (TLS, or with the [MS-TURN] pseudo-TLS exchange on MSTURN rows)."""

Body = Callable[[Steps, list[AsyncTurnClient]], Awaitable[Outcome]]


async def _run(spec: ProbeSpec, details: dict[str, Any], body: Body) -> Outcome:
    """Run a probe's ``body`` against the deadline: its errors become verdicts, and the
    clients it opened (it appends them to the list) are closed."""
    steps = Steps(spec.timeout)
    clients: list[AsyncTurnClient] = []
    try:
        return await body(steps, clients)
    except PROBE_ERRORS as exc:
        outcome = _failure(exc, steps, spec, details)
        tls_like = spec.kind == "turn-tls" or (spec.kind in STREAM_KINDS and ms_turn(spec))
        if tls_like and not isinstance(exc, RequestRefused):
            # TLS or pseudo-TLS to the server broke: was the path re-signed on the way?
            return await intercepted(outcome, spec, steps)
        return outcome
    finally:
        for client in clients:
            await client.close()


async def probe_turn_stream(spec: ProbeSpec, *, tls: bool) -> Outcome:
    details: dict[str, Any] = {"transport": "tls" if tls else "tcp", "dialect": _dialect(spec)}
    if ms_turn(spec):
        details["transport"] = "tcp (pseudo-TLS)"

    async def body(steps: Steps, clients: list[AsyncTurnClient]) -> Outcome:
        client = await _open(steps, spec, "tls" if tls else "tcp")
        clients.append(client)
        if not ms_turn(spec):
            details.update(tls_facts(client))
        try:
            await steps.run("allocate", Phase.PROTOCOL, client.allocate())
        except RequestRefused as exc:
            if spec.turn is None and exc.code == 401:
                reason = f"{_dialect(spec)} server answered {refusal(exc, spec)}"
                return Outcome(Verdict.PASSED, reason, details, steps.timings)
            raise
        details["relayed"] = _relayed(client)
        await client.release(timeout=0.5)
        reason = f"{_dialect(spec)} Allocate success, relayed address {details['relayed']}"
        return Outcome(Verdict.PASSED, reason, details, steps.timings)

    return await _run(spec, details, body)


async def probe_turn_tcp(spec: ProbeSpec) -> Outcome:
    return await probe_turn_stream(spec, tls=False)


async def probe_turn_tls(spec: ProbeSpec) -> Outcome:
    return await probe_turn_stream(spec, tls=True)


async def _echo(client: AsyncTurnClient, peer: Address, payload: bytes) -> bytes:
    """Send indications to ``peer`` until its echo comes back in a Data indication."""
    loop = asyncio.get_running_loop()
    for _ in range(10):
        client.send_indication(peer, payload)
        until = loop.time() + SEND_INTERVAL
        while (left := until - loop.time()) > 0:
            got = await client.receive(left)
            if isinstance(got, PeerDataReceived) and got.data == payload:
                return payload
    raise TimeoutError


async def probe_turn_relay_udp(spec: ProbeSpec) -> Outcome:
    details: dict[str, Any] = {"transport": "udp", "dialect": _dialect(spec)}
    if spec.peer is None:
        return Outcome(Verdict.ERROR, "no peer to relay to (the destination has no media port)")
    peer = spec.peer
    details["peer"] = f"{peer[0]}:{peer[1]}"

    async def body(steps: Steps, clients: list[AsyncTurnClient]) -> Outcome:
        client = await _open(steps, spec, "udp")
        clients.append(client)
        await steps.run("allocate", Phase.CONNECT, client.allocate())
        details["relayed"] = _relayed(client)
        await steps.run("permission", Phase.CONNECT, client.create_permission(peer))
        payload = PAYLOAD + secrets.token_hex(4).encode()
        try:
            await steps.run("round-trip", Phase.PROTOCOL, _echo(client, peer, payload))
        except TimeoutError:
            verdict = Verdict.BLOCKED
            reason = (
                f"relay allocated ({details['relayed']}) but no echo from the peer "
                f"{details['peer']} within {spec.timeout:g} s: dropped between relay and peer"
            )
        else:
            verdict = Verdict.PASSED
            reason = f"relayed round trip {details['relayed']} <-> {details['peer']}"
        await client.release(timeout=0.5)
        return Outcome(verdict, reason, details, steps.timings)

    return await _run(spec, details, body)


async def probe_relay_tcp_egress(spec: ProbeSpec) -> Outcome:
    details: dict[str, Any] = {"transport": "tcp"}
    if spec.peer is None:
        return Outcome(
            Verdict.ERROR, "no peer to connect to (the destination has no TCP media port)"
        )
    peer = spec.peer
    details["peer"] = f"{peer[0]}:{peer[1]}"

    async def body(steps: Steps, clients: list[AsyncTurnClient]) -> Outcome:
        control = await _open(steps, spec, "tcp")
        clients.append(control)
        try:
            await steps.run("allocate", Phase.PROTOCOL, control.allocate("tcp"))
        except RequestRefused as exc:
            if exc.code in (400, 420, 442):
                return Outcome(
                    Verdict.PROTOCOL_FAILED,
                    f"the TURN server lacks RFC 6062 TCP relays: {refusal(exc, spec)}",
                    details,
                    steps.timings,
                )
            raise
        details["relayed"] = _relayed(control)
        # A permission for the peer first, as RFC 6062 clients do: servers that enforce
        # permissions on Connect answer 403 without one (ours does, as RFC 8656 section 9
        # implies).
        await steps.run("permission", Phase.PROTOCOL, control.create_permission(peer))
        try:
            connection = await steps.run("connect-peer", Phase.PROTOCOL, control.connect(peer))
        except TimeoutError:
            return Outcome(
                Verdict.BLOCKED,
                f"TCP relay allocated ({details['relayed']}) but Connect to {details['peer']} "
                f"got no answer within {spec.timeout:g} s",
                details,
                steps.timings,
            )
        except RequestRefused as exc:
            verdict = {447: Verdict.BLOCKED, 446: Verdict.REFUSED}.get(
                exc.code, Verdict.PROTOCOL_FAILED
            )
            return Outcome(
                verdict,
                f"Connect to {details['peer']} from the relay failed: {exc.code} {exc.reason}",
                details,
                steps.timings,
            )
        # ConnectionBind on a new data connection (RFC 6062 section 4.4), then echo through it.
        try:
            data = await steps.run("bind", Phase.PROTOCOL, control.connection_bind(connection))
        except RequestRefused as exc:
            return Outcome(
                Verdict.PROTOCOL_FAILED,
                f"ConnectionBind failed: {exc.code} {exc.reason}",
                details,
                steps.timings,
            )
        clients.append(data)
        payload = PAYLOAD + secrets.token_hex(4).encode()
        data.send_raw(payload)
        echoed = await steps.run(
            "round-trip", Phase.PROTOCOL, data.receive_raw(len(payload), spec.timeout)
        )
        if echoed != payload:
            return Outcome(
                Verdict.PROTOCOL_FAILED,
                f"the peer answered {describe_bytes(echoed)}",
                details,
                steps.timings,
            )
        return Outcome(
            Verdict.PASSED,
            f"relay {details['relayed']} connected out to {details['peer']} (RFC 6062), "
            "echo received",
            details,
            steps.timings,
        )

    return await _run(spec, details, body)
