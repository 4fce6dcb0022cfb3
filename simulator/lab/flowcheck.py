"""Plain TCP/UDP reachability across the lab firewalls: echo listeners and flow probes.

This checks what a packet filter decides (does a SYN or a datagram to this address and port, from
that address and port, get through and back?), not what a service answers; the protocol probes
do that. Run inside a namespace or container of the lab:

    python3 -m simulator.lab.flowcheck listen tcp:198.51.100.10:5061 udp:198.51.100.11:3478
    python3 -m simulator.lab.flowcheck probe tcp:198.51.100.10:5061 \\
        udp:203.0.113.50:3478@198.51.100.11:50000

``listen`` binds every address, prints ``ready`` once all are bound and echoes until killed.
``probe`` prints one JSON object per flow: ``{"flow": ..., "ok": bool, "detail": ...}``, all
flows at once, each bounded by ``--timeout`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import os
import select
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from simulator import aioloop
from simulator.errors import LabError, UsageError
from simulator.lab.topology import Topology
from simulator.matrix import Expectation, load_matrix, resolve
from simulator.matrix.model import Endpoint, Matrix, MatrixRow

if TYPE_CHECKING:
    from simulator.lab.runners.base import Runner

TOKEN = b"edgesim-flowcheck"
STUN_COOKIE = bytes.fromhex("2112a442")
STUN_PORTS = {3478}
DNS_PORTS = {53}


def _udp_payload(port: int) -> bytes:
    """What to send over UDP: a datagram the echo listener returns and a lab service answers.

    On the DNS port a query (RFC 1035 4.1) for ``flowcheck.invalid``; on the STUN port a
    Binding request (RFC 8489 6); elsewhere a plain token.
    """
    txid = os.urandom(12)
    if port in DNS_PORTS:
        question = b"\x09flowcheck\x07invalid\x00" + b"\x00\x01\x00\x01"
        return txid[:2] + b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + question
    if port in STUN_PORTS:
        return b"\x00\x01\x00\x00" + STUN_COOKIE + txid
    return TOKEN + txid


def _answers(payload: bytes, reply: bytes) -> bool:
    """Whether ``reply`` is a DNS response or STUN response to ``payload``."""
    if len(payload) == 20 and payload[4:8] == STUN_COOKIE:
        return len(reply) >= 20 and reply[4:20] == payload[4:20] and reply[0] & 0x01 == 0x01
    if len(reply) >= 12 and payload[2:4] == b"\x01\x00":
        return reply[:2] == payload[:2] and reply[2] & 0x80 == 0x80
    return False


@dataclass(frozen=True)
class Flow:
    transport: str
    address: str
    port: int
    source_address: str | None = None
    source_port: int = 0

    @classmethod
    def parse(cls, text: str) -> Flow:
        """``tcp:ADDR:PORT`` or ``udp:ADDR:PORT@SRCADDR:SRCPORT``."""
        main, _, source = text.partition("@")
        transport, address, port = main.split(":")
        if transport not in ("tcp", "udp"):
            raise ValueError(f"bad transport in {text!r}")
        src_addr, src_port = [*source.split(":"), "0"][:2] if source else (None, "0")
        return cls(transport, address, int(port), src_addr or None, int(src_port))

    def __str__(self) -> str:
        text = f"{self.transport}:{self.address}:{self.port}"
        if self.source_address or self.source_port:
            text += f"@{self.source_address or ''}:{self.source_port}"
        return text


# ------------------------------------------------------------------ listeners


class _UdpEcho(asyncio.DatagramProtocol):
    transport: asyncio.DatagramTransport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(b"echo:" + data[:64], addr)


async def _tcp_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        data = await asyncio.wait_for(reader.read(64), 5.0)
        writer.write(b"echo:" + data)
        await writer.drain()
    except (OSError, TimeoutError):
        pass
    finally:
        writer.close()


async def listen(flows: list[Flow], lifetime: float) -> None:
    servers: list[object] = []
    for flow in flows:
        try:
            if flow.transport == "tcp":
                servers.append(
                    await asyncio.start_server(
                        _tcp_echo, flow.address, flow.port, reuse_address=True
                    )
                )
            else:
                transport, _ = await aioloop.udp_endpoint(_UdpEcho, flow.address, flow.port)
                servers.append(transport)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            # A lab service listens there already; the probe knows how to ask it.
            sys.stderr.write(f"flowcheck: {flow} is served by a lab service already\n")
    sys.stdout.write(f"ready {os.getpid()}\n")
    sys.stdout.flush()
    await asyncio.sleep(lifetime)


# ------------------------------------------------------------------ probes


async def probe_one(flow: Flow, timeout: float) -> tuple[bool, str]:
    """Whether the flow gets through and its answer comes back within ``timeout``."""
    loop = asyncio.get_running_loop()
    kind = socket.SOCK_STREAM if flow.transport == "tcp" else socket.SOCK_DGRAM
    sock = socket.socket(socket.AF_INET, kind)
    sock.setblocking(False)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if flow.source_address or flow.source_port:
            sock.bind((flow.source_address or "0.0.0.0", flow.source_port))
        if flow.transport == "tcp":
            # The handshake completing is the verdict: a filter drops the SYN or answers RST.
            await asyncio.wait_for(loop.sock_connect(sock, (flow.address, flow.port)), timeout)
            await loop.sock_sendall(sock, TOKEN)
            try:
                reply = await asyncio.wait_for(loop.sock_recv(sock, 128), timeout)
            except (TimeoutError, OSError):
                reply = b""
            return True, "answered" if reply == b"echo:" + TOKEN else "connected"
        payload = _udp_payload(flow.port)
        sock.connect((flow.address, flow.port))
        reply = b""
        # A few tries: the first datagram may wait for ARP on a fresh link.
        tries = 3
        for attempt in range(tries):
            await loop.sock_sendall(sock, payload)
            try:
                reply = await asyncio.wait_for(loop.sock_recv(sock, 2048), timeout / tries)
                break
            except TimeoutError:
                if attempt == tries - 1:
                    raise
        if reply == b"echo:" + payload:
            return True, "answered"
        if _answers(payload, reply):
            return True, "answered by the lab service"
        return False, f"unexpected answer {reply[:40]!r}"
    except TimeoutError:
        return False, f"no answer within {timeout:g} s (dropped)"
    except OSError as exc:
        if exc.errno:
            return False, os.strerror(exc.errno)
        return False, str(exc)
    finally:
        sock.close()


async def probe(flows: list[Flow], timeout: float) -> list[dict[str, object]]:
    results = await asyncio.gather(*(probe_one(f, timeout) for f in flows))
    return [
        {"flow": str(f), "ok": ok, "detail": detail}
        for f, (ok, detail) in zip(flows, results, strict=True)
    ]


# ------------------------------------------------------------------ flows of the matrix

#: Destination port of rows whose ports are the source's (the relay range as source).
SOURCE_SIDE_DESTINATION_PORT = 40000


@dataclass(frozen=True)
class MatrixFlow:
    """One concrete flow checking a matrix row: from a host's address to another's."""

    row: str
    expect_open: bool
    source_host: str
    destination_host: str
    flow: Flow

    @property
    def listener(self) -> Flow:
        return Flow(self.flow.transport, self.flow.address, self.flow.port)


def _free_port(
    used: set[tuple[str, str, int]], key: tuple[str, str], port: int, low: int, high: int
) -> int:
    """``port`` or the nearest port of ``low..high`` not yet used as a source port by ``key``."""
    for candidate in sorted(range(low, high + 1), key=lambda p: abs(p - port)):
        if (*key, candidate) not in used:
            used.add((*key, candidate))
            return candidate
    raise ValueError(f"no free source port in {low}-{high}")


def sample_ports(low: int, high: int) -> list[int]:
    """The ports a range is tried on: both ends and the middle."""
    return sorted({low, (low + high) // 2, high})


def matrix_flows(
    topology: Topology,
    matrix: Matrix | None = None,
    reserved: Iterable[tuple[str, str, int]] = (),
) -> list[MatrixFlow]:
    """Every row of the matrix as concrete flows (ranges sampled at both ends and the middle).

    Rows that do not resolve in the topology, and pairs within one host, are left out.
    ``reserved``: (transport, address, port) that other flows listen on; a source port of a
    source-side row never takes one of them.
    """
    matrix = matrix if matrix is not None else load_matrix()
    planned: list[tuple[MatrixRow, Endpoint, Endpoint, int]] = []
    # Ports the destinations listen on: a source port must not collide with them.
    used: set[tuple[str, str, int]] = set(reserved)
    for row in matrix.rows:
        resolved = resolve(row, topology)
        if not resolved.resolved:
            continue
        for src in resolved.sources:
            for dst in resolved.destinations:
                if src.host == dst.host:
                    continue
                for port in sample_ports(row.port_low, row.port_high):
                    planned.append((row, src, dst, port))
                    if row.port_side != "source":
                        used.add((row.transport, dst.address, port))
    flows: list[MatrixFlow] = []
    for row, src, dst, port in planned:
        if row.port_side == "source":
            key = (row.transport, src.address)
            sport = _free_port(used, key, port, row.port_low, row.port_high)
            dport = SOURCE_SIDE_DESTINATION_PORT
            flow = Flow(row.transport, dst.address, dport, src.address, sport)
        else:
            flow = Flow(row.transport, dst.address, port, src.address, 0)
        flows.append(MatrixFlow(row.id, row.expect is Expectation.OPEN, src.host, dst.host, flow))
    return flows


# ------------------------------------------------------------------ running them

LISTENER_LIFETIME = 600.0
STOP_TIMEOUT = 5.0
READY_TIMEOUT = 30.0


class FlowError(LabError):
    """Listeners or probers could not be run."""


@dataclass(frozen=True)
class FlowResult:
    flow: MatrixFlow
    ok: bool
    detail: str


def check_flows(
    flows: list[MatrixFlow],
    exec_in: Callable[[str], list[str]],
    *,
    timeout: float = 1.5,
    python: str = "python3",
    env: dict[str, str] | None = None,
) -> list[FlowResult]:
    """Echo listeners at every destination, each flow tried from its source host.

    ``exec_in(host)`` is the command prefix that runs a command on a lab host (a runner's
    :meth:`~simulator.lab.runners.base.Runner.exec_argv`). One listener per destination host and one
    prober per source host, all at once; every flow waits at most ``timeout`` seconds.
    """
    by_dst: dict[str, set[Flow]] = {}
    for mf in flows:
        by_dst.setdefault(mf.destination_host, set()).add(mf.listener)
    listeners: list[tuple[str, subprocess.Popen[str]]] = []
    pids: dict[str, str] = {}

    def flowcheck(host: str, *args: str, session: bool = False) -> subprocess.Popen[str]:
        """``python -m simulator.lab.flowcheck ARGS`` on ``host`` (in a session of its own)."""
        return subprocess.Popen(
            [*exec_in(host), python, "-m", "simulator.lab.flowcheck", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
            start_new_session=session,
        )

    try:
        for host, specs in by_dst.items():
            listen = ("listen", "--lifetime", str(LISTENER_LIFETIME), *sorted(map(str, specs)))
            listeners.append((host, flowcheck(host, *listen, session=True)))
        for host, proc in listeners:
            pids[host] = _wait_ready(proc, READY_TIMEOUT)
        by_src: dict[str, list[MatrixFlow]] = {}
        for mf in flows:
            by_src.setdefault(mf.source_host, []).append(mf)
        probers = {
            host: flowcheck(
                host, "probe", "--timeout", str(timeout), *(str(mf.flow) for mf in items)
            )
            for host, items in by_src.items()
        }
        results: list[FlowResult] = []
        for host, proc in probers.items():
            try:
                out, err = proc.communicate(timeout=timeout * 4 + 20)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise FlowError(f"{host}: flow probes did not finish") from None
            lines = [json.loads(line) for line in out.splitlines() if line.strip()]
            if proc.returncode != 0 or len(lines) != len(by_src[host]):
                raise FlowError(f"{host}: flow probes failed: {err.strip()[-400:]}")
            for mf, item in zip(by_src[host], lines, strict=True):
                results.append(FlowResult(mf, bool(item["ok"]), str(item["detail"])))
        return results
    finally:
        for host, proc in listeners:
            # The listener may run in a container: stop it by its own pid there.
            if host in pids:
                subprocess.run(
                    [*exec_in(host), "kill", pids[host]],
                    capture_output=True,
                    timeout=STOP_TIMEOUT + 10,
                    env=env,
                )
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.communicate(timeout=STOP_TIMEOUT)


@dataclass(frozen=True)
class RowFlows:
    """A matrix row's verdict across the firewalls: ``open``, ``blocked`` or ``partly open``."""

    row: str
    expect: str
    got: str
    results: list[FlowResult]

    @property
    def ok(self) -> bool:
        return self.got == self.expect

    def to_dict(self) -> dict[str, Any]:
        return {
            "row": self.row,
            "expect": self.expect,
            "got": self.got,
            "ok": self.ok,
            "flows": [
                {"flow": str(r.flow.flow), "ok": r.ok, "detail": r.detail} for r in self.results
            ],
        }


