"""XMPP hop: the Edge's XMPP proxy and Prosody as the same hop, same load, same run.

A jabber.lab server stream (TLS, SASL EXTERNAL with the lab's jabber.lab certificate) sends chat
messages to contoso.lab users through the hop under test to the Front End's side:

    jabber.lab -s2s 5269 (TLS)- Edge XMPP proxy -23456 (MTLS)- Front End XMPP gateway emulator
    jabber.lab -s2s (TLS)-      Prosody         -XEP-0114 component (TCP)- component reader

Prosody hosts contoso.lab as an external component (its way of handing a domain's traffic to
another server), certificates only (``s2s_secure_auth``, SASL EXTERNAL). Its second leg is plain
TCP where the Edge's is MTLS, which favours Prosody. The Edge (with the lab DNS) and Prosody
each run in their own process; the sender and both receivers share this one. Figures per hop:
messages per second with ``--window`` in flight, latency percentiles, lost messages, and the
hop's CPU per message from /proc (children included); ``ratio`` = Edge / Prosody messages/s.

    python bench/xmpp_bench.py [--quick] [--messages N] [--window W] [--no-prosody]

Prosody runs as its own user (``runuser -u prosody``): that needs root; without it, or without
Prosody, the Edge is measured alone and the report says why. JSON: bench/results/xmpp_bench.json.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.benchlib import (  # noqa: E402
    free_port,
    load_average,
    percentile,
    serve_until_stdin_closes,
    start_served,
    stop_processes,
    tree_cpu_seconds,
    wait_tcp,
    write_result,
)
from simulator import aioloop  # noqa: E402
from simulator.lab.runners.local import LocalLab  # noqa: E402
from simulator.lab.services import ServiceContext  # noqa: E402
from simulator.lab.topology import load_topology  # noqa: E402
from simulator.pki import LabPki, ensure_pki  # noqa: E402
from simulator.tls import client_context  # noqa: E402
from simulator.xmpp.aio import XmppConnection, new_stream_id, open_session  # noqa: E402
from simulator.xmpp.events import XmppEvent  # noqa: E402
from simulator.xmpp.gateway import gateway_from_context  # noqa: E402
from simulator.xmpp.peer_setup import hand_over  # noqa: E402
from simulator.xmpp.prosody import missing as prosody_missing  # noqa: E402
from simulator.xmpp.s2s import Role, Session, SessionConfig  # noqa: E402
from simulator.xmpp.stream import NS_SERVER, StreamTimers, element, qname  # noqa: E402

PORTS = {5269: 35269, 23456: 43456, 5222: 35222, 53: 35353}
EDGE_ACCESS = "127.51.100.10"
JABBER = "127.0.113.30"


@dataclass
class Arrivals:
    """Arrivals at the Front End's side: latency of each, and credit back to the sender."""

    expected: int = 0
    latencies: list[float] = field(default_factory=list)
    seen: set[int] = field(default_factory=set)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    credit: asyncio.Semaphore | None = None

    def arrived(self, text: str) -> None:
        seq, _, sent = text.partition(" ")
        self.latencies.append(time.perf_counter() - float(sent))
        self.seen.add(int(seq))
        if self.credit is not None:
            self.credit.release()
        if len(self.seen) >= self.expected:
            self.done.set()

    # the gateway emulator's SipBridge: chat is measured; every SIP user exists and is online

    async def deliver_to_sip(self, from_jid: str, to_uri: str, text: str) -> None:
        self.arrived(text)

    def presence_to_sip(self, from_jid: str, to_uri: str, available: bool) -> None:
        pass

    def sip_user(self, uri: str) -> bool:
        return True

    def sip_available(self, uri: str) -> bool:
        return True


# ---------------------------------------------------------------------- the Edge's process


async def serve_edge(topo_path: Path, certs: Path) -> None:
    logging.basicConfig(level=logging.ERROR)
    topo = load_topology(topo_path)
    async with LocalLab(topo, certs, hosts=["edge", "dns-ext", "dns-int"]):
        await serve_until_stdin_closes()


