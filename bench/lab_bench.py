"""Time to bring each lab runner up (every listener answering) and down.

    python3 bench/lab_bench.py            # 3 rounds per runner, median
    python3 bench/lab_bench.py --quick    # 1 round per runner (CI, < 60 s)

Runners that cannot run here are reported as skipped with the reason: netns needs root, iproute2
and nftables; compose needs a Docker engine, Compose v2 and the edgesim:latest image (`docker
compose build` first: `lab up` runs `compose up --build`, which then only checks its cache, so
image building is not timed). Writes bench/results/lab_bench.json.
Targets: local < 2 s (issue 6), netns < 3 s and compose < 8 s (issue 15; issue 6 had 10 and 30).
The netns and compose labs are machine-wide: when other labs may run, hold the lab lock
(``flock /tmp/edgesim-lab.lock python3 bench/lab_bench.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.benchlib import write_result  # noqa: E402
from simulator.lab.runners import get_runner  # noqa: E402
from simulator.lab.runners.base import LabConfig, Runner  # noqa: E402
from simulator.lab.runners.netns import lab_namespaces, requirements_problem  # noqa: E402
from simulator.lab.topology import load_topology  # noqa: E402
from simulator.pki import ensure_pki  # noqa: E402

TARGETS = {"local": 2.0, "netns": 3.0, "compose": 8.0}
NETNS_LAB = "bench"


async def _bench_runner(runner: Runner) -> tuple[float, float, int]:
    """Up until every listener answers, then down: the same for every runner."""
    t0 = time.perf_counter()
    await runner.up()
    try:
        checks = await runner.check()
        up = time.perf_counter() - t0
        if not all(c.ok for c in checks):
            bad = [f"{c.host} {c.listener}: {c.detail}" for c in checks if not c.ok]
            raise RuntimeError(f"{runner.name}: listeners not answering: {bad}")
    finally:
        t1 = time.perf_counter()
        await runner.down()
    return up, time.perf_counter() - t1, len(checks)


def bench_local(certs: Path) -> tuple[float, float, int]:
    return asyncio.run(_bench_runner(get_runner("local", LabConfig(load_topology(), certs))))


def bench_netns(certs: Path, state: Path) -> tuple[float, float, int]:
    # A lab of its own name: a netns lab the user has up is left alone.
    config = LabConfig(load_topology(), certs, name=NETNS_LAB, state_dir=state)
    return asyncio.run(_bench_runner(get_runner("netns", config)))


def _compose(*args: str) -> None:
    subprocess.run(
        ["docker", "compose", "-p", "edgesim-bench", "-f", str(ROOT / "docker-compose.yml"), *args],
        check=True,
        capture_output=True,
        timeout=300,
        cwd=ROOT,
    )


def bench_compose() -> tuple[float, float, int]:
    t0 = time.perf_counter()
    _compose("up", "--detach", "--wait", "--wait-timeout", "120")
    up = time.perf_counter() - t0
    t1 = time.perf_counter()
    _compose("down", "--remove-orphans", "--timeout", "2")
    # `--wait` returned: every container is healthy (firewalls loaded, services listening).
    healthy = sum(
        1
        for line in (ROOT / "docker-compose.yml").read_text().splitlines()
        if line.startswith("    <<: *lab-node")
    )
    return up, time.perf_counter() - t1, healthy


def compose_problem() -> str | None:
    if shutil.which("docker") is None:
        return "docker is not installed"
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        return "no Docker engine answers"
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0:
        return "Compose v2 is missing"
    if (
        subprocess.run(
            ["docker", "image", "inspect", "edgesim:latest"], capture_output=True
        ).returncode
        != 0
    ):
        return "no edgesim:latest image (docker compose build)"
    running = subprocess.run(
        ["docker", "network", "ls", "-q", "--filter", "label=com.docker.compose.project=edgesim"],
        capture_output=True,
        text=True,
    ).stdout.split()
    if running:
        return "the edgesim compose lab is up (its subnets are taken)"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round per runner")
    args = parser.parse_args()
    rounds = 1 if args.quick else 3
    results: dict[str, object] = {"rounds": rounds, "targets_s": TARGETS, "runners": {}}
    results["load_average_at_start"] = [round(v, 2) for v in os.getloadavg()]
    runners: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        certs = Path(tmp) / "certs"
        ensure_pki(load_topology(), certs)
        netns_problem = requirements_problem() or (
            f"a netns lab '{NETNS_LAB}' is up" if lab_namespaces(NETNS_LAB) else None
        )
        plan = {
            "local": (None, lambda: bench_local(certs)),
            "netns": (netns_problem, lambda: bench_netns(certs, Path(tmp) / "state")),
            "compose": (compose_problem(), bench_compose),
        }
        for name, (problem, fn) in plan.items():
            if problem:
                runners[name] = {"skipped": problem}
                print(f"{name:8} skipped: {problem}")
                continue
            ups, downs, listeners = [], [], 0
            for _ in range(rounds):
                up, down, listeners = fn()
                ups.append(up)
                downs.append(down)
            up_s, down_s = statistics.median(ups), statistics.median(downs)
            runners[name] = {
                "up_s": round(up_s, 3),
                "down_s": round(down_s, 3),
                "answering": listeners,
                "up_all_s": [round(u, 3) for u in ups],
                "within_target": up_s < TARGETS[name],
            }
            what = "containers healthy" if name == "compose" else "listeners answering"
            print(
                f"{name:8} up {up_s:6.2f} s ({listeners} {what})  down {down_s:6.2f} s"
                f"  target < {TARGETS[name]:.0f} s"
            )
    results["runners"] = runners
    results["python"] = sys.version.split()[0]
    results["cpus"] = os.cpu_count()
    print(f"wrote {write_result('lab_bench', results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
