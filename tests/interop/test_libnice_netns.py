"""libnice in OC2007R2 mode relays media through the A/V Edge of the netns lab over UDP 3478.

The libnice driver (``simulator/scenario/libnice_relay.py``, Debian's ``/usr/bin/python3``) runs
in the ``messenger`` host's network namespace, so both agents' [MS-TURN] traffic to the A/V
interface crosses ``fw-external`` (row msn-stun-in-3478) as a Lync client's would. Their
credentials are time-limited ones of this lab's A/V Edge (the pair the A/V Authentication
service hands out), base64-encoded as a Lync client gets them. Needs root, ip and nft (one netns
lab named ``lnc`` for the module; tpytest --lab).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest

from simulator.lab.runners import get_runner
from simulator.lab.runners.base import LabConfig, Runner
from simulator.lab.topology import Topology
from simulator.media.auth import time_limited_credentials
from simulator.pki import service_settings
from tests.interop.test_libnice import DRIVER, SYSTEM_PYTHON, libnice_available

pytestmark = [
    pytest.mark.root,
    pytest.mark.interop,
    pytest.mark.skipif(
        os.geteuid() != 0 or not (shutil.which("ip") and shutil.which("nft")),
        reason="builds a netns lab with nftables firewalls: needs root, ip and nft",
    ),
    pytest.mark.skipif(
        not libnice_available(),
        reason="libnice not loadable by /usr/bin/python3 (Debian gir1.2-nice-0.1, python3-gi)",
    ),
]

LAB = "lnc"


@pytest.fixture(scope="module")
def lab(topology: Topology, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runner]:
    state = tmp_path_factory.mktemp("lnc")
    runner = get_runner("netns", LabConfig(topology, state / "certs", name=LAB, state_dir=state))
    if runner.namespaces():  # type: ignore[attr-defined]
        pytest.skip(f"a netns lab named {LAB} is already up; not touching it")
    asyncio.run(runner.up())
    try:
        yield runner
    finally:
        asyncio.run(runner.down())


def test_libnice_relays_media_through_the_netns_lab_over_udp_3478(lab: Runner) -> None:
    topology = lab.config.topology
    secret = str(service_settings(topology, "av-edge", lab.config.certs_dir)["shared_secret"])
    username, password = time_limited_credentials(
        secret.encode(), "alice@contoso.lab", time.time(), 600
    )
    av = str(topology.interface("edge:av").address)
    messenger = str(topology.interface("messenger:wan").address)
    argv = [
        *lab.exec_argv("messenger"),
        SYSTEM_PYTHON, str(DRIVER), "--server", av, "--port", "3478",
        "--username", base64.b64encode(username.encode()).decode(), "--password", password,
        "--local", messenger, "--packets", "20", "--timeout", "30",
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=90, check=False)
    assert done.stdout, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    agents = result["agents"]
    for name in ("a", "b"):
        assert agents[name]["state"] == "ready", result
        relayed = agents[name]["relayed"]
        # a relay of the lab's A/V interface, in the relay range
        assert relayed is not None and relayed.startswith(f"{av}:"), result
        assert 50000 <= int(relayed.rsplit(":", 1)[1]) <= 59999
        assert agents[name]["selected"][0] == relayed, result
    assert result["received"] == {"a": 20, "b": 20}, result
    assert result["ok"] is True
