"""The benchmarks run in CI in their quick mode: they complete against the real peers and write
their figures as JSON. Figures are read by people (bench/results/ when a person runs them; the
tests write theirs to a temporary directory), never asserted as timings."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def bench(name: str, results: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``bench/NAME.py`` with its JSON going to ``results`` (``EDGESIM_BENCH_RESULTS``)."""
    return subprocess.run(
        [sys.executable, f"bench/{name}.py", *args],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
        env={**os.environ, "EDGESIM_BENCH_RESULTS": str(results)},
    )  # fmt: skip


def run_quick(name: str, results: Path) -> dict[str, Any]:
    out = results / f"{name}.json"
    done = bench(name, results, "--quick")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    print(done.stdout)  # the figures, in the test log
    return json.loads(out.read_text())  # type: ignore[no-any-return]


@pytest.mark.skipif(
    not (
        shutil.which("sipp")
        and (shutil.which("stunnel4") or shutil.which("stunnel"))
        and (shutil.which("kamailio") or Path("/usr/sbin/kamailio").exists())
    ),
    reason="needs SIPp, stunnel and Kamailio (scripts/setup.sh --test installs them)",
)
def test_sip_benchmark_quick_runs_the_edge_and_kamailio_as_the_same_hop(tmp_path: Path) -> None:
    result = run_quick("sip_bench", tmp_path)
    block = result["uas"]
    assert isinstance(block, dict)
    for proxy in ("edge", "kamailio"):
        figures = block[proxy]
        assert isinstance(figures, dict)
        assert figures["completed"] > 0, figures
        assert {"tx_per_s", "latency_ms", "failed_ratio", "cpu_us_per_tx"} <= set(figures)
    assert result["cpu_ratio"] == block["cpu_ratio"]
    assert isinstance(result["cpu_ratio"], float)


@pytest.mark.skipif(
    not (shutil.which("turnutils_uclient") and shutil.which("turnserver")),
    reason="needs coturn's turnutils_uclient and turnserver (scripts/setup.sh --test installs them)",
)
def test_turn_benchmark_quick_relays_through_edgesim_and_coturn(tmp_path: Path) -> None:
    result = run_quick("turn_bench", tmp_path)
    for server in ("edgesim", "coturn"):
        figures = result[server]
        assert isinstance(figures, dict)
        assert figures["relayed_packets_per_second"] > 0, figures
        assert "loss_percent" in figures
    assert result["load"]["interval_ms"] == 0  # unpaced by default
    assert isinstance(result["ratio"], float)


def test_xmpp_benchmark_quick_loses_nothing_through_the_edge_or_prosody(tmp_path: Path) -> None:
    result = run_quick("xmpp_bench", tmp_path)
    hops = ["edge"] if "prosody_skipped" in result else ["edge", "prosody"]
    for hop in hops:
        figures = result[hop]
        assert isinstance(figures, dict)
        assert figures["messages_per_s"] > 0
        assert figures["lost"] == 0
    if "prosody" in hops:
        assert isinstance(result["ratio"], float)


def test_soak_benchmark_quick_keeps_the_lab_up_and_answering(tmp_path: Path) -> None:
    result = run_quick("soak_bench", tmp_path)
    assert result["lab_crashed"] is False
    for probe in ("sip_options", "xmpp_stream", "turn_allocation"):
        assert result["slowloris"][probe]["answered"] > 0, result["slowloris"]
    assert result["udp_flood"]["turn_still_answers"] and result["udp_flood"]["dns_still_answers"]


@pytest.mark.root
@pytest.mark.skipif(
    os.geteuid() != 0 or not (shutil.which("ip") and shutil.which("nft")),
    reason="the firewall audit builds network namespaces: needs root, ip and nft",
)
def test_firewall_benchmark_quick_audits_the_shipped_rules_clean(tmp_path: Path) -> None:
    out = tmp_path / "firewall_bench.json"
    done = bench("firewall_bench", tmp_path, "--quick", "--no-lab")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    print(done.stdout)
    audit = json.loads(out.read_text())["audit"]
    assert audit["clean"] is True and audit["flows"] > 1000


@pytest.mark.root
@pytest.mark.skipif(
    os.geteuid() != 0 or not (shutil.which("ip") and shutil.which("nft")),
    reason="builds a netns lab of its own (ldb): needs root, ip and nft",
)
def test_load_benchmark_quick_holds_a_step_and_a_short_silence(tmp_path: Path) -> None:
    result = run_quick("load_bench", tmp_path)
    (step,) = result["steps"]
    assert step["federation"]["held"] > 0 and step["relay"]["held"] > 0, step
    assert step["firewalls"]["fw-external"]["conntrack_peak"] > 0
    (idle,) = result["idles"]
    assert idle["of"] > 0
