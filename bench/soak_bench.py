"""Soak: the embedded lab under what the internet sends (issue 12). Figures, never assertions.

The whole embedded lab (every host of the default topology, one process) runs in a child
process; this process attacks it from the lab's loopback addresses only, in bounded phases:

1. idle: N TLS connections to SIP 443 that never send a byte (full: 10,000), spread over the
   internet zone's addresses; the lab's resident memory with them open (target: under 500 MB);
2. slowloris: M connections on each TCP listener (full: 1,000 each: SIP 443, 5061 both sides,
   XMPP 5269 and 23456, DNS 53, TURN 3478 and 443) that send part of a message and trickle a
   byte now and then, while a well-formed OPTIONS, an XMPP stream and a TURN allocation are
   asked again and again: their p50/p99 (target p99 under 100 ms) and failures;
3. flood: malformed datagrams at UDP 3478 and 53, then one good allocation and one DNS query;
4. back to idle: everything closed; the lab's open file descriptors and memory afterwards.

    python bench/soak_bench.py [--quick]     # JSON in bench/results/soak_bench.json

Raises RLIMIT_NOFILE to its hard limit in both processes. Every loop is bounded in count and
time. Figures depend on the machine's load (recorded as the load average).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from simulator import aioloop  # noqa: E402
from simulator.lab.runners.local import LocalLab  # noqa: E402
from simulator.lab.topology import load_topology  # noqa: E402
from simulator.pki import LabPki, ensure_pki, service_settings  # noqa: E402
from simulator.tls import client_context  # noqa: E402

RESULTS = Path(os.environ.get("EDGESIM_BENCH_RESULTS") or ROOT / "bench" / "results")
EDGE, AV, EDGE_INT = "127.51.100.10", "127.51.100.11", "127.51.100.130"
DNS_EXT = "127.0.113.53"
INTERNET = [f"127.0.113.{i}" for i in range(100, 250)]
CORPORATE = [f"127.0.2.{i}" for i in range(100, 250)]
HEADER = (
    "<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
    "xmlns:stream='http://etherx.jabber.org/streams' to='contoso.lab' from='jabber.lab' "
    "version='1.0'>"
)
OPTIONS = (
    "OPTIONS sip:sip.contoso.lab SIP/2.0\r\nVia: SIP/2.0/TLS soak.invalid;branch=z9hG4bK-soak{n}\r\n"
    "Max-Forwards: 70\r\nFrom: <sip:soak@contoso.lab>;tag=s{n}\r\nTo: <sip:sip.contoso.lab>\r\n"
    "Call-ID: soak-{n}\r\nCSeq: {n} OPTIONS\r\nContent-Length: 0\r\n\r\n"
)


def raise_nofile() -> int:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# ---------------------------------------------------------------------- the lab process


async def serve(certs: Path) -> None:
    raise_nofile()
    async with LocalLab(load_topology(), certs):
        aioloop.settle_heap()  # as `edgesim lab serve` does once its services are up
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


def lab_figures(pid: int) -> dict[str, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
    return {"rss_mb": round(rss / 1024, 1), "open_fds": len(os.listdir(f"/proc/{pid}/fd"))}


# ---------------------------------------------------------------------- attackers


class Held:
    """Connections the benchmark holds open, closed together."""

    def __init__(self) -> None:
        self.writers: list[asyncio.StreamWriter] = []
        self.failed = 0

    async def open(
        self, host: str, port: int, source: str, tls: ssl.SSLContext | None, name: str | None
    ) -> asyncio.StreamWriter | None:
        try:
            _, writer = await aioloop.open_stream(
                host, port, timeout=15.0, tls=tls, server_hostname=name, local_address=source
            )
        except (OSError, TimeoutError, ssl.SSLError):
            self.failed += 1
            return None
        self.writers.append(writer)
        return writer

    async def close(self) -> None:
        for writer in self.writers:
            writer.transport.abort()
        self.writers.clear()
        await asyncio.sleep(0)


async def open_many(held: Held, count: int, targets: list[tuple[Any, ...]]) -> None:
    """``count`` connections per target, 200 handshakes in flight at most."""
    gate = asyncio.Semaphore(200)

    async def one(i: int, target: tuple[Any, ...]) -> None:
        host, port, tls, name, sources, first = target
        async with gate:
            writer = await held.open(host, port, sources[i % len(sources)], tls, name)
            if writer is not None and first:
                writer.write(first)

    await asyncio.gather(*(one(i, t) for t in targets for i in range(count)))


async def trickle(held: Held, seconds: float) -> None:
    """One byte on every held connection every 5 s (a slowloris keeps its connection busy)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for writer in list(held.writers):
            if not writer.is_closing():
                writer.write(b" ")
        await asyncio.sleep(min(5.0, max(0.0, deadline - time.monotonic())))


