"""Tests write into temporary directories, never into the checkout: the root conftest snapshots
``git status`` (ignored files included) when the session starts and fails the session when it
ends with paths that were not there before (``artifacts/``, ``bench/results/``, ``certs/`` ...)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Caches that tools keep beside the code; not output of the tests.
CACHES = ("__pycache__", ".hypothesis", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".egg-info")


def snapshot() -> set[str] | None:
    """Every untracked or ignored path of the checkout (None: not a git checkout); edits of
    tracked files are left out, so a developer may edit while the suite runs."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        return None
    done = subprocess.run(
        ["git", "status", "--porcelain", "--ignored", "--untracked-files=all"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        return None
    return {
        line
        for line in done.stdout.splitlines()
        if line.startswith(("??", "!!")) and not any(c in line for c in CACHES)
    }


_BEFORE = pytest.StashKey[set[str] | None]()


def pytest_sessionstart(session: pytest.Session) -> None:
    session.stash[_BEFORE] = snapshot()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    before = session.stash.get(_BEFORE, None)
    after = snapshot()
    if before is None or after is None or session.config.option.collectonly:
        return
    if written := sorted(after - before):
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        lines = ["\nthe tests wrote into the checkout (write to tmp_path instead):", *written]
        if reporter is not None:
            reporter.ensure_newline()
            reporter.write_line("\n  ".join(lines), red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
