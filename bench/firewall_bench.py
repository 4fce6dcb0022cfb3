"""Firewall truth, timed: `edgesim firewall audit` of the shipped rules, and a full probe of the
netns lab with the firewalls traced against the same probe without tracing.

    sudo python3 bench/firewall_bench.py            # 5 audits, 3 probe pairs, medians
    sudo python3 bench/firewall_bench.py --quick    # 1 audit, 1 probe pair (CI)
    sudo python3 bench/firewall_bench.py --no-lab   # the audit only

Needs root, iproute2 and nftables (the audit builds namespaces of its own; the probe part brings
the netns lab up under a lab name of its own, `fwbench`, and down again). Writes
bench/results/firewall_bench.json. Targets (issue 11): the audit under 3 s; a traced probe at
most 1.2 times the untraced one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from simulator.firewall.audit import audit  # noqa: E402
from simulator.firewall.sandbox import requirements_problem  # noqa: E402
from simulator.lab.topology import load_topology  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "firewall_bench.json"
AUDIT_TARGET_S = 3.0
TRACE_RATIO_TARGET = 1.2


def bench_audit(rounds: int) -> dict[str, Any]:
    topology = load_topology()
    durations = []
    flows = 0
    ok = True
    for _ in range(rounds):
        t0 = time.perf_counter()
        report = asyncio.run(audit(topology))
        durations.append(time.perf_counter() - t0)
        flows, ok = report.flows, ok and report.ok
    median = statistics.median(durations)
    return {
        "rounds": rounds,
        "flows": flows,
        "clean": ok,
        "seconds": {
            "median": round(median, 3),
            "min": round(min(durations), 3),
            "max": round(max(durations), 3),
        },
        "target_s": AUDIT_TARGET_S,
        "meets_target": median < AUDIT_TARGET_S,
    }


def bench_probe_trace(rounds: int) -> dict[str, Any]:
    """The whole matrix probed on a netns lab of its own, traced and untraced in turn."""
    from simulator.lab.runners import get_runner
    from simulator.lab.runners.base import LabConfig
    from simulator.probes.run import DEFAULT_TIMEOUT, RunnerExecutor, plan_probes, probe_matrix

    topology = load_topology()
    certs = Path(tempfile.mkdtemp(prefix="edgesim-bench-certs-"))
    state = Path(tempfile.mkdtemp(prefix="edgesim-bench-state-"))
    runner = get_runner("netns", LabConfig(topology, certs, name="fwbench", state_dir=state))
    times: dict[bool, list[float]] = {True: [], False: []}
    verdicts: dict[bool, dict[str, str]] = {}
    try:
        asyncio.run(runner.up())
        builder, _ = plan_probes(runner, certs)
        for _ in range(rounds):
            for trace in (False, True):
                executor = RunnerExecutor(runner, DEFAULT_TIMEOUT, trace=trace)
                run = asyncio.run(probe_matrix(topology, executor, builder))
                times[trace].append(run.duration)
                verdicts[trace] = {r.row_id: r.verdict.value for r in run.results}
    finally:
        asyncio.run(runner.down())
        shutil.rmtree(certs, ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)
    traced, untraced = statistics.median(times[True]), statistics.median(times[False])
    return {
        "rounds": rounds,
        "rows": len(verdicts[True]),
        "traced_s": {"median": round(traced, 3), "all": [round(t, 3) for t in times[True]]},
        "untraced_s": {"median": round(untraced, 3), "all": [round(t, 3) for t in times[False]]},
        "ratio": round(traced / untraced, 3),
        "target_ratio": TRACE_RATIO_TARGET,
        "meets_target": traced / untraced <= TRACE_RATIO_TARGET,
        # Rows the firewall judges differently from the endpoints (no route at a firewall:
        # blocked, where the endpoint saw the ICMP error as refused).
        "verdicts_untraced_vs_traced": {
            row: [verdicts[False][row], verdicts[True][row]]
            for row in verdicts[True]
            if verdicts[True][row] != verdicts[False].get(row)
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="one round of each (CI)")
    parser.add_argument("--no-lab", action="store_true", help="time the audit only")
    args = parser.parse_args()
    problem = requirements_problem()
    if problem:
        sys.exit(f"firewall_bench: {problem}")
    result: dict[str, Any] = {
        "benchmark": "firewall_bench",
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    result["audit"] = bench_audit(1 if args.quick else 5)
    a = result["audit"]
    print(
        f"firewall audit of the shipped rules: {a['seconds']['median']:.2f} s median "
        f"({a['flows']} flows, {a['rounds']} rounds; target < {AUDIT_TARGET_S:g} s)"
    )
    if not args.no_lab and shutil.which("ip"):
        result["probe"] = bench_probe_trace(1 if args.quick else 3)
        p = result["probe"]
        print(
            f"netns probe of the matrix: {p['traced_s']['median']:.2f} s traced, "
            f"{p['untraced_s']['median']:.2f} s untraced: ratio {p['ratio']:.2f} "
            f"(target <= {TRACE_RATIO_TARGET:g})"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
