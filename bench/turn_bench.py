"""Relay benchmark: edgesim's TURN server against coturn's, same load, same machine, same run.

Load: coturn's ``turnutils_uclient`` with 16 clients, 100-byte messages sent as ChannelData
(no ``-s``), a fixed message count per client, echoed by ``turnutils_peer``. Each message is
relayed twice (client -> peer, peer -> client), so relayed packets = 2 x messages received.
Unpaced by default (``-z 0``: every client sends as fast as it can, which is what shows a
relay's ceiling); ``--interval MS`` paces each client instead.

    python3 bench/turn_bench.py                 # unpaced, 16 clients x 2000 messages
    python3 bench/turn_bench.py --interval 1    # paced at 1 ms per client
    python3 bench/turn_bench.py --quick         # 16 clients x 200 messages (< 60 s)

The 16 clients share one address, so edgesim's per-source budget for unauthenticated requests
(``TurnConfig.unauthenticated_rate``, a flood guard: docs/limits.md) is turned off for this
server, as coturn has no such budget; authenticated traffic (all that is relayed) never counts
against it. Prints a side-by-side table and writes bench/results/turn_bench.json with
``ratio`` = edgesim / coturn relayed packets per second. Our server runs in its own process
(``--serve``), like coturn, so both get a CPU of their own; CPU time comes from /proc.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.benchlib import (  # noqa: E402
    load_average,
    stop_processes,
    tree_cpu_seconds,
    write_result,
)
from simulator import aioloop  # noqa: E402

HOST = "127.0.0.1"
USER, PASSWORD, REALM = "bench", "bench-pw", "contoso.lab"
CLIENTS = 16
SIZE = 100


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_udp(port: int, timeout: float = 10.0) -> None:
    """Wait until a STUN Binding on ``port`` is answered (bounded): edgesim's TURN client."""
    from simulator.media.service import binding_check

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if asyncio.run(binding_check(HOST, port, timeout=0.5)) is None:
            return
    raise RuntimeError(f"no STUN answer on {HOST}:{port} within {timeout} s")


def serve(port: int, low: int, high: int, stats_file: str | None) -> None:
    """Run edgesim's TURN server until SIGTERM."""
    import ipaddress

    from simulator.media.aio import AsyncTurnServer, ListenerSpec
    from simulator.media.config import TurnConfig
    from simulator.media.policy import PeerPolicy

    async def main() -> None:
        config = TurnConfig(
            relay_address=HOST,
            realm=REALM,
            users={USER: PASSWORD},
            port_low=low,
            port_high=high,
            user_quota=1000,
            unauthenticated_rate=None,  # 16 clients on one address challenged at once
            policy=PeerPolicy(allowed=(ipaddress.IPv4Network(f"{HOST}/32"),)),
        )
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        async with AsyncTurnServer(config, [ListenerSpec("udp", HOST, port)]) as server:
            await stop.wait()
            if stats_file:
                Path(stats_file).write_text(json.dumps(dict(server.core.stats)))

    aioloop.run(main())


class UdpDrops:
    """Datagrams the kernel dropped at full socket buffers, per socket, from /proc/net/udp
    (sampled while the load runs: relay sockets close when their allocation ends)."""

    def __init__(self) -> None:
        self.seen: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while True:
            for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
                fields = line.split()
                port = int(fields[1].rsplit(":", 1)[1], 16)
                self.seen[port] = max(self.seen.get(port, 0), int(fields[-1]))
            if self._stop.wait(0.1):
                return

    def __enter__(self) -> UdpDrops:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def split(self, server_ports: range | set[int]) -> tuple[int, int]:
        """Drops at the server's sockets, and at everyone else's (clients, the echo peer)."""
        server = sum(d for p, d in self.seen.items() if p in server_ports)
        return server, sum(self.seen.values()) - server


