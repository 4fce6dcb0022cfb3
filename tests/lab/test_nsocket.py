"""nsocket: a socket made in a lab host's namespace lives there; the thread comes back home."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator

import pytest

from simulator.errors import LabError
from simulator.lab.nsocket import current_namespace_id, socket_in

NS = "edgesim218-nsocket"
ADDRESS = "127.218.9.1"

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("ip") is None,
        reason="entering a network namespace needs root and iproute2",
    ),
]


@pytest.fixture
def namespace() -> Iterator[str]:
    subprocess.run(["ip", "netns", "del", NS], capture_output=True, check=False)
    subprocess.run(["ip", "netns", "add", NS], check=True, timeout=10)
    try:
        subprocess.run(["ip", "-n", NS, "link", "set", "lo", "up"], check=True, timeout=10)
        yield NS
    finally:
        subprocess.run(["ip", "netns", "del", NS], check=False, timeout=10)


def test_a_socket_made_in_the_namespace_lives_there(namespace: str) -> None:
    home = current_namespace_id()
    with socket_in(namespace, socket.AF_INET, socket.SOCK_STREAM) as listener:
        assert current_namespace_id() == home  # the thread came back
        listener.bind((ADDRESS, 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        # from this namespace nothing listens there ...
        with socket.socket() as outside, pytest.raises(ConnectionRefusedError):
            outside.settimeout(5)
            outside.connect((ADDRESS, port))
        # ... from the namespace the listener answers
        with socket_in(namespace, socket.AF_INET, socket.SOCK_STREAM) as inside:
            inside.settimeout(5)
            inside.bind((ADDRESS, 0))
            inside.connect((ADDRESS, port))
            conn, peer = listener.accept()
            conn.close()
            assert peer[0] == ADDRESS
    assert current_namespace_id() == home


def test_a_missing_namespace_is_one_clear_error() -> None:
    home = current_namespace_id()
    with pytest.raises(LabError, match="edgesim218-nothing does not exist: is the netns lab up"):
        socket_in("edgesim218-nothing", socket.AF_INET, socket.SOCK_DGRAM)
    assert current_namespace_id() == home
    # None: a plain socket of this namespace
    with socket_in(None, socket.AF_INET, socket.SOCK_DGRAM) as plain:
        plain.bind((ADDRESS, 0))
