"""The swarm runner: the topology as a Docker Swarm stack, across one or several Docker hosts.

``up`` creates the zones' networks, renders the stack file (:func:`render_stack`) into the lab's
state directory, runs ``docker stack deploy`` and waits until every service has a healthy task
whose routes to its zones' other nodes are complete; ``down`` is ``docker stack rm``, then the
networks are removed once their tasks are gone. Swarm schedules; edgesim renders, deploys and
enters the task containers (``docker exec``, or ``docker --context NODE exec`` for a task on
another node).

What the lab holds:

* one ``overlay`` network per zone, ``<stack>_<zone>``, ``attachable`` (a load container or a
  capture can join it from any node) and ``internal`` (no route off the lab: no
  ``docker_gwbridge``). Swarm picks each network's own subnet from its address pool and gives
  every task an address there. The runner creates them with ``docker network create`` (the
  stack file names them ``external``), because the tasks must know which network is which
  zone before Swarm's DNS knows them: their subnets reach the tasks as ``EDGESIM_SWARM_ZONES``;
* every host and (lab) firewall as a service with one task, ``endpoint_mode: dnsrr`` (no virtual
  IP), ``NET_ADMIN`` (``cap_add``, honoured by ``docker stack deploy`` from Docker 20.10), the
  same sysctls as the compose lab (``net.ipv4.ip_forward`` 1 on firewalls and 0 on hosts, the
  hosts' ephemeral port range), and a network alias per zone, ``<node>--<zone>``;
* the firewalls' rule files (and a custom topology) as Swarm configs, named after their content;
* placement: when any node carries a label ``edgesim.zone.<zone>=true``, each service runs on a
  node labelled with its home zone (a host's first zone, a firewall's first interface's zone).

What differs from the compose lab: Swarm cannot give a service's task a fixed address, so the
lab's addresses are not Docker's. Every task adds its lab addresses itself, beside the one Swarm
gave it on the same overlay interface (:class:`SwarmNetwork`), and routes each lab address of
its zones' other nodes, and its default route, via those nodes' Swarm addresses, which it learns
from Swarm's DNS (the per-zone aliases) and keeps learning (a task restarted elsewhere has a new
address; Swarm's DNS lists a task only once it is healthy, so a task is healthy when its own
addresses and services are, and ``up`` then waits for every task's routes). Overlay networks answer ARP only for the addresses Docker assigned, so across hosts a
lab address is reachable only through these routes; packets carry the lab addresses end to end
and cross the lab firewalls as in the other labs. A restarted firewall task loads the rules it
was deployed with. A zone on the user's own firewall (``external = true``) is not supported
here (the netns and compose runners attach such zones to a host link).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import ipaddress
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import dns.exception
import dns.message
import dns.query
import dns.rdatatype

from simulator.errors import LabError
from simulator.firewall.rules import FirewallNode
from simulator.lab.network import ephemeral_port_range, host_routes
from simulator.lab.runners import register_runner
from simulator.lab.runners._docker import (
    CERTS,
    READY,
    RULES_DIR,
    TLS_KEYS,
    TOPOLOGY_IN_CONTAINER,
    ContainerRunner,
    container_ip,
    sysctl_lines,
)
from simulator.lab.runners._exec import RuleFiles
from simulator.lab.runners.base import (
    LabConfig,
    LoadResult,
    Vantage,
    edgesim_argv,
    lab_firewall,
)
from simulator.lab.topology import Host, Interface, Topology, default_topology_path, load_topology
from simulator.matrix import load_matrix

log = logging.getLogger(__name__)

ZONE_LABEL = "edgesim.zone."
LAB_LABEL = "org.edgesim.swarm-lab"
UP_TIMEOUT = 300.0
DOWN_TIMEOUT = 90.0
ROUTES_TIMEOUT = 60.0
"""How long ``up`` waits, once every task is healthy, for every task's routes."""
DNS_TIMEOUT = 0.5
"""Seconds a task waits for Swarm's DNS to answer one name."""
REFRESH = 2.0
"""Seconds between two looks at Swarm's DNS inside a task."""
STACK_FILE = "stack.yml"
FAILED_TASKS = 3
"""A service whose tasks failed this often ends ``up`` (its error and log are shown)."""
ROUTES = "/run/edgesim/routes.json"
"""Inside a task: which of its zones' other nodes it routes to, and which it still waits for."""
ZONES_ENV = "EDGESIM_SWARM_ZONES"
"""``zone=subnet`` pairs (space-separated): the Swarm subnet of each zone's network."""


def alias(node: str, zone: str) -> str:
    """The DNS name of ``node``'s task on ``zone``'s network (Swarm's DNS, per network)."""
    return f"{node}--{zone}"


