"""The A/V scenarios: relayed audio through the A/V Edge, and the fallback to TCP 443 across
the netns lab's real firewall."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from simulator.lab.runners.local import LocalLab
from simulator.lab.topology import Topology
from simulator.pki import LabPki
from simulator.scenario.run import discover, run_one, select
from tests.siplab import sip_topology

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
HOSTS = ["dns-int", "dns-ext", "edge", "fe"]


@pytest.fixture(scope="module")
def av_topology(tmp_path_factory: pytest.TempPathFactory) -> Topology:
    return sip_topology(tmp_path_factory.mktemp("av"), octet=218)


def _scenario(name: str):
    scenarios, broken = discover(ROOT / "scenarios")
    assert [b for b in broken if b.path.name.startswith("av_")] == []
    (item,) = select(scenarios, (name,))
    return item


async def test_av_call_relays_audio_on_the_embedded_lab(av_topology: Topology, lab_pki: LabPki):
    async with LocalLab(av_topology, lab_pki.directory, hosts=HOSTS):
        result = await run_one(_scenario("av-call"), av_topology, "local", lab_pki)
    assert result.status == "passed", f"{result.step}: {result.reason}"

    notes = [e.summary for e in result.events if e.event == "note"]
    assert "media path: the messenger reached the A/V Edge over UDP 3478" in notes
    allocations = [e.summary for e in result.events if e.summary.startswith("Allocate success")]
    assert len(allocations) >= 2
    for summary in allocations:
        port = int(summary.rsplit(":", 1)[1])
        assert 50000 <= port <= 59999, summary

    ladder = result.ladder(av_topology, "local")
    columns = [c.id for c in ladder.columns]
    assert {"messenger", "fw-external", "edge", "internal-user"} <= set(columns)
    arrows = {(columns[a.src], columns[a.dst], a.label) for a in ladder.arrows if a.src >= 0}
    # the messenger's allocation, answered by the Edge, and the 401 challenge before it
    assert ("messenger", "edge", "Allocate request") in arrows
    assert ("edge", "messenger", "401 Unauthorized") in arrows
    assert any(s == "edge" and d == "messenger" and lbl.startswith("Allocate success")
               for s, d, lbl in arrows)  # fmt: skip
    # media summarised: the relay-to-relay flow once with its totals, not per packet
    media = [a for a in ladder.arrows if a.protocol == "media"]
    assert 0 < len(media) <= 12
    assert any(
        columns[a.src] == columns[a.dst] == "edge" and a.label.startswith("media: 50 packets")
        for a in media
    )
    assert not any(a.event == "dropped" for a in ladder.arrows)


async def test_av_fallback_is_skipped_without_a_firewall(av_topology: Topology, lab_pki: LabPki):
    result = await run_one(_scenario("av-fallback"), av_topology, "local", lab_pki)
    assert result.status == "skipped"
    assert "firewall" in result.reason
