"""Reading edgesim's captures with tshark (Debian ``tshark``), as a user would: nothing but the
pcapng file, whose embedded TLS secrets let tshark decrypt SIP and XMPP."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

# What the shipped scenarios say (scenarios/remote_user_im.py, scenarios/xmpp_chat.py).
REMOTE_MESSAGE = "hello from home"
XMPP_MESSAGE = "hi romeo, from SIP"


def needs_capture_tools() -> None:
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


def tcp_conversations(pcap: Path) -> str:
    """tshark's table of the TCP conversations in ``pcap`` (for a failing test's message)."""
    done = subprocess.run(
        ["tshark", "-r", str(pcap), "-q", "-z", "conv,tcp"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return done.stdout + done.stderr