def run_load(
    port: int,
    peer_port: int,
    messages: int,
    interval: int,
    server_pid: int,
    server_ports: range | set[int] = range(0),
) -> dict[str, float]:
    options = {
        "-m": CLIENTS,  # clients
        "-n": messages,  # messages each
        "-l": SIZE,  # bytes each
        "-z": interval,  # ms between sends
        "-u": USER,
        "-w": PASSWORD,
        "-e": HOST,  # the peer (turnutils_peer)
        "-r": peer_port,
        "-p": port,  # the TURN server
    }
    flags = ["-c", "-X", "-g"]  # no RTCP allocation, no Data indications, ChannelData
    argv = ["turnutils_uclient", *flags, *(str(v) for kv in options.items() for v in kv), HOST]
    cpu_before = tree_cpu_seconds(server_pid)
    load = load_average()
    started = time.monotonic()
    with UdpDrops() as drops:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False).stdout
    elapsed = time.monotonic() - started
    server_drops, other_drops = drops.split({port, *server_ports})
    cpu = tree_cpu_seconds(server_pid) - cpu_before
    sent = re.findall(r"tot_send_msgs=(\d+), tot_recv_msgs=(\d+)", out)
    lost = re.search(r"Total lost packets (\d+) \(([\d.]+)%\)", out)
    transmit = re.search(r"Total transmit time is (\d+)", out)
    if not sent or lost is None:
        raise RuntimeError(f"turnutils_uclient failed:\n{out[-2000:]}")
    send_msgs, recv_msgs = (int(v) for v in sent[-1])
    seconds = max(elapsed, 1e-6)
    return {
        "messages_sent": send_msgs,
        "messages_received": recv_msgs,
        "relayed_packets": 2 * recv_msgs,
        "wall_seconds": round(elapsed, 3),
        "transmit_seconds": int(transmit.group(1)) if transmit else None,  # type: ignore[dict-item]
        "relayed_packets_per_second": round(2 * recv_msgs / seconds, 1),
        "loss_percent": float(lost.group(2)),
        "lost_packets": int(lost.group(1)),
        "kernel_drops_at_server_sockets": server_drops,
        "kernel_drops_at_client_and_peer_sockets": other_drops,
        "server_cpu_seconds": round(cpu, 3),
        "server_cpu_us_per_packet": round(1e6 * cpu / max(2 * recv_msgs, 1), 2),
        "server_capacity_packets_per_cpu_second": round(2 * recv_msgs / max(cpu, 1e-6)),
        "load_average_before": load,  # type: ignore[dict-item]
    }


