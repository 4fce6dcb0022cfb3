"""A real [MS-TURN] client: libnice in ``Nice.Compatibility.OC2007R2`` mode against the A/V Edge.

Two libnice agents (``simulator/scenario/libnice_relay.py``, run by Debian's ``/usr/bin/python3``,
which loads libnice through GObject introspection) allocate relays on the Edge with [MS-TURN],
run ICE between their relayed candidates only, and exchange media: Send requests and Data
Indications until ICE picks the pair, then Set Active Destination and unencapsulated data.
The credentials are the MRAS's time-limited ones, handed to libnice base64-encoded as a Lync
client gets them. The Edge runs in the test's loop on its A/V loopback address.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from simulator.lab.topology import Topology
from simulator.media.aio import AsyncTurnServer
from simulator.media.auth import time_limited_credentials
from simulator.media.msturn import EDGE
from simulator.media.service import peer_policy
from simulator.pki import LabPki
from tests.media_lab import av_server

pytestmark = pytest.mark.interop

SYSTEM_PYTHON = "/usr/bin/python3"
DRIVER = Path(__file__).parents[2] / "simulator" / "scenario" / "libnice_relay.py"
SECRET = b"test-mras-secret"
PORTS = (53000, 53999)


def libnice_available() -> bool:
    import subprocess

    probe = "import gi; gi.require_version('Nice', '0.1'); from gi.repository import Nice"
    try:
        done = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


requires_libnice = pytest.mark.skipif(
    not libnice_available(),
    reason="libnice not loadable by /usr/bin/python3 (Debian gir1.2-nice-0.1 and python3-gi)",
)


@pytest.fixture
async def edge(topology: Topology, lab_pki: LabPki) -> AsyncIterator[AsyncTurnServer]:
    policy = peer_policy(topology, topology.host("edge"), {})
    async with av_server(
        topology,
        lab_pki,
        users={},
        ports=PORTS,
        policy=policy,
        dialect=EDGE,
        shared_secret=SECRET,
    ) as server:
        yield server


async def relay(edge: AsyncTurnServer, a: str, b: str) -> dict[str, object]:
    username, password = time_limited_credentials(SECRET, "alice", time.time(), 600)
    udp, tcp = edge.listeners[0], edge.listeners[2]
    proc = await asyncio.create_subprocess_exec(
        SYSTEM_PYTHON,
        str(DRIVER),
        "--server",
        udp.address,
        "--port",
        str(udp.port),
        "--tcp-port",
        str(tcp.port),
        "--transport-a",
        a,
        "--transport-b",
        b,
        "--username",
        base64.b64encode(username.encode()).decode(),
        "--password",
        password,
        "--local",
        "127.0.0.1",
        "--packets",
        "20",
        "--timeout",
        "20",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert out, err.decode(errors="replace")[-2000:]
    result: dict[str, object] = json.loads(out.decode().strip().splitlines()[-1])
    # For a failing assertion: what libnice said, and what the Edge counted.
    result["stderr"] = err.decode(errors="replace")[-2000:]
    result["edge"] = dict(edge.core.stats)
    return result


@requires_libnice
async def test_libnice_relays_media_over_udp_3478(edge: AsyncTurnServer) -> None:
    result = await relay(edge, "udp", "udp")
    agents = result["agents"]
    assert isinstance(agents, dict)
    for name in ("a", "b"):
        assert agents[name]["state"] == "ready", result
        relayed = agents[name]["relayed"]
        assert relayed is not None and relayed.startswith(edge.listeners[0].address + ":")
        # the selected pair joins the two relayed addresses: media crossed the Edge twice
        assert agents[name]["selected"][0] == relayed
    assert result["received"] == {"a": 20, "b": 20}, result
    stats = edge.core.stats
    assert stats["allocations.created"] == 2
    assert stats["requests.ms-turn.4"] > 0  # Send requests during ICE
    assert stats["ms-turn.active-destination"] == 2  # then Set Active Destination
    assert stats["rejected.401"] == 2 and not any(
        k.startswith("rejected.4") and k != "rejected.401" for k in stats
    )


@requires_libnice
async def test_libnice_pseudo_tls_on_the_tls_port_is_served_in_the_clear(
    edge: AsyncTurnServer,
) -> None:
    """libnice opens TCP with the pseudo-TLS ClientHello; the Edge's TLS port answers it
    (not a TLS handshake) and answers the framed Allocate that follows with a framed 401.

    libnice 0.1.21's OC2007 candidate discovery over TCP then goes no further: it sends its
    Allocate without the section 2.1.4 length and reads the Edge's framed answer without
    stripping the length the framing layer keeps for it, so it never sees the 401 (its own
    layers disagree; no server framing satisfies both). The relayed path over TCP 443 is
    covered by the project's own [MS-TURN] client (tests/media/test_msturn_client.py)."""
    result = await relay(edge, "tls", "udp")
    stats = edge.core.stats
    assert stats["pseudo-tls"] >= 1
    assert stats["requests.ms-turn.3"] >= 2 and stats["rejected.401"] >= 1
    assert stats["dropped.stream framing"] == 0
    agents = result["agents"]
    assert isinstance(agents, dict) and agents["b"]["relayed"] is not None
