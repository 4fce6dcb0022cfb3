"""Shared fixtures: the default topology and a lab PKI issued once per test session."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

from simulator.lab.topology import Topology, load_topology
from simulator.pki import LabPki, ensure_pki
from tests.markers import pytest_collection_modifyitems
from tests.worktree import pytest_sessionfinish, pytest_sessionstart

__all__ = ["pytest_collection_modifyitems", "pytest_sessionfinish", "pytest_sessionstart"]
pytest_plugins = ["pytester"]


@pytest.fixture(scope="session")
def topology() -> Topology:
    return load_topology()


@pytest.fixture(scope="session")
def lab_pki(tmp_path_factory: pytest.TempPathFactory, topology: Topology) -> LabPki:
    """The lab PKI of the default topology, written to a temporary directory."""
    directory: Path = tmp_path_factory.mktemp("certs")
    ensure_pki(topology, directory)
    return LabPki(directory)


# A command a test runs without --certs (in-process or as a subprocess, which inherits this)
# completes the lab PKI in a directory of the session, not in the checkout's certs/.
os.environ.setdefault("EDGESIM_CERTS_DIR", tempfile.mkdtemp(prefix="edgesim-test-certs-"))


if os.environ.get("EDGESIM_TEST_LOOP") == "uvloop":
    # every edgesim process runs on uvloop where it is installed (simulator/aioloop.py), so the
    # suite runs on both loops: EDGESIM_TEST_LOOP=uvloop puts every async test on uvloop
    def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Any]:
        import uvloop

        return {"uvloop": uvloop.new_event_loop}
