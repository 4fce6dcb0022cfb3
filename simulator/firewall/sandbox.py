"""The firewalls of a topology and stand-in hosts, in network namespaces of their own.

``edgesim firewall audit`` needs no lab: a :class:`Sandbox` lays out the topology as the netns
lab does (a namespace per host and per firewall, a bridge per zone in a switch namespace, the
hosts' routes from :func:`simulator.lab.network.host_routes`, forwarding on in the firewalls
only), but the hosts run nothing: they are stand-ins. One extra stand-in per zone holds an
address no host of the topology has (``any@internet``), for rules that open a port to a whole
zone. Sockets are opened in the stand-ins' namespaces from this one process (``setns(2)`` on
the calling thread), so listeners and probes cost no process per host.

Every name starts with ``es_<pid><tag>-``. A netns lab's namespaces start with ``es-`` or
``es<name>-`` and a lab name is letters and digits only
(:class:`~simulator.lab.runners.base.LabName`), so no lab's name is ever a sandbox's, whatever
the lab is called and whatever the pid: ``lab down`` never removes a sandbox and a sandbox never
removes a lab's namespaces. One whose process died is removed by the next.
Needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN), iproute2 and nftables.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import ipaddress
import json
import os
import re
import socket
import struct
import subprocess
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from simulator.errors import LabError
from simulator.firewall.rules import FirewallNode
from simulator.lab.network import ephemeral_port_range, host_routes, link_name
from simulator.lab.system import pid_alive, root_tools_problem
from simulator.lab.topology import Host, Interface, Topology
from simulator.matrix.model import Matrix

PREFIX = "es_"
"""No lab name holds ``_``: see the module's docstring."""
_NAME = re.compile(rf"^{PREFIX}(\d+)[a-z]*-")
CLONE_NEWNET = 0x40000000
COMMAND_TIMEOUT = 30.0
FLUSH_TIMEOUT = 2.0
"""Seconds the kernel has to acknowledge a connection-tracking flush (it takes microseconds)."""
NETLINK_NETFILTER = 12
_CT_FLUSH = (1 << 8) | 2
"""NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_DELETE: with no tuple, every entry."""
_NLM_F_REQUEST, _NLM_F_ACK, _NLMSG_ERROR = 0x1, 0x4, 2
_libc = ctypes.CDLL(None, use_errno=True)


def requirements_problem() -> str | None:
    """Why this machine cannot build a sandbox, or None."""
    return root_tools_problem("the firewall sandbox")


