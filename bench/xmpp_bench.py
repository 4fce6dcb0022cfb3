"""XMPP proxy throughput and latency: partner messages -> contoso users through the Edge.

A jabber.lab server stream (SASL EXTERNAL with the lab's jabber.lab certificate) sends chat
messages to contoso users over the Edge's 5269; the Edge routes them out on 23456 to the Front
End's XMPP gateway emulator, whose SIP bridge timestamps each arrival. Figures: messages per
second, latency percentiles, lost messages. The sender, the Edge and the gateway share one
process and one event loop (so the figure is a lower bound for the Edge alone).

    python bench/xmpp_bench.py [--quick] [--messages N] [--window W]

Writes bench/results/xmpp_bench.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from simulator.lab.topology import load_topology  # noqa: E402
from simulator.pki import LabPki, ensure_pki  # noqa: E402
from simulator.tls import client_context  # noqa: E402
from simulator.xmpp.aio import new_stream_id, open_session  # noqa: E402
from simulator.xmpp.events import XmppEvent  # noqa: E402
from simulator.xmpp.harness import shifted_topology, start_xmpp_lab  # noqa: E402
from simulator.xmpp.s2s import Role, Session, SessionConfig  # noqa: E402
from simulator.xmpp.stream import NS_SERVER, StreamTimers, element, qname  # noqa: E402

PORTS = {5269: 35269, 23456: 43456, 5222: 35222, 53: 35353}
EDGE_ACCESS = "127.51.100.10"
JABBER = "127.0.113.30"


@dataclass
class TimingBridge:
    """A SipBridge that records when each message reaches the SIP side."""

    expected: int = 0
    latencies: list[float] = field(default_factory=list)
    seen: set[int] = field(default_factory=set)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    credit: asyncio.Semaphore | None = None

    async def deliver_to_sip(self, from_jid: str, to_uri: str, text: str) -> None:
        seq, _, sent = text.partition(" ")
        self.latencies.append(time.perf_counter() - float(sent))
        self.seen.add(int(seq))
        if self.credit is not None:
            self.credit.release()
        if len(self.seen) >= self.expected:
            self.done.set()

    def presence_to_sip(self, from_jid: str, to_uri: str, available: bool) -> None:
        pass  # the benchmark measures chat only

    def sip_user(self, uri: str) -> bool:
        return True

    def sip_available(self, uri: str) -> bool:
        return True


async def run(messages: int, window: int, users: int) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="edgesim-xmpp-bench-"))
    topology = load_topology(shifted_topology(work, PORTS))
    certs = ROOT / "certs"
    ensure_pki(topology, certs)
    pki = LabPki(certs)
    lab = await start_xmpp_lab(topology, pki, hosts=["edge", "dns-ext", "dns-int"])
    bridge = TimingBridge()
    lab.gateway.bridge = bridge
    # jabber.lab checks the Edge's certificate names contoso.lab (XEP-0178), as a partner with
    # s2s_secure_auth does
    config = SessionConfig(local_domains=frozenset({"jabber.lab"}), timers=StreamTimers(None, None))
    jabber_cert = pki.host_cert("jabber", "public")
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

    tls = client_context([pki.trust_bundle], cert=jabber_cert, check_hostname=False)
    conn, task = await open_session(
        session,
        [(EDGE_ACCESS, PORTS[5269])],
        on_event=on_event,
        tls_client=tls,
        local_address=JABBER,
    )
    try:
        await asyncio.wait_for(conn.ready.wait(), 10)
        if not session.ready:
            raise SystemExit(f"the Edge did not accept the sender: {conn.failure}")

        async def send(count: int, start_seq: int) -> float:
            bridge.expected = len(bridge.seen) + count
            bridge.done.clear()
            bridge.credit = asyncio.Semaphore(window)
            began = time.perf_counter()
            for seq in range(start_seq, start_seq + count):
                await bridge.credit.acquire()
                user = seq % users
                stanza = element(
                    qname(NS_SERVER, "message"),
                    {
                        "from": f"user{user}@jabber.lab/bench",
                        "to": f"alice{user}@contoso.lab",
                        "type": "chat",
                        "id": str(seq),
                    },
                    children=[
                        element(qname(NS_SERVER, "body"), text=f"{seq} {time.perf_counter()!r}")
                    ],
                )
                conn.send_stanza(stanza)
                if seq % 64 == 0:
                    await conn.writer.drain()
            await asyncio.wait_for(bridge.done.wait(), 120)
            return time.perf_counter() - began

        warmup = min(500, messages // 10)
        await send(warmup, 0)
        bridge.latencies.clear()
        elapsed = await send(messages, warmup)
    finally:
        conn.close()
        await asyncio.wait_for(task, 5)
        await lab.stop()
    lat = sorted(x * 1000 for x in bridge.latencies)

    def pct(p: float) -> float:
        return round(lat[min(len(lat) - 1, int(p / 100 * len(lat)))], 3)

    return {
        "benchmark": "xmpp-proxy partner -> contoso (5269 in, 23456 out)",
        "messages": messages,
        "window": window,
        "partner_users": users,
        "elapsed_s": round(elapsed, 3),
        "messages_per_s": round(messages / elapsed, 1),
        "lost": messages + warmup - len(bridge.seen),
        "latency_ms": {
            "p50": pct(50),
            "p90": pct(90),
            "p99": pct(99),
            "max": round(lat[-1], 3),
            "mean": round(statistics.fmean(lat), 3),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run for CI (< 60 s)")
    parser.add_argument("--messages", type=int, default=None)
    parser.add_argument("--window", type=int, default=50, help="messages in flight")
    parser.add_argument("--users", type=int, default=20, help="partner/contoso user pairs")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    messages = args.messages or (5_000 if args.quick else 50_000)
    result = asyncio.run(run(messages, args.window, args.users))
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "xmpp_bench.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
