"""Fixtures of the probe tests: probe specs against the servers of :mod:`tests.probes.servers`,
and the default lab on loopback addresses of its own."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from simulator.lab.topology import Topology, load_topology
from simulator.pki import LabPki
from simulator.probes.spec import ProbeSpec
from tests.probes.servers import CLIENT_ADDRESS, SERVER_ADDRESS, Server, write_isolated_topology


@pytest.fixture
def spec_for(lab_pki: LabPki) -> Callable[..., ProbeSpec]:
    def make(server: Server | None, kind: str = "sip-mtls", **kw: Any) -> ProbeSpec:
        base = ProbeSpec(
            kind=kind,
            address=server.address if server else SERVER_ADDRESS,
            port=server.port if server else 0,
            bind=CLIENT_ADDRESS,
            fqdn="sip.fabrikam.lab",
            domain="fabrikam.lab",
            source_domain="contoso.lab",
            trust=(lab_pki.trust_bundle,),
            client_cert=lab_pki.host_cert("edge", "internal"),
            timeout=2.0,
        )
        return dataclasses.replace(base, **kw)

    return make


@pytest.fixture(scope="session")
def isolated_topology_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_isolated_topology(tmp_path_factory.mktemp("topology") / "lab.toml")


@pytest.fixture(scope="session")
def isolated_topology(isolated_topology_file: Path) -> Topology:
    return load_topology(isolated_topology_file)