# ---------------------------------------------------------------------- probes


async def sip_options_rtts(pki: LabPki, count: int) -> tuple[list[float], int]:
    tls = client_context([pki.trust_bundle])
    reader, writer = await asyncio.open_connection(
        EDGE, 443, ssl=tls, server_hostname="sip.contoso.lab", local_addr=("127.0.113.40", 0)
    )
    rtts, failed = [], 0
    try:
        for n in range(count):
            start = time.perf_counter()
            writer.write(OPTIONS.format(n=n).encode())
            try:
                await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
            except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                failed += 1
                break
            rtts.append(time.perf_counter() - start)
            await asyncio.sleep(0.02)
    finally:
        writer.close()
    return rtts, failed


async def xmpp_stream_rtts(count: int) -> tuple[list[float], int]:
    rtts, failed = [], 0
    for _ in range(count):
        start = time.perf_counter()
        try:
            reader, writer = await aioloop.open_stream(
                EDGE, 5269, timeout=5.0, local_address="127.0.113.30"
            )
            writer.write(HEADER.encode())
            await asyncio.wait_for(reader.readuntil(b"</stream:features>"), 5.0)
            writer.close()
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            failed += 1
            continue
        rtts.append(time.perf_counter() - start)
        await asyncio.sleep(0.02)
    return rtts, failed


async def turn_rtts(password: str, count: int) -> tuple[list[float], int]:
    """``count`` Allocate/release round trips over UDP, each on a new socket, with one set of
    credentials (a client keeps its NONCE: only the first Allocate is challenged)."""
    from simulator.media.aio import AsyncTurnClient
    from simulator.media.auth import LongTermCredentials
    from simulator.media.errors import MediaError

    creds = LongTermCredentials("edgesim", password)
    rtts, failed = [], 0
    for _ in range(count):
        start = time.perf_counter()
        try:
            async with asyncio.timeout(4.0):
                client = await AsyncTurnClient.open(
                    (AV, 3478), "udp", credentials=creds, local_address=INTERNET[0]
                )
                async with client:
                    await client.allocate()
                    await client.release()
        except (MediaError, OSError, EOFError):  # TimeoutError is an OSError
            failed += 1
            continue
        rtts.append(time.perf_counter() - start)
        await asyncio.sleep(0.02)
    return rtts, failed


def percentiles(rtts: list[float], failed: int) -> dict[str, float | int]:
    if not rtts:
        return {"answered": 0, "failed": failed}
    ordered = sorted(rtts)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return {
        "answered": len(rtts),
        "failed": failed,
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(p99 * 1000, 2),
    }


