"""`--pcap DIR`: one pcapng per scenario (and per probe run) that Wireshark decrypts.

tshark (Debian ``tshark``) reads what edgesim wrote, with nothing but the file: the TLS secrets
are embedded (``editcap --inject-secrets``), so the SIP MESSAGE request line and body and the
XMPP ``<message>`` body come out in clear text.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EDGESIM = [sys.executable, "-m", "simulator"]
# What the shipped scenarios say (scenarios/remote_user_im.py, scenarios/xmpp_chat.py).
REMOTE_MESSAGE = "hello from home"
XMPP_MESSAGE = "hi romeo, from SIP"


def _needs_capture_tools() -> None:
    for tool in ("tcpdump", "tshark", "editcap", "mergecap"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (scripts/setup.sh --test installs it)")
    if os.geteuid() != 0:
        pytest.skip("tcpdump on loopback needs root (or CAP_NET_RAW)")


def tshark(pcap: Path, display: str, *extra: str) -> str:
    """tshark's verbose dissection of the packets matching ``display``."""
    done = subprocess.run(
        ["tshark", "-r", str(pcap), *extra, "-Y", display, "-V"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def sip_messages(pcap: Path, *decode_as: str) -> list[tuple[str, str]]:
    """(request line, body) of every SIP MESSAGE tshark decrypts in ``pcap``."""
    args = [a for port in decode_as for a in ("-d", f"tls.port=={port},sip")]
    text = tshark(pcap, 'sip.Method == "MESSAGE"', *args)
    found = []
    for frame in text.split("\nFrame "):
        line = re.search(r"Request-Line: (MESSAGE \S+ SIP/2\.0)", frame)
        body = re.search(r"Line-based text data: text/plain \(\d+ lines?\)\n\s+(.*)", frame)
        if line and body:
            found.append((line.group(1), body.group(1).strip()))
    return found


def xmpp_bodies(pcap: Path) -> list[str]:
    """The body of every XMPP ``<message>`` tshark decrypts in ``pcap`` (Wireshark knows XMPP
    on 5222; it is told that 5269, the server-to-server port, is XMPP with STARTTLS too)."""
    text = tshark(pcap, "xmpp.message", "-d", "tcp.port==5269,xmpp")
    return re.findall(r'BODY \[value="([^"]*)"\]', text)


def test_scenario_captures_decrypt_in_tshark_on_the_embedded_lab(tmp_path: Path) -> None:
    """The embedded lab (ports moved, as for a user without root): loopback capture."""
    _needs_capture_tools()
    pcaps, page = tmp_path / "pcap", tmp_path / "report" / "ladders.html"
    env = {
        **os.environ, "EDGESIM_PORTS": "moved", "EDGESIM_STATE_DIR": str(tmp_path / "state"),
        "COLUMNS": "80", "NO_COLOR": "1",
    }  # fmt: skip
    done = subprocess.run(
        [*EDGESIM, "scenario", "run", "remote-user-im", "xmpp-chat", "--certs",
         str(tmp_path / "certs"), "--pcap", str(pcaps), "--html", str(page)],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 capture(s) in" in done.stdout

    remote = pcaps / "remote-user-im.pcapng"
    # The remote user's leg is on the Edge's moved client port: Wireshark is told it is SIP.
    messages = sip_messages(remote, "8443")
    assert ("MESSAGE sip:bob@contoso.lab SIP/2.0", REMOTE_MESSAGE) in messages, messages
    assert XMPP_MESSAGE in xmpp_bodies(pcaps / "xmpp-chat.pcapng")

    html = page.read_text()
    for name in ("remote-user-im", "xmpp-chat"):
        assert f"href='../pcap/{name}.pcapng'" in html


@pytest.mark.root
def test_probe_and_scenario_captures_on_a_netns_lab(tmp_path: Path) -> None:
    """A netns lab: tcpdump in every host's namespace, the lab processes' TLS key logs."""
    _needs_capture_tools()
    if shutil.which("nft") is None:
        pytest.skip("nft is not installed")
    env = {**os.environ, "EDGESIM_STATE_DIR": str(tmp_path / "state"), "COLUMNS": "80"}
    lab = ["--runner", "netns", "--name", "cap1", "--certs", str(tmp_path / "certs")]

    def edgesim(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*EDGESIM, *args], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path
        )

    up = edgesim("lab", "up", *lab)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        scen = edgesim("scenario", "run", "federation-im", "xmpp-chat", *lab, "--pcap", "pcap")
        assert scen.returncode == 0, scen.stdout + scen.stderr
        probe = edgesim("probe", *lab, "--row", "fed-in-5061", "--pcap", "pcap")
        assert probe.returncode == 0, probe.stdout + probe.stderr
    finally:
        edgesim("lab", "down", *lab[:-2])
    messages = sip_messages(tmp_path / "pcap" / "federation-im.pcapng")
    assert ("MESSAGE sip:carol@fabrikam.lab SIP/2.0", "hi carol") in messages, messages
    assert XMPP_MESSAGE in xmpp_bodies(tmp_path / "pcap" / "xmpp-chat.pcapng")
    options = tshark(tmp_path / "pcap" / "probe.pcapng", 'sip.Method == "OPTIONS"')
    assert "Request-Line: OPTIONS sip:" in options
