"""Everyday use, as a user runs edgesim: from any directory, without root, with a lab already
running in another shell (subprocesses, the way a shell runs them)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulator.paths import default_certs_dir

ROOT = Path(__file__).resolve().parents[2]
EDGESIM = [sys.executable, "-m", "simulator"]
SHIPPED = sorted(p.stem for p in (ROOT / "scenarios").glob("[!_]*.py"))


def user_env(home: Path, **extra: str) -> dict[str, str]:
    """A user's environment: XDG directories under ``home``, a wide terminal for the tables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "EDGESIM_"))}
    env.update(
        HOME=str(home),
        XDG_DATA_HOME=str(home / "data"),
        EDGESIM_STATE_DIR=str(home / "state"),
        COLUMNS="200",
        NO_COLOR="1",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def edgesim(
    *args: str, cwd: Path, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EDGESIM, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env
    )


def test_scenario_list_outside_a_checkout_lists_the_shipped_ones_and_dir_adds(
    tmp_path: Path,
) -> None:
    mine = tmp_path / "my-scenarios"
    mine.mkdir()
    (mine / "hello.py").write_text(
        "from simulator.scenario import Lab, scenario\n\n"
        "@scenario(name='hello', description='my own', rows=['dns-edge-ext'])\n"
        "async def run(lab: Lab) -> None:\n    pass\n"
    )
    env = user_env(tmp_path)
    listed = edgesim("scenario", "list", cwd=tmp_path, env=env)
    assert listed.returncode == 0, listed.stderr
    for name in SHIPPED:
        assert name.replace("_", "-") in listed.stdout
    assert "hello" not in listed.stdout

    added = edgesim("scenario", "list", "--dir", str(mine), cwd=tmp_path, env=env)
    assert added.returncode == 0, added.stderr
    assert "hello" in added.stdout and "partner-discovery" in added.stdout

    (mine / "clash.py").write_text(
        "from simulator.scenario import Lab, scenario\n\n"
        "@scenario(name='presence', description='a second presence')\n"
        "async def run(lab: Lab) -> None:\n    pass\n"
    )
    clash = edgesim("scenario", "list", "--dir", str(mine), cwd=tmp_path, env=env)
    assert clash.returncode == 2
    assert "two scenarios are named 'presence'" in clash.stderr and "clash.py" in clash.stderr


def test_the_pki_goes_to_the_data_directory_outside_a_checkout(tmp_path: Path) -> None:
    work = tmp_path / "somewhere"
    work.mkdir()
    done = edgesim("certs", cwd=work, env=user_env(tmp_path))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "data" / "edgesim" / "certs" / "ca" / "public.crt").is_file()
    assert list(work.iterdir()) == []


def test_in_a_checkout_the_pki_stays_in_its_certs_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("EDGESIM_CERTS_DIR")  # the suite's own, see tests/conftest.py
    monkeypatch.chdir(ROOT)
    assert default_certs_dir() == Path("certs")
    monkeypatch.chdir(ROOT / "docs")
    assert default_certs_dir() == ROOT / "certs"
    monkeypatch.setenv("EDGESIM_CERTS_DIR", str(tmp_path / "mine"))
    assert default_certs_dir() == tmp_path / "mine"


