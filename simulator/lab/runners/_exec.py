"""What the runners whose nodes are entered by a command (netns, compose, swarm) share: asking
each host, from inside, whether its listeners answer; which rule file each firewall loaded; a
node's addresses as ``ip`` lists them; where captures run."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path

from simulator.aioloop import run_command
from simulator.firewall.render import render_all, topology_rules_path
from simulator.lab.capture import CapturePoint, sent_by
from simulator.lab.runners.base import ListenerCheck, ListenerInfo, Runner, lab_firewall
from simulator.lab.topology import Topology

log = logging.getLogger(__name__)
RULES_FILE = "rules.json"

CHECK_TIMEOUT = 30.0
_WHOLE_HOST = ListenerInfo("-", "", "", 0, "", "", 0)


def listed_addresses(text: str, lab: set[str] | None = None, other: str = "") -> list[str]:
    """``ip -4 -o addr show`` -> ``192.0.2.10/24 (access)`` per address but loopback's; an
    address not in ``lab`` (when given) is marked ``(eth1, OTHER)``."""
    listed = []
    for parts in (line.split() for line in text.splitlines()):
        if len(parts) > 3 and parts[1] != "lo":
            foreign = lab is not None and parts[3].split("/")[0] not in lab
            listed.append(f"{parts[3]} ({parts[1]}{f', {other}' if foreign else ''})")
    return listed


def host_capture_points(runner: Runner) -> list[CapturePoint]:
    """tcpdump in every host of ``runner``'s lab, of what the host sends (every packet once,
    also those a firewall then drops)."""
    return [
        CapturePoint(
            h.id, tuple(runner.exec_argv(h.id)), bpf=sent_by([str(i.address) for i in h.interfaces])
        )
        for h in runner.config.topology.hosts
    ]


async def _check_host(
    runner: Runner, host: str, ready_file: str, timeout: float
) -> list[ListenerCheck]:
    argv = [
        *runner.edgesim_argv(host),
        "lab", "check-host", "--host", host, "--runner", runner.name,
        "--certs", runner.node_certs, "--ready-file", ready_file,
    ]  # fmt: skip
    failed = f"{host}: `lab check-host` "
    done = await run_command(argv, timeout=timeout, env=runner.exec_env())
    if done.returncode is None:
        return [ListenerCheck(host, "-", _WHOLE_HOST, False, f"{failed}{done.why}")]
    if done.returncode != 0:
        last = done.last_error or "no output"
        return [ListenerCheck(host, "-", _WHOLE_HOST, False, f"{failed}failed: {last}")]
    try:
        return [ListenerCheck.from_dict(item) for item in json.loads(done.out or b"[]")]
    except (ValueError, KeyError, TypeError) as exc:
        return [ListenerCheck(host, "-", _WHOLE_HOST, False, f"{failed}: bad output ({exc})")]


async def check_running_hosts(
    runner: Runner, ready_file: Callable[[str], str]
) -> list[ListenerCheck]:
    """:func:`check_hosts` for every host the runner's status shows running with listeners;
    ``ready_file``: host -> its ready file as the host sees it."""
    status = await runner.status()
    ready = {
        st.node: ready_file(st.node)
        for st in status.nodes
        if st.state == "running" and any(svc.listeners for svc in st.services)
    }
    return await check_hosts(runner, ready)


async def check_hosts(
    runner: Runner, ready_files: dict[str, str], timeout: float = CHECK_TIMEOUT
) -> list[ListenerCheck]:
    """Run ``edgesim lab check-host`` inside every host of ``ready_files`` (host -> its ready
    file as the host sees it), all at once."""
    jobs = [_check_host(runner, host, ready, timeout) for host, ready in ready_files.items()]
    return [check for checks in await asyncio.gather(*jobs) for check in checks]


class RuleFiles:
    """The rule file each firewall of a lab loaded, kept as ``rules.json`` in the lab's state
    directory on this machine (the netns and swarm runners load files into their firewalls
    from here)."""

    def __init__(
        self, topology: Topology, state_dir: Path, overrides: Mapping[str, Path] | None = None
    ) -> None:
        self.topology = topology
        self.state_dir = state_dir
        self.overrides = {fw: Path(p) for fw, p in (overrides or {}).items()}

    def loaded(self) -> dict[str, str]:
        with contextlib.suppress(OSError, ValueError):
            loaded = json.loads((self.state_dir / RULES_FILE).read_text())
            if isinstance(loaded, dict):
                return {str(k): str(v) for k, v in loaded.items()}
        return {}

    def topology_rules(self, firewall: str) -> Path:
        """The topology's rule file: as given, from the current directory or the repository,
        or rendered into the state directory (installed without the repository)."""
        fw = lab_firewall(self.topology, firewall)
        found = topology_rules_path(fw)
        if found is not None:
            return found
        relative = Path(fw.rules)
        target = self.state_dir / "firewall" / relative.name
        target.parent.mkdir(parents=True, exist_ok=True)
        rendered = render_all(self.topology, target.parent)
        target.write_text(rendered[target.parent / relative.name])
        log.warning("%s: %s not found; loaded rules rendered into %s", fw.id, fw.rules, target)
        return target

    def path(self, firewall: str) -> Path:
        """An override given to the runner, the file the running lab loaded last, else the
        topology's."""
        lab_firewall(self.topology, firewall)
        if firewall in self.overrides:
            return self.overrides[firewall]
        loaded = self.loaded().get(firewall)
        if loaded is not None:
            return Path(loaded)
        return self.topology_rules(firewall)

    def record(self, firewall: str, path: Path) -> None:
        self.overrides[firewall] = path
        loaded = {**self.loaded(), firewall: str(path)}
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / RULES_FILE).write_text(json.dumps(loaded, indent=2) + "\n")

    def forget(self) -> None:
        """A new lab: nothing loaded yet."""
        (self.state_dir / RULES_FILE).unlink(missing_ok=True)
