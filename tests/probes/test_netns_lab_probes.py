"""`edgesim probe --runner netns` against the netns lab with real nftables firewalls: every row
meets its expectation with the rendered rules, and the broken rule file shows exactly the rows
it breaks; two labs by name run side by side. Needs root, `ip` and `nft` (it builds and removes
the labs' namespaces)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from simulator.lab.runners.base import LabName
from simulator.lab.runners.netns import lab_namespaces
from simulator.matrix import load_matrix
from tests.lab.lab_helpers import PROBE_TIMEOUT_ARGS

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(
        os.geteuid() != 0 or not (shutil.which("ip") and shutil.which("nft")),
        reason="builds network namespaces and nftables firewalls: needs root, ip and nft",
    ),
]


def edgesim(*args: str, state: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``python -m simulator ARGS`` with the state directories under ``state``."""
    env = dict(os.environ, EDGESIM_STATE_DIR=str(state), COLUMNS="200")
    return subprocess.run(
        [sys.executable, "-m", "simulator", *args], capture_output=True, text=True,
        timeout=timeout, cwd=ROOT, env=env,
    )  # fmt: skip


def probe(state: Path, *more: str) -> dict[str, dict[str, object]]:
    certs = str(state / "certs")  # the PKI the lab was started with
    done = edgesim(
        "probe",
        "--runner",
        "netns",
        "--format",
        "json",
        "--certs",
        certs,
        *PROBE_TIMEOUT_ARGS,
        *more,
        state=state,
    )
    # Exit 1 is a probe that failed (the broken rules); anything else is the command's own.
    assert done.returncode in (0, 1), done.stderr[-3000:]
    try:
        data = json.loads(done.stdout)
    except ValueError as exc:
        raise AssertionError(
            f"probe printed {len(done.stdout)} characters that are not JSON ({exc}); "
            f"exit {done.returncode}; stderr: {done.stderr[-3000:]}"
        ) from None
    return {r["row"]: r for r in data["results"]}


def test_every_row_meets_its_expectation_and_broken_rules_show_exactly_their_rows(
    tmp_path: Path,
) -> None:
    if lab_namespaces():
        pytest.skip("a netns lab is already up (`edgesim lab down --runner netns`)")
    up = edgesim(
        "lab", "up", "--runner", "netns", "--certs", str(tmp_path / "certs"), state=tmp_path
    )
    # Tear down only a lab this test brought up (`down` removes the lab's namespaces by name).
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


def test_two_netns_labs_side_by_side_each_pass_their_probe(tmp_path: Path) -> None:
    """Two labs by name (as two CI jobs on one machine): both up at once, each probed across its
    own firewalls; taking one down leaves the other (and any default lab) untouched."""
    names = [f"t{uuid.uuid4().hex[:6]}" for _ in range(2)]
    default_lab = lab_namespaces()
    up: list[str] = []
    try:
        for name in names:
            done = edgesim("lab", "up", "--runner", "netns", "--name", name,
                           "--certs", str(tmp_path / "certs"), state=tmp_path)  # fmt: skip
            assert done.returncode == 0, done.stdout + done.stderr
            up.append(name)
        assert all(lab_namespaces(n) for n in names)
        for name in names:
            results = probe(tmp_path, "--name", name)
            assert len(results) == len(load_matrix().rows)
            unmet = {row: r["reason"] for row, r in results.items() if not r["met"]}
            assert not unmet, (name, unmet)

        first, second = names
        down = edgesim("lab", "down", "--runner", "netns", "--name", first, state=tmp_path)
        assert down.returncode == 0, down.stderr
        assert lab_namespaces(first) == [] and lab_namespaces(second)
        status = edgesim("lab", "status", "--name", second, state=tmp_path)
        assert status.returncode == 0 and "absent" not in status.stdout, status.stdout
        assert f"{LabName(second).namespace('edge')}" in status.stdout
        results = probe(tmp_path, "--name", second, "--row", "client-in-443")
        assert results["client-in-443"]["verdict"] == "passed", results
    finally:
        for name in up:
            edgesim("lab", "down", "--runner", "netns", "--name", name, state=tmp_path)
    assert not any(lab_namespaces(n) for n in names)
    assert lab_namespaces() == default_lab
