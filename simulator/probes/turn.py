"""TURN probes: Allocate with long-term credentials (:rfc:`5766#section-6`) over UDP, TCP or
TLS, a relayed UDP round trip, and an RFC 6062 TCP relay connection to a peer.

* ``turn-tcp`` / ``turn-tls``: Allocate over a TCP / TLS control connection, then free it.
* ``turn-relay-udp``: Allocate over UDP, CreatePermission, a Send indication to the peer and
  the peer's echo back in a Data indication.
* ``relay-tcp-egress``: Allocate with REQUESTED-TRANSPORT TCP, Connect to the peer
  (:rfc:`6062#section-4.3`), ConnectionBind on a second connection and an echo over it. A server
  without RFC 6062 answers 442 and the row is ``protocol-failed`` saying so.

Without credentials a 401 carrying REALM and NONCE is enough to show a TURN server answers.
The STUN codec is ``aioice.stun``; Connect and ConnectionBind (methods it does not know) are
encoded here.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import secrets
import ssl
import struct
from typing import Any

from aioice import stun

from simulator.errors import EdgesimError
from simulator.probes.base import Outcome, Phase, Verdict, describe_bytes
from simulator.probes.net import Steps, close, local_addr, tls_context, tls_facts
from simulator.probes.spec import ProbeSpec, TurnCredentials
from simulator.probes.stun import open_udp, parse, transact

UDP = 17 << 24
TCP = 6 << 24
PAYLOAD = b"edgesim relay probe "

CONNECT = 0x000A
CONNECTION_BIND = 0x000B
CONNECTION_ID = 0x002A
SUCCESS = 0x0100
ERROR = 0x0110


class TurnError(Exception):
    """The TURN server answered with an error (or something else than TURN)."""

    def __init__(self, reason: str, code: int | None = None) -> None:
        super().__init__(reason)
        self.code = code


def long_term_key(creds: TurnCredentials, realm: str) -> bytes:
    """MD5(username:realm:password), :rfc:`5389#section-15.4`."""
    return hashlib.md5(f"{creds.username}:{realm}:{creds.password}".encode()).digest()


def _error_text(message: stun.Message) -> tuple[int, str]:
    code, reason = message.attributes.get("ERROR-CODE", (0, "no ERROR-CODE"))
    return int(code), f"{code} {reason}"


# ------------------------------------------------------------------ stream transport


async def read_stun_stream(reader: asyncio.StreamReader) -> bytes:
    """One STUN message from a TCP/TLS stream (framed by the header's length)."""
    header = await reader.readexactly(20)
    if header[0] & 0xC0 or header[4:8] != struct.pack("!I", stun.COOKIE):
        rest = b""
        with contextlib.suppress(TimeoutError, OSError):
            rest = await asyncio.wait_for(reader.read(200), 0.05)
        raise TurnError(f"answered {describe_bytes(header + rest)}: not STUN")
    (length,) = struct.unpack("!H", header[2:4])
    return header + await reader.readexactly(length)


class _Stream:
    def __init__(
        self, steps: Steps, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.steps, self.reader, self.writer = steps, reader, writer

    async def request(self, message: stun.Message, name: str) -> stun.Message:
        self.writer.write(bytes(message))

        async def answer() -> stun.Message:
            for _ in range(20):
                data = await read_stun_stream(self.reader)
                got = parse(data)
                if got.transaction_id == message.transaction_id:
                    return got
            raise TurnError("no answer to our transaction among 20 messages")

        return await self.steps.run(name, Phase.PROTOCOL, answer())


class _Datagram:
    def __init__(self, steps: Steps, transport: asyncio.DatagramTransport, protocol: Any) -> None:
        self.steps, self.transport, self.protocol = steps, transport, protocol

    async def request(self, message: stun.Message, name: str) -> stun.Message:
        return await transact(self.steps, self.transport, self.protocol, message, name)


Channel = _Stream | _Datagram


class Session:
    """Long-term credential state shared by the requests of one allocation."""

    def __init__(self, channel: Channel, creds: TurnCredentials | None) -> None:
        self.channel = channel
        self.creds = creds
        self.realm: str | None = creds.realm if creds else None
        self.nonce: bytes | None = None
        self.key: bytes | None = None

    def _sign(self, message: stun.Message) -> None:
        if self.creds and self.realm and self.nonce is not None and self.key:
            message.attributes["USERNAME"] = self.creds.username
            message.attributes["REALM"] = self.realm
            message.attributes["NONCE"] = self.nonce
            message.add_message_integrity(self.key)

    async def request(
        self, method: stun.Method, attributes: dict[str, Any], name: str
    ) -> stun.Message:
        """Send with credentials, answering one 401/438 challenge (RFC 5389 §10.2)."""
        for _attempt in range(3):
            message = stun.Message(method, stun.Class.REQUEST, attributes=dict(attributes))
            self._sign(message)
            response = await self.channel.request(message, name)
            if response.message_class is stun.Class.RESPONSE:
                return response
            code, text = _error_text(response)
            if code in (401, 438) and "NONCE" in response.attributes:
                if code == 401 and self.key is not None and self.nonce is not None and _attempt > 0:
                    raise TurnError(f"{method.name} refused our credentials: {text}", code)
                self.nonce = response.attributes["NONCE"]
                self.realm = response.attributes.get("REALM", self.realm)
                if self.creds is None:
                    raise TurnError(
                        f"{text} (realm {self.realm!r}; no credentials to go further)", code
                    )
                assert self.realm is not None
                self.key = long_term_key(self.creds, self.realm)
                continue
            raise TurnError(f"{method.name} answered {text}", code)
        raise TurnError(f"{method.name}: the server keeps challenging our credentials", 401)


# ------------------------------------------------------------------ RFC 6062 messages


def raw_request(
    method: int, tid: bytes, attrs: list[tuple[int, bytes]], key: bytes | None
) -> bytes:
    """Encode a STUN request aioice cannot (Connect, ConnectionBind), with MESSAGE-INTEGRITY."""
    body = b"".join(
        struct.pack("!HH", t, len(v)) + v + bytes(stun.padding_length(len(v))) for t, v in attrs
    )
    if key is not None:
        header = struct.pack("!HHI12s", method, len(body) + 24, stun.COOKIE, tid)
        mac = hmac.new(key, header + body, "sha1").digest()
        body += struct.pack("!HH", 0x0008, 20) + mac
    return struct.pack("!HHI12s", method, len(body), stun.COOKIE, tid) + body


def raw_parse(data: bytes) -> tuple[int, bytes, dict[int, bytes]]:
    """(message type, transaction id, attributes by type) of a STUN message."""
    if len(data) < 20:
        raise TurnError(f"answered {describe_bytes(data)}: not STUN")
    mtype, length, _cookie, tid = struct.unpack("!HHI12s", data[:20])
    attrs: dict[int, bytes] = {}
    pos, end = 20, min(len(data), 20 + length)
    while pos + 4 <= end:
        atype, alen = struct.unpack("!HH", data[pos : pos + 4])
        attrs.setdefault(atype, data[pos + 4 : pos + 4 + alen])
        pos += 4 + alen + stun.padding_length(alen)
    return mtype, tid, attrs


def raw_error(attrs: dict[int, bytes]) -> str:
    value = attrs.get(0x0009)
    if not value or len(value) < 4:
        return "an error without ERROR-CODE"
    return f"{value[2] * 100 + value[3]} {value[4:].decode('utf-8', 'replace')}"


def _auth_attrs(session: Session) -> list[tuple[int, bytes]]:
    if not (session.creds and session.realm and session.nonce is not None):
        return []
    return [
        (0x0006, session.creds.username.encode()),
        (0x0014, session.realm.encode()),
        (0x0015, session.nonce),
    ]


# ------------------------------------------------------------------ probes


async def _open_stream(
    steps: Steps, spec: ProbeSpec, tls: bool
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await steps.run(
        "connect",
        Phase.CONNECT,
        asyncio.open_connection(spec.address, spec.port, local_addr=local_addr(spec)),
    )
    if tls:
        await steps.run(
            "tls",
            Phase.TLS,
            writer.start_tls(
                tls_context(spec, mtls=False), server_hostname=spec.fqdn or spec.address
            ),
        )
    return reader, writer


def _relayed(response: stun.Message) -> str:
    relayed = response.attributes.get("XOR-RELAYED-ADDRESS")
    return f"{relayed[0]}:{relayed[1]}" if relayed else "?"


async def _free(session: Session) -> None:
    with contextlib.suppress(TurnError, OSError, TimeoutError, ValueError):
        await asyncio.wait_for(
            session.request(stun.Method.REFRESH, {"LIFETIME": 0}, "refresh"), 0.5
        )


def _failure(exc: BaseException, steps: Steps, spec: ProbeSpec, details: dict[str, Any]) -> Outcome:
    if isinstance(exc, TurnError):
        return Outcome(Verdict.PROTOCOL_FAILED, str(exc), details, steps.timings)
    if isinstance(exc, ValueError) and not isinstance(exc, ssl.SSLError):
        return Outcome(Verdict.PROTOCOL_FAILED, str(exc), details, steps.timings)
    if isinstance(exc, EdgesimError):
        return Outcome(Verdict.ERROR, str(exc), details, steps.timings)
    if isinstance(exc, asyncio.IncompleteReadError):
        exc = EOFError()
    if isinstance(exc, ConnectionRefusedError) and details.get("transport") == "udp":
        return Outcome(Verdict.REFUSED, "ICMP port unreachable", details, steps.timings)
    outcome = Outcome.from_error(exc, steps.phase, spec.timeout, **details)
    outcome.timings = steps.timings
    return outcome


async def probe_turn_stream(spec: ProbeSpec, *, tls: bool) -> Outcome:
    steps = Steps(spec.timeout)
    details: dict[str, Any] = {"transport": "tls" if tls else "tcp"}
    writer = None
    try:
        reader, writer = await _open_stream(steps, spec, tls)
        details.update(tls_facts(writer))
        session = Session(_Stream(steps, reader, writer), spec.turn)
        try:
            response = await session.request(
                stun.Method.ALLOCATE, {"REQUESTED-TRANSPORT": UDP}, "allocate"
            )
        except TurnError as exc:
            if spec.turn is None and exc.code == 401:
                return Outcome(
                    Verdict.PASSED, f"TURN server answered {exc}", details, steps.timings
                )
            raise
        details["relayed"] = _relayed(response)
        await _free(session)
        return Outcome(
            Verdict.PASSED,
            f"TURN Allocate success, relayed address {details['relayed']}",
            details,
            steps.timings,
        )
    except (
        TurnError,
        ValueError,
        EdgesimError,
        OSError,
        TimeoutError,
        EOFError,
        ssl.SSLError,
    ) as exc:
        return _failure(exc, steps, spec, details)
    finally:
        if writer is not None:
            await close(writer)


async def probe_turn_tcp(spec: ProbeSpec) -> Outcome:
    return await probe_turn_stream(spec, tls=False)


async def probe_turn_tls(spec: ProbeSpec) -> Outcome:
    return await probe_turn_stream(spec, tls=True)


async def probe_turn_relay_udp(spec: ProbeSpec) -> Outcome:
    steps = Steps(spec.timeout)
    details: dict[str, Any] = {"transport": "udp"}
    if spec.peer is None:
        return Outcome(Verdict.ERROR, "no peer to relay to (the destination has no media port)")
    details["peer"] = f"{spec.peer[0]}:{spec.peer[1]}"
    transport = None
    try:
        transport, protocol = await open_udp(spec, spec.address, spec.port)
        session = Session(_Datagram(steps, transport, protocol), spec.turn)
        response = await session.request(
            stun.Method.ALLOCATE, {"REQUESTED-TRANSPORT": UDP}, "allocate"
        )
        details["relayed"] = _relayed(response)
        await session.request(
            stun.Method.CREATE_PERMISSION, {"XOR-PEER-ADDRESS": spec.peer}, "permission"
        )
        payload = PAYLOAD + secrets.token_hex(4).encode()
        send = stun.Message(
            stun.Method.SEND,
            stun.Class.INDICATION,
            attributes={"XOR-PEER-ADDRESS": spec.peer, "DATA": payload},
        )

        async def echo() -> bytes:
            loop = asyncio.get_running_loop()
            for _ in range(10):
                transport.sendto(bytes(send))
                until = loop.time() + 0.3
                while (left := until - loop.time()) > 0:
                    try:
                        got = await asyncio.wait_for(protocol.queue.get(), left)
                    except TimeoutError:
                        break
                    if isinstance(got, Exception):
                        raise got
                    message = parse(got)
                    if (
                        message.message_method is stun.Method.DATA
                        and message.attributes.get("DATA") == payload
                    ):
                        return payload
            raise TimeoutError

        try:
            await steps.run("round-trip", Phase.PROTOCOL, echo())
        except TimeoutError:
            await _free(session)
            return Outcome(
                Verdict.BLOCKED,
                f"relay allocated ({details['relayed']}) but no echo from the peer "
                f"{details['peer']} within {spec.timeout:g} s: dropped between relay and peer",
                details,
                steps.timings,
            )
        await _free(session)
        return Outcome(
            Verdict.PASSED,
            f"relayed round trip {details['relayed']} <-> {details['peer']}",
            details,
            steps.timings,
        )
    except (TurnError, ValueError, EdgesimError, OSError, TimeoutError, EOFError) as exc:
        return _failure(exc, steps, spec, details)
    finally:
        if transport is not None:
            transport.close()


async def probe_relay_tcp_egress(spec: ProbeSpec) -> Outcome:
    steps = Steps(spec.timeout)
    details: dict[str, Any] = {"transport": "tcp"}
    if spec.peer is None:
        return Outcome(
            Verdict.ERROR, "no peer to connect to (the destination has no TCP media port)"
        )
    details["peer"] = f"{spec.peer[0]}:{spec.peer[1]}"
    writers: list[asyncio.StreamWriter] = []
    try:
        reader, writer = await _open_stream(steps, spec, tls=False)
        writers.append(writer)
        session = Session(_Stream(steps, reader, writer), spec.turn)
        try:
            response = await session.request(
                stun.Method.ALLOCATE, {"REQUESTED-TRANSPORT": TCP}, "allocate"
            )
        except TurnError as exc:
            if exc.code in (400, 420, 442):
                return Outcome(
                    Verdict.PROTOCOL_FAILED,
                    f"the TURN server lacks RFC 6062 TCP relays: {exc}",
                    details,
                    steps.timings,
                )
            raise
        details["relayed"] = _relayed(response)
        # A permission for the peer first, as RFC 6062 clients do: servers that enforce
        # permissions on Connect answer 403 without one (ours does, as RFC 8656 §9 implies).
        await session.request(
            stun.Method.CREATE_PERMISSION, {"XOR-PEER-ADDRESS": spec.peer}, "permission"
        )
        # Connect (RFC 6062 §4.3) on the control connection.
        tid = secrets.token_bytes(12)
        peer_attr = stun.pack_xor_address(spec.peer, tid)
        writer.write(
            raw_request(CONNECT, tid, [(0x0012, peer_attr), *_auth_attrs(session)], session.key)
        )

        async def answer(r: asyncio.StreamReader, tid: bytes) -> tuple[int, dict[int, bytes]]:
            for _ in range(20):
                mtype, got_tid, attrs = raw_parse(await read_stun_stream(r))
                if got_tid == tid:
                    return mtype, attrs
            raise TurnError("no answer to our transaction among 20 messages")

        try:
            mtype, attrs = await steps.run("connect-peer", Phase.PROTOCOL, answer(reader, tid))
        except TimeoutError:
            return Outcome(
                Verdict.BLOCKED,
                f"TCP relay allocated ({details['relayed']}) but Connect to {details['peer']} "
                f"got no answer within {spec.timeout:g} s",
                details,
                steps.timings,
            )
        if mtype == CONNECT | ERROR:
            text = raw_error(attrs)
            verdict = Verdict.BLOCKED if text.startswith("447") else Verdict.PROTOCOL_FAILED
            if text.startswith("446"):
                verdict = Verdict.REFUSED
            return Outcome(
                verdict,
                f"Connect to {details['peer']} from the relay failed: {text}",
                details,
                steps.timings,
            )
        if mtype != CONNECT | SUCCESS or CONNECTION_ID not in attrs:
            return Outcome(
                Verdict.PROTOCOL_FAILED,
                f"Connect answered message type 0x{mtype:04x}",
                details,
                steps.timings,
            )
        # ConnectionBind on a new data connection (RFC 6062 §4.4), then echo through it.
        data_reader, data_writer = await _open_stream(steps, spec, tls=False)
        writers.append(data_writer)
        tid = secrets.token_bytes(12)
        data_writer.write(
            raw_request(
                CONNECTION_BIND,
                tid,
                [(CONNECTION_ID, attrs[CONNECTION_ID]), *_auth_attrs(session)],
                session.key,
            )
        )
        mtype, battrs = await steps.run("bind", Phase.PROTOCOL, answer(data_reader, tid))
        if mtype != CONNECTION_BIND | SUCCESS:
            return Outcome(
                Verdict.PROTOCOL_FAILED,
                f"ConnectionBind failed: {raw_error(battrs)}",
                details,
                steps.timings,
            )
        payload = PAYLOAD + secrets.token_hex(4).encode()
        data_writer.write(payload)
        echoed = await steps.run(
            "round-trip", Phase.PROTOCOL, data_reader.readexactly(len(payload))
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
    except (TurnError, ValueError, EdgesimError, OSError, TimeoutError, EOFError) as exc:
        return _failure(exc, steps, spec, details)
    finally:
        for w in writers:
            await close(w)
