"""Time a full matrix probe (every row, blocked rows included) and write JSON to bench/results/.

As root (with ip and nft), the run happens inside a network namespace of its own where nftables
drops every packet of the rows that must stay blocked, so those rows cost their timeout, in
parallel with the rest (the issue's target: the whole matrix in under 5 s). Without root it runs
against the embedded lab on loopback addresses of its own (closed ports answer at once).

    python3 bench/probe_bench.py            # 5 runs
    python3 bench/probe_bench.py --quick    # 1 run (CI)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from simulator.lab.runners.local import LocalLab  # noqa: E402
from simulator.lab.topology import Topology, load_topology  # noqa: E402
from simulator.matrix.model import Expectation  # noqa: E402
from simulator.pki import LabPki, ensure_pki  # noqa: E402
from simulator.probes.run import JobBuilder, LocalExecutor, build_jobs, probe_matrix  # noqa: E402

RESULTS = Path(os.environ.get("EDGESIM_BENCH_RESULTS") or ROOT / "bench" / "results")
TARGET_S = 5.0


def isolated_topology() -> Topology:
    """The default lab on loopback addresses of its own, clear of any lab already running."""
    return load_topology().relocated(100 + os.getpid() % 100)


async def one_run(
    topology: Topology, certs: Path, timeout: float, concurrency: int
) -> dict[str, Any]:
    async with LocalLab(topology, certs) as lab:
        builder = JobBuilder(topology, lab.pki, timeout=timeout)
        run = await probe_matrix(topology, LocalExecutor(), builder, concurrency=concurrency)
    return {
        "duration_s": round(run.duration, 4),
        "rows": len(run.results),
        "counts": run.counts,
        "verdicts": {r.row_id: r.verdict.value for r in run.results},
        "slowest": sorted(
            ((r.row_id, round(max(r.timings.values(), default=0), 3)) for r in run.results),
            key=lambda x: -x[1],
        )[:3],
    }


def drop_rules(topology: Topology, certs: Path) -> str:
    """nftables rules dropping the packets of every row that must stay blocked."""
    jobs = build_jobs(topology, JobBuilder(topology, LabPki(certs)))
    lines = []
    for job in jobs:
        if job.row.expect is Expectation.BLOCKED and job.spec is not None:
            spec = job.spec
            ports = f"{spec.port}-{spec.port_high}" if spec.port_high else str(spec.port)
            lines.append(
                f"    ip saddr {spec.bind} ip daddr {spec.address} "
                f"{job.row.transport} dport {ports} drop"
            )
    return (
        "table ip bench {\n  chain in {\n    type filter hook input priority 0; policy accept;\n"
        + "\n".join(lines)
        + "\n  }\n}\n"
    )


def inner(args: argparse.Namespace) -> None:
    topology = load_topology()
    runs = [
        asyncio.run(one_run(topology, Path(args.certs), args.timeout, args.concurrency))
        for _ in range(args.runs)
    ]
    print(json.dumps(runs))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="one run (CI)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=2.0, help="per-probe timeout (s)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--no-netns", action="store_true", help="never use a network namespace")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--certs", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.runs = 1
    if args.inner:
        inner(args)
        return

    certs = Path(tempfile.mkdtemp(prefix="edgesim-bench-certs-"))
    try:
        ensure_pki(load_topology(), certs)
        use_netns = (
            not args.no_netns and os.geteuid() == 0 and shutil.which("ip") and shutil.which("nft")
        )
        if use_netns:
            mode = "netns, blocked rows dropped by nftables"
            ns = f"edgesim-bench-{uuid.uuid4().hex[:6]}"  # no lab's name
            subprocess.run(["ip", "netns", "add", ns], check=True)
            try:
                subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
                rules = drop_rules(load_topology(), certs)
                subprocess.run(
                    ["ip", "netns", "exec", ns, "nft", "-f", "-"],
                    input=rules,
                    text=True,
                    check=True,
                )
                t0 = time.perf_counter()
                proc = subprocess.run(
                    [
                        "ip",
                        "netns",
                        "exec",
                        ns,
                        sys.executable,
                        __file__,
                        "--inner",
                        "--certs",
                        str(certs),
                        "--runs",
                        str(args.runs),
                        "--timeout",
                        str(args.timeout),
                        "--concurrency",
                        str(args.concurrency),
                    ],
                    capture_output=True,
                    text=True,
                    timeout=60 + args.runs * (args.timeout + 10),
                )
                if proc.returncode != 0:
                    sys.exit(f"bench failed inside {ns}:\n{proc.stderr[-2000:]}")
                runs = json.loads(proc.stdout)
                wall = time.perf_counter() - t0
            finally:
                subprocess.run(["ip", "netns", "del", ns], check=False)
        else:
            mode = "local lab on loopback (no firewall: closed ports are refused at once)"
            topology = isolated_topology()
            t0 = time.perf_counter()
            runs = [
                asyncio.run(one_run(topology, certs, args.timeout, args.concurrency))
                for _ in range(args.runs)
            ]
            wall = time.perf_counter() - t0
    finally:
        shutil.rmtree(certs, ignore_errors=True)

    durations = [r["duration_s"] for r in runs]
    result = {
        "benchmark": "probe_bench",
        "mode": mode,
        "runs": len(runs),
        "rows": runs[0]["rows"],
        "timeout_s": args.timeout,
        "concurrency": args.concurrency,
        "full_matrix_s": {
            "median": statistics.median(durations),
            "min": min(durations),
            "max": max(durations),
        },
        "counts": runs[0]["counts"],
        "verdicts": runs[0]["verdicts"],
        "slowest_rows": runs[0]["slowest"],
        "wall_s_including_lab_start": round(wall, 3),
        "target_s": TARGET_S,
        "meets_target": max(durations) < TARGET_S,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / ("probe_bench.json" if use_netns else "probe_bench-local.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"mode: {mode}")
    print(
        f"full matrix ({result['rows']} rows, timeout {args.timeout:g} s, "
        f"concurrency {args.concurrency}): "
        f"median {result['full_matrix_s']['median']:.3f} s over {len(runs)} run(s) "
        f"(target < {TARGET_S:g} s: {'met' if result['meets_target'] else 'MISSED'})"
    )
    print(f"verdicts: {result['counts']}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