@pytest.fixture
def running_lab(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], dict[str, str]]]:
    """``edgesim lab up`` in "another shell", with its privileged ports moved (as for a user
    without root), until the test ends."""
    env = user_env(tmp_path, EDGESIM_PORTS="moved")
    proc = subprocess.Popen(
        [*EDGESIM, "lab", "up"], cwd=tmp_path, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        seen = []
        for _ in range(300):  # bounded: the banner comes within a few dozen lines
            line = proc.stdout.readline()
            seen.append(line)
            if not line or "press Ctrl-C" in line:
                break
        assert "press Ctrl-C" in seen[-1], "".join(seen)
        yield proc, env
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate(timeout=10)


def test_probe_and_scenario_run_use_the_lab_running_in_another_shell(
    running_lab: tuple[subprocess.Popen[str], dict[str, str]], tmp_path: Path
) -> None:
    proc, env = running_lab
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    probe = edgesim("probe", "--format", "json", cwd=elsewhere, env=env)
    results = {r["row"]: r for r in json.loads(probe.stdout)["results"]}
    client = results["client-in-443"]  # the matrix names 443; the lab listens on 8443
    assert client["verdict"] == "passed", client
    assert client["destination"].endswith(":8443/tcp")
    assert results["dns-edge-ext"]["destination"].endswith(":8053/udp")
    assert f"using the embedded lab already running in pid {proc.pid}" in probe.stderr
    assert "ports moved +8000 (53->8053, 443->8443)" in probe.stderr

    scenarios = edgesim(
        "scenario", "run", "remote-user-im", "partner-discovery", "--format", "json",
        cwd=elsewhere, env=env,
    )  # fmt: skip
    assert scenarios.returncode == 0, scenarios.stdout + scenarios.stderr
    got = {s["name"]: s["status"] for s in json.loads(scenarios.stdout)["scenarios"]}
    assert got == {"remote-user-im": "passed", "partner-discovery": "passed"}

    second = edgesim("lab", "up", "--check", cwd=elsewhere, env=env)
    assert second.returncode == 1
    assert f"already running in pid {proc.pid}" in second.stderr
    assert "Traceback" not in second.stderr

    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert not list((tmp_path / "state").rglob("local-*.json")), "the state file is removed"


@pytest.mark.root
def test_an_unprivileged_user_runs_the_readme_main_job(request: pytest.FixtureRequest) -> None:
    """`edgesim run` as a user without root (nobody): the privileged ports move, one line says
    so, and everything that ran passed."""
    if os.geteuid() != 0:
        pytest.skip("switching to an unprivileged user needs root")
    home = Path(tempfile.mkdtemp(prefix="edgesim-user-", dir="/tmp"))  # nobody can reach it
    home.chmod(0o777)
    request.addfinalizer(lambda: shutil.rmtree(home, ignore_errors=True))
    env = user_env(home)
    env.pop("EDGESIM_STATE_DIR")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    can_import = subprocess.run(
        [*nobody, sys.executable, "-c", "import click, cryptography, simulator.cli"],
        capture_output=True, cwd=home, env=env, timeout=60,
    )  # fmt: skip
    if can_import.returncode != 0:
        pytest.skip(
            f"{sys.executable} and its packages are not readable by an unprivileged user "
            "(CI's non-root step installs edgesim in a fresh venv as one)"
        )
    argv = [*nobody, *EDGESIM, "run"]
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=300, cwd=home, env=env
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "ports moved +8000 (53->8053, 443->8443)" in done.stderr
    assert ":8443/tcp (sip-tls) answers" in done.stdout
    assert "every check that ran passed" in done.stdout
    assert (home / "data" / "edgesim" / "certs" / "secrets.json").is_file()


def _fits(text: str, ids: list[str], width: int = 80) -> None:
    """Every line fits ``width`` columns and every id appears whole (never wrapped)."""
    long = [line for line in text.splitlines() if len(line) > width]
    assert not long, long[:3]
    for name in ids:
        assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text), f"{name} is cut"


def test_the_output_fits_80_columns(
    running_lab: tuple[subprocess.Popen[str], dict[str, str]], tmp_path: Path
) -> None:
    """At COLUMNS=80: row ids and scenario names never wrap, tables fold their reasons, the
    text ladder of a scenario across many hosts folds into pages."""
    from simulator.matrix import load_matrix

    _, env = running_lab
    env = {**env, "COLUMNS": "80"}
    row_ids = [row.id for row in load_matrix().rows]
    probe = edgesim("probe", cwd=tmp_path, env=env)
    assert probe.returncode in (0, 1), probe.stderr
    _fits(probe.stdout, row_ids)

    listed = edgesim("scenario", "list", cwd=tmp_path, env=env)
    _fits(listed.stdout, [s.replace("_", "-") for s in SHIPPED])

    ladder = edgesim("scenario", "run", "av-call", "--ladder", cwd=tmp_path, env=env)
    assert ladder.returncode == 0, ladder.stdout + ladder.stderr
    _fits(ladder.stdout, ["av-call", "messenger", "internal-user", "[fw-external]"])
    assert "av-call (page 1 of " in ladder.stdout
    wide = edgesim(
        "scenario", "run", "av-call", "--ladder", "--width", "250", cwd=tmp_path, env=env
    )
    assert "page 1 of" not in wide.stdout and max(map(len, wide.stdout.splitlines())) > 80
