"""The edgesim command line, run as a user runs it (a subprocess)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from simulator.lab.topology import default_topology_path

EDGESIM = [sys.executable, "-m", "simulator"]
needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="the lab binds ports 53 and 443 on loopback: needs root"
)


def edgesim(
    *args: str, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run(
        [*EDGESIM, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=env,
        check=False,
    )


def test_help_explains_the_tool_and_lists_the_commands() -> None:
    result = edgesim("--help")
    assert result.returncode == 0
    for word in ("Lync Server 2013 Edge", "matrix", "certs", "lab", "run", "Exit codes"):
        assert word in result.stdout


@pytest.mark.parametrize("command", [["matrix"], ["certs"], ["lab", "up"], ["run"]])
def test_every_subcommand_has_help_with_an_example(command: list[str]) -> None:
    result = edgesim(*command, "--help")
    assert result.returncode == 0
    assert "Example" in result.stdout
    assert "edgesim " + " ".join(command) in result.stdout


def test_matrix_table_groups_rows_by_seed_table() -> None:
    result = edgesim("matrix")
    assert result.returncode == 0
    for title in ("Firewall summary - SIP federation", "Firewall summary - public instant messaging",
                  "Firewall summary - XMPP", "Must stay blocked"):  # fmt: skip
        assert title in result.stdout
    assert "xmpp-gw-23456" in result.stdout


def test_matrix_json_resolved_lists_every_row_with_addresses() -> None:
    result = edgesim("matrix", "--format", "json", "--resolve")
    assert result.returncode == 0
    rows = {r["id"]: r for r in json.loads(result.stdout)["rows"]}
    assert sum(r["seed"] in ("sip-federation", "public-im", "xmpp") for r in rows.values()) == 10
    row = rows["xmpp-gw-23456"]
    assert row["seed_title"] == "Firewall summary - XMPP"
    assert [s["address"] for s in row["sources"]] == ["192.0.2.10"]
    assert [d["address"] for d in row["destinations"]] == ["198.51.100.130"]
    assert any(r["expect"] == "blocked" for r in rows.values())


def test_unknown_seed_is_a_usage_error() -> None:
    result = edgesim("matrix", "--seed", "nope")
    assert result.returncode == 2
    assert "unknown seed 'nope'" in result.stderr


def test_malformed_topology_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    bad = tmp_path / "lab.toml"
    bad.write_text(
        default_topology_path()
        .read_text()
        .replace(
            'zone = "corporate", address = "192.0.2.10"', 'zone = "dmz", address = "192.0.2.10"'
        )
    )
    result = edgesim("--topology", str(bad), "matrix", "--resolve")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {bad}: hosts[fe].interfaces[lan]: zone 'dmz' is not defined (zones: internet, "
        "perimeter-external, perimeter-internal, corporate)"
    ]
    assert "Traceback" not in result.stderr


@pytest.mark.root
@needs_root
@pytest.mark.parametrize(
    ("setting", "entry"),
    [
        ("allow_everyone = true", "services.access-edge: unknown key 'allow_everyone' (known: "),
        ("internal_fqdn = 5", "services.access-edge.internal_fqdn: must be a string, not an "),
    ],
)
def test_a_bad_service_setting_is_one_line_and_exit_code_2(
    tmp_path: Path, setting: str, entry: str
) -> None:
    """A service's table is loaded typed when the lab starts: a wrong key or type stops
    `lab up` with one line naming the topology file and the entry."""
    bad = tmp_path / "lab.toml"
    text = default_topology_path().read_text()
    bad.write_text(text.replace("[services.access-edge]\n", f"[services.access-edge]\n{setting}\n"))
    result = edgesim("--topology", str(bad), "lab", "up", "--check", "--certs", str(tmp_path / "c"))
    assert result.returncode == 2, result.stdout + result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {bad}: {entry}")
    assert "Traceback" not in result.stderr


def test_certs_writes_the_pki_and_is_idempotent(tmp_path: Path) -> None:
    out = tmp_path / "pki"
    first = edgesim("certs", "--out", str(out))
    assert first.returncode == 0 and "0 kept" in first.stdout
    assert (out / "hosts" / "edge-public.crt").is_file()
    second = edgesim("certs", "--out", str(out))
    assert second.returncode == 0 and "0 written" in second.stdout


@pytest.mark.root
@needs_root
def test_lab_up_check_starts_verifies_and_stops(tmp_path: Path) -> None:
    result = edgesim("lab", "up", "--check", "--certs", str(tmp_path / "certs"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "127.0.113.53:53/udp" in result.stdout  # the public lab DNS, on its loopback address
    assert "listeners answer" in result.stdout
    assert "lab stopped" in result.stdout


@pytest.mark.root
@needs_root
def test_lab_up_runs_until_sigterm_and_stops_cleanly(tmp_path: Path) -> None:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [*EDGESIM, "lab", "up", "--certs", str(tmp_path / "certs")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        lines = []
        for _ in range(200):  # bounded: the banner comes within a few dozen lines
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "press Ctrl-C" in line:
                break
        assert any("press Ctrl-C" in line for line in lines), "".join(lines)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 0, err
    assert "lab stopped" in out


@pytest.mark.root
@needs_root
def test_a_port_already_in_use_is_one_clear_line(tmp_path: Path) -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.2.53", 53))
        result = edgesim("lab", "up", "--check", "--certs", str(tmp_path / "certs"))
    assert result.returncode == 1
    assert "dns-int: cannot start dns: Address already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_other_runners_say_what_is_missing_not_a_traceback(tmp_path: Path) -> None:
    # from a directory without docker-compose.yml: one line saying so, not a lab start
    result = edgesim(
        "lab", "up", "--runner", "compose", "--certs", str(tmp_path / "c"), cwd=tmp_path
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.root
@needs_root
def test_run_is_the_main_job_and_reports_what_ran(tmp_path: Path) -> None:
    import re

    result = edgesim(
        "run",
        "--certs",
        str(tmp_path / "certs"),
        cwd=Path(__file__).resolve().parents[2],
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    running = re.search(r"services: (\d+) running", result.stdout)
    assert running and int(running.group(1)) >= 2  # at least the two lab DNS servers
    assert "partner-discovery" in result.stdout
    assert "every check that ran passed" in result.stdout
    assert "Traceback" not in result.stderr