def home_zone(topology: Topology, node: str) -> str:
    """Where placement puts a node: a host's first zone, a firewall's first interface's zone."""
    for host in topology.hosts:
        if host.id == node:
            return host.zones[0]
    return topology.firewall(node).interfaces[0].zone


def node_interfaces(topology: Topology, node: str) -> tuple[Interface, ...]:
    """The interfaces of a host or firewall."""
    for host in topology.hosts:
        if host.id == node:
            return host.interfaces
    return topology.firewall(node).interfaces


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def _q(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _flow(items: Sequence[str]) -> str:
    return "[" + ", ".join(_q(i) for i in items) + "]"


@dataclass
class StackFiles:
    """What ``docker stack deploy`` reads: the stack file and the files its configs name."""

    stack: str
    configs: dict[str, tuple[str, Path]] = field(default_factory=dict)
    """Config key -> (its content-named Swarm name, the file on this machine)."""


def network_name(stack: str, zone: str) -> str:
    return f"{stack}_{zone}"


def render_stack(
    topology: Topology,
    *,
    stack: str,
    rules: Mapping[str, Path],
    subnets: Mapping[str, str],
    image: str = "edgesim:latest",
    placement: bool = False,
    topology_file: Path | None = None,
) -> StackFiles:
    """The stack file of ``topology``: see the module docstring.

    ``rules``: firewall id -> the rule file to deploy it with; ``subnets``: zone -> the Swarm
    subnet of its network (made beforehand, :func:`network_name`); ``placement``: constrain each
    service to nodes labelled ``edgesim.zone.<home zone>=true``; ``topology_file``: a custom
    topology, given to every task as a config.
    """
    if topology.external_firewalls:
        names = ", ".join(fw.id for fw in topology.external_firewalls)
        raise LabError(
            f"the swarm runner cannot attach zones to your own firewall ({names}): use "
            "--runner netns or compose (docs/lab.md)"
        )
    configs: dict[str, tuple[str, Path]] = {}
    top_args: list[str] = []
    if topology_file is not None:
        configs["topology"] = (
            f"{stack}-topology-{_digest(topology_file.read_text())}",
            topology_file.resolve(),
        )
        top_args = ["--topology", TOPOLOGY_IN_CONTAINER]
    ephemeral = ephemeral_port_range(load_matrix())
    zones_env = " ".join(f"{zone.id}={subnets[zone.id]}" for zone in topology.zones)
    out = [
        "# The edgesim lab as a Docker Swarm stack, rendered from the topology by the swarm",
        "# runner (`edgesim lab up --runner swarm`); `docker stack deploy` reads it. Every task",
        "# adds its lab addresses itself and routes them via its peers' Swarm addresses.",
        'version: "3.8"',
        "",
        "services:",
    ]

    def service(node: str, zones: Sequence[str]) -> list[str]:
        lines = [
            f"  {node}:",
            f"    image: {_q(image)}",
            f"    hostname: {node}",
            "    init: true",
            "    cap_add: [NET_ADMIN]",
            "    stop_grace_period: 5s",
            "    environment:",
            f"      EDGESIM_LAB: {_q(stack)}",
            f"      {ZONES_ENV}: {_q(zones_env)}",
            f"      SSLKEYLOGFILE: {_q(TLS_KEYS)}",
            "    healthcheck:",
            f"      test: {_flow(['CMD', 'test', '-f', READY])}",
            "      interval: 2s",
            "      timeout: 2s",
            "      retries: 60",
            "    networks:",
        ]
        for zone in zones:
            lines += [f"      {zone}:", f"        aliases: [{_q(alias(node, zone))}]"]
        lines += [
            "    deploy:",
            "      endpoint_mode: dnsrr",
            "      replicas: 1",
            "      restart_policy: { condition: any, delay: 2s }",
        ]
        if placement:
            label = f"node.labels.{ZONE_LABEL}{home_zone(topology, node)} == true"
            lines += ["      placement:", f"        constraints: [{_q(label)}]"]
        return lines

    def mounts(extra: list[tuple[str, str]]) -> list[str]:
        items = [*extra]
        if "topology" in configs:
            items.append(("topology", TOPOLOGY_IN_CONTAINER))
        if not items:
            return []
        lines = ["    configs:"]
        for key, target in items:
            lines += [f"      - source: {key}", f"        target: {target}"]
        return lines

    for fw in topology.lab_firewalls:
        rule_file = Path(rules[fw.id]).resolve()
        key = f"{fw.id}-rules"
        configs[key] = (f"{stack}-{key}-{_digest(rule_file.read_text())}", rule_file)
        inside = f"{RULES_DIR}/{PurePosixPath(fw.rules).name}"
        command = [
            "python3", "-m", "simulator.lab.runners.swarm", *top_args,
            "node", "--node", fw.id, "--rules", inside, "--ready-file", READY,
        ]  # fmt: skip
        out += service(fw.id, [i.zone for i in fw.interfaces])
        out += sysctl_lines("firewall", ephemeral)
        out += [f"    command: {_flow(command)}", *mounts([(key, inside)]), ""]
    for host in topology.hosts:
        command = [
            "edgesim", *top_args, "lab", "serve", "--host", host.id, "--runner", "swarm",
            "--certs", CERTS, "--ready-file", READY,
        ]  # fmt: skip
        out += service(host.id, host.zones)
        out += sysctl_lines("host", ephemeral)
        if host.description:
            out.append(f"    labels: {{ org.edgesim.description: {_q(host.description)} }}")
        out += [f"    command: {_flow(command)}", *mounts([]), ""]
    out.append("networks:  # made by the runner: overlay, attachable, internal")
    for zone in topology.zones:
        out += [f"  {zone.id}:", "    external: true", f"    name: {network_name(stack, zone.id)}"]
    if configs:
        out += ["", "configs:"]
        for key, (name, path) in configs.items():
            out += [f"  {key}:", f"    name: {name}", f"    file: {_q(str(path))}"]
    out.append("")
    return StackFiles("\n".join(out), configs)


# ------------------------------------------------------------------ inside a task


def zones_from_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Zone -> Swarm subnet of its network, from ``$EDGESIM_SWARM_ZONES`` (set by the stack)."""
    text = (environ if environ is not None else os.environ).get(ZONES_ENV, "")
    pairs = dict(item.partition("=")[::2] for item in text.split())
    if not pairs:
        raise LabError(f"${ZONES_ENV} is not set: this runs inside a task of the swarm lab")
    return pairs


def swarm_dns() -> str:
    """The task's own DNS server (Docker's embedded one, 127.0.0.11), from /etc/resolv.conf."""
    with contextlib.suppress(OSError):
        for line in Path("/etc/resolv.conf").read_text().splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] == "nameserver":
                return words[1]
    return "127.0.0.11"


def resolve_all(names: Sequence[str], server: str, timeout: float = DNS_TIMEOUT) -> dict[str, str]:
    """The A record of each name Swarm's DNS knows, asked all at once with a short timeout: a
    name it does not know (a task not healthy yet) it forwards to the host's resolvers, which
    an internal network cannot reach, so glibc would wait seconds for each."""

    def one(name: str) -> str | None:
        query = dns.message.make_query(name, "A")
        try:
            answer = dns.query.udp(query, server, timeout=timeout)
        except (OSError, dns.exception.DNSException):
            return None
        for rrset in answer.answer:
            for item in rrset:
                if item.rdtype == dns.rdatatype.A:
                    return str(item.address)
        return None

    with ThreadPoolExecutor(max_workers=16) as pool:
        found = dict(zip(names, pool.map(one, names), strict=True))
    return {name: address for name, address in found.items() if address is not None}


@dataclass(frozen=True)
class _Peer:
    node: str
    zone: str
    addresses: tuple[str, ...]
    """The peer's lab addresses in the zone."""