@contextlib.contextmanager
def inside(namespace: str) -> Iterator[None]:
    """Run the block with this thread in the named network namespace (sockets made there stay
    there), then come back."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
    except FileNotFoundError:
        os.close(own)
        raise LabError(f"network namespace {namespace} does not exist") from None
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            raise LabError(f"cannot enter {namespace}: {os.strerror(ctypes.get_errno())}")
        try:
            yield
        finally:
            if _libc.setns(own, CLONE_NEWNET) != 0:  # pragma: no cover - the kernel allows it
                raise LabError(f"cannot leave {namespace}: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(target)
        os.close(own)


def conntrack_flush_request(seq: int) -> bytes:
    """The netlink request that deletes every IPv4 connection-tracking entry of a namespace:
    an ``IPCTNL_MSG_CT_DELETE`` with no tuple, as ``conntrack -F`` (libnetfilter_conntrack's
    ``NFCT_Q_FLUSH``) sends it."""
    body = struct.pack("=BBH", socket.AF_INET, 0, 0)  # struct nfgenmsg: family, version, res_id
    flags = _NLM_F_REQUEST | _NLM_F_ACK
    return struct.pack("=IHHII", 16 + len(body), _CT_FLUSH, flags, seq, 0) + body


def netlink_error(reply: bytes) -> int:
    """The errno of a netlink acknowledgement (0: done); -1 when ``reply`` is not one."""
    if len(reply) < 20:
        return -1
    _, kind, _, _, _ = struct.unpack_from("=IHHII", reply)
    if kind != _NLMSG_ERROR:
        return -1
    error: int = struct.unpack_from("=i", reply, 16)[0]
    return -error


def _namespaces() -> list[str]:
    done = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    return [line.split()[0] for line in done.stdout.splitlines() if line.strip()]


def sandbox_prefix(pid: int, tag: str = "") -> str:
    """What every namespace of the sandbox of process ``pid`` starts with (``tag``: one of
    several sandboxes of that process)."""
    return f"{PREFIX}{pid}{tag}-"


def stale_namespaces(names: Sequence[str], alive: Callable[[int], bool]) -> list[str]:
    """The sandbox namespaces among ``names`` whose process is not ``alive``."""
    return [n for n in names if (m := _NAME.match(n)) and not alive(int(m.group(1)))]


def remove_stale() -> list[str]:
    """Delete sandbox namespaces whose process is gone (after a crash); the names deleted."""
    stale = stale_namespaces(_namespaces(), pid_alive)
    if stale:
        _ip_batch([f"netns del {n}" for n in stale], check=False)
    return stale


def _ip_batch(lines: Sequence[str], namespace: str | None = None, *, check: bool = True) -> None:
    args = ["ip", *(["-n", namespace] if namespace else []), "-batch", "-"]
    done = subprocess.run(
        args,
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    if check and done.returncode != 0:
        raise LabError(f"ip -batch{f' in {namespace}' if namespace else ''}: {done.stderr.strip()}")


async def _ip_batch_async(lines: Sequence[str], namespace: str | None = None) -> None:
    args = ["ip", *(["-n", namespace] if namespace else []), "-batch", "-"]
    proc = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(("\n".join(lines) + "\n").encode()), 30)
    if proc.returncode != 0:
        where = f" in {namespace}" if namespace else ""
        raise LabError(f"ip -batch{where}: {err.decode().strip()}")


def free_address(topology: Topology, zone_id: str) -> ipaddress.IPv4Address:
    """An address of the zone that no host or firewall of the topology has."""
    used = {i.address for i in topology.interfaces()}
    used |= {i.address for fw in topology.firewalls for i in fw.interfaces}
    zone = topology.zone(zone_id)
    hosts = list(zone.subnet.hosts())
    # Not the last one either: Docker takes it for its bridge in the compose lab.
    for candidate in reversed(hosts[:-1]):
        if candidate not in used:
            return candidate
    raise LabError(f"zone {zone_id}: no free address for a stand-in in {zone.subnet}")


def stand_in_hosts(topology: Topology) -> list[Host]:
    """One extra host per zone with an address no topology host has (``any@<zone>``)."""
    hosts = []
    for zone in topology.zones:
        host_id = f"any@{zone.id}"
        iface = Interface(host_id, "any", zone.id, free_address(topology, zone.id))
        hosts.append(Host(host_id, ("stand-in",), (iface,)))
    return hosts


@dataclass
class Sandbox:
    """Build with ``async with Sandbox(topology, matrix) as box:``; removed on exit."""

    topology: Topology
    matrix: Matrix
    tag: str = ""
    """Distinguishes sandboxes of one process (``edgesim firewall diff`` builds two)."""

    def __post_init__(self) -> None:
        self.prefix = sandbox_prefix(os.getpid(), self.tag)
        self.hosts: list[Host] = [*self.topology.hosts, *stand_in_hosts(self.topology)]
        self._names: dict[str, str] = {}
        for i, fw in enumerate(self.topology.firewalls):
            self._names[fw.id] = f"{self.prefix}f{i}"
        for i, host in enumerate(self.hosts):
            self._names[host.id] = f"{self.prefix}h{i}"
        self.switch = f"{self.prefix}sw"

    def ns(self, node_id: str) -> str:
        """The namespace of a host, stand-in or firewall."""
        return self._names[node_id]

    def node(self, firewall_id: str) -> FirewallNode:
        return FirewallNode(firewall_id, ("ip", "netns", "exec", self.ns(firewall_id)))

    def host(self, host_id: str) -> Host:
        return next(h for h in self.hosts if h.id == host_id)

    # ------------------------------------------------------------ build
    async def build(self) -> None:
        problem = requirements_problem()
        if problem:
            raise LabError(problem)
        remove_stale()
        mine = [n for n in _namespaces() if n.startswith(self.prefix)]
        if mine:
            _ip_batch([f"netns del {n}" for n in mine], check=False)
        try:
            await self._build()
        except BaseException:
            await self.close()
            raise

    async def _build(self) -> None:
        zones = [z.id for z in self.topology.zones]
        nodes: list[tuple[str, tuple[Interface, ...], bool]] = [
            (fw.id, fw.interfaces, True) for fw in self.topology.firewalls
        ]
        nodes += [(h.id, h.interfaces, False) for h in self.hosts]
        await _ip_batch_async(
            [f"netns add {self.switch}", *(f"netns add {self.ns(n)}" for n, _, _ in nodes)]
        )
        veths: list[str] = []
        switch_lines = ["link set lo up"]
        switch_lines += [f"link add br{i} type bridge" for i in range(len(zones))]
        switch_lines += [f"link set br{i} up" for i in range(len(zones))]
        per_ns: dict[str, list[str]] = {}
        for n, (node, interfaces, _) in enumerate(nodes):
            ns = self.ns(node)
            lines = per_ns.setdefault(ns, ["link set lo up"])
            for j, iface in enumerate(interfaces):
                outer, inner = f"n{n}i{j}", link_name(iface)
                # Distinct ifindexes at the two ends: the kernel then brings carrier up at
                # once, where a pair with equal indexes waits up to a second (linkwatch).
                k = len(veths)
                veths.append(
                    f"link add name {outer} index {100 + k} netns {self.switch} type veth "
                    f"peer name {inner} index {10000 + k} netns {ns}"
                )
                switch_lines += [
                    f"link set {outer} master br{zones.index(iface.zone)}",
                    f"link set {outer} up",
                ]
                prefix = self.topology.zone(iface.zone).subnet.prefixlen
                lines += [f"addr add {iface.address}/{prefix} dev {inner}", f"link set {inner} up"]
        for host in self.hosts:
            per_ns[self.ns(host.id)] += [
                " ".join(route.ip_args()) for route in host_routes(self.topology, host)
            ]
        await _ip_batch_async(veths)
        await asyncio.gather(
            _ip_batch_async(switch_lines, self.switch),
            *(_ip_batch_async(lines, ns) for ns, lines in per_ns.items()),
        )
        await self._wait_for_carrier(len(veths))
        low, high = ephemeral_port_range(self.matrix)
        for node, _, is_firewall in nodes:
            with inside(self.ns(node)):
                _sysctl("net/ipv4/ip_forward", "1" if is_firewall else "0")
                if not is_firewall:
                    _sysctl("net/ipv4/conf/all/arp_ignore", "1")
                    _sysctl("net/ipv4/conf/all/arp_announce", "2")
                    _sysctl("net/ipv4/ip_local_port_range", f"{low} {high}")

    async def _wait_for_carrier(self, count: int, timeout: float = 10.0) -> None:
        """Wait until every link is up at both ends (the kernel brings carrier up a little
        after ``ip link set up``; a packet sent before that is lost)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            proc = await asyncio.create_subprocess_exec(
                "ip", "-n", self.switch, "-j", "link", "show",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            out, _ = await proc.communicate()
            links = json.loads(out or b"[]")
            up = [link for link in links if link.get("master") and link.get("operstate") == "UP"]
            if len(up) >= count:
                return
            if loop.time() > deadline:
                raise LabError(f"sandbox links not up within {timeout:g} s ({len(up)} of {count})")
            await asyncio.sleep(0.02)

    def forget_connections(self) -> None:
        """Empty every firewall's connection tracking table, so that the next packet of a flow
        sent before is decided by the rules again, not as the reply or the rest of an earlier
        exchange (``ct state established``)."""
        for fw in self.topology.firewalls:
            with inside(self.ns(fw.id)):
                sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
            with sock:
                sock.settimeout(FLUSH_TIMEOUT)
                try:
                    sock.send(conntrack_flush_request(1))
                    error = netlink_error(sock.recv(4096))
                except OSError as exc:  # TimeoutError included
                    raise LabError(
                        f"{fw.id}: cannot flush connection tracking: {exc.strerror or 'no answer'}"
                    ) from None
            # ENOENT: nothing tracked yet (the rules use no ct match).
            if error not in (0, errno.ENOENT):
                why = os.strerror(error) if error > 0 else "no acknowledgement"
                raise LabError(f"{fw.id}: cannot flush connection tracking: {why}")

    async def close(self) -> None:
        names = [n for n in _namespaces() if n.startswith(self.prefix)]
        if names:
            await asyncio.to_thread(_ip_batch, [f"netns del {n}" for n in names], check=False)

    async def __aenter__(self) -> Sandbox:
        await self.build()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _sysctl(key: str, value: str) -> None:
    with open(f"/proc/sys/{key}", "w") as f:
        f.write(value)
