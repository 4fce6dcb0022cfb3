"""What the benchmarks share: free loopback ports, CPU time from /proc, the machine's load,
percentiles, the processes a benchmark serves a lab role in, and where results go. Figures only:
nothing here asserts a timing."""

from __future__ import annotations

import asyncio
import gc as collector
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from simulator import aioloop

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(os.environ.get("EDGESIM_BENCH_RESULTS") or ROOT / "bench" / "results")
"""Where results go: ``EDGESIM_BENCH_RESULTS`` (the tests point it at a temporary directory)."""
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    """A port the kernel has just handed out on ``host`` (TCP or UDP)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat(int(entry))
        if fields is not None:
            tree.setdefault(int(fields[1]), []).append(int(entry))
    return tree


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and every live descendant (all threads), plus what its
    children that were waited for used (``cutime``/``cstime``), from /proc."""
    tree = _children()
    total = 0.0
    todo = [pid]
    while todo:
        current = todo.pop()
        fields = _stat(current)
        if fields is None:
            continue
        # utime stime cutime cstime: fields 14-17 of stat(5), here indices 11-14
        total += sum(int(v) for v in fields[11:15]) / CLK_TCK
        todo.extend(tree.get(current, ()))
    return total


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (other helpers' tests load this machine)."""
    return [round(v, 2) for v in os.getloadavg()]


def percentile(sorted_values: list[float], p: float) -> float | None:
    """The ``p``-th percentile (nearest rank) of an already sorted list."""
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, int(p / 100 * len(sorted_values)))
    return round(sorted_values[index], 3)


def wait_tcp(host: str, port: int, timeout: float = 10.0) -> None:
    """Wait (bounded) until something accepts TCP on ``host:port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {host}:{port} after {timeout:g} s")


def start_served(what: str, script: str, *args: str) -> subprocess.Popen[bytes]:
    """``python script --serve args...``: a process that serves a role of the benchmark's lab
    and says ``ready`` (:func:`serve_until_stdin_closes`); ends it and raises when it does not."""
    proc = subprocess.Popen(
        [sys.executable, script, "--serve", *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    if b"ready" not in proc.stdout.readline():
        proc.kill()
        raise RuntimeError(f"the {what} process did not start")
    return proc


async def serve_until_stdin_closes(*, gc: bool = True) -> None:
    """In a served process whose lab is up: settle the heap (as `edgesim lab serve` does once
    its services are up; ``gc=False`` also turns the collector off, to see what it costs), say
    ``ready``, and serve until the benchmark closes stdin (:func:`stop_processes`)."""
    aioloop.settle_heap()
    if not gc:
        collector.disable()
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


def stop_processes(*procs: subprocess.Popen[Any]) -> None:
    """End benchmark helpers: close their stdin (a served role exits on EOF), terminate, and
    kill what is still there after 10 s."""
    for proc in procs:
        if proc.stdin:
            proc.stdin.close()
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def write_result(name: str, result: dict[str, Any]) -> Path:
    """``bench/results/<name>.json``, with the machine's load average at the end of the run."""
    result.setdefault("load_average_at_end", load_average())
    result.setdefault("cpus", os.cpu_count())
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    return out
