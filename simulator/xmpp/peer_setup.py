"""What the renderers of the real XMPP servers (:mod:`simulator.xmpp.prosody`,
:mod:`simulator.xmpp.ejabberd`, and the XMPP benchmark's Prosody) share: why a server cannot run
on this machine, and handing its rendered directory to the system user it runs as."""

from __future__ import annotations

import os
import pwd
import shutil
from collections.abc import Mapping
from pathlib import Path


def missing(user: str, needs: Mapping[str, str], why_root: str) -> str | None:
    """Why a server that runs as the system ``user`` cannot run here, or None: ``needs`` maps
    each program (a name on PATH or an absolute path) it needs to the line that says it is not
    installed; ``why_root`` says why it needs root."""
    for program, problem in needs.items():
        if shutil.which(program) is None:
            return problem
    if os.geteuid() != 0:
        return why_root
    try:
        pwd.getpwnam(user)
    except KeyError:
        return f"no '{user}' user on this machine"
    return None


def hand_over(directory: Path, user: str, *, private: tuple[str, ...] = ()) -> None:
    """As root, give ``directory`` and everything in it to the system ``user`` (the server
    reads its configuration and key material as that user): the directory readable by all, the
    files named in ``private`` by their owner only. Without root or without the user, nothing
    changes."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return
    if os.geteuid() == 0:
        os.chmod(directory, 0o755)
        for path in [directory, *directory.rglob("*")]:
            os.chown(path, entry.pw_uid, entry.pw_gid)
        for name in private:
            os.chmod(directory / name, 0o600)