class SwarmNetwork:
    """Inside a swarm task: the node's lab addresses, and routes to its zones' other nodes.

    ``setup()`` adds the lab addresses beside Swarm's own, on the overlay interface of each zone
    (the one whose address lies in the zone network's subnet, ``subnets``). ``update()`` routes
    each lab address of the zones' other nodes that Swarm's DNS knows via their Swarm address,
    and the host's routes (:func:`~simulator.lab.network.host_routes`) via the firewalls' Swarm
    addresses, with the node's own lab address as source; it writes what it routes and what it
    still waits for to ``routes_file``. ``start()`` does both, then updates in a background
    thread until :meth:`stop`.
    """

    def __init__(
        self,
        topology: Topology,
        node: str,
        subnets: Mapping[str, str],
        *,
        refresh: float = REFRESH,
        routes_file: Path = Path(ROUTES),
    ) -> None:
        self.topology = topology
        self.node = node
        self.subnets = {zone: ipaddress.IPv4Network(net) for zone, net in subnets.items()}
        self.refresh = refresh
        self.routes_file = routes_file
        self.dns = swarm_dns()
        self.interfaces = node_interfaces(topology, node)
        self.zones = tuple(dict.fromkeys(i.zone for i in self.interfaces))
        self.devices: dict[str, str] = {}
        self.routes: dict[str, tuple[str, ...]] = {}
        """Destination -> the ``ip route replace`` arguments installed for it."""
        self._waiting: list[str] | None = None
        self._stop = threading.Event()

    def _source(self, zone: str) -> str:
        return str(next(i.address for i in self.interfaces if i.zone == zone))

    def peers(self) -> list[_Peer]:
        """Every other host and lab firewall with an address in one of this node's zones."""
        others: list[tuple[str, tuple[Interface, ...]]] = [
            (h.id, h.interfaces) for h in self.topology.hosts
        ] + [(fw.id, fw.interfaces) for fw in self.topology.lab_firewalls]
        found = []
        for node, interfaces in others:
            if node == self.node:
                continue
            for zone in self.zones:
                addresses = tuple(str(i.address) for i in interfaces if i.zone == zone)
                if addresses:
                    found.append(_Peer(node, zone, addresses))
        return found

    def _find_devices(self) -> dict[str, str]:
        """Zone -> the interface whose (Swarm) address lies in the zone network's subnet."""
        devices = {}
        for link in json.loads(container_ip("-j", "-4", "addr", "show")):
            for info in link.get("addr_info", []):
                address = ipaddress.IPv4Address(info["local"])
                for zone, subnet in self.subnets.items():
                    if address in subnet:
                        devices[zone] = link["ifname"]
        missing = [zone for zone in self.zones if zone not in devices]
        if missing:
            raise LabError(
                f"{self.node}: no network of zone {', '.join(missing)} in this task "
                f"(${ZONES_ENV}: {' '.join(f'{z}={n}' for z, n in self.subnets.items())})"
            )
        return devices

    def setup(self) -> None:
        self.devices = self._find_devices()
        for iface in self.interfaces:
            prefix = self.topology.zone(iface.zone).subnet.prefixlen
            device = self.devices[iface.zone]
            container_ip("addr", "replace", f"{iface.address}/{prefix}", "dev", device)
        self.update()

    def _plan(self) -> tuple[dict[str, tuple[str, ...]], list[str]]:
        """Destination -> ``ip route replace`` arguments, and the peers Swarm's DNS does not
        know yet (their routes wait)."""
        swarm_address: dict[tuple[str, str], str] = {}
        missing = []
        plan: dict[str, tuple[str, ...]] = {}
        peers = self.peers()
        known = resolve_all([alias(p.node, p.zone) for p in peers], self.dns)
        for peer in peers:
            gateway = known.get(alias(peer.node, peer.zone))
            if gateway is None:
                missing.append(alias(peer.node, peer.zone))
                continue
            swarm_address[(peer.node, peer.zone)] = gateway
            for address in peer.addresses:
                plan[f"{address}/32"] = self._route(f"{address}/32", gateway, peer.zone)
        host = next((h for h in self.topology.hosts if h.id == self.node), None)
        for route in host_routes(self.topology, host) if host is not None else []:
            owner, zone = self._owner_of(route.gateway)
            gateway_address = swarm_address.get((owner, zone))
            if gateway_address is not None:
                plan[route.destination] = self._route(route.destination, gateway_address, zone)
        return plan, sorted(missing)

    def _route(self, destination: str, gateway: str, zone: str) -> tuple[str, ...]:
        return (
            "route", "replace", destination, "via", gateway, "dev", self.devices[zone],
            "src", self._source(zone),
        )  # fmt: skip

    def _owner_of(self, address: ipaddress.IPv4Address) -> tuple[str, str]:
        for fw in self.topology.lab_firewalls:
            for iface in fw.interfaces:
                if iface.address == address:
                    return fw.id, iface.zone
        raise LabError(f"{self.node}: no lab firewall has the gateway {address}")

    def update(self) -> list[str]:
        """Install the routes that changed since the last call (a peer Swarm's DNS does not
        know, e.g. between two of its tasks, keeps its last route); the peers still missing."""
        plan, missing = self._plan()
        changed = False
        for destination, args in plan.items():
            if self.routes.get(destination) != args:
                container_ip(*args)
                log.info("%s: ip %s", self.node, " ".join(args))
                self.routes[destination] = args
                changed = True
        waiting = [m for m in missing if not self._known(m)]
        if changed or not self.routes_file.exists() or waiting != self._waiting:
            self._waiting = waiting
            state = {"node": self.node, "complete": not waiting, "waiting": waiting,
                     "routes": [" ".join(args) for args in self.routes.values()]}  # fmt: skip
            self.routes_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.routes_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(state, indent=2))
            tmp.replace(self.routes_file)
        return waiting

    def _known(self, missing_alias: str) -> bool:
        """A peer routed before (its lab addresses have routes) counts as reachable."""
        node, _, zone = missing_alias.partition("--")
        peer = next(p for p in self.peers() if (p.node, p.zone) == (node, zone))
        return all(f"{a}/32" in self.routes for a in peer.addresses)

    def _loop(self) -> None:
        while not self._stop.wait(self.refresh):
            try:
                self.update()
            except LabError as exc:
                log.warning("%s: %s", self.node, exc)

    def start(self) -> None:
        """:meth:`setup`, then keep the routes current until :meth:`stop`."""
        self.setup()
        threading.Thread(target=self._loop, name="swarm-routes", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()


# ------------------------------------------------------------------ the runner


@register_runner
class SwarmRunner(ContainerRunner):
    """The lab as the Docker Swarm stack ``<name>`` (``edgesim`` unless ``--name``), deployed
    from this manager node; ``EDGESIM_IMAGE`` picks the image every node runs."""

    name = "swarm"
    summary = "Docker Swarm stack across one or several Docker hosts (a manager node)"
    order = 30
    node_kind = "task"

    def __init__(self, config: LabConfig) -> None:
        super().__init__(config)
        self.stack = config.name
        self.state_dir = Path(config.state)
        self.rules = RuleFiles(self.topology, self.state_dir, config.rules)
        self._containers: dict[str, list[str]] | None = None

    # ------------------------------------------------------------ names
    @property
    def start_hint(self) -> str:
        return f"`edgesim lab up --runner swarm{self.config.lab.cli_args()}` on a manager node"

    @property
    def image(self) -> str:
        return os.environ.get("EDGESIM_IMAGE", "edgesim:latest")

    def service(self, node: str) -> str:
        return f"{self.stack}_{node}"

    def _custom_topology(self) -> bool:
        return self.topology.path.resolve() != default_topology_path().resolve()

    # ------------------------------------------------------------ docker
    def problem(self) -> str | None:
        if shutil.which("docker") is None:
            return "docker is not installed: scripts/setup-docker.sh installs and starts it"
        done = self._run(
            ["docker", "info", "--format", "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}"]
        )
        if done.returncode != 0:
            return "no Docker engine answers (scripts/setup-docker.sh starts one)"
        state, _, manager = done.stdout.strip().partition(" ")
        if state != "active":
            return (
                "this Docker engine is not in a swarm: `docker swarm init` (docs/lab.md: "
                "Docker Swarm)"
            )
        if manager != "true":
            return "this node is a swarm worker: run the swarm lab from a manager node"
        if self.topology.external_firewalls:
            return (
                "the swarm runner cannot attach zones to your own firewall: use --runner "
                "netns or compose"
            )
        return None

    # ------------------------------------------------------------ entering tasks
    def _local_node(self) -> str:
        return self._docker("info", "--format", "{{.Swarm.NodeID}}").strip()

    def _find_containers(self) -> dict[str, list[str]]:
        """Node -> the ``docker [--context N] exec -i CONTAINER`` prefix of its running task."""
        found: dict[str, list[str]] = {}
        out = self._docker(
            "ps", "--filter", f"label=com.docker.stack.namespace={self.stack}",
            "--format", '{{.ID}} {{.Label "com.docker.swarm.service.name"}}',
        )  # fmt: skip
        prefix = f"{self.stack}_"
        for line in out.splitlines():
            cid, _, service = line.partition(" ")
            if service.startswith(prefix):
                found[service.removeprefix(prefix)] = ["docker", "exec", "-i", cid]
        missing = [node for node, _ in self._nodes() if node not in found]
        if missing:
            found.update(self._remote_containers(missing))
        return found

    def _remote_containers(self, nodes: list[str]) -> dict[str, list[str]]:
        """Tasks on other nodes: entered through the Docker context named after their node."""
        found: dict[str, list[str]] = {}
        local = self._local_node()
        contexts = set(self._docker("context", "ls", "--format", "{{.Name}}").split())
        for node in nodes:
            tasks = self._run(
                ["docker", "service", "ps", self.service(node), "--filter",
                 "desired-state=running", "--format", "{{.ID}}"]
            ).stdout.split()  # fmt: skip
            if not tasks:
                continue
            info = self._run(
                ["docker", "inspect", "--format",
                 "{{.Status.ContainerStatus.ContainerID}} {{.NodeID}} {{.Status.State}}",
                 tasks[0]]
            ).stdout.split()  # fmt: skip
            if len(info) != 3 or info[2] != "running" or info[1] == local:
                continue
            hostname = self._docker(
                "node", "inspect", "--format", "{{.Description.Hostname}}", info[1]
            ).strip()
            if hostname not in contexts:
                raise LabError(
                    f"{node} runs on node {hostname}: create a Docker context to reach it "
                    f"(`docker context create {hostname} --docker host=ssh://{hostname}`)"
                )
            found[node] = ["docker", "--context", hostname, "exec", "-i", info[0]]
        return found

    def _exec_prefix(self, node: str) -> list[str]:
        if self._containers is None or node not in self._containers:
            self._containers = self._find_containers()
        try:
            return self._containers[node]
        except KeyError:
            raise LabError(f"no running task of {self.service(node)}: {self.start_hint}") from None

    def exec_argv(self, node: str) -> list[str]:
        return list(self._exec_prefix(node))

    def exec_env(self) -> dict[str, str] | None:
        return None

    def edgesim_argv(self, node: str) -> list[str]:
        return edgesim_argv(self, node, TOPOLOGY_IN_CONTAINER if self._custom_topology() else None)

    # ------------------------------------------------------------ up and down
    def _placement(self) -> bool:
        """Whether to constrain placement: some node is labelled ``edgesim.zone.<zone>``; then
        every home zone must be labelled on some node (else the tasks would wait forever)."""
        ids = self._docker("node", "ls", "--format", "{{.ID}}").split()
        labelled: set[str] = set()
        for line in self._docker(
            "node", "inspect", "--format", "{{json .Spec.Labels}}", *ids
        ).splitlines():
            labels = json.loads(line) or {}
            labelled |= {
                key.removeprefix(ZONE_LABEL)
                for key, value in labels.items()
                if key.startswith(ZONE_LABEL) and value == "true"
            }
        if not labelled:
            return False
        homes = {home_zone(self.topology, node) for node, _ in self._nodes()}
        missing = sorted(homes - labelled)
        if missing:
            raise LabError(
                f"no swarm node is labelled for zone {', '.join(missing)}: "
                f"`docker node update --label-add {ZONE_LABEL}{missing[0]}=true NODE`"
            )
        return True

    def render(self, subnets: Mapping[str, str]) -> StackFiles:
        rules = {fw: self.rules.overrides.get(fw) or self.rules.topology_rules(fw)
                 for fw in self.our_firewalls()}  # fmt: skip
        return render_stack(
            self.topology,
            stack=self.stack,
            rules=rules,
            subnets=subnets,
            image=self.image,
            placement=self._placement(),
            topology_file=self.topology.path if self._custom_topology() else None,
        )

    def _networks(self) -> dict[str, str]:
        """This lab's networks: name -> id (found by their label, also after a crash)."""
        out = self._docker(
            "network", "ls", "--filter", f"label={LAB_LABEL}={self.stack}",
            "--format", "{{.Name}} {{.ID}}",
        )  # fmt: skip
        return dict(line.split() for line in out.splitlines() if line.strip())

    def create_networks(self) -> dict[str, str]:
        """One overlay network per zone (made now, or kept from before); zone -> its subnet."""
        existing = self._networks()
        subnets: dict[str, str] = {}
        for zone in self.topology.zones:
            name = network_name(self.stack, zone.id)
            if name not in existing:
                self._docker(
                    "network", "create", "--driver", "overlay", "--attachable", "--internal",
                    "--label", f"{LAB_LABEL}={self.stack}",
                    "--label", f"org.edgesim.zone={zone.id} {zone.subnet}", name,
                )  # fmt: skip
            subnet = self._docker(
                "network", "inspect", "--format", "{{range .IPAM.Config}}{{.Subnet}} {{end}}", name
            ).split()
            if not subnet:
                raise LabError(f"Swarm gave the network {name} no subnet")
            subnets[zone.id] = subnet[0]
        return subnets

    def bring_up(self, timeout: float = UP_TIMEOUT) -> None:
        """:meth:`up` without an event loop."""
        self._ready_to_run()
        if self._run(["docker", "image", "inspect", self.image]).returncode != 0:
            raise LabError(
                f"no image {self.image} on this node: build it with `docker compose build` at "
                "the repository root (EDGESIM_IMAGE names it; every node needs the same image: "
                "docs/lab.md, Docker Swarm)"
            )
        subnets = self.create_networks()
        files = self.render(subnets)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        stack_file = self.state_dir / STACK_FILE
        stack_file.write_text(files.stack)
        log.info("swarm: deploying %s as stack %s", stack_file, self.stack)
        done = subprocess.run(
            ["docker", "stack", "deploy", "--resolve-image", "never", "--detach=true",
             "-c", str(stack_file), self.stack],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=300,
        )  # fmt: skip
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise LabError(f"`docker stack deploy` failed: {last}")
        self.rules.forget()
        for fw, (_, path) in files.configs.items():
            if fw.endswith("-rules"):
                self.rules.record(fw.removesuffix("-rules"), path)
        self._wait_healthy(timeout)
        self._wait_routes(ROUTES_TIMEOUT)

    def _routes_of(self, node: str) -> dict[str, Any]:
        done = self._run([*self.exec_argv(node), "cat", ROUTES])
        with contextlib.suppress(ValueError):
            state = json.loads(done.stdout)
            if isinstance(state, dict):
                return state
        return {"complete": False, "waiting": [f"no {ROUTES} in {node}"]}

    def _wait_routes(self, timeout: float) -> None:
        """Swarm's DNS lists a task once it is healthy: wait until every task routes to all of
        its zones' other nodes."""
        self._containers = None
        nodes = [node for node, _ in self._nodes()]
        deadline = time.monotonic() + timeout
        while True:
            with ThreadPoolExecutor(max_workers=8) as pool:
                states = dict(zip(nodes, pool.map(self._routes_of, nodes), strict=True))
            waiting = {n: s.get("waiting", []) for n, s in states.items() if not s.get("complete")}
            if not waiting:
                return
            if time.monotonic() > deadline:
                node, peers = next(iter(waiting.items()))
                raise LabError(
                    f"routes not complete within {timeout:.0f} s: {node} waits for "
                    + ", ".join(map(str, peers))
                )
            time.sleep(1.0)

    def _replicas(self) -> dict[str, str]:
        out = self._docker("stack", "services", self.stack, "--format", "{{.Name}} {{.Replicas}}")
        pairs = (line.split() for line in out.splitlines() if line.strip())
        return {name.removeprefix(f"{self.stack}_"): rep for name, rep in pairs}

    def _wait_healthy(self, timeout: float) -> None:
        """Until every service has a healthy task; a task that keeps failing (Swarm restarts
        it) ends the wait at once with its error and its last log line."""
        deadline = time.monotonic() + timeout
        while True:
            replicas = self._replicas()
            pending = sorted(n for n, _ in self._nodes() if replicas.get(n, "0/1") != "1/1")
            if not pending:
                return
            failing = self._failing()
            if failing:
                node, error = next(iter(failing.items()))
                raise LabError(f"{node} keeps failing ({error}): {self._last_log(node)}")
            if time.monotonic() > deadline:
                raise LabError(f"not healthy within {timeout:.0f} s: {', '.join(pending)}")
            time.sleep(1.0)

    def _failing(self, tries: int = FAILED_TASKS) -> dict[str, str]:
        """Services whose tasks failed ``tries`` times: their last error."""
        done = self._run(
            ["docker", "stack", "ps", self.stack, "--no-trunc", "--filter", "desired-state=shutdown",
             "--format", "{{.Name}}|{{.Error}}"]
        )  # fmt: skip
        counts: dict[str, list[str]] = {}
        for line in done.stdout.splitlines():
            name, _, error = line.partition("|")
            node = name.split(".")[0].removeprefix(f"{self.stack}_")
            if error:
                counts.setdefault(node, []).append(error)
        return {node: errors[0] for node, errors in counts.items() if len(errors) >= tries}

    def _last_log(self, node: str) -> str:
        done = self._run(["docker", "service", "logs", "--raw", "--tail", "3", self.service(node)])
        lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
        return lines[-1] if lines else "no log"

    async def up(self) -> None:
        await asyncio.to_thread(self.bring_up)

    def teardown(self, timeout: float = DOWN_TIMEOUT) -> list[str]:
        """:meth:`down` without an event loop."""
        problem = self.problem()
        if problem is not None:
            raise LabError(problem)
        services = sorted(self._replicas())
        if services:
            self._docker("stack", "rm", self.stack)
        deadline = time.monotonic() + timeout
        while networks := self._networks():
            # A network goes once the last task on it has stopped (on every node).
            self._run(["docker", "network", "rm", *networks])
            if not self._networks():
                break
            if time.monotonic() > deadline:
                left = ", ".join(self._networks())
                raise LabError(
                    f"the lab's networks were not removed within {timeout:.0f} s: {left}"
                )
            time.sleep(0.5)
        self.rules.forget()
        (self.state_dir / STACK_FILE).unlink(missing_ok=True)
        self._containers = None
        return services

    async def down(self) -> list[str]:
        """``docker stack rm``, then wait until the stack's networks are gone (Swarm removes
        them once their tasks have stopped); the services removed."""
        return await asyncio.to_thread(self.teardown)

    def require_up(self) -> None:
        self._ready_to_run()
        replicas = self._replicas()
        if not replicas:
            raise LabError(f"no swarm lab {self.stack} is up: {self.start_hint}")
        missing = [n for n, _ in self._nodes() if replicas.get(n) != "1/1"]
        if missing:
            raise LabError(f"the swarm lab has no healthy task for {', '.join(missing)}")

    # ------------------------------------------------------------ status
    def _tasks(self) -> dict[str, str]:
        """Node -> ``<state> on <swarm node>`` of its current task."""
        done = self._run(
            ["docker", "stack", "ps", self.stack, "--filter", "desired-state=running",
             "--format", "{{.Name}}|{{.Node}}|{{.CurrentState}}"]
        )  # fmt: skip
        tasks: dict[str, str] = {}
        for line in done.stdout.splitlines():
            name, node, state = [*line.split("|"), "", ""][:3]
            service = name.split(".")[0].removeprefix(f"{self.stack}_")
            tasks[service] = f"{state.split(' ')[0].lower()} on {node}"
        return tasks

    def _where(self) -> dict[str, str]:
        return self._tasks()

    def _lab_addresses(self, node: str) -> set[str] | None:
        """The node's lab addresses; its others are Swarm's own (marked ``swarm``)."""
        return {str(i.address) for i in node_interfaces(self.topology, node)}

    # ------------------------------------------------------------ firewalls
    def rules_path(self, firewall: str) -> Path:
        """The rule file the firewall's task loaded last through this runner (``up`` deploys
        the topology's, or the ``--rules`` given; ``reload-firewall`` records what it loads)."""
        return self.rules.path(firewall)

    def firewall_node(self, firewall: str) -> FirewallNode:
        """As root, for a task on this node: ``nsenter`` into its network namespace (this
        machine's nft and files); otherwise ``docker exec`` into the task (the image's nft,
        enough to trace)."""
        lab_firewall(self.topology, firewall)
        argv = self.exec_argv(firewall)
        if os.geteuid() == 0 and "--context" not in argv:
            return self._nsenter(firewall, argv[-1])
        return FirewallNode(firewall, tuple(argv))

    def load_rules(self, firewall: str, path: Path | None = None) -> LoadResult:
        """``nft -f -`` in the firewall's task, the file on stdin: it replaces what the file's
        own statements replace (the rendered files: their ``inet edgesim`` table), never
        Docker's DNS rules in the task, which its routes depend on; a ``flush ruleset`` in the
        file removes those too."""
        lab_firewall(self.topology, firewall)
        self._ready_to_run()
        chosen = Path(path).resolve() if path is not None else self.rules.topology_rules(firewall)
        try:
            text = chosen.read_text()
        except OSError as exc:
            raise LabError(f"cannot read {chosen}: {exc.strerror}") from None
        done = self._run([*self.exec_argv(firewall), "nft", "-f", "-"], stdin=text)
        if done.returncode != 0:
            raise LabError(f"{firewall}: nft -f {chosen} failed: {done.stderr.strip()}")
        self.rules.record(firewall, chosen)
        return LoadResult(firewall, chosen)

    # ------------------------------------------------------------ scenarios
    async def vantage(self) -> Vantage:
        """Each task's network namespace (``/proc/PID/ns/net`` of its container on this node)
        and the lab's PKI copied out of a task; scenario clients need every task here."""
        self.require_up()
        prefixes = {node: self._exec_prefix(node) for node, _ in self._nodes()}
        remote = sorted(node for node, argv in prefixes.items() if "--context" in argv)
        if remote:
            raise LabError(
                f"scenario clients enter each node's network from this machine, but "
                f"{', '.join(remote)} run on other nodes: run the scenarios on a single-node "
                "swarm, or probe instead (`edgesim probe --runner swarm`)"
            )
        return self._vantage({node: argv[-1] for node, argv in prefixes.items()})

    def prepare_host(self, host: Host) -> None:
        """Inside the host's task: lab addresses and routes (:class:`SwarmNetwork`)."""
        SwarmNetwork(self.topology, host.id, zones_from_env()).start()


# ------------------------------------------------------------------ a firewall task


def serve_firewall(topology: Topology, node: str, rules: Path, ready_file: Path) -> None:
    """A firewall's task: its lab addresses and routes, its rule file, then ready until
    SIGTERM (the routes kept current meanwhile)."""
    network = SwarmNetwork(topology, node, zones_from_env())
    network.start()
    done = subprocess.run(["nft", "-f", str(rules)], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise LabError(f"{node}: nft -f {rules} failed: {done.stderr.strip()}")
    ready_file.parent.mkdir(parents=True, exist_ok=True)
    ready_file.write_text(json.dumps({"host": node, "pid": os.getpid(), "services": []}))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    network.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """``python3 -m simulator.lab.runners.swarm [--topology T] node|render ...``."""
    parser = argparse.ArgumentParser(prog="python3 -m simulator.lab.runners.swarm")
    parser.add_argument("--topology", type=Path, default=None)
    sub = parser.add_subparsers(dest="command", required=True)
    node = sub.add_parser("node", help="run a firewall's task (inside the stack)")
    node.add_argument("--node", required=True)
    node.add_argument("--rules", type=Path, required=True)
    node.add_argument("--ready-file", type=Path, default=Path(READY))
    render = sub.add_parser("render", help="print the stack file (no placement, topology rules)")
    render.add_argument("--stack", default="edgesim")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    topology = load_topology(args.topology)
    try:
        if args.command == "node":
            serve_firewall(topology, args.node, args.rules, args.ready_file)
        else:
            rules = RuleFiles(topology, Path(tempfile.gettempdir()))
            files = render_stack(
                topology,
                stack=args.stack,
                rules={fw.id: rules.topology_rules(fw.id) for fw in topology.lab_firewalls},
                subnets={zone.id: "SWARM-SUBNET" for zone in topology.zones},
                topology_file=args.topology,
            )
            sys.stdout.write(files.stack)
    except LabError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
