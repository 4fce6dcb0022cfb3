"""Real SIP peers against the lab's Access Edge: sipsak over TLS, SIPp through stunnel.

Named quirks of Debian's builds (see docs/sip.md):

- ``sipp-no-tls``: SIPp 3.6.1 is built without OpenSSL, so stunnel4 in client mode carries its
  TCP over TLS/MTLS (and presents the partner's certificate on 5061).
- ``sipsak-no-client-cert``: sipsak 0.9.8.1 (GnuTLS) cannot present a client certificate (the
  binary has no ``gnutls_certificate_set_x509_key_file``), so on 5061 the Edge refuses it at TLS;
  with a certificate, sipsak goes through stunnel like SIPp.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from simulator.lab.topology import Topology
from simulator.pki import LabPki
from tests.siplab import Lab, lab_up, next_incoming
from tests.siplab import sip_topology as build_topology

pytestmark = [
    pytest.mark.interop,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="binds ports 443, 5061 and 53 (needs root)"),
]

SCENARIOS = Path(__file__).parent / "sipp"
STUNNEL = shutil.which("stunnel4") or shutil.which("stunnel")


def requires(binary: str | None, name: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(binary is None, reason=f"{name} is not installed")


@pytest.fixture(scope="module")
def sip_topology(tmp_path_factory: pytest.TempPathFactory) -> Topology:
    return build_topology(tmp_path_factory.mktemp("topo"), octet=215)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def run(*argv: str, timeout: float = 30.0, cwd: Path | None = None) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=cwd
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out.decode(errors="replace")


@asynccontextmanager
async def stunnel(tmp: Path, lab: Lab, port: int, *, cert: Path | None) -> AsyncIterator[int]:
    """stunnel in client mode: 127.0.0.1:<accept> -> the Edge's Access interface ``port``."""
    assert STUNNEL is not None
    accept = free_port()
    lines = [
        "foreground = yes",
        "pid =",
        "debug = 5",
        "[sip]",
        "client = yes",
        f"accept = 127.0.0.1:{accept}",
        f"connect = {lab.addr('edge:access')}:{port}",
        f"CAfile = {lab.pki.trust_bundle}",
        "verifyChain = yes",
        "checkHost = sip.contoso.lab",
    ]
    if cert is not None:
        lines.append(f"cert = {cert}")
    conf = tmp / f"stunnel-{accept}.conf"
    conf.write_text("\n".join(lines) + "\n")
    proc = await asyncio.create_subprocess_exec(
        STUNNEL, str(conf), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stderr is not None
        async with asyncio.timeout(10):
            while True:
                line = await proc.stderr.readline()
                if not line:
                    raise AssertionError("stunnel exited before it was configured")
                if b"Configuration successful" in line:
                    break
        drain = asyncio.create_task(proc.stderr.read())
        yield accept
    finally:
        if proc.returncode is None:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 5)
        if "drain" in locals():
            drain.cancel()


# ---------------------------------------------------------------------- sipsak


@requires(shutil.which("sipsak"), "sipsak")
async def test_sipsak_options_over_tls_443(sip_topology: Topology, lab_pki: LabPki) -> None:
    async with lab_up(sip_topology, lab_pki) as lab:
        edge = lab.addr("edge:access")
        code, out = await run(
            "sipsak",
            "-vv",
            "-E",
            "tls",
            "--tls-ignore-cert-failure",
            "-s",
            f"sip:ping@{edge}:443",
        )
        assert code == 0, out
        assert "SIP/2.0 200 OK" in out


@requires(shutil.which("sipsak"), "sipsak")
async def test_sipsak_without_client_certificate_is_refused_on_5061(
    sip_topology: Topology, lab_pki: LabPki
) -> None:
    """Quirk sipsak-no-client-cert: the Edge's MTLS listener refuses it, and logs why."""
    async with lab_up(sip_topology, lab_pki) as lab:
        edge = lab.addr("edge:access")
        code, out = await run(
            "sipsak",
            "-E",
            "tls",
            "--tls-ignore-cert-failure",
            "-s",
            f"sip:ping@{edge}:5061",
        )
        assert code != 0
        assert "200 OK" not in out
        assert any("no client certificate" in r for r in lab.refusals())


@requires(shutil.which("sipsak"), "sipsak")
@requires(STUNNEL, "stunnel4")
async def test_sipsak_options_on_5061_with_partner_certificate(
    sip_topology: Topology, lab_pki: LabPki, tmp_path: Path
) -> None:
    async with lab_up(sip_topology, lab_pki) as lab:
        cert = lab.pki.host_cert("fabrikam", "fabrikam").pem
        async with stunnel(tmp_path, lab, 5061, cert=cert) as port:
            edge = lab.addr("edge:access")
            code, out = await run(
                "sipsak",
                "-vv",
                "-E",
                "tcp",
                "-s",
                f"sip:ping@{edge}:5061",
                "-p",
                "127.0.0.1",
                "-r",
                str(port),
            )
        assert code == 0, out
        assert "SIP/2.0 200 OK" in out


# ---------------------------------------------------------------------- SIPp


def sipp_argv(scenario: str, port: int, *extra: str) -> list[str]:
    return [
        "sipp",
        "-sf",
        str(SCENARIOS / scenario),
        f"127.0.0.1:{port}",
        "-t",
        "t1",
        "-i",
        "127.0.0.1",
        "-p",
        str(free_port()),
        "-cp",
        str(free_port()),
        "-nostdin",
        "-timeout",
        "20s",
        "-timeout_error",
        "-trace_err",
        *extra,
    ]


@requires(shutil.which("sipp"), "sipp")
@requires(STUNNEL, "stunnel4")
async def test_sipp_federation_flow_on_5061(
    sip_topology: Topology, lab_pki: LabPki, tmp_path: Path
) -> None:
    """A partner's MESSAGEs reach a registered contoso user through the Edge and are answered."""
    async with lab_up(sip_topology, lab_pki) as lab, lab.ua("bob@contoso.lab", "internal") as bob:
        assert (await bob.register()).code == 200
        cert = lab.pki.host_cert("fabrikam", "fabrikam").pem
        async with stunnel(tmp_path, lab, 5061, cert=cert) as port:
            code, out = await run(
                *sipp_argv("federation_message.xml", port, "-s", "bob", "-m", "5", "-l", "1"),
                cwd=tmp_path,
            )
        assert code == 0, out
        for _ in range(5):
            got = await next_incoming(bob)
            assert got.body.startswith(b"hello from SIPp")
            trust = got.headers.get("ms-edge-proxy-message-trust")
            assert "ms-source-type=DirectPartner" in (trust or "")


@requires(shutil.which("sipp"), "sipp")
@requires(STUNNEL, "stunnel4")
async def test_sipp_client_access_flow_on_443(
    sip_topology: Topology, lab_pki: LabPki, tmp_path: Path
) -> None:
    """A remote user registers with digest over 443 and sends a MESSAGE to a colleague."""
    async with lab_up(sip_topology, lab_pki) as lab, lab.ua("bob@contoso.lab", "internal") as bob:
        assert (await bob.register()).code == 200
        async with stunnel(tmp_path, lab, 443, cert=None) as port:
            code, out = await run(
                *sipp_argv(
                    "client_access.xml",
                    port,
                    "-s",
                    "bob",
                    "-au",
                    "alice",
                    "-ap",
                    lab.password("alice@contoso.lab") or "",
                    "-m",
                    "1",
                ),
                cwd=tmp_path,
            )
        assert code == 0, out
        got = await next_incoming(bob)
        assert got.body.startswith(b"hello from a remote SIPp")
