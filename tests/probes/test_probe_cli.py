"""``edgesim probe`` end to end (the command is registered here until the lead adds it)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

from simulator.cli import cli
from simulator.cli.probe import probe
from simulator.pki import LabPki

if "probe" not in cli.commands:
    cli.add_command(probe)


def test_help_has_examples() -> None:
    result = CliRunner().invoke(cli, ["probe", "--help"])
    assert result.exit_code == 0
    assert "edgesim probe --runner netns --html report.html --junit junit.xml" in result.output
    assert "Exit code 0 only when every probed row meets its expectation" in result.output


def test_blocked_rows_are_skipped_on_the_embedded_lab_and_reports_are_written(
    lab_pki: LabPki, tmp_path: Path, isolated_topology_file: Path
) -> None:
    """The embedded lab has no firewall: rows that must stay blocked are skipped with the
    reason (as `edgesim run` does), not judged by whether something listens; exit 0."""
    junit, html = tmp_path / "junit.xml", tmp_path / "report.html"
    result = CliRunner().invoke(
        cli,
        [
            "--topology",
            str(isolated_topology_file),
            "probe",
            "--row",
            "neg-inet-sip-5060",
            "--row",
            "neg-inet-relay-tcp-in",
            "--format",
            "json",
            "--certs",
            str(lab_pki.directory),
            "--timeout",
            "1",
            "--junit",
            str(junit),
            "--html",
            str(html),
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["ok"] is True
    assert [r["verdict"] for r in data["results"]] == ["skipped", "skipped"]
    assert all("has no firewall" in r["reason"] for r in data["results"])
    assert ET.parse(junit).getroot().get("failures") == "0"
    assert "neg-inet-relay-tcp-in" in html.read_text()


def test_an_open_row_that_is_refused_exits_1_with_a_table(
    lab_pki: LabPki, isolated_topology_file: Path
) -> None:
    args = ["--topology", str(isolated_topology_file), "probe", "--row", "pic-in-5061"]
    result = CliRunner().invoke(cli, [*args, "--certs", str(lab_pki.directory), "--timeout", "1"])
    assert result.exit_code == 1
    assert "pic-in-5061" in result.output and "refused" in result.output
    assert "0 of 1 rows meet their expectation; 1 do not" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--row", "nope"], "no such row in the matrix"),
        (["--target", "/nonexistent.toml"], "cannot read target file"),
    ],
)
def test_bad_usage_exits_2(lab_pki: LabPki, args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["probe", "--certs", str(lab_pki.directory), *args])
    assert result.exit_code == 2
    assert message in result.output
