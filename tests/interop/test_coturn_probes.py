"""STUN and TURN probes against coturn's ``turnserver`` (Debian coturn), with lab certificates."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from simulator.pki import LabPki
from simulator.probes.base import Verdict
from simulator.probes.spec import ProbeSpec, TurnCredentials
from simulator.probes.stun import probe_stun_udp
from simulator.probes.turn import (
    probe_relay_tcp_egress,
    probe_turn_relay_udp,
    probe_turn_tcp,
    probe_turn_tls,
)
from tests.udp_peer import udp_peer

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(
        shutil.which("turnserver") is None, reason="coturn's turnserver is not installed"
    ),
]

SERVER = "127.77.0.1"
CLIENT = "127.77.0.3"
PEER = "127.77.0.2"
CREDS = TurnCredentials("probe", "secret")


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((SERVER, 0))
        return int(s.getsockname()[1])


def _free_tcp_udp_port() -> int:
    for _ in range(50):
        port = _free_port(socket.SOCK_STREAM)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            try:
                u.bind((SERVER, port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port")


@pytest.fixture(scope="module")
def coturn(tmp_path_factory: pytest.TempPathFactory, lab_pki: LabPki) -> Iterator[tuple[int, int]]:
    import subprocess

    work: Path = tmp_path_factory.mktemp("coturn")
    port, tls_port = _free_tcp_udp_port(), _free_tcp_udp_port()
    cert = lab_pki.host_cert("edge", "public")
    (work / "turnserver.conf").write_text(
        f"""listening-ip={SERVER}
relay-ip={SERVER}
listening-port={port}
tls-listening-port={tls_port}
min-port=46000
max-port=46200
lt-cred-mech
user={CREDS.username}:{CREDS.password}
realm=edgesim.lab
no-cli
no-dtls
allow-loopback-peers
cert={cert.cert}
pkey={cert.key}
pidfile={work}/turnserver.pid
userdb={work}/turndb
simple-log
log-file=stdout
"""
    )
    proc = subprocess.Popen(
        ["turnserver", "-c", str(work / "turnserver.conf")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready = False
        for _ in range(300):  # the log is short; the last start-up line says the DB is open
            line = proc.stdout.readline()
            if not line:
                break
            if "DB connection success" in line:
                ready = True
                break
        assert ready, "turnserver did not start"
        yield port, tls_port
    finally:
        proc.terminate()
        proc.wait(5)


@contextlib.asynccontextmanager
async def udp_echo() -> AsyncIterator[int]:
    async with udp_peer(PEER) as peer:
        yield peer.address[1]


@contextlib.asynccontextmanager
async def tcp_echo() -> AsyncIterator[int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(4096):
                writer.write(data)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, PEER, 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def spec(kind: str, port: int, lab_pki: LabPki, **kw: Any) -> ProbeSpec:
    base = ProbeSpec(
        kind=kind,
        address=SERVER,
        port=port,
        bind=CLIENT,
        fqdn="av.contoso.lab",
        trust=(lab_pki.trust_bundle,),
        turn=CREDS,
        timeout=3.0,
    )
    return dataclasses.replace(base, **kw)


async def test_stun_binding_reports_the_mapped_address(
    coturn: tuple[int, int], lab_pki: LabPki
) -> None:
    outcome = await probe_stun_udp(spec("stun-udp", coturn[0], lab_pki))
    assert outcome.verdict is Verdict.PASSED, outcome.reason
    assert outcome.details["mapped"].startswith(f"{CLIENT}:")
    assert outcome.reason.startswith(f"STUN Binding success, mapped address {CLIENT}:")


async def test_turn_allocate_over_tcp(coturn: tuple[int, int], lab_pki: LabPki) -> None:
    outcome = await probe_turn_tcp(spec("turn-tcp", coturn[0], lab_pki))
    assert outcome.verdict is Verdict.PASSED, outcome.reason
    assert outcome.details["relayed"].startswith(f"{SERVER}:46")


async def test_turn_allocate_over_tls_checks_the_certificate(
    coturn: tuple[int, int], lab_pki: LabPki
) -> None:
    outcome = await probe_turn_tls(spec("turn-tls", coturn[1], lab_pki))
    assert outcome.verdict is Verdict.PASSED, outcome.reason
    assert outcome.details["server_cert"] == "sip.contoso.lab"
    wrong = await probe_turn_tls(spec("turn-tls", coturn[1], lab_pki, fqdn="turn.fabrikam.lab"))
    assert wrong.verdict is Verdict.TLS_FAILED
    assert wrong.reason.startswith("TLS failed: name mismatch")


async def test_wrong_password_is_protocol_failed(coturn: tuple[int, int], lab_pki: LabPki) -> None:
    outcome = await probe_turn_tcp(
        spec("turn-tcp", coturn[0], lab_pki, turn=TurnCredentials("probe", "nope"))
    )
    assert outcome.verdict is Verdict.PROTOCOL_FAILED
    assert "refused our credentials: 401" in outcome.reason


async def test_without_credentials_a_401_proves_turn(
    coturn: tuple[int, int], lab_pki: LabPki
) -> None:
    outcome = await probe_turn_tcp(spec("turn-tcp", coturn[0], lab_pki, turn=None))
    assert outcome.verdict is Verdict.PASSED
    assert "realm 'edgesim.lab'" in outcome.reason


async def test_relayed_udp_round_trip(coturn: tuple[int, int], lab_pki: LabPki) -> None:
    async with udp_echo() as peer_port:
        outcome = await probe_turn_relay_udp(
            spec("turn-relay-udp", coturn[0], lab_pki, peer=(PEER, peer_port))
        )
    assert outcome.verdict is Verdict.PASSED, outcome.reason
    assert outcome.reason.endswith(f"<-> {PEER}:{peer_port}")


async def test_relayed_udp_without_a_peer_is_blocked(
    coturn: tuple[int, int], lab_pki: LabPki
) -> None:
    async with udp_echo() as peer_port:
        pass  # closed: nothing answers on the peer port
    outcome = await probe_turn_relay_udp(
        spec("turn-relay-udp", coturn[0], lab_pki, peer=(PEER, peer_port), timeout=1.0)
    )
    assert outcome.verdict is Verdict.BLOCKED
    assert "no echo from the peer" in outcome.reason


async def test_rfc6062_tcp_relay_connects_out(coturn: tuple[int, int], lab_pki: LabPki) -> None:
    async with tcp_echo() as peer_port:
        outcome = await probe_relay_tcp_egress(
            spec("relay-tcp-egress", coturn[0], lab_pki, peer=(PEER, peer_port))
        )
    assert outcome.verdict is Verdict.PASSED, outcome.reason
    assert "(RFC 6062), echo received" in outcome.reason


async def test_rfc6062_connect_to_a_closed_port(coturn: tuple[int, int], lab_pki: LabPki) -> None:
    async with tcp_echo() as peer_port:
        pass
    outcome = await probe_relay_tcp_egress(
        spec("relay-tcp-egress", coturn[0], lab_pki, peer=(PEER, peer_port))
    )
    assert outcome.verdict in (Verdict.REFUSED, Verdict.BLOCKED)
    assert outcome.reason.startswith(f"Connect to {PEER}:{peer_port} from the relay failed: 44")