async def flood(host: str, port: int, count: int, seconds: float) -> int:
    """Malformed datagrams (random bytes, 20 to 200 long), bounded in count and time."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.113.66", 0))
    sock.setblocking(False)
    sent, deadline = 0, time.monotonic() + seconds
    try:
        while sent < count and time.monotonic() < deadline:
            data = os.urandom(20 + sent % 180)
            if port == 53:
                data = data[:2] + bytes([data[2] & 0x7F]) + data[3:]  # queries, not answers
            with contextlib.suppress(BlockingIOError):
                sock.sendto(data, (host, port))
                sent += 1
            if sent % 500 == 0:
                await asyncio.sleep(0)
    finally:
        sock.close()
    return sent


# ---------------------------------------------------------------------- the run


async def attack(pid: int, certs: Path, quick: bool) -> dict[str, Any]:
    raise_nofile()
    topology = load_topology()
    pki = LabPki(certs)
    idle_n, slow_n, probes, hold_s = (300, 30, 20, 6.0) if quick else (10_000, 1_000, 200, 45.0)
    flood_n = 5_000 if quick else 200_000
    out: dict[str, Any] = {"baseline": lab_figures(pid)}
    public = client_context([pki.trust_bundle])
    fabrikam = client_context(
        [pki.trust_bundle], cert=pki.host_cert("fabrikam", "fabrikam"), check_hostname=False
    )
    fe = client_context(
        [pki.trust_bundle],
        cert=pki.interface_cert(topology.interface("fe:lan")),
        check_hostname=False,
    )

    # 1. idle TLS on 443
    held = Held()
    start = time.perf_counter()
    await open_many(held, idle_n, [(EDGE, 443, public, "sip.contoso.lab", INTERNET, None)])
    out["idle_tls_443"] = {
        "asked": idle_n,
        "opened": len(held.writers),
        "failed": held.failed,
        "seconds_to_open": round(time.perf_counter() - start, 1),
        **lab_figures(pid),
    }
    await held.close()

    # 2. slowloris on every TCP listener, while real work goes on
    partial_sip = OPTIONS.format(n=0).encode()[:60]
    targets = [
        (EDGE, 443, public, "sip.contoso.lab", INTERNET, partial_sip),
        (EDGE, 5061, fabrikam, None, INTERNET, partial_sip),
        (EDGE_INT, 5061, fe, None, CORPORATE, partial_sip),
        (EDGE, 5269, None, None, INTERNET, HEADER.encode()[:50]),
        (EDGE_INT, 23456, fe, None, CORPORATE, HEADER.encode()[:50]),
        (DNS_EXT, 53, None, None, INTERNET, b"\x00\x40\x12"),
        (AV, 3478, None, None, INTERNET, b"\x00\x03\x00"),
        (AV, 443, None, None, INTERNET, b"\x16\x03"),
    ]
    slow = Held()
    await open_many(slow, slow_n, targets)
    opened = len(slow.writers)
    password = str(service_settings(topology, "av-edge", certs)["users"]["edgesim"])
    trickler = asyncio.ensure_future(trickle(slow, hold_s))
    sip, xmpp, turn = await asyncio.gather(
        sip_options_rtts(pki, probes), xmpp_stream_rtts(probes), turn_rtts(password, probes)
    )
    during = lab_figures(pid)
    await trickler
    closed_by_lab = sum(1 for w in slow.writers if w.transport.is_closing())
    out["slowloris"] = {
        "per_listener": slow_n,
        "listeners": len(targets),
        "opened": opened,
        "refused_or_failed": slow.failed,
        "held_seconds": hold_s,
        "lab_during": during,
        "sip_options": percentiles(*sip),
        "xmpp_stream": percentiles(*xmpp),
        "turn_allocation": percentiles(*turn),
        "closed_by_the_lab_meanwhile": closed_by_lab,
    }
    await slow.close()

    # 3. malformed datagrams
    sent_turn, sent_dns = await asyncio.gather(
        flood(AV, 3478, flood_n, 30.0), flood(DNS_EXT, 53, flood_n, 30.0)
    )
    turn_after = await turn_rtts(password, 3)
    from simulator.dns.resolver import LabResolver, ResolutionError

    try:
        await LabResolver((DNS_EXT, 53), timeout=2.0).a("sip.contoso.lab")
        dns_ok = True
    except ResolutionError:
        dns_ok = False
    out["udp_flood"] = {
        "datagrams_3478": sent_turn,
        "datagrams_53": sent_dns,
        "turn_still_answers": turn_after[1] == 0,
        "dns_still_answers": dns_ok,
    }

    # 4. back to idle (the lab closes what we dropped as its reads see EOF)
    deadline = time.monotonic() + 20.0
    while time.monotonic() < deadline:
        after = lab_figures(pid)
        if after["open_fds"] <= out["baseline"]["open_fds"] + 5:
            break
        await asyncio.sleep(0.5)
    out["after"] = lab_figures(pid)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (CI)")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        aioloop.run(serve(args.serve))
        return
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        certs = Path(tmp) / "certs"
        ensure_pki(load_topology(), certs)
        lab = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(certs)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        try:
            assert lab.stdout is not None
            if b"ready" not in lab.stdout.readline():
                raise SystemExit("the lab did not start")
            started = time.time()
            figures = asyncio.run(attack(lab.pid, certs, args.quick))
            crashed = lab.poll() is not None
        finally:
            if lab.stdin is not None:
                lab.stdin.close()
            try:
                lab.wait(20)
            except subprocess.TimeoutExpired:
                lab.kill()
    result = {
        "benchmark": "soak of the embedded lab",
        "quick": args.quick,
        "load_average": os.getloadavg(),
        "edgesim_loop": aioloop.loop_name(),
        "seconds": round(time.time() - started, 1),
        "lab_crashed": crashed,
        "targets": {"idle_rss_mb": 500, "p99_ms": 100},
        **figures,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "soak_bench.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