# ---------------------------------------------------------------------- Prosody


PROSODY_CONFIG = """
daemonize = false
pidfile = "{dir}/prosody.pid"
data_path = "{dir}/data"
log = {{ error = "{dir}/prosody.log" }}
interfaces = {{ "{address}" }}
s2s_ports = {{ {s2s_port} }}
c2s_ports = {{ }}
c2s_direct_tls_ports = {{ }}
s2s_direct_tls_ports = {{ }}
http_ports = {{ }}
https_ports = {{ }}
component_ports = {{ {component_port} }}
component_interfaces = {{ "127.0.0.1" }}
modules_enabled = {{ "tls"; "saslauth"; }}
modules_disabled = {{ "dialback"; }}
s2s_require_encryption = true
s2s_secure_auth = true
ssl = {{
    certificate = "{dir}/hop.crt";
    key = "{dir}/hop.key";
    cafile = "{dir}/lab-trust.pem";
}}
VirtualHost "hop.invalid"  -- Prosody wants one host of its own; nobody uses it
Component "contoso.lab"
    component_secret = "{secret}"
"""


def start_prosody(
    tmp: Path, pki: LabPki, s2s_port: int, component_port: int, secret: str
) -> subprocess.Popen[bytes]:
    directory = tmp / "prosody"
    (directory / "data").mkdir(parents=True)
    cert = pki.host_cert("edge", "public")  # names contoso.lab, as the Edge's does
    shutil.copyfile(cert.cert, directory / "hop.crt")
    shutil.copyfile(cert.key, directory / "hop.key")
    shutil.copyfile(pki.trust_bundle, directory / "lab-trust.pem")
    config = directory / "prosody.cfg.lua"
    config.write_text(
        PROSODY_CONFIG.format(
            dir=directory,
            address=EDGE_ACCESS,
            s2s_port=s2s_port,
            component_port=component_port,
            secret=secret,
        )
    )
    os.chmod(tmp, 0o755)
    hand_over(directory, "prosody")
    argv = ["runuser", "-u", "prosody", "--", "prosody", "-F", "--config", str(config)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_tcp("127.0.0.1", component_port, 20)
    except RuntimeError:
        proc.kill()
        log = directory / "prosody.log"
        raise RuntimeError(
            "Prosody did not start: " + (log.read_text()[-1500:] if log.exists() else "")
        ) from None
    return proc


class ComponentReader(asyncio.Protocol):
    """The far end behind Prosody: a XEP-0114 component for contoso.lab that times arrivals."""

    def __init__(self, secret: str, arrivals: Arrivals) -> None:
        self.secret = secret
        self.arrivals = arrivals
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.parser = ET.XMLPullParser(events=("start", "end"))
        self.depth = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(
            b"<stream:stream xmlns='jabber:component:accept' "
            b"xmlns:stream='http://etherx.jabber.org/streams' to='contoso.lab'>"
        )

    def data_received(self, data: bytes) -> None:
        self.parser.feed(data)
        for event, elem in self.parser.read_events():
            if event == "start":
                self.depth += 1
                if self.depth == 1 and self.transport is not None:  # the stream header
                    digest = hashlib.sha1((elem.get("id", "") + self.secret).encode()).hexdigest()
                    self.transport.write(f"<handshake>{digest}</handshake>".encode())
                continue
            self.depth -= 1
            if self.depth != 1:
                continue
            tag = elem.tag.rsplit("}", 1)[-1]
            if tag == "handshake" and not self.ready.done():
                self.ready.set_result(None)
            elif tag == "message":
                body = next((c.text for c in elem if c.tag.endswith("}body")), None)
                if body:
                    self.arrivals.arrived(body)
            elif tag == "error" and not self.ready.done():
                self.ready.set_exception(RuntimeError("Prosody refused the component"))
            elem.clear()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("component connection closed"))


# ---------------------------------------------------------------------- load


