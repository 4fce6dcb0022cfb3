"""Where the lab's firewall and the Edge give up: `edgesim load` stepped up, and held silent.

    sudo python3 bench/load_bench.py             # steps of sessions/allocations, then idles
    sudo python3 bench/load_bench.py --quick     # one small step, a short idle (CI, < 60 s)
    python3 bench/load_bench.py --runner swarm --name edgesim   # a running swarm lab

Two series, each a `simulator.load.run.run_load` against a netns lab of its own (name `ldb`;
root) or a running lab given with --runner/--name:

* steps: federation sessions and relay allocations held at once (each step doubles), with a
  short hold; per step how many were held, why the others failed, setup latency, and the
  firewalls' connection-tracking entries at the peak;
* idles: a few allocations left silent for longer and longer, then the peer sends first: the
  silence after which the firewall's UDP state no longer lets it in (compare with its
  ``nf_conntrack_udp_timeout``: a flow that exchanged only briefly keeps that one, not the
  longer ``_stream`` timeout, which Linux gives a flow still active two seconds after its first
  reply).

Writes bench/results/load_bench.json. Figures, never assertions: they depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.benchlib import write_result  # noqa: E402
from simulator.lab.runners import get_runner  # noqa: E402
from simulator.lab.runners.base import LabConfig, Runner  # noqa: E402
from simulator.lab.runners.netns import lab_namespaces, requirements_problem  # noqa: E402
from simulator.lab.topology import load_topology  # noqa: E402
from simulator.load.run import run_load, summary  # noqa: E402
from simulator.paths import default_certs_dir  # noqa: E402

LAB = "ldb"
FULL_STEPS = [32, 64, 128, 256, 512, 1024]
QUICK_STEPS = [32]
FULL_IDLES = [5.0, 25.0, 35.0, 60.0]
QUICK_IDLES = [2.0]
IDLE_ALLOCATIONS = 10


def one_run(runner: Runner, sessions: int, allocations: int, hold: float) -> dict[str, Any]:
    report = asyncio.run(
        run_load(
            runner, sessions=sessions, allocations=allocations, hold=hold, rate=200, timeout=10
        )
    )
    out: dict[str, Any] = {"sessions": sessions, "allocations": allocations, "hold": hold}
    for r in report.results:
        out[r.kind] = {
            "held": r.peak,
            "failed": dict(r.failures),
            "after_hold": r.after_hold,
            "after_hold_failed": dict(r.after_hold_failures),
            **summary(r),
        }
    out["firewalls"] = {fw.firewall: fw.to_dict() for fw in report.firewalls}
    out["duration_s"] = round(report.duration, 2)
    return out


def print_step(step: dict[str, Any]) -> None:
    parts = []
    for kind in ("federation", "relay"):
        if kind in step:
            r = step[kind]
            failed = ", ".join(f"{n}x {why}" for why, n in r["failed"].items()) or "none failed"
            p95 = r["setup_ms"].get("p95", "-")
            parts.append(f"{kind} held {r['held']} ({failed}; setup p95 {p95} ms)")
    peak = {n: f["conntrack_peak"] for n, f in step["firewalls"].items()}
    print(
        f"  {step['sessions']:5}/{step['allocations']:5}: "
        + "; ".join(parts)
        + f"; conntrack peak {peak}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small step, a short idle")
    parser.add_argument(
        "--runner", default="netns", help="netns (a lab of its own) or a running lab"
    )
    parser.add_argument(
        "--name", default=None, help="the running lab's name (--runner other than netns)"
    )
    parser.add_argument("--only", choices=["steps", "idles"], default=None, help="one series")
    args = parser.parse_args()
    steps = QUICK_STEPS if args.quick else FULL_STEPS
    idles = QUICK_IDLES if args.quick else FULL_IDLES
    results: dict[str, Any] = {"runner": args.runner, "quick": args.quick, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        own = args.runner == "netns" and args.name is None
        if own:
            problem = requirements_problem() or (
                f"a netns lab '{LAB}' is up" if lab_namespaces(LAB) else None
            )
            if problem:
                print(f"skipped: {problem}")
                results["skipped"] = problem
                write_result("load_bench", results)
                return 0
        config = LabConfig(
            load_topology(),
            Path(tmp) / "certs" if own else default_certs_dir(),
            name=LAB if own else (args.name or "edgesim"),
            state_dir=Path(tmp) / "state" if own else None,
        )
        runner = get_runner(args.runner, config)
        if own:
            asyncio.run(runner.up())
        try:
            t0 = time.perf_counter()
            print(f"steps (sessions/allocations held at once, hold 2 s) on the {args.runner} lab:")
            results["steps"] = []
            for count in steps if args.only != "idles" else []:
                step = one_run(runner, count, count, 2.0)
                results["steps"].append(step)
                print_step(step)
            print(f"idles ({IDLE_ALLOCATIONS} allocations silent, then the peer sends first):")
            results["idles"] = []
            for idle in idles if args.only != "steps" else []:
                run = one_run(runner, 0, IDLE_ALLOCATIONS, idle)
                relay = run["relay"]
                results["idles"].append(
                    {"idle_s": idle, "delivered": relay["after_hold"], "of": relay["held"]}
                )
                limits = next(iter(run["firewalls"].values()), {}).get("limits", {})
                print(
                    f"  after {idle:5.0f} s silent: {relay['after_hold']} of {relay['held']} "
                    f"delivered (udp_timeout {limits.get('udp_timeout', '?')} s, "
                    f"udp_stream_timeout {limits.get('udp_stream_timeout', '?')} s)"
                )
            results["duration_s"] = round(time.perf_counter() - t0, 1)
        finally:
            if own:
                asyncio.run(runner.down())
    print(f"wrote {write_result('load_bench', results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
