"""The benchmarks run in CI in their quick mode: they complete against the real peers and write
their figures as JSON. Figures are read by people (bench/results/), never asserted as timings."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"


def run_quick(name: str) -> dict[str, object]:
    out = RESULTS / f"{name}.json"
    out.unlink(missing_ok=True)
    done = subprocess.run(
        [sys.executable, f"bench/{name}.py", "--quick"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    print(done.stdout)  # the figures, in the test log
    return json.loads(out.read_text())  # type: ignore[no-any-return]


@pytest.mark.skipif(
    not (shutil.which("sipp") and (shutil.which("stunnel4") or shutil.which("stunnel"))),
    reason="needs SIPp and stunnel (scripts/setup.sh --test installs them)",
)
def test_sip_benchmark_quick_completes_through_the_edge_and_direct():
    result = run_quick("sip_bench")
    for leg in ("via_edge", "direct_fe"):
        figures = result[leg]
        assert isinstance(figures, dict)
        assert figures["completed"] > 0, figures
        assert {"tx_per_s", "latency_ms", "failed_ratio"} <= set(figures)
    assert "edge_vs_direct_ratio" in result


@pytest.mark.skipif(
    not (shutil.which("turnutils_uclient") and shutil.which("turnserver")),
    reason="needs coturn's turnutils_uclient and turnserver (scripts/setup.sh --test installs them)",
)
def test_turn_benchmark_quick_relays_through_edgesim_and_coturn():
    result = run_quick("turn_bench")
    for server in ("edgesim", "coturn"):
        figures = result[server]
        assert isinstance(figures, dict)
        assert figures["relayed_packets_per_second"] > 0, figures
    assert "ratio_edgesim_to_coturn" in result


def test_xmpp_benchmark_quick_loses_nothing():
    result = run_quick("xmpp_bench")
    assert result["messages_per_s"] > 0  # type: ignore[operator]
    assert result["lost"] == 0


def test_soak_benchmark_quick_keeps_the_lab_up_and_answering():
    result = run_quick("soak_bench")
    assert result["lab_crashed"] is False
    for probe in ("sip_options", "xmpp_stream", "turn_allocation"):
        assert result["slowloris"][probe]["answered"] > 0, result["slowloris"]
    assert result["udp_flood"]["turn_still_answers"] and result["udp_flood"]["dns_still_answers"]


@pytest.mark.root
@pytest.mark.skipif(
    os.geteuid() != 0 or not (shutil.which("ip") and shutil.which("nft")),
    reason="the firewall audit builds network namespaces: needs root, ip and nft",
)
def test_firewall_benchmark_quick_audits_the_shipped_rules_clean():
    out = RESULTS / "firewall_bench.json"
    out.unlink(missing_ok=True)
    done = subprocess.run(
        [sys.executable, "bench/firewall_bench.py", "--quick", "--no-lab"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    print(done.stdout)
    audit = json.loads(out.read_text())["audit"]
    assert audit["clean"] is True and audit["flows"] > 1000


@pytest.mark.root
@pytest.mark.skipif(
    os.geteuid() != 0 or not (shutil.which("ip") and shutil.which("nft")),
    reason="builds a netns lab of its own (ldb): needs root, ip and nft",
)
def test_load_benchmark_quick_holds_a_step_and_a_short_silence():
    result = run_quick("load_bench")
    (step,) = result["steps"]
    assert step["federation"]["held"] > 0 and step["relay"]["held"] > 0, step
    assert step["firewalls"]["fw-external"]["conntrack_peak"] > 0
    (idle,) = result["idles"]
    assert idle["of"] > 0
