"""What the runners whose nodes are Docker containers (compose, swarm) share.

The image's paths; docker commands with a one-line error; each node's addresses and ready file
read from inside its container, and the lab's status built from them; the listener checks; the
namespaces and PKI scenario clients use; captures in every host. A subclass says where each
node's container runs (:meth:`ContainerRunner._where`) and how to enter it
(:meth:`~simulator.lab.runners.base.Runner.exec_argv`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import tempfile
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Literal

from simulator.errors import LabError
from simulator.firewall.rules import FirewallNode
from simulator.lab.capture import CaptureResult, KeySource, packet_capture
from simulator.lab.runners._exec import check_running_hosts, host_capture_points, listed_addresses
from simulator.lab.runners.base import (
    LabConfig,
    LabStatus,
    ListenerCheck,
    NodeStatus,
    Runner,
    Vantage,
    services_of_ready,
)
from simulator.pki import LabPki

# The image's paths (Dockerfile), the same in the compose and swarm labs.
CERTS = "/var/lib/edgesim/certs"
READY = "/run/edgesim/ready.json"
TLS_KEYS = "/run/edgesim/tls-keys.log"
"""Where a host's services log their TLS secrets inside its container (captures embed them)."""
RULES_DIR = "/etc/edgesim/firewall"
TOPOLOGY_IN_CONTAINER = "/etc/edgesim/topology.toml"


def sysctl_lines(kind: Literal["firewall", "host"], ephemeral: tuple[int, int]) -> list[str]:
    """A service's ``sysctls:`` in the compose and stack files. A container copies
    ``ip_forward`` from the machine (1 where Docker runs): firewalls route, hosts must not (the
    Edge sits in two zones); hosts keep their ephemeral ports out of the relay range."""
    if kind == "firewall":
        return ["    sysctls:", '      net.ipv4.ip_forward: "1"']
    low, high = ephemeral
    return [
        "    sysctls:",
        '      net.ipv4.ip_forward: "0"',
        f'      net.ipv4.ip_local_port_range: "{low} {high}"',
    ]


def container_ip(*args: str) -> str:
    """``ip ARGS`` inside a lab container (its own network setup); a failure is a LabError."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        raise LabError(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}")
    return done.stdout


class ContainerRunner(Runner):
    """The part of the compose and swarm runners that only needs ``docker`` and a way in: a lab
    of containers that outlives the command, with firewalls of its own, lab addresses, and a
    PKI of its own in every node."""

    has_firewalls = True
    persistent = True
    shares_pki = False
    in_process = False
    addressing = "lab"

    def __init__(self, config: LabConfig) -> None:
        self.config = config
        self.topology = config.topology

    @property
    def python(self) -> str:
        return "python3"  # the image's PATH starts with the venv edgesim is installed in

    @property
    def node_certs(self) -> str:
        return CERTS

    def _ready_to_run(self) -> None:
        problem = self.problem()
        if problem is not None:
            raise LabError(problem)

    def _run(
        self, args: list[str], timeout: float = 60, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                args, input=stdin, capture_output=True, text=True, timeout=timeout
            )
        except FileNotFoundError:
            raise LabError("docker is not installed: scripts/setup-docker.sh") from None
        except subprocess.TimeoutExpired:
            raise LabError(f"`{' '.join(args)}` did not finish within {timeout:.0f} s") from None

    def _docker(self, *args: str, timeout: float = 60) -> str:
        done = self._run(["docker", *args], timeout)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise LabError(f"--runner {self.name}: docker {' '.join(args[:2])} failed: {last}")
        return done.stdout

    def our_firewalls(self) -> tuple[str, ...]:
        return tuple(fw.id for fw in self.topology.lab_firewalls)

    def _nodes(self) -> list[tuple[str, Literal["firewall", "host"]]]:
        """(node, ``firewall`` or ``host``), firewalls first."""
        return [(fw, "firewall") for fw in self.our_firewalls()] + [
            (h.id, "host") for h in self.topology.hosts
        ]

    # ------------------------------------------------------------ status
    def _where(self) -> dict[str, str]:
        """Node -> where its container is and its state (``running (healthy)``, ``running on
        node1`` ...); a node without a container is missing."""
        raise NotImplementedError

    def _lab_addresses(self, node: str) -> set[str] | None:
        """Addresses the status lists plainly; others are marked as Docker's (None: all)."""
        return None

    def _inspect(self, node: str) -> tuple[list[str], dict[str, object] | None]:
        script = f"ip -4 -o addr show; echo ---; cat {READY} 2>/dev/null || true"
        done = self._run([*self.exec_argv(node), "sh", "-c", script])
        if done.returncode != 0:
            return [], None
        addr_text, _, ready_text = done.stdout.partition("---")
        ready = None
        if ready_text.strip():
            with contextlib.suppress(ValueError):
                ready = json.loads(ready_text)
        return listed_addresses(addr_text, self._lab_addresses(node), self.name), ready

    def snapshot(self) -> LabStatus:
        """:meth:`status` without an event loop."""
        self._ready_to_run()
        where = self._where()
        running = [node for node, _ in self._nodes() if where.get(node, "").startswith("running")]
        with ThreadPoolExecutor(max_workers=8) as pool:
            inspected = dict(zip(running, pool.map(self._inspect, running), strict=True))
        status = LabStatus(self.name, self.config.name, self.node_kind)
        for node, kind in self._nodes():
            st = NodeStatus(node, kind, where.get(node, "absent"), "absent")
            if node in where:
                st.state = "not running"
            if node in inspected:
                st.state = "routing" if kind == "firewall" else "running"
                st.addresses, ready = inspected[node]
                if ready is not None and kind == "host":
                    st.services = services_of_ready(node, ready)
            status.nodes.append(st)
        return status

    async def status(self) -> LabStatus:
        return await asyncio.to_thread(self.snapshot)

    async def check(self) -> list[ListenerCheck]:
        return await check_running_hosts(self, lambda host: READY)

    # ------------------------------------------------------------ firewalls, scenarios
    def _pid(self, *containers: str) -> list[str]:
        return self._docker("inspect", "-f", "{{.State.Pid}}", *containers).split()

    def _nsenter(self, firewall: str, container: str) -> FirewallNode:
        """As root on the container's machine: its network namespace with this machine's nft,
        iptables and files (includes next to a rule file work)."""
        (pid,) = self._pid(container)
        return FirewallNode(firewall, ("nsenter", f"--net=/proc/{pid}/ns/net"))

    def _vantage(self, containers: Mapping[str, str]) -> Vantage:
        """Each node's network namespace (``/proc/PID/ns/net`` of its container, node ->
        container id) and the lab's PKI, issued inside the image, copied out of a host's."""
        pids = self._pid(*containers.values())
        namespaces = {
            node: f"/proc/{pid}/ns/net" for node, pid in zip(containers, pids, strict=True)
        }
        pki_dir = Path(tempfile.mkdtemp(prefix=f"edgesim-{self.name}-pki-"))
        first_host = containers[self.topology.hosts[0].id]
        self._docker("cp", f"{first_host}:{CERTS}/.", str(pki_dir))
        return Vantage(self.name, LabPki(pki_dir), namespaces)

    def capture(self, out: Path) -> AbstractAsyncContextManager[CaptureResult]:
        """tcpdump in every host's container (what each host sends), streamed here, with the
        TLS key log each container's processes write (their environment sets
        ``SSLKEYLOGFILE``)."""
        self.require_up()
        keys = [KeySource(tuple(self.exec_argv(h.id)), TLS_KEYS) for h in self.topology.hosts]
        return packet_capture(out, host_capture_points(self), keys)