async def sender(pki: LabPki, address: tuple[str, int]) -> tuple[XmppConnection, Any]:
    """jabber.lab's server stream to contoso.lab at ``address`` (SASL EXTERNAL)."""
    config = SessionConfig(local_domains=frozenset({"jabber.lab"}), timers=StreamTimers(None, None))
    session = Session(
        Role.INITIATING,
        config,
        now=asyncio.get_running_loop().time(),
        stream_id=new_stream_id(),
        local_domain="jabber.lab",
        remote_domain="contoso.lab",
        can_external=True,
    )

    def on_event(_conn: object, _event: XmppEvent) -> None:
        return None

    # jabber.lab checks that the hop's certificate names contoso.lab (XEP-0178)
    tls = client_context(
        [pki.trust_bundle], cert=pki.host_cert("jabber", "public"), check_hostname=False
    )
    conn, task = await open_session(
        session, [address], on_event=on_event, tls_client=tls, local_address=JABBER
    )
    await asyncio.wait_for(conn.ready.wait(), 10)
    if not session.ready:
        raise RuntimeError(f"the hop did not accept the sender: {conn.failure}")
    return conn, task


async def send(
    conn: XmppConnection, arrivals: Arrivals, count: int, start_seq: int, window: int, users: int
) -> float:
    arrivals.expected = len(arrivals.seen) + count
    arrivals.done.clear()
    arrivals.credit = asyncio.Semaphore(window)
    began = time.perf_counter()
    for seq in range(start_seq, start_seq + count):
        await arrivals.credit.acquire()
        user = seq % users
        stanza = element(
            qname(NS_SERVER, "message"),
            {
                "from": f"user{user}@jabber.lab/bench",
                "to": f"alice{user}@contoso.lab",
                "type": "chat",
                "id": str(seq),
            },
            children=[element(qname(NS_SERVER, "body"), text=f"{seq} {time.perf_counter()!r}")],
        )
        conn.send_stanza(stanza)
        if seq % 64 == 0:
            await conn.writer.drain()
    await asyncio.wait_for(arrivals.done.wait(), 120)
    return time.perf_counter() - began


