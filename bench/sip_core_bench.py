"""The Access Edge's sans-IO cost per MESSAGE transaction, without sockets or TLS.

One federation MESSAGE and its 200 go through what the Edge's adapter runs for them: the
connection core (framing, one parse, validation) on the way in, the proxy core (policy,
routing, Via, trust header, transaction), serialisation on the way out, for the request and
for the response. The figure is microseconds of this process's CPU per transaction: what the
Python code costs, apart from TLS, the event loop and the kernel (bench/sip_bench.py measures
those too, against Kamailio). Deterministic enough to compare two commits on a loaded machine.

    python bench/sip_core_bench.py [--transactions N] [--profile FILE]
"""

from __future__ import annotations

import argparse
import cProfile
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.benchlib import write_result  # noqa: E402
from simulator.sip.build import to_bytes  # noqa: E402
from simulator.sip.connection import SipConnection  # noqa: E402
from simulator.sip.events import RequestReceived, ResponseReceived  # noqa: E402
from simulator.sip.proxy import EdgeConfig, EdgeProxy, Forward, Partner, Send, Side  # noqa: E402

REQUEST = (
    "MESSAGE sip:bob@contoso.lab SIP/2.0\r\n"
    "Via: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bK-{n}-1-0\r\n"
    "From: <sip:carol@fabrikam.lab>;tag={n}SIPpTag001\r\n"
    "To: <sip:bob@contoso.lab>\r\n"
    "Call-ID: {n}-4242@127.0.0.1\r\n"
    "CSeq: 1 MESSAGE\r\n"
    "Max-Forwards: 70\r\n"
    "Content-Type: text/plain\r\n"
    "Content-Length: {length}\r\n\r\n"
    "{body}"
)


def response_to(forwarded: bytes) -> bytes:
    """The far end's 200, built from the forwarded request as SIPp's UAS scenario builds it."""
    head = forwarded.split(b"\r\n\r\n", 1)[0].decode()
    lines = head.split("\r\n")[1:]
    vias = [ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("Via:")]
    keep = [ln for ln in lines if ln.split(":", 1)[0] in ("From", "Call-ID", "CSeq")]
    to = next(ln for ln in lines if ln.startswith("To:"))
    via = "Via: " + ", ".join(vias)  # SIPp's [last_Via:]: every Via on one line
    text = "SIP/2.0 200 OK\r\n" + "\r\n".join([via, *keep, to + ";tag=uas1", "Content-Length: 0"])
    return (text + "\r\n\r\n").encode()


def run(transactions: int) -> float:
    config = EdgeConfig(
        allowed_domains=(Partner("fabrikam.lab", "sip.fabrikam.lab"),),
        internal_peer_names=("pool.contoso.lab",),
    )
    proxy = EdgeProxy(config)
    outside = proxy.flow_opened(Side.FEDERATION, ("127.0.113.10", 40000), ["sip.fabrikam.lab"])
    inside = proxy.flow_opened(
        Side.INTERNAL, ("127.0.2.10", 5061), ["pool.contoso.lab"], outbound=True
    )
    conn_out, conn_in = SipConnection(), SipConnection()
    bodies = [f"hello from SIPp {n}" for n in range(transactions)]
    requests = [
        REQUEST.format(n=n, length=len(body), body=body).encode() for n, body in enumerate(bodies)
    ]
    started = time.process_time()
    for n, data in enumerate(requests):
        conn_out.receive_data(data, n)
        event = conn_out.next_event()
        assert isinstance(event, RequestReceived)
        (forward,) = proxy.receive_request(outside.id, event.request, n)
        assert isinstance(forward, Forward)
        proxy.sent_on(forward.branch, inside.id)
        wire = to_bytes(forward.request)
        conn_in.receive_data(response_to(wire), n)
        answer = conn_in.next_event()
        assert isinstance(answer, ResponseReceived)
        (send,) = proxy.receive_response(inside.id, answer.response, n)
        assert isinstance(send, Send)
        to_bytes(send.message)
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transactions", type=int, default=20_000)
    parser.add_argument("--profile", help="write a cProfile of the run here")
    args = parser.parse_args()
    run(min(2000, args.transactions))  # warm the caches a running Edge has warm
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
    seconds = run(args.transactions)
    if args.profile:
        profiler.disable()
        profiler.dump_stats(args.profile)
    per_tx = seconds * 1e6 / args.transactions
    result = {
        "benchmark": "sip sans-IO core per MESSAGE transaction (no TLS, no sockets)",
        "transactions": args.transactions,
        "cpu_us_per_tx": round(per_tx, 1),
    }
    if not args.profile:
        write_result("sip_core_bench", result)
    print(f"{per_tx:.1f} us of CPU per transaction (request in and out, response in and out)")


if __name__ == "__main__":
    main()
