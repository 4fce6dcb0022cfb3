"""Relay benchmark: edgesim's TURN server against coturn's, same load, same machine, same run.

Load: coturn's ``turnutils_uclient`` with 16 clients, 100-byte messages sent as ChannelData
(no ``-s``), a fixed message count per client, echoed by ``turnutils_peer``. Each message is
relayed twice (client -> peer, peer -> client), so relayed packets = 2 x messages received.

    python3 bench/turn_bench.py           # 16 clients x 2000 messages
    python3 bench/turn_bench.py --quick   # 16 clients x 200 messages (< 60 s)

Prints a side-by-side table and writes bench/results/turn_bench.json. Our server runs in its own
process (``--serve``), like coturn, so both get a CPU of their own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

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

    asyncio.run(main())


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_load(
    port: int, peer_port: int, messages: int, interval: int, server_pid: int
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
    cpu_before = cpu_seconds(server_pid)
    started = time.monotonic()
    out = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False).stdout
    elapsed = time.monotonic() - started
    cpu = cpu_seconds(server_pid) - cpu_before
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
        "server_cpu_seconds": round(cpu, 3),
        "server_cpu_us_per_packet": round(1e6 * cpu / max(2 * recv_msgs, 1), 2),
        "server_capacity_packets_per_cpu_second": round(2 * recv_msgs / max(cpu, 1e-6)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 messages per client (CI)")
    parser.add_argument("--messages", type=int, help="messages per client")
    parser.add_argument("--interval", type=int, default=1, help="uclient -z (ms between sends)")
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
        results["edgesim"] = run_load(ours_port, peer_port, messages, args.interval, procs[1].pid)
        results["coturn"] = run_load(coturn_port, peer_port, messages, args.interval, procs[2].pid)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
    ours, theirs = results["edgesim"], results["coturn"]
    assert isinstance(ours, dict) and isinstance(theirs, dict)
    if stats_path.exists():
        counters = json.loads(stats_path.read_text())
        ours["server_dropped"] = {k: v for k, v in counters.items() if k.startswith("dropped")}
    ratio = ours["relayed_packets_per_second"] / max(theirs["relayed_packets_per_second"], 1e-9)
    report = {
        "benchmark": "turn_relay",
        "load": {
            "clients": CLIENTS,
            "messages_per_client": messages,
            "size": SIZE,
            "interval_ms": args.interval,
            "framing": "ChannelData over UDP",
        },
        "edgesim": ours,
        "coturn": theirs,
        "ratio_edgesim_to_coturn": round(ratio, 3),
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
        "server_cpu_seconds",
        "server_cpu_us_per_packet",
        "server_capacity_packets_per_cpu_second",
    )
    for key in keys:
        print(f"{key:40}{ours[key]!s:>14}{theirs[key]!s:>14}")
    print(f"{'ratio of relayed packets/s (edgesim/coturn)':44}{ratio:>10.3f}")
    print(f"edgesim server drops: {ours.get('server_dropped', {})}")
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "turn_bench.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
