"""Scenario discovery and running: results name the failing step and why."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from simulator.errors import EdgesimError
from simulator.lab.runners.local import LocalLab
from simulator.lab.topology import Topology
from simulator.pki import LabPki
from simulator.scenario.report import results_html
from simulator.scenario.run import discover, run_all, select

ROOT = Path(__file__).resolve().parents[2]
needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="the embedded lab binds port 53: needs root"
)

SCRIPTS = {
    "good.py": """
        from simulator.scenario import Lab, scenario

        @scenario(name="good", description="passes", rows=["dns-edge-ext"])
        async def run(lab: Lab) -> None:
            with lab.step("look at the topology"):
                lab.expect(lab.address("edge:access") == "127.51.100.10", "wrong address")
    """,
    "fails.py": """
        from simulator.scenario import Lab, scenario

        @scenario(name="fails", description="fails in its second step")
        async def run(lab: Lab) -> None:
            with lab.step("first"):
                pass
            with lab.step("bob answers"):
                lab.expect(False, "bob's client answered 480, not 200")
    """,
    "raises.py": """
        from simulator.scenario import Lab, scenario

        @scenario(name="raises", description="a bug in the script")
        async def run(lab: Lab) -> None:
            {}["missing"]
    """,
    "slow.py": """
        import asyncio
        from simulator.scenario import Lab, scenario

        @scenario(name="slow", description="never finishes", timeout=0.2)
        async def run(lab: Lab) -> None:
            with lab.step("waiting for an answer that never comes"):
                await asyncio.Event().wait()
    """,
    "needs.py": """
        from simulator.scenario import Lab, scenario

        @scenario(name="needs", description="needs a service", needs=["no-such-service"])
        async def run(lab: Lab) -> None:
            raise AssertionError("must not run")
    """,
    "broken.py": "import no_such_module_anywhere\n",
}


@pytest.fixture
def script_dir(tmp_path: Path) -> Path:
    for name, text in SCRIPTS.items():
        (tmp_path / name).write_text(textwrap.dedent(text))
    return tmp_path


def test_discovery_finds_scenarios_and_reports_broken_files(script_dir: Path) -> None:
    scenarios, broken = discover(script_dir)
    assert sorted(s.name for s in scenarios) == ["fails", "good", "needs", "raises", "slow"]
    assert [(b.path.name, b.reason) for b in broken] == [
        ("broken.py", "ModuleNotFoundError: No module named 'no_such_module_anywhere'")
    ]
    with pytest.raises(EdgesimError, match="no scenario named 'nope'"):
        select(scenarios, ("nope",))


async def test_results_say_which_step_failed_and_why(
    script_dir: Path, topology: Topology, lab_pki: LabPki
) -> None:
    scenarios, _ = discover(script_dir)
    results = {r.scenario.name: r for r in await run_all(scenarios, topology, "local", lab_pki)}
    assert (results["good"].status, results["good"].step) == ("passed", None)
    assert (results["fails"].status, results["fails"].step, results["fails"].reason) == (
        "failed", "bob answers", "bob's client answered 480, not 200",
    )  # fmt: skip
    assert results["raises"].status == "error"
    assert results["raises"].reason == "the script raised KeyError: 'missing'"
    assert (results["slow"].status, results["slow"].step) == (
        "failed",
        "waiting for an answer that never comes",
    )
    assert results["slow"].reason == "timed out after 0 s"
    assert results["needs"].status == "skipped"
    assert "no-such-service" in results["needs"].reason


@pytest.mark.root
@needs_root
async def test_shipped_partner_discovery_passes_on_the_embedded_lab(
    topology: Topology, lab_pki: LabPki, tmp_path: Path
) -> None:
    scenarios, broken = discover(ROOT / "scenarios")
    assert broken == []
    (item,) = select(scenarios, ("partner-discovery",))
    async with LocalLab(topology, lab_pki.directory, hosts=["dns-ext", "dns-int"]):
        (result,) = await run_all([item], topology, "local", lab_pki)
    assert result.status == "passed", result.reason
    ladder = result.ladder(topology, "local")
    assert [c.id for c in ladder.columns] == [
        "dns-ext",
        "fw-external",
        "edge",
        "fw-internal",
        "dns-int",
    ]
    answers = [(ladder.columns[a.src].id, ladder.columns[a.dst].id, a.label) for a in ladder.arrows]
    assert ("dns-ext", "edge", "NOERROR SRV 0 0 5061 sip.fabrikam.lab.") in answers
    assert ("dns-ext", "edge", "NXDOMAIN") in answers

    page = tmp_path / "scenario-ladders.html"
    page.write_text(results_html([result], topology, "local"))
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed: the ladder page was written but not rendered")
    shot = tmp_path / "scenario-ladder.png"
    shot.unlink(missing_ok=True)
    subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         f"--user-data-dir={tmp_path / '.chromium'}", f"--screenshot={shot}",
         "--window-size=1100,800", page.as_uri()],
        capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert shot.is_file() and shot.stat().st_size > 10_000, (
        "headless Chromium did not render the ladder"
    )


@pytest.mark.root
@needs_root
def test_scenario_cli_runs_prints_ladder_and_exits_by_result(tmp_path: Path) -> None:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "simulator", "scenario", "run", "partner-discovery", "--ladder",
         "--certs", str(tmp_path / "certs"), "--html", str(tmp_path / "l.html")],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=env, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "partner-discovery" in result.stdout and "passed" in result.stdout
    assert "== the Edge asks for _sipfederationtls._tcp.fabrikam.lab" in result.stdout
    assert "<svg" in (tmp_path / "l.html").read_text()
