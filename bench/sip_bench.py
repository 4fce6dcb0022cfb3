"""SIP benchmark: the Access Edge and Kamailio as the same MTLS hop, same load, same run.

SIPp (through stunnel4 for the MTLS, presenting fabrikam's certificate) sends MESSAGEs from a
fabrikam.lab user to a contoso.lab user. The proxy under test relays them over MTLS to the same
far end; the proxies take turns:

    SIPp -TCP- stunnel -MTLS- Access Edge (5061)            -MTLS- far end
    SIPp -TCP- stunnel -MTLS- Kamailio (t_relay, tls module) -MTLS- far end

Far ends (``--backend``): ``uas`` is a SIPp UAS behind stunnel (server mode, the Front End
pool's certificate, client certificate required): cheap, so the proxies are what is measured;
``fe`` is the Front End emulator delivering to a registered user agent (bob). Kamailio is a
stateful proxy (``t_relay()``) with the tls module verifying and requiring client certificates
(``verify_certificate``/``require_certificate``), ``-m`` shared memory and ``tcp_children``;
it does no name checks and no policy, where the Edge does both.

Figures per proxy and far end: completed transactions/s at under 1% failure (a leg that fails
more is run again at three quarters of the rate, twice at most), latency percentiles (SIPp's
response time per transaction), and CPU time per transaction of each server from /proc,
children included; ``cpu_ratio`` = Edge / Kamailio. JSON: bench/results/sip_bench.json.

    python3 bench/sip_bench.py            # 5,000/s offered, 10 s per leg, far ends uas and fe
    python3 bench/sip_bench.py --quick    # 1,500/s, 4 s per leg, far end uas (CI)
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
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
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
from simulator.lab.topology import Topology, load_topology  # noqa: E402
from simulator.pki import LabPki, ensure_pki  # noqa: E402

UAC = ROOT / "tests" / "interop" / "sipp" / "federation_message.xml"
UAS = ROOT / "bench" / "sipp" / "uas_message.xml"
FAILURE_BUDGET = 0.01


def topology(directory: Path) -> Topology:
    """The default lab on loopback addresses 127.217.x.y, written for the server processes."""
    return load_topology().relocated(217).write(directory / "bench-lab.toml")


# ---------------------------------------------------------------------- server processes


async def serve(role: str, topo_path: Path, certs: Path) -> None:
    """One role of the lab in this process: ``dns``, ``edge`` or ``fe`` (with bob's UA)."""
    logging.basicConfig(level=logging.ERROR)
    topo = load_topology(topo_path)
    hosts = {"dns": ["dns-int", "dns-ext"], "fe": ["fe"], "edge": ["edge"]}[role]
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
        await serve_until_stdin_closes(gc=os.environ.get("SIP_BENCH_GC") != "off")
        if ua is not None:
            task.cancel()
            await ua.close()


def start_role(role: str, topo: Topology, certs: Path) -> subprocess.Popen[bytes]:
    return start_served(role, __file__, role, "--topology", str(topo.path), "--certs", str(certs))


# ---------------------------------------------------------------------- peers


def start_stunnel(
    tmp: Path,
    *,
    accept: tuple[str, int],
    connect: tuple[str, int],
    cert: Path | None,
    trust: Path,
    client: bool,
    check_host: str | None = None,
) -> subprocess.Popen[bytes]:
    """stunnel in client mode (TCP in, TLS out) or server mode (TLS in, client cert required)."""
    lines = [
        "foreground = yes",
        "pid =",
        "debug = 3",
        "[sip]",
        f"client = {'yes' if client else 'no'}",
        f"accept = {accept[0]}:{accept[1]}",
        f"connect = {connect[0]}:{connect[1]}",
        f"CAfile = {trust}",
        "verifyChain = yes",
    ]
    if check_host:
        lines.append(f"checkHost = {check_host}")
    if cert is not None:
        lines.append(f"cert = {cert}")
    conf = tmp / f"stunnel-{accept[1]}.conf"
    conf.write_text("\n".join(lines) + "\n")
    stunnel = shutil.which("stunnel4") or shutil.which("stunnel")
    assert stunnel is not None
    proc = subprocess.Popen(
        [stunnel, str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_tcp(*accept)
    except RuntimeError:
        proc.kill()
        raise
    return proc


def kamailio_config(
    tmp: Path, *, listen: tuple[str, int], next_hop: tuple[str, int], pki: LabPki, children: int
) -> Path:
    """A stateful MTLS proxy: the Edge's certificates, verify and require them both ways."""
    server = pki.host_cert("edge", "public")
    client = pki.host_cert("edge", "internal")
    federation_cas = tmp / "kamailio-federation-cas.pem"
    federation_cas.write_text(
        pki.ca_cert("public").read_text() + pki.ca_cert("fabrikam").read_text()
    )
    tls = tmp / "kamailio-tls.cfg"
    tls.write_text(
        f"""[server:default]
method = TLSv1.2+
verify_certificate = yes
require_certificate = yes
certificate = {server.cert}
private_key = {server.key}
ca_list = {federation_cas}

[client:default]
method = TLSv1.2+
verify_certificate = yes
require_certificate = yes
certificate = {client.cert}
private_key = {client.key}
ca_list = {pki.ca_cert("internal")}
"""
    )
    cfg = tmp / "kamailio.cfg"
    cfg.write_text(
        f"""#!KAMAILIO
debug=-1
log_stderror=yes
children=1
tcp_children={children}
disable_tcp=no
enable_tls=yes
auto_aliases=no
dns=no
rev_dns=no
tcp_connection_lifetime=3600
# a write queue as deep as the Edge's (4 MiB): Kamailio's default (32 KiB) closes a busy
# connection whose peer reads late
tcp_conn_wq_max=4194304
tcp_wq_max=16777216
listen=tls:{listen[0]}:{listen[1]}

loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "maxfwd.so"
loadmodule "pv.so"
loadmodule "tls.so"
modparam("tls", "config", "{tls}")
modparam("tm", "fr_timer", 32000)

request_route {{
    if (!mf_process_maxfwd_header("70")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    $du = "sip:{next_hop[0]}:{next_hop[1]};transport=tls";
    if (!t_relay()) {{
        sl_reply_error();
    }}
    exit;
}}
"""
    )
    return cfg


def start_kamailio(cfg: Path, tmp: Path, listen: tuple[str, int]) -> subprocess.Popen[bytes]:
    kamailio = shutil.which("kamailio") or "/usr/sbin/kamailio"
    argv = [kamailio, "-f", str(cfg), "-DD", "-E", "-m", "1024", "-M", "32"]
    argv += ["-P", str(tmp / "kamailio.pid"), "-Y", str(tmp)]
    log = (tmp / "kamailio.log").open("wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_tcp(*listen)
    except RuntimeError:
        proc.kill()
        raise RuntimeError(
            "Kamailio did not start: " + (tmp / "kamailio.log").read_text()[-1500:]
        ) from None
    return proc


def start_uas(tmp: Path, port: int) -> subprocess.Popen[bytes]:
    argv = ["sipp", "-sf", str(UAS), "-t", "t1", "-i", "127.0.0.1", "-p", str(port)]
    argv += ["-cp", str(free_port()), "-nostdin", "-max_socket", "1000"]
    (tmp / "uas").mkdir(exist_ok=True)
    proc = subprocess.Popen(
        argv, cwd=tmp / "uas", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_tcp("127.0.0.1", port)
    return proc


# ---------------------------------------------------------------------- load


def run_sipp(
    workdir: Path, port: int, *, rate: int, calls: int, limit: int, pids: dict[str, list[int]]
) -> dict[str, Any]:
    """One SIPp UAC run; CPU of each named group of server processes over the run."""
    workdir.mkdir(parents=True, exist_ok=True)
    argv = ["sipp", "-sf", str(UAC), f"127.0.0.1:{port}", "-t", "t1", "-i", "127.0.0.1"]
    argv += ["-p", str(free_port()), "-cp", str(free_port()), "-s", "bob"]
    argv += ["-r", str(rate), "-rp", "1000", "-m", str(calls), "-l", str(limit), "-nostdin"]
    argv += ["-timeout", f"{max(30, calls // max(rate // 2, 1) + 30)}s"]
    argv += ["-trace_stat", "-fd", "1", "-trace_rtt", "-rtt_freq", "1000"]

    def cpu() -> dict[str, float]:
        return {name: sum(tree_cpu_seconds(p) for p in group) for name, group in pids.items()}

    cpu_before = cpu()
    load = load_average()
    started = time.monotonic()
    proc = subprocess.run(argv, cwd=workdir, capture_output=True, timeout=600)
    elapsed = time.monotonic() - started
    used = {name: seconds - cpu_before[name] for name, seconds in cpu().items()}
    ok = failed = 0
    duration = elapsed
    stats = sorted(glob.glob(str(workdir / "*_.csv")))
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
    stamps: list[float] = []
    for path in sorted(glob.glob(str(workdir / "*_rtt.csv"))):
        with open(path) as fh:
            for row in csv.reader(fh, delimiter=";"):
                try:
                    stamp, latency = float(row[0]), float(row[1])
                except (IndexError, ValueError):
                    continue
                stamps.append(stamp)
                latencies.append(latency)
    latencies.sort()
    # throughput over the span of the completions: a transaction that never completes keeps
    # SIPp waiting for its timeout, which is not time spent relaying
    if len(stamps) > 1 and max(stamps) > min(stamps):
        span = (max(stamps) - min(stamps)) / 1000
        duration = min(duration, span * len(stamps) / max(len(stamps) - 1, 1))
    total = ok + failed
    return {
        "offered_rate": rate,
        "calls": calls,
        "completed": ok,
        "failed": failed,
        "failed_ratio": round(failed / total, 4) if total else None,
        "duration_s": round(duration, 3),
        "tx_per_s": round(ok / duration, 1) if duration else None,
        "latency_ms": {
            "p50": percentile(latencies, 50),
            "p90": percentile(latencies, 90),
            "p99": percentile(latencies, 99),
            "max": percentile(latencies, 100),
        },
        "sipp_exit": proc.returncode,
        **(
            {"sipp_error": (proc.stderr or proc.stdout).decode("utf-8", "replace")[-500:]}
            if proc.returncode not in (0, 1) and not ok
            else {}
        ),
        "cpu_us_per_tx": {
            name: round(seconds * 1e6 / ok, 1) if ok else None for name, seconds in used.items()
        },
        "load_average_before": load,
    }


def leg(
    workdir: Path,
    front: Callable[[int], subprocess.Popen[bytes]],
    *,
    rate: int,
    seconds: float,
    limit: int,
    pids: dict[str, list[int]],
) -> dict[str, Any]:
    """Throughput at under 1% failure: the offered rate, then three quarters of it (twice).

    ``front`` starts the client-side stunnel on a port (a fresh one for each attempt)."""
    attempts = []
    for attempt in range(3):
        port = free_port()
        stunnel = front(port)
        try:
            result = run_sipp(
                workdir / f"try{attempt}",
                port,
                rate=rate,
                calls=max(1, int(rate * seconds)),
                limit=limit,
                pids=pids,
            )
        finally:
            stunnel.terminate()
            stunnel.wait(5)
        attempts.append(result)
        if result["completed"] and (result["failed_ratio"] or 0) < FAILURE_BUDGET:
            break
        rate = max(1, rate * 3 // 4)
    final = dict(attempts[-1])
    final["within_failure_budget"] = bool(
        final["completed"] and (final["failed_ratio"] or 0) < FAILURE_BUDGET
    )
    if len(attempts) > 1:
        final["earlier_attempts"] = [
            {k: a[k] for k in ("offered_rate", "completed", "failed", "failed_ratio")}
            for a in attempts[:-1]
        ]
    return final


def compare(edge: dict[str, Any], kamailio: dict[str, Any]) -> dict[str, Any]:
    """Edge / Kamailio: CPU per transaction and throughput."""
    e_cpu, k_cpu = edge["cpu_us_per_tx"]["proxy"], kamailio["cpu_us_per_tx"]["proxy"]
    out: dict[str, Any] = {
        "edge": edge,
        "kamailio": kamailio,
        "cpu_ratio": round(e_cpu / k_cpu, 3) if e_cpu and k_cpu else None,
    }
    if edge["tx_per_s"] and kamailio["tx_per_s"]:
        out["throughput_ratio"] = round(edge["tx_per_s"] / kamailio["tx_per_s"], 3)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short run for CI (< 60 s)")
    parser.add_argument("--rate", type=int, default=None, help="offered MESSAGEs per second")
    parser.add_argument("--seconds", type=float, default=None, help="run time per leg")
    parser.add_argument("--limit", type=int, default=200, help="max transactions in flight")
    parser.add_argument(
        "--backend",
        choices=["uas", "fe", "both"],
        default=None,
        help="far end: SIPp UAS, the Front End emulator, or both (default: both; --quick: uas)",
    )
    parser.add_argument("--kamailio-children", type=int, default=2, help="Kamailio's tcp_children")
    parser.add_argument("--no-kamailio", action="store_true", help="the Edge alone")
    parser.add_argument("--no-edge", action="store_true", help="Kamailio alone")
    parser.add_argument("--serve", choices=["dns", "fe", "edge"], help=argparse.SUPPRESS)
    parser.add_argument("--topology", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--certs", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        profile = os.environ.get("SIP_BENCH_PROFILE")
        if profile and args.serve == "edge":
            import cProfile

            cProfile.runctx(
                "aioloop.run(serve(args.serve, args.topology, args.certs))",
                globals(),
                {"args": args, "serve": serve, "aioloop": aioloop},
                profile,
            )
        else:
            aioloop.run(serve(args.serve, args.topology, args.certs))
        return 0
    needed = ["sipp", "stunnel4"] + ([] if args.no_kamailio else ["kamailio"])
    for tool in needed:
        if not (shutil.which(tool) or (tool == "stunnel4" and shutil.which("stunnel"))):
            if tool == "kamailio" and Path("/usr/sbin/kamailio").exists():
                continue
            print(f"{tool} is not installed (scripts/setup.sh --test)", file=sys.stderr)
            return 2
    rate = args.rate or (1500 if args.quick else 5000)
    seconds = args.seconds or (4.0 if args.quick else 10.0)
    backends = {"uas": ["uas"], "fe": ["fe"], "both": ["uas", "fe"]}[
        args.backend or ("uas" if args.quick else "both")
    ]
    results: dict[str, Any] = {
        "benchmark": "sip MESSAGE transactions, MTLS both hops",
        "quick": args.quick,
        "offered_rate": rate,
        "seconds_per_leg": seconds,
        "load_average_at_start": load_average(),
        "edgesim_loop": aioloop.loop_name(),
    }
    with tempfile.TemporaryDirectory(prefix="sip-bench-") as tmp_name:
        tmp = Path(tmp_name)
        topo = topology(tmp)
        certs = tmp / "certs"
        ensure_pki(topo, certs)
        pki = LabPki(certs)
        edge_addr = str(topo.interface("edge:access").loopback())
        fe_addr = str(topo.interface("fe:lan").loopback())
        procs: list[subprocess.Popen[bytes]] = []
        try:
            dns = start_role("dns", topo, certs)
            procs.append(dns)
            edge = start_role("edge", topo, certs)
            procs.append(edge)
            proxies = {} if args.no_edge else {"edge": (edge_addr, 5061, edge.pid)}
            if not args.no_kamailio:
                k_port = free_port(host=edge_addr)
                cfg = kamailio_config(
                    tmp,
                    listen=(edge_addr, k_port),
                    next_hop=(fe_addr, 5061),
                    pki=pki,
                    children=args.kamailio_children,
                )
                kamailio = start_kamailio(cfg, tmp, (edge_addr, k_port))
                procs.append(kamailio)
                proxies["kamailio"] = (edge_addr, k_port, kamailio.pid)
            fabrikam = pki.host_cert("fabrikam", "fabrikam").pem
            for backend in backends:
                far: list[subprocess.Popen[bytes]] = []
                if backend == "uas":
                    uas_port = free_port()
                    far.append(start_uas(tmp, uas_port))
                    far.append(
                        start_stunnel(
                            tmp,
                            accept=(fe_addr, 5061),
                            connect=("127.0.0.1", uas_port),
                            cert=pki.host_cert("fe", "internal").pem,
                            trust=pki.ca_cert("internal"),
                            client=False,
                        )
                    )
                else:
                    far.append(start_role("fe", topo, certs))
                figures: dict[str, Any] = {}
                try:
                    for name, (address, port, pid) in proxies.items():

                        def front(
                            local: int, address: str = address, port: int = port
                        ) -> subprocess.Popen[bytes]:
                            return start_stunnel(
                                tmp,
                                accept=("127.0.0.1", local),
                                connect=(address, port),
                                cert=fabrikam,
                                trust=pki.trust_bundle,
                                client=True,
                                check_host="sip.contoso.lab",
                            )

                        figures[name] = leg(
                            tmp / backend / name,
                            front,
                            rate=rate,
                            seconds=seconds,
                            limit=args.limit,
                            pids={"proxy": [pid], "far_end": [p.pid for p in far]},
                        )
                        print(f"{backend}/{name}: {json.dumps(figures[name])}", flush=True)
                finally:
                    for proc in far:
                        stop_processes(proc)
                if "kamailio" in figures and "edge" in figures:
                    results[backend] = compare(figures["edge"], figures["kamailio"])
                else:
                    results[backend] = figures
        finally:
            for proc in reversed(procs):
                stop_processes(proc)
    first = results[backends[0]]
    results["cpu_ratio"] = first.get("cpu_ratio")
    results["cpu_ratio_far_end"] = backends[0]
    out = write_result("sip_bench", results)
    print_table(results, backends)
    print(f"-> {out}")
    return 0


def print_table(results: dict[str, Any], backends: list[str]) -> None:
    for backend in backends:
        block = results[backend]
        print(f"far end: {backend}")
        print(f"  {'':28}{'edge':>12}{'kamailio':>12}")
        rows = (
            ("tx/s (under 1% failure)", lambda f: f["tx_per_s"]),
            ("failed ratio", lambda f: f["failed_ratio"]),
            ("p50 ms", lambda f: f["latency_ms"]["p50"]),
            ("p99 ms", lambda f: f["latency_ms"]["p99"]),
            ("proxy CPU us/tx", lambda f: f["cpu_us_per_tx"]["proxy"]),
            ("far end CPU us/tx", lambda f: f["cpu_us_per_tx"]["far_end"]),
        )
        for label, get in rows:
            cells = [str(get(block[p])) if p in block else "-" for p in ("edge", "kamailio")]
            print(f"  {label:28}{cells[0]:>12}{cells[1]:>12}")
        if "cpu_ratio" in block:
            print(f"  cpu_ratio (Edge / Kamailio): {block['cpu_ratio']}")


if __name__ == "__main__":
    sys.exit(main())
