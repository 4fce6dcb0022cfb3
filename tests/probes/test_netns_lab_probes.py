"""`edgesim probe --runner netns` against the netns lab with real nftables firewalls: every row
meets its expectation with the rendered rules, and the broken rule file shows exactly the rows
it breaks. Needs root, `ip` and `nft` (it builds and removes the lab's namespaces)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from simulator.matrix import load_matrix

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(
        os.geteuid() != 0 or not (shutil.which("ip") and shutil.which("nft")),
        reason="builds network namespaces and nftables firewalls: needs root, ip and nft",
    ),
]


def edgesim(*args: str, state: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, EDGESIM_STATE_DIR=str(state), COLUMNS="200")
    return subprocess.run(
        [sys.executable, "-m", "simulator", *args], capture_output=True, text=True,
        timeout=timeout, cwd=ROOT, env=env,
    )  # fmt: skip


def probe(state: Path) -> dict[str, dict[str, object]]:
    certs = str(state / "certs")  # the PKI the lab was started with
    done = edgesim("probe", "--runner", "netns", "--format", "json", "--certs", certs, state=state)
    return {r["row"]: r for r in json.loads(done.stdout)["results"]}


def test_every_row_meets_its_expectation_and_broken_rules_show_exactly_their_rows(
    tmp_path: Path,
) -> None:
    if subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.count("es-"):
        pytest.skip("a netns lab is already up (`edgesim lab down --runner netns`)")
    up = edgesim(
        "lab", "up", "--runner", "netns", "--certs", str(tmp_path / "certs"), state=tmp_path
    )
    # Tear down only a lab this test brought up (`down` removes every es- namespace by name).
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        results = probe(tmp_path)
        assert len(results) == len(load_matrix().rows)
        unmet = {row: r["reason"] for row, r in results.items() if not r["met"]}
        assert not unmet, unmet

        broken = ROOT / "lab/firewall/broken/external.nft"
        reload = edgesim(
            "lab", "reload-firewall", "--rules", f"fw-external={broken}", state=tmp_path
        )
        assert reload.returncode == 0, reload.stderr
        results = probe(tmp_path)
        unmet = {row: r["verdict"] for row, r in results.items() if not r["met"]}
        # UDP 3478 is gone from the external firewall: both STUN rows across it are dropped.
        assert unmet == {"msn-stun-out-3478": "blocked", "msn-stun-in-3478": "blocked"}
    finally:
        down = edgesim("lab", "down", "--runner", "netns", state=tmp_path)
    assert down.returncode == 0, down.stderr