async def measure(
    pki: LabPki,
    address: tuple[str, int],
    arrivals: Arrivals,
    *,
    hop_pid: int,
    messages: int,
    window: int,
    users: int,
) -> dict[str, Any]:
    """The hop at ``address`` (process ``hop_pid``) under a sender's load, after a warm-up."""
    conn, task = await sender(pki, address)
    try:
        warmup = min(500, messages // 10)
        await send(conn, arrivals, warmup, 0, window, users)
        arrivals.latencies.clear()
        before = tree_cpu_seconds(hop_pid)
        load = load_average()
        elapsed = await send(conn, arrivals, messages, warmup, window, users)
        used = tree_cpu_seconds(hop_pid) - before
    finally:
        conn.close()
        await asyncio.wait_for(task, 5)
    lat = sorted(x * 1000 for x in arrivals.latencies)
    return {
        "messages": messages,
        "elapsed_s": round(elapsed, 3),
        "messages_per_s": round(messages / elapsed, 1),
        "lost": messages + warmup - len(arrivals.seen),
        "latency_ms": {
            "p50": percentile(lat, 50),
            "p90": percentile(lat, 90),
            "p99": percentile(lat, 99),
            "max": percentile(lat, 100),
            "mean": round(statistics.fmean(lat), 3) if lat else None,
        },
        "hop_cpu_us_per_message": round(used * 1e6 / messages, 1),
        "load_average_before": load,
    }


async def run_edge(
    topo_path: Path, pki: LabPki, edge_pid: int, messages: int, window: int, users: int
) -> dict[str, Any]:
    topology = load_topology(topo_path)
    arrivals = Arrivals()
    ctx = ServiceContext(topology, topology.host("fe"), "xmpp-gateway", pki, "local", {})
    gateway = gateway_from_context(ctx, arrivals)
    await gateway.start()
    try:
        return await measure(
            pki,
            (EDGE_ACCESS, PORTS[5269]),
            arrivals,
            hop_pid=edge_pid,
            messages=messages,
            window=window,
            users=users,
        )
    finally:
        await gateway.stop()


async def run_prosody(
    pki: LabPki,
    prosody_pid: int,
    s2s_port: int,
    component_port: int,
    secret: str,
    messages: int,
    window: int,
    users: int,
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    arrivals = Arrivals()
    transport, reader = await loop.create_connection(
        lambda: ComponentReader(secret, arrivals), "127.0.0.1", component_port
    )
    try:
        await asyncio.wait_for(reader.ready, 10)
        return await measure(
            pki,
            (EDGE_ACCESS, s2s_port),
            arrivals,
            hop_pid=prosody_pid,
            messages=messages,
            window=window,
            users=users,
        )
    finally:
        transport.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a short run for CI (< 60 s)")
    parser.add_argument("--messages", type=int, default=None)
    parser.add_argument("--window", type=int, default=50, help="messages in flight")
    parser.add_argument("--users", type=int, default=20, help="partner/contoso user pairs")
    parser.add_argument("--no-prosody", action="store_true", help="the Edge alone")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--topology", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--certs", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        aioloop.run(serve_edge(args.topology, args.certs))
        return 0
    logging.basicConfig(level=logging.WARNING)
    messages = args.messages or (5_000 if args.quick else 50_000)
    problem = "--no-prosody" if args.no_prosody else prosody_missing()
    result: dict[str, Any] = {
        "benchmark": "xmpp hop: jabber.lab -> contoso.lab (5269 in, to the Front End's side)",
        "messages": messages,
        "window": args.window,
        "partner_users": args.users,
        "edgesim_loop": aioloop.loop_name(),
        "load_average_at_start": load_average(),
    }
    with tempfile.TemporaryDirectory(prefix="xmpp-bench-") as tmp_name:
        tmp = Path(tmp_name)
        topo_path = tmp / "xmpp-bench.toml"
        load_topology().with_ports(PORTS).write(topo_path)
        certs = tmp / "certs"
        ensure_pki(load_topology(topo_path), certs)
        pki = LabPki(certs)
        edge = start_served("Edge", __file__, "--topology", str(topo_path), "--certs", str(certs))
        procs: list[subprocess.Popen[bytes]] = [edge]
        try:
            result["edge"] = aioloop.run(
                run_edge(topo_path, pki, edge.pid, messages, args.window, args.users)
            )
            print(f"edge: {result['edge']}", flush=True)
            if problem is None:
                secret = secrets.token_hex(16)
                s2s_port = free_port(host=EDGE_ACCESS)
                component_port = free_port()
                prosody = start_prosody(tmp, pki, s2s_port, component_port, secret)
                procs.append(prosody)
                result["prosody"] = aioloop.run(
                    run_prosody(
                        pki,
                        prosody.pid,
                        s2s_port,
                        component_port,
                        secret,
                        messages,
                        args.window,
                        args.users,
                    )
                )
                print(f"prosody: {result['prosody']}", flush=True)
                ours, theirs = result["edge"], result["prosody"]
                result["ratio"] = round(ours["messages_per_s"] / theirs["messages_per_s"], 3)
                result["cpu_ratio"] = round(
                    ours["hop_cpu_us_per_message"] / max(theirs["hop_cpu_us_per_message"], 1e-9),
                    3,
                )
            else:
                result["prosody_skipped"] = problem
        finally:
            stop_processes(*procs)
    out = write_result("xmpp_bench", result)
    print(f"{'':28}{'edge':>12}{'prosody':>12}")
    for label, key in (
        ("messages/s", "messages_per_s"),
        ("lost", "lost"),
        ("hop CPU us/message", "hop_cpu_us_per_message"),
    ):
        cells = [str(result[h][key]) if h in result else "-" for h in ("edge", "prosody")]
        print(f"{label:28}{cells[0]:>12}{cells[1]:>12}")
    for p in ("p50", "p99"):
        cells = [
            str(result[h]["latency_ms"][p]) if h in result else "-" for h in ("edge", "prosody")
        ]
        print(f"{'latency ' + p + ' ms':28}{cells[0]:>12}{cells[1]:>12}")
    print(f"ratio (Edge / Prosody messages/s): {result.get('ratio', problem)}  -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