def combine(rows: list[dict[str, float]]) -> dict[str, Any]:
    """The round with the median relayed packets/s, with the loss and CPU of all rounds."""
    ordered = sorted(rows, key=lambda r: r["relayed_packets_per_second"])
    out: dict[str, Any] = dict(ordered[len(ordered) // 2])
    sent = sum(r["messages_sent"] for r in rows)
    lost = sum(r["lost_packets"] for r in rows)
    packets = sum(r["relayed_packets"] for r in rows)
    cpu = sum(r["server_cpu_seconds"] for r in rows)
    out["loss_percent"] = round(100 * lost / max(sent, 1), 4)
    out["lost_packets"] = lost
    out["server_cpu_us_per_packet"] = round(1e6 * cpu / max(packets, 1), 2)
    for key in ("kernel_drops_at_server_sockets", "kernel_drops_at_client_and_peer_sockets"):
        out[key] = sum(r[key] for r in rows)
    out["rounds"] = [
        {
            k: r[k]
            for k in ("relayed_packets_per_second", "loss_percent", "server_cpu_us_per_packet")
        }
        for r in rows
    ]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 messages per client (CI)")
    parser.add_argument("--messages", type=int, help="messages per client")
    parser.add_argument(
        "--interval", type=int, default=0, help="uclient -z: ms between sends (0: unpaced)"
    )
    parser.add_argument(
        "--rounds", type=int, help="runs per server, interleaved (default 3; --quick: 1)"
    )
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--range", default="54000-54999", help=argparse.SUPPRESS)
    parser.add_argument("--stats", help=argparse.SUPPRESS)
    args = parser.parse_args()
    low, high = (int(p) for p in args.range.split("-"))
    if args.serve is not None:
        serve(args.serve, low, high, args.stats)
        return 0
    for tool in ("turnutils_uclient", "turnutils_peer", "turnserver"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (Debian package coturn)")
            return 2
    messages = args.messages or (200 if args.quick else 2000)
    peer_port = free_port(socket.SOCK_DGRAM)
    ours_port = free_port(socket.SOCK_DGRAM)
    coturn_port = free_port(socket.SOCK_DGRAM)
    procs: list[subprocess.Popen[bytes]] = []
    stats_path = Path(tempfile.mkdtemp()) / "edgesim-stats.json"
    results: dict[str, object] = {}
    try:
        procs.append(
            subprocess.Popen(
                ["turnutils_peer", "-L", HOST, "-p", str(peer_port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--serve",
                    str(ours_port),
                    "--range",
                    "54000-54999",
                    "--stats",
                    str(stats_path),
                ],
                stdout=subprocess.DEVNULL,
            )
        )
        procs.append(
            subprocess.Popen(
                [
                    "turnserver",
                    "-n",
                    "--listening-ip",
                    HOST,
                    "--listening-port",
                    str(coturn_port),
                    "--relay-ip",
                    HOST,
                    "--min-port",
                    "55000",
                    "--max-port",
                    "55999",
                    "-a",
                    "-u",
                    f"{USER}:{PASSWORD}",
                    "-r",
                    REALM,
                    "--no-tls",
                    "--no-dtls",
                    "--no-cli",
                    "--allow-loopback-peers",
                    "--log-file",
                    "stdout",
                    "--simple-log",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        wait_udp(ours_port)
        wait_udp(coturn_port)
        rounds = args.rounds or (1 if args.quick else 3)
        runs: dict[str, list[dict[str, float]]] = {"edgesim": [], "coturn": []}
        for _ in range(rounds):  # interleaved, so a change in the machine's load hits both
            runs["edgesim"].append(
                run_load(
                    ours_port, peer_port, messages, args.interval, procs[1].pid, range(54000, 55000)
                )
            )
            runs["coturn"].append(
                run_load(
                    coturn_port,
                    peer_port,
                    messages,
                    args.interval,
                    procs[2].pid,
                    range(55000, 56000),
                )
            )
        for name, rows in runs.items():
            results[name] = combine(rows)
    finally:
        stop_processes(*procs)
    ours, theirs = results["edgesim"], results["coturn"]
    assert isinstance(ours, dict) and isinstance(theirs, dict)
    if stats_path.exists():
        counters = json.loads(stats_path.read_text())
        ours["server_dropped"] = {k: v for k, v in counters.items() if k.startswith("dropped")}
    ratio = ours["relayed_packets_per_second"] / max(theirs["relayed_packets_per_second"], 1e-9)
    report = {
        "benchmark": "turn_relay",
        "quick": args.quick,
        "load": {
            "clients": CLIENTS,
            "messages_per_client": messages,
            "size": SIZE,
            "interval_ms": args.interval,
            "framing": "ChannelData over UDP",
        },
        "edgesim": ours,
        "coturn": theirs,
        "ratio": round(ratio, 3),
        "ratio_edgesim_to_coturn": round(ratio, 3),
        "loss_percent": {"edgesim": ours["loss_percent"], "coturn": theirs["loss_percent"]},
        "edgesim_loop": aioloop.loop_name(),
        "unauthenticated_budget": "off for this server (16 clients share one address)",
        "cpu_ratio_coturn_to_edgesim": round(
            theirs["server_cpu_us_per_packet"] / max(ours["server_cpu_us_per_packet"], 1e-9), 3
        ),
    }
    print(f"{'':40}{'edgesim':>14}{'coturn':>14}")
    keys = (
        "relayed_packets",
        "wall_seconds",
        "relayed_packets_per_second",
        "loss_percent",
        "kernel_drops_at_server_sockets",
        "kernel_drops_at_client_and_peer_sockets",
        "server_cpu_seconds",
        "server_cpu_us_per_packet",
        "server_capacity_packets_per_cpu_second",
    )
    for key in keys:
        print(f"{key:40}{ours[key]!s:>14}{theirs[key]!s:>14}")
    print(f"{'ratio of relayed packets/s (edgesim/coturn)':44}{ratio:>10.3f}")
    print(f"edgesim server drops: {ours.get('server_dropped', {})}")
    print(f"-> {write_result('turn_bench', report)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
