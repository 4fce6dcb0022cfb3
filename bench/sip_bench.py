"""SIP benchmark: MESSAGE transactions per second through the Access Edge, and straight to the FE.

SIPp (through stunnel4 for the MTLS, presenting fabrikam's certificate) sends MESSAGEs from a
fabrikam.lab user to a registered contoso.lab user:

    SIPp -TCP- stunnel -MTLS 5061- Access Edge -MTLS 5061- Front End -TLS- bob (auto 200)

The Front End emulator (with the lab DNS and bob's user agent) runs in its own process, the Edge
in another. The same load then goes straight to the Front End (stunnel -> FE 5061), so the Edge's
own cost shows as a ratio. Figures: completed transactions/s, failed share, latency percentiles
(SIPp's response time per transaction). JSON goes to bench/results/sip_bench.json.

    python3 bench/sip_bench.py            # 5,000/s offered (the target), 2 x 10 s or more
    python3 bench/sip_bench.py --quick    # about 2 x 5 s, for CI
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import glob
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from simulator.lab.runners.local import LocalLab  # noqa: E402
from simulator.lab.topology import Topology, load_topology  # noqa: E402
from simulator.pki import LabPki, ensure_pki  # noqa: E402

SCENARIO = ROOT / "tests" / "interop" / "sipp" / "federation_message.xml"
RESULTS = Path(os.environ.get("EDGESIM_BENCH_RESULTS") or ROOT / "bench" / "results")


def topology(directory: Path) -> Topology:
    """The default lab on loopback addresses 127.217.x.y, written for the server processes."""
    return load_topology().relocated(217).write(directory / "bench-lab.toml")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------------- server processes


async def serve(role: str, topo_path: Path, certs: Path) -> None:
    logging.basicConfig(level=logging.ERROR)
    topo = load_topology(topo_path)
    hosts = ["dns-int", "dns-ext", "fe"] if role == "fe" else ["edge"]
    async with LocalLab(topo, certs, hosts=hosts) as lab:
        ua = None
        if role == "fe":
            from simulator.pki import user_password
            from simulator.sip.emulators.ua import UserAgent
            from simulator.tls import client_context

            ua = UserAgent(
                "sip:bob@contoso.lab",
                password=user_password(topo, "bob@contoso.lab", certs),
                host=str(topo.interface("fe:lan").loopback()),
                port=5061,
                context=client_context([lab.pki.trust_bundle]),
                server_name="fe.contoso.lab",
            )
            await ua.connect()
            response = await ua.register()
            assert response.code == 200, response.code

            async def drain() -> None:
                while True:
                    await ua.incoming.get()

            task = asyncio.create_task(drain())
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        if ua is not None:
            task.cancel()
            await ua.close()


# ---------------------------------------------------------------------- load


def start_stunnel(
    tmp: Path, target: str, port: int, cert: Path | None, trust: Path, name: str
) -> tuple[subprocess.Popen[bytes], int]:
    accept = free_port()
    lines = [
        "foreground = yes",
        "pid =",
        "debug = 3",
        "[sip]",
        "client = yes",
        f"accept = 127.0.0.1:{accept}",
        f"connect = {target}:{port}",
        f"CAfile = {trust}",
        "verifyChain = yes",
        f"checkHost = {name}",
    ]
    if cert is not None:
        lines.append(f"cert = {cert}")
    conf = tmp / f"stunnel-{accept}.conf"
    conf.write_text("\n".join(lines) + "\n")
    stunnel = shutil.which("stunnel4") or shutil.which("stunnel")
    assert stunnel is not None
    proc = subprocess.Popen(
        [stunnel, str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # bounded wait for the listener
        try:
            with socket.create_connection(("127.0.0.1", accept), timeout=0.2):
                return proc, accept
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("stunnel did not start")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_sipp(
    workdir: Path, port: int, *, rate: int, calls: int, limit: int, pids: dict[str, int]
) -> dict[str, object]:
    workdir.mkdir(parents=True, exist_ok=True)
    argv = [
        "sipp",
        "-sf",
        str(SCENARIO),
        f"127.0.0.1:{port}",
        "-t",
        "t1",
        "-i",
        "127.0.0.1",
        "-p",
        str(free_port()),
        "-cp",
        str(free_port()),
        "-s",
        "bob",
        "-r",
        str(rate),
        "-rp",
        "1000",
        "-m",
        str(calls),
        "-l",
        str(limit),
        "-nostdin",
        "-timeout",
        str(max(30, calls // max(rate // 2, 1) + 30)) + "s",
        "-trace_stat",
        "-fd",
        "1",
        "-trace_rtt",
        "-rtt_freq",
        "1000",
    ]
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    started = time.monotonic()
    proc = subprocess.run(argv, cwd=workdir, capture_output=True, timeout=600)
    elapsed = time.monotonic() - started
    cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
    stats = sorted(glob.glob(str(workdir / "*_.csv")))
    rtts = sorted(glob.glob(str(workdir / "*_rtt.csv")))
    ok = failed = 0
    duration = elapsed
    if stats:
        with open(stats[-1]) as fh:
            rows = list(csv.DictReader(fh, delimiter=";"))
        if rows:
            last = rows[-1]
            ok = int(last.get("SuccessfulCall(C)", 0) or 0)
            failed = int(last.get("FailedCall(C)", 0) or 0)
            try:
                start = float(last["StartTime"].split("\t")[2])
                current = float(last["CurrentTime"].split("\t")[2])
                duration = current - start
            except (KeyError, IndexError, ValueError):
                pass
    latencies: list[float] = []
    for path in rtts:
        with open(path) as fh:
            for row in csv.reader(fh, delimiter=";"):
                try:
                    latencies.append(float(row[1]))
                except (IndexError, ValueError):
                    continue
    latencies.sort()

    def pct(p: float) -> float | None:
        if not latencies:
            return None
        return round(latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))], 3)

    total = ok + failed
    return {
        "offered_rate": rate,
        "calls": calls,
        "completed": ok,
        "failed": failed,
        "failed_ratio": round(failed / total, 4) if total else None,
        "duration_s": round(duration, 3),
        "tx_per_s": round(ok / duration, 1) if duration else None,
        "latency_ms": {"p50": pct(50), "p90": pct(90), "p99": pct(99), "max": pct(100)},
        "sipp_exit": proc.returncode,
        "cpu_ms_per_tx": {
            name: round(seconds * 1000 / ok, 4) if ok else None for name, seconds in cpu.items()
        },
        "one_core_capacity_tx_per_s": {
            name: round(ok / seconds) if seconds else None for name, seconds in cpu.items()
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short run for CI (< 60 s)")
    parser.add_argument("--rate", type=int, default=None, help="offered MESSAGEs per second")
    parser.add_argument("--seconds", type=float, default=None, help="run time per target")
    parser.add_argument("--limit", type=int, default=200, help="max transactions in flight")
    parser.add_argument("--serve", choices=["fe", "edge"], help=argparse.SUPPRESS)
    parser.add_argument("--topology", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--certs", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        profile = os.environ.get("SIP_BENCH_PROFILE")
        if profile and args.serve == "edge":
            import cProfile

            cProfile.runctx(
                "asyncio.run(serve(args.serve, args.topology, args.certs))",
                globals(),
                {"args": args, "serve": serve, "asyncio": asyncio},
                profile,
            )
        else:
            asyncio.run(serve(args.serve, args.topology, args.certs))
        return 0
    for tool in ("sipp", "stunnel4"):
        if shutil.which(tool) is None and not (tool == "stunnel4" and shutil.which("stunnel")):
            print(f"{tool} is not installed", file=sys.stderr)
            return 2
    rate = args.rate or (1500 if args.quick else 5000)
    seconds = args.seconds or (5.0 if args.quick else 10.0)
    calls = int(rate * seconds)
    with tempfile.TemporaryDirectory(prefix="sip-bench-") as tmp_name:
        tmp = Path(tmp_name)
        topo = topology(tmp)
        certs = tmp / "certs"
        ensure_pki(topo, certs)
        pki = LabPki(certs)
        servers = []
        try:
            for role in ("fe", "edge"):
                proc = subprocess.Popen(
                    [
                        sys.executable,
                        __file__,
                        "--serve",
                        role,
                        "--topology",
                        str(topo.path),
                        "--certs",
                        str(certs),
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                )
                servers.append(proc)
                assert proc.stdout is not None
                line = proc.stdout.readline()
                if b"ready" not in line:
                    raise RuntimeError(f"{role} process did not start")
            results: dict[str, object] = {
                "benchmark": "sip MESSAGE transactions",
                "quick": args.quick,
                "cpus": os.cpu_count(),
            }
            edge_addr = str(topo.interface("edge:access").loopback())
            fe_addr = str(topo.interface("fe:lan").loopback())
            targets = (
                (
                    "via_edge",
                    edge_addr,
                    "sip.contoso.lab",
                    pki.host_cert("fabrikam", "fabrikam").pem,
                ),
                ("direct_fe", fe_addr, "fe.contoso.lab", None),
            )
            for name, address, host, cert in targets:
                stunnel, port = start_stunnel(tmp, address, 5061, cert, pki.trust_bundle, host)
                try:
                    results[name] = run_sipp(
                        tmp / name,
                        port,
                        rate=rate,
                        calls=calls,
                        limit=args.limit,
                        pids={"front_end_and_ua": servers[0].pid, "edge": servers[1].pid},
                    )
                finally:
                    stunnel.terminate()
                    stunnel.wait(5)
                print(f"{name}: {json.dumps(results[name])}")
            via, direct = results["via_edge"], results["direct_fe"]
            assert isinstance(via, dict) and isinstance(direct, dict)
            if via.get("tx_per_s") and direct.get("tx_per_s"):
                results["edge_vs_direct_ratio"] = round(via["tx_per_s"] / direct["tx_per_s"], 3)
        finally:
            for proc in servers:
                if proc.stdin:
                    proc.stdin.close()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "sip_bench.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"via Edge: {results['via_edge']}")
    print(f"direct to FE: {results['direct_fe']}")
    print(f"ratio: {results.get('edge_vs_direct_ratio')}  -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
