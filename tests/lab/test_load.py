"""`edgesim load` across a netns lab: the Edge's own caps decide where federation gives up, the
relays survive a short silence on the firewall's UDP state, and the firewall's connection
tracking is seen growing. Needs root (it builds a netns lab of its own name)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from simulator.errors import UsageError
from simulator.lab.runners import get_runner
from simulator.lab.runners.base import LabConfig
from simulator.lab.runners.netns import lab_namespaces
from simulator.lab.topology import load_topology
from simulator.load.run import check_bounds, run_load
from simulator.sip.proxy import EdgeConfig

ROOT = Path(__file__).resolve().parents[2]
LAB = "ld"


def test_load_is_bounded() -> None:
    for args, message in (
        ((5001, 1.0, 10.0, 5.0), "at most 5000"),
        ((10, 601.0, 10.0, 5.0), "at most 600 seconds"),
        ((10, 1.0, 0.0, 5.0), "more than 0, at most 1000 per second"),
    ):
        with pytest.raises(UsageError, match=message):
            check_bounds(*args)


def test_load_needs_a_lab_with_firewalls(tmp_path: Path) -> None:
    runner = get_runner("local", LabConfig(load_topology(), tmp_path))
    with pytest.raises(UsageError, match="load runs across a lab's firewalls"):
        asyncio.run(run_load(runner, sessions=1, allocations=1, hold=0, rate=10, timeout=5))


@pytest.mark.root
@pytest.mark.skipif(
    os.geteuid() != 0 or not (shutil.which("ip") and shutil.which("nft")),
    reason="builds a netns lab: needs root, ip and nft",
)
def test_federation_stops_at_the_edges_cap_and_relays_outlive_a_short_silence(
    tmp_path: Path,
) -> None:
    if lab_namespaces(LAB):
        pytest.skip(f"a netns lab named {LAB} is up: `edgesim lab down --name {LAB}`")
    cap = EdgeConfig().federation_limits.max_per_source
    env = dict(os.environ, EDGESIM_STATE_DIR=str(tmp_path))
    certs = str(tmp_path / "certs")

    def edgesim(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "simulator", *args], capture_output=True, text=True,
            timeout=300, cwd=ROOT, env=env,
        )  # fmt: skip

    up = edgesim("lab", "up", "--runner", "netns", "--name", LAB, "--certs", certs)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        done = edgesim("load", "--name", LAB, "--certs", certs, "--json",
                       "--sessions", str(cap + 6), "--allocations", "20", "--hold", "1")  # fmt: skip
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
    finally:
        edgesim("lab", "down", "--name", LAB)
    results = {r["kind"]: r for r in report["results"]}
    federation, relay = results["federation"], results["relay"]
    # The Access Edge admits a partner address up to its cap and resets the rest.
    assert federation["peak"] == federation["established"] == cap
    assert sum(federation["failures"].values()) == 6
    assert federation["after_hold"] == cap
    assert relay["established"] == relay["after_hold"] == 20, relay
    firewalls = {fw["firewall"]: fw for fw in report["firewalls"]}
    external = firewalls["fw-external"]
    assert external["conntrack_peak"] >= cap + 2 * 20  # a TCP entry a session, two per relay
    assert external["limits"]["udp_stream_timeout"] > 0
