"""Time a full matrix probe (every row, blocked rows included) and write JSON to bench/results/.

As root (with ip and nft), the run happens inside a network namespace of its own where nftables
drops every packet of the rows that must stay blocked, so those rows cost their timeout, in
parallel with the rest (issue 4's target: the whole matrix in under 5 s). Without root it runs
against the embedded lab on loopback addresses of its own (closed ports answer at once).

``--runner netns`` or ``--runner compose`` times what a user types instead: ``edgesim lab up``,
then ``edgesim probe`` of the whole matrix against that lab (one process per source inside the
hosts, the firewalls traced), each run's wall time and the probe's own duration, then ``lab
down`` (issue 15's targets: the probe under 3 s, netns up under 3 s, compose up under 8 s). The
netns lab is one of its own (``--name pbench``, state in a temporary directory); the compose lab
is the repository's, so it must not be up already. Both need the machine-wide lab lock when other
labs may run (``flock /tmp/edgesim-lab.lock python3 bench/probe_bench.py --runner netns``).

    python3 bench/probe_bench.py                   # 5 runs
    python3 bench/probe_bench.py --quick           # 1 run (CI)
    python3 bench/probe_bench.py --runner netns    # the netns lab, 5 runs (root)
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
#: Issue 15: the full matrix probe of a running lab, and the lab's start (``lab up``).
LAB_TARGETS_S = {"netns": {"probe": 3.0, "up": 3.0}, "compose": {"probe": 3.0, "up": 8.0}}
LAB_NAME = "pbench"


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


def edgesim(
    args: list[str], env: dict[str, str], timeout: float, *, json_out: bool = False
) -> tuple[float, str]:
    """``python3 -m simulator ARGS``: its wall time and stdout; exits naming the command if it
    fails (``json_out``: a probe, which exits 1 when a row fails, still a timed run, when it
    printed its JSON)."""
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "simulator", *args],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    printed = json_out and done.returncode == 1 and done.stdout.lstrip().startswith("{")
    if done.returncode != 0 and not printed:
        why = (done.stderr or done.stdout).strip()[-1500:]
        sys.exit(f"`edgesim {' '.join(args)}` failed ({done.returncode}): {why}")
    return wall, done.stdout


def lab_problem(runner: str) -> str | None:
    """Why ``--runner`` cannot be benchmarked here, or None."""
    if os.geteuid() != 0:
        return "needs root"
    if runner == "netns":
        from simulator.lab.runners.netns import lab_namespaces, requirements_problem

        return requirements_problem() or (
            f"a netns lab '{LAB_NAME}' is up" if lab_namespaces(LAB_NAME) else None
        )
    done = subprocess.run(["docker", "info"], capture_output=True, check=False)
    if done.returncode != 0:
        return "no Docker engine answers"
    running = subprocess.run(
        ["docker", "ps", "-q", "--filter", "label=com.docker.compose.project=edgesim"],
        capture_output=True, text=True, check=False,
    ).stdout.split()  # fmt: skip
    return "the compose lab is up already" if running else None


def bench_lab(runner: str, runs: int, timeout: float) -> dict[str, Any]:
    """``lab up``, ``probe`` ``runs`` times, ``lab down``, as a user runs them."""
    problem = lab_problem(runner)
    if problem:
        sys.exit(f"--runner {runner}: {problem}")
    with tempfile.TemporaryDirectory(prefix="edgesim-probe-bench-") as tmp:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "EDGESIM_STATE_DIR": tmp}
        lab = ["--runner", runner, "--certs", str(Path(tmp) / "certs")]
        if runner == "netns":
            lab += ["--name", LAB_NAME]
        ensure_pki(load_topology(), Path(tmp) / "certs")
        load = [round(v, 2) for v in os.getloadavg()]
        up_s, _ = edgesim(["lab", "up", *lab], env, 300)
        walls, durations, counts = [], [], {}
        try:
            for _ in range(runs):
                args = ["probe", *lab, "--format", "json", "--timeout", f"{timeout:g}"]
                wall, out = edgesim(args, env, 120, json_out=True)
                report = json.loads(out)
                walls.append(round(wall, 3))
                durations.append(round(float(report["duration"]), 3))
                counts = report.get("counts", {})
        finally:
            down_s, _ = edgesim(["lab", "down", *lab], env, 300)
    targets = LAB_TARGETS_S[runner]
    return {
        "benchmark": "probe_bench",
        "mode": f"edgesim probe --runner {runner} against `edgesim lab up --runner {runner}`",
        "runs": runs,
        "timeout_s": timeout,
        "lab_up_s": round(up_s, 3),
        "lab_down_s": round(down_s, 3),
        "probe_wall_s": {"median": statistics.median(walls), "all": walls},
        "probe_duration_s": {"median": statistics.median(durations), "all": durations},
        "counts": counts,
        "targets_s": targets,
        "meets_probe_target": statistics.median(walls) < targets["probe"],
        "meets_up_target": up_s < targets["up"],
        "load_average_before": load,
        "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
        "cpus": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="one run (CI)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=2.0, help="per-probe timeout (s)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--no-netns", action="store_true", help="never use a network namespace")
    parser.add_argument(
        "--runner",
        choices=["netns", "compose"],
        help="time `lab up` and `probe` of that lab as a user runs them (root)",
    )
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--certs", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.runs = 1
    if args.inner:
        inner(args)
        return
    if args.runner:
        lab_result = bench_lab(args.runner, args.runs, args.timeout)
        RESULTS.mkdir(parents=True, exist_ok=True)
        out = RESULTS / f"probe_bench-{args.runner}.json"
        out.write_text(json.dumps(lab_result, indent=2) + "\n")
        wall, targets = lab_result["probe_wall_s"]["median"], lab_result["targets_s"]
        print(
            f"lab up --runner {args.runner}: {lab_result['lab_up_s']:.2f} s "
            f"(target < {targets['up']:g} s), down {lab_result['lab_down_s']:.2f} s"
        )
        print(f"probe --runner {args.runner}, full matrix: median {wall:.2f} s wall "
              f"({lab_result['probe_duration_s']['median']:.2f} s probing) over {args.runs} "
              f"run(s) (target < {targets['probe']:g} s: "
              f"{'met' if lab_result['meets_probe_target'] else 'MISSED'})")  # fmt: skip
        print(f"verdicts: {lab_result['counts']}  load average {lab_result['load_average_before']}")
        print(f"wrote {out}")
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