def by_row(planned: Sequence[MatrixFlow], results: Sequence[FlowResult]) -> list[RowFlows]:
    """Flow results summed up per row, in the order of ``planned``."""
    grouped: dict[str, list[FlowResult]] = {mf.row: [] for mf in planned}
    expect = {mf.row: mf.expect_open for mf in planned}
    for r in results:
        grouped.setdefault(r.flow.row, []).append(r)
        expect.setdefault(r.flow.row, r.flow.expect_open)
    rows = []
    for row, items in grouped.items():
        passed = [r.ok for r in items]
        got = "open" if all(passed) else "blocked" if not any(passed) else "partly open"
        rows.append(RowFlows(row, "open" if expect[row] else "blocked", got, items))
    return rows


def check_rows(runner: Runner, rows: Sequence[str] = (), *, timeout: float = 1.5) -> list[RowFlows]:
    """``edgesim lab flows``: every matrix row (or ``rows``) tried across the running lab of
    ``runner``, from each source host's own address."""
    if not runner.has_firewalls:
        raise LabError(f"the {runner.name} lab has no firewall to check flows across")
    planned = matrix_flows(runner.config.topology)
    unknown = sorted(set(rows) - {mf.row for mf in planned})
    if unknown:
        raise UsageError(f"--row: no row '{unknown[0]}' (or it does not resolve in the topology)")
    if rows:
        planned = [mf for mf in planned if mf.row in rows]
    runner.require_up()
    results = check_flows(
        planned, runner.exec_argv, timeout=timeout, python=runner.python, env=runner.exec_env()
    )
    return by_row(planned, results)


