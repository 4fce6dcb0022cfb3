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

from tests.captures import (
    REMOTE_MESSAGE,
    XMPP_MESSAGE,
    needs_capture_tools,
    sip_messages,
    tshark,
    xmpp_bodies,
)

EDGESIM = [sys.executable, "-m", "simulator"]


@pytest.mark.root
def test_scenario_captures_decrypt_in_tshark_on_the_embedded_lab(tmp_path: Path) -> None:
    """The embedded lab (ports moved, as for a user without root): loopback capture."""
    needs_capture_tools()
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
    # Each capture is named with what it holds; no key log went missing.
    for name in ("remote-user-im", "xmpp-chat"):
        assert re.search(
            rf"capture {re.escape(str(pcaps / name))}\.pcapng: [1-9]\d* packets, [1-9]\d* TLS "
            r"secrets embedded\n(?!  )",
            done.stdout,
        ), done.stdout

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
    needs_capture_tools()
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
        # Every host's key log was read (a host whose processes did no TLS has none: no loss).
        assert "could not be read" not in scen.stdout + probe.stderr, scen.stdout + probe.stderr
        assert re.search(r"wrote \S+probe\.pcapng: [1-9]\d* packets", probe.stderr), probe.stderr
    finally:
        edgesim("lab", "down", *lab[:-2])
    messages = sip_messages(tmp_path / "pcap" / "federation-im.pcapng")
    assert ("MESSAGE sip:carol@fabrikam.lab SIP/2.0", "hi carol") in messages, messages
    assert XMPP_MESSAGE in xmpp_bodies(tmp_path / "pcap" / "xmpp-chat.pcapng")
    options = tshark(tmp_path / "pcap" / "probe.pcapng", 'sip.Method == "OPTIONS"')
    assert "Request-Line: OPTIONS sip:" in options
