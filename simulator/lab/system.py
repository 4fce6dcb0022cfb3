"""What this machine offers the labs that need more than loopback: root, iproute2 and nftables,
and whether a process still runs. Shared by the netns runner, the embedded lab's joiners and the
firewall sandbox."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def root_tools_problem(who: str) -> str | None:
    """Why ``who`` (``the netns runner``) cannot make network namespaces and nftables rulesets
    here, or None."""
    if os.geteuid() != 0:
        return f"{who} needs root (network namespaces, nftables)"
    for tool, package in (("ip", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None:
            return f"`{tool}` is missing (Debian package {package})"
    return None


def pid_alive(pid: int) -> bool:
    """True while process ``pid`` runs (also when it belongs to another user). A process that
    exited and waits for its parent to reap it (a zombie) runs no more: a lab stopped by the
    process that started it would otherwise wait for its own unreaped children, then kill them."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        # stat(5): "pid (comm) state ...": the state follows the last ")"
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"