def _wait_ready(proc: subprocess.Popen[str], timeout: float) -> str:
    """Wait for the listener's ``ready PID`` line; returns its pid (where it runs)."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else ""
    words = line.split()
    if len(words) != 2 or words[0] != "ready":
        err = ""
        if proc.poll() is not None and proc.stderr is not None:
            err = proc.stderr.read().strip()[-400:]
        raise FlowError(f"flow listener did not start within {timeout:.0f} s: {err or line!r}")
    return words[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m simulator.lab.flowcheck")
    sub = parser.add_subparsers(dest="command", required=True)
    p_listen = sub.add_parser("listen", help="echo on every FLOW's address and port")
    p_listen.add_argument("flows", nargs="+", metavar="FLOW")
    p_listen.add_argument(
        "--lifetime",
        type=float,
        default=LISTENER_LIFETIME,
        help="exit after this many seconds at the latest",
    )
    p_probe = sub.add_parser("probe", help="try every FLOW, print one JSON line per flow")
    p_probe.add_argument("flows", nargs="+", metavar="FLOW")
    p_probe.add_argument("--timeout", type=float, default=2.0)
    args = parser.parse_args(argv)
    try:
        flows = [Flow.parse(text) for text in args.flows]
    except ValueError as exc:
        parser.error(f"bad flow: {exc}")
    if args.command == "listen":
        try:
            aioloop.run(listen(flows, args.lifetime))
        except OSError as exc:
            sys.stderr.write(f"flowcheck: cannot listen: {exc}\n")
            return 1
        except KeyboardInterrupt:
            return 0
        return 0
    for result in aioloop.run(probe(flows, args.timeout)):
        sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
