"""Sockets that live in another network namespace (a netns lab host's, named by the runner).

A socket belongs to the network namespace its thread was in when it was created, and stays
there whatever the thread does afterwards. So a process in the root namespace (as root) can
speak from any lab host: enter its namespace (``/run/netns/es-<host>`` in the default netns lab,
see :meth:`simulator.lab.runners.base.Runner.vantage`) with ``setns(2)``, create the socket,
return to the original namespace. Python 3.11 has no ``os.setns``; libc's is called through
ctypes. Only the calling thread switches, and it switches back when the ``with`` block of
:func:`entered` ends, so an event loop thread can use it between awaits::

    sock = socket_in("es-messenger", socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("203.0.113.50", 0))      # the messenger's address, inside its namespace

Needs CAP_SYS_ADMIN (root).
"""

from __future__ import annotations

import ctypes
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from simulator.errors import LabError

NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
_lock = threading.Lock()
_libc: ctypes.CDLL | None = None


def _setns(fd: int) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def netns_path(name: str) -> Path:
    """``es-edge`` -> /run/netns/es-edge; a path (a container's /proc/PID/ns/net) as it is."""
    return Path(name) if name.startswith("/") else NETNS_DIR / name


@contextmanager
def entered(name: str) -> Iterator[None]:
    """Run the block with this thread in network namespace ``name``; always come back.

    Do not await inside the block: other tasks of the loop would run in the namespace too.
    """
    path = netns_path(name)
    with _lock:
        try:
            target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise LabError(
                f"network namespace {name} does not exist: is the netns lab up?"
            ) from None
        except PermissionError:
            raise LabError(f"cannot open {path}: entering a lab namespace needs root") from None
        try:
            home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            os.close(target)
            raise
        try:
            try:
                _setns(target)
            except OSError as exc:
                raise LabError(f"cannot enter network namespace {name}: {exc}") from None
            try:
                yield
            finally:
                _setns(home)  # failing here is fatal: never leave the thread in the lab
        finally:
            os.close(home)
            os.close(target)


def socket_in(name: str | None, family: int, kind: int, proto: int = 0) -> socket.socket:
    """A new socket in network namespace ``name`` (None: this thread's own namespace)."""
    if name is None:
        return socket.socket(family, kind, proto)
    with entered(name):
        return socket.socket(family, kind, proto)


def current_namespace_id() -> int:
    """The inode of this thread's network namespace (tests compare it before and after)."""
    return os.stat("/proc/thread-self/ns/net").st_ino


__all__ = ["current_namespace_id", "entered", "netns_path", "socket_in"]
