"""The media package keeps its cores sans-IO, and the av-edge settings are validated at start."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import simulator.media
from simulator.errors import ConfigError
from simulator.lab.services import ServiceContext
from simulator.lab.topology import Topology
from simulator.media.service import turn_config
from simulator.pki import LabPki, LabSecrets, service_settings

PACKAGE = Path(simulator.media.__file__).parent
ADAPTERS = {"aio.py", "service.py", "peer.py", "avauth.py"}
IO_MODULES = {"asyncio", "socket", "ssl", "selectors", "time"}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize(
    "module", sorted(p.name for p in PACKAGE.glob("*.py") if p.name not in ADAPTERS)
)
def test_cores_import_no_io_and_no_clock(module: str) -> None:
    assert imported_modules(PACKAGE / module) & IO_MODULES == set()


def context(topology: Topology, settings: dict[str, object]) -> ServiceContext:
    host = topology.host("edge")
    return ServiceContext(topology, host, "av-edge", LabPki("/nonexistent"), "local", settings)


def test_default_settings(topology: Topology, lab_pki: LabPki) -> None:
    settings = service_settings(topology, "av-edge", lab_pki.directory)
    config = turn_config(context(topology, settings), "127.51.100.11", (50000, 59999))
    assert (config.port_low, config.port_high) == (50000, 59999)
    # coturn's turnutils (-u edgesim) and the account `edgesim probe` uses, with this lab's
    # generated passwords and shared secret (none ships in the topology)
    secrets = LabSecrets(lab_pki.directory)
    probe = topology.settings["probes"]["turn_username"]
    assert config.users == {
        "edgesim": secrets.get("av-edge/users/edgesim"),
        probe: secrets.get(f"av-edge/users/{probe}"),
    }
    assert config.shared_secret == secrets.get("av-edge/shared_secret").encode()
    assert "shared_secret" not in topology.settings["av-edge"]
    assert config.policy.refuse("127.0.2.10") == "peer is in the corporate zone"
    assert config.policy.refuse("127.0.113.50") is None


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"port_range": "60000-50000"}, "services.av-edge.port_range: ports must be 1-65535"),
        ({"port_range": "lots"}, "services.av-edge.port_range: must be 'low-high'"),
        ({"users": [1]}, 'services.av-edge.users: must be a table of name = "password"'),
        ({"denied_zones": ["dmz"]}, "services.av-edge.denied_zones: zone 'dmz' is not defined"),
        ({"allowed_peers": ["not-a-net"]}, "services.av-edge.allowed_peers"),
        ({"user_quota": -1}, "services.av-edge.user_quota: must be a non-negative integer"),
        ({"max_packet_rate": 0}, "services.av-edge.max_packet_rate: must be a positive integer"),
    ],
)
def test_bad_settings_name_the_entry(
    topology: Topology, settings: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        turn_config(context(topology, settings), "127.51.100.11", (50000, 59999))
