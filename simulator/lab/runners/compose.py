"""The compose runner: docker-compose.yml rendered from the topology, and container set-up.

:func:`render_compose` writes the compose file (committed at the repository root; a test fails
when it drifts from the topology):

* one network per zone on the zone's subnet; Docker's bridge takes the last free address of the
  subnet (never a lab address), IP masquerading is off, and no port is ever published;
* the firewalls as containers with ``NET_ADMIN`` and ``net.ipv4.ip_forward=1``, loading their
  rule files from ``lab/firewall`` (mounted read-only, so an edit plus
  ``edgesim lab reload-firewall --runner compose`` or a restart applies it); they drop Docker's
  default route, so only the lab's routes exist between zones;
* every host as a container running ``edgesim lab serve --runner compose``, which first adds the
  host's extra addresses and its routes via its zones' firewalls
  (:func:`configure_container_network`), so a flow between zones crosses the lab firewall and
  only intra-network (bridged) traffic meets Docker's own rules; ``NET_ADMIN`` only for hosts
  that need routes or addresses;
* hosts' ephemeral ports kept out of the relay range (see :mod:`simulator.lab.network`), and
  their ``ip_forward`` off (a container copies the machine's): only firewalls route;
* health checks (the firewall's table is loaded; the host's services are listening) and
  ``restart: unless-stopped``;
* a zone on the user's own firewall (``external = true``) is a ``macvlan`` network on the link
  the topology names as its ``parent``, its gateway the device's address there; the external
  firewall itself is not rendered.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import simulator
from simulator.errors import LabError
from simulator.firewall.rules import FirewallNode, load_rules
from simulator.lab.network import ephemeral_port_range, host_routes, link_name
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
from simulator.lab.runners.base import LoadResult, Vantage, edgesim_argv, lab_firewall
from simulator.lab.topology import Host, Topology, Zone, default_topology_path
from simulator.matrix import load_matrix

log = logging.getLogger(__name__)


def configure_container_network(topology: Topology, host: Host) -> None:
    """Inside a host's container: add the host's extra addresses and its routes via the firewalls.

    Docker gives each container one address per network (the first interface of the host in that
    zone); a second interface in the same zone (the Edge's A/V address) is added here, and the
    default route is moved from Docker's bridge gateway to the zone's lab firewall.
    """
    addrs = json.loads(container_ip("-j", "-4", "addr", "show"))
    device_of_zone: dict[str, str] = {}
    present: set[str] = set()
    for link in addrs:
        for info in link.get("addr_info", []):
            present.add(info["local"])
            address = ipaddress.IPv4Address(info["local"])
            for zone in topology.zones:
                if address in zone.subnet:
                    device_of_zone.setdefault(zone.id, link["ifname"])
    for iface in host.interfaces:
        device = device_of_zone.get(iface.zone)
        if device is None:
            raise LabError(f"{host.id}: no network of zone {iface.zone} in this container")
        if str(iface.address) not in present:
            prefix = topology.zone(iface.zone).subnet.prefixlen
            container_ip("addr", "add", f"{iface.address}/{prefix}", "dev", device)
    for route in host_routes(topology, host):
        iface_zone = next(
            i.zone for i in host.interfaces if route.gateway in topology.zone(i.zone).subnet
        )
        args = route.ip_args()
        args[-1] = device_of_zone[iface_zone]
        container_ip(*args)
        log.info("%s: ip %s", host.id, " ".join(args))


# ------------------------------------------------------------------ rendering

IMAGE = "${EDGESIM_IMAGE:-edgesim:latest}"
BASE = "${EDGESIM_BASE:-python:3.11-slim}"
"""The base image the Dockerfile builds on (a build argument): the official Python image, or
``edgesim-base:bookworm`` (scripts/make-base-image.sh) where no registry is reachable."""
PROJECT = "edgesim"
RULES_RECORD = "compose-rules.json"
"""In the lab's state directory: the rule file ``load_rules`` put into each firewall."""


def build_context(compose_file: Path) -> Path:
    """The edgesim source directory (with the Dockerfile) relative to ``compose_file``'s
    directory: ``.`` for the repository's own file (and when edgesim is not run from a
    checkout)."""
    source = Path(simulator.__file__).resolve().parent.parent
    if not (source / "Dockerfile").is_file():
        return Path(".")
    return Path(os.path.relpath(source, compose_file.resolve().parent))


def docker_gateway(topology: Topology, zone: Zone) -> ipaddress.IPv4Address:
    """The address Docker's bridge gets in a zone: the highest one no lab interface uses (on
    the user's link of an external firewall's zone, the device's own address there)."""
    for fw in topology.external_firewalls:
        iface = fw.interface_in(zone.id)
        if iface is not None:
            return iface.address
    used = {i.address for i in topology.interfaces()}
    used |= {i.address for fw in topology.firewalls for i in fw.interfaces}
    for candidate in reversed(list(zone.subnet.hosts())):
        if candidate not in used:
            return candidate
    raise LabError(f"zone {zone.id}: no free address for Docker's bridge in {zone.subnet}")


def _needs_net_admin(topology: Topology, host: Host) -> bool:
    zones = [i.zone for i in host.interfaces]
    return bool(host_routes(topology, host)) or len(zones) != len(set(zones))


def _q(value: str) -> str:
    """A YAML double-quoted scalar."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _flow_list(items: list[str]) -> str:
    return "[" + ", ".join(_q(i) for i in items) + "]"


def render_compose(
    topology: Topology, topology_path: Path | None = None, context: Path = Path(".")
) -> str:
    """docker-compose.yml for ``topology``.

    ``topology_path`` (relative to the compose file) is mounted into the containers when the
    topology is not the one shipped in the package. ``context`` (relative to the compose file)
    is the edgesim source directory the image is built from (its Dockerfile).
    """
    custom = topology.path.resolve() != default_topology_path().resolve()
    topo_args = ["--topology", TOPOLOGY_IN_CONTAINER] if custom else []
    topo_volume = None
    if custom:
        source = topology_path if topology_path is not None else topology.path
        topo_volume = f"{source}:{TOPOLOGY_IN_CONTAINER}:ro"

    ephemeral = ephemeral_port_range(load_matrix())
    out: list[str] = [
        "# The edgesim lab for Docker Compose, rendered from the topology by",
        "# `edgesim lab compose-render`: do not edit by hand (a test fails when it drifts).",
        "#",
        "#   docker compose up --build -d --wait          # builds the image (Dockerfile), starts",
        "#   EDGESIM_BASE=edgesim-base:bookworm docker compose up --build -d --wait",
        "#                                   # no registry: base from scripts/make-base-image.sh",
        "#   edgesim lab reload-firewall --runner compose # after editing lab/firewall",
        "#   docker compose down",
        "#",
        "# One network per zone; the firewall containers route between them and enforce",
        "# lab/firewall/*.nft. No port is published on the host.",
        f"name: {PROJECT}",
        "",
        "x-lab-node: &lab-node",
        f"  image: {_q(IMAGE)}",
        "  build:",
        f"    context: {_q(str(context))}",
        "    dockerfile: Dockerfile",
        "    args:",
        f"      BASE_IMAGE: {_q(BASE)}",
        "  init: true",
        "  restart: unless-stopped",
        "  stop_grace_period: 5s",
        "",
        "services:",
    ]
    for fw in topology.lab_firewalls:
        rules = PurePosixPath(fw.rules)
        # Interfaces named as in the topology and the netns lab (`outside`, `inside`), not
        # Docker's eth0/eth1, so rules matching iifname/oifname decide alike on both labs.
        # ($$ is a literal $ to Compose.)
        renames = "".join(
            f"d=$$(ip -o -4 addr show to {iface.address}/32 | cut -d' ' -f2); "
            f'if [ -n "$$d" ] && [ "$$d" != {link_name(iface)} ]; then '
            f'ip link set "$$d" down && ip link set "$$d" name {link_name(iface)} && '
            f"ip link set {link_name(iface)} up; fi; "
            for iface in fw.interfaces
        )
        script = (
            f"{renames}ip route del default 2>/dev/null; "
            f"nft -f {RULES_DIR}/{rules.name} && exec sleep infinity"
        )
        out += [
            f"  {fw.id}:",
            "    <<: *lab-node",
            f"    hostname: {fw.id}",
            "    cap_add: [NET_ADMIN]",
            *sysctl_lines("firewall", ephemeral),
            "    volumes:",
            f"      - {_q(f'./{rules.parent}:{RULES_DIR}:ro')}",
            f"    command: {_flow_list(['sh', '-c', script])}",
            "    healthcheck:",
            # healthy once rules are loaded (whatever the tables are called)
            f"      test: {_flow_list(['CMD-SHELL', 'nft list tables | grep -q table'])}",
            "      interval: 2s",
            "      timeout: 2s",
            "      retries: 30",
            "    networks:",
        ]
        for iface in fw.interfaces:
            out += [f"      {iface.zone}:", f"        ipv4_address: {iface.address}"]
        out.append("")
    for host in topology.hosts:
        command = [
            "edgesim",
            *topo_args,
            "lab",
            "serve",
            "--host",
            host.id,
            "--runner",
            "compose",
            "--certs",
            CERTS,
            "--ready-file",
            READY,
        ]
        out += [f"  {host.id}:", "    <<: *lab-node", f"    hostname: {host.id}"]
        out += sysctl_lines("host", ephemeral)
        if host.description:
            out.append(f"    labels: {{ org.edgesim.description: {_q(host.description)} }}")
        if _needs_net_admin(topology, host):
            out.append("    cap_add: [NET_ADMIN]")
        if topo_volume:
            out += ["    volumes:", f"      - {_q(topo_volume)}"]
        out += [
            f"    environment: {{ SSLKEYLOGFILE: {_q(TLS_KEYS)} }}",
            f"    command: {_flow_list(command)}",
            "    healthcheck:",
            f"      test: {_flow_list(['CMD', 'test', '-f', READY])}",
            "      interval: 2s",
            "      timeout: 2s",
            "      retries: 30",
            "    networks:",
        ]
        seen: set[str] = set()
        for iface in host.interfaces:
            if iface.zone in seen:
                continue  # a second address in the same zone is added by `lab serve`
            seen.add(iface.zone)
            out += [f"      {iface.zone}:", f"        ipv4_address: {iface.address}"]
        out.append("")
    out.append("networks:")
    for zone in topology.zones:
        parent = topology.zone_parent(zone.id)
        if parent is not None:
            driver = ["    driver: macvlan", "    driver_opts:", f"      parent: {_q(parent)}"]
        else:
            driver = [
                "    driver: bridge",
                "    driver_opts:",
                '      com.docker.network.bridge.enable_ip_masquerade: "false"',
            ]
        out += [
            f"  {zone.id}:",
            *driver,
            "    ipam:",
            "      config:",
            f"        - subnet: {zone.subnet}",
            f"          gateway: {docker_gateway(topology, zone)}",
        ]
    out.append("")
    return "\n".join(out)


# ------------------------------------------------------------------ a running compose lab


@register_runner
class ComposeRunner(ContainerRunner):
    """The compose lab that runs from the current directory's docker-compose.yml (or
    :attr:`LabConfig.compose_file`); ``COMPOSE_PROJECT_NAME``, ``EDGESIM_IMAGE`` and
    ``EDGESIM_BASE`` apply."""

    name = "compose"
    summary = "docker compose (see docker-compose.yml)"
    order = 20
    node_kind = "container"

    # ------------------------------------------------------------ commands
    @property
    def start_hint(self) -> str:
        return "`docker compose up --build -d --wait` at the repository root"

    @property
    def compose_file(self) -> Path:
        return self.config.compose_file or Path("docker-compose.yml")

    def compose_command(self, *args: str) -> list[str]:
        """``docker compose [-f FILE] ARGS`` (``COMPOSE_*`` environment variables apply)."""
        top = ["-f", str(self.config.compose_file)] if self.config.compose_file else []
        return ["docker", "compose", *top, *args]

    def problem(self) -> str | None:
        if shutil.which("docker") is None:
            return "docker is not installed: scripts/setup-docker.sh installs and starts it"
        if not self.compose_file.is_file():
            return (
                f"no {self.compose_file} here: run this at the repository root "
                "(or write one with `edgesim lab compose-render`)"
            )
        return None

    def exec_argv(self, node: str) -> list[str]:
        return self.compose_command("exec", "-T", node)

    def exec_env(self) -> dict[str, str] | None:
        return None

    def edgesim_argv(self, node: str) -> list[str]:
        custom = self.topology.path.resolve() != default_topology_path().resolve()
        return edgesim_argv(self, node, TOPOLOGY_IN_CONTAINER if custom else None)

    # ------------------------------------------------------------ up and down
    async def up(self) -> None:
        """``docker compose up --build -d --wait``: builds the image from the source (cached
        layers make a rebuild quick) and starts the lab. Compose's own output is kept and its
        last lines shown when it fails (the command line shows a progress bar meanwhile)."""
        self._ready_to_run()
        done = await asyncio.to_thread(
            subprocess.run,
            self.compose_command("up", "--build", "-d", "--wait"),
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
            raise LabError(
                f"`docker compose up --build` failed (exit {done.returncode}): {tail}; without "
                "a registry: EDGESIM_BASE=edgesim-base:bookworm (scripts/make-base-image.sh)"
            )
        for firewall, path in self.config.rules.items():
            await asyncio.to_thread(self.load_rules, firewall, Path(path))

    async def down(self) -> list[str]:
        """``docker compose down``: every container and network of the project."""
        self._ready_to_run()
        before = sorted(self._states())
        done = await asyncio.to_thread(
            subprocess.run, self.compose_command("down", "--remove-orphans", "--timeout", "5")
        )
        if done.returncode != 0:
            raise LabError(f"`docker compose down` failed (exit {done.returncode})")
        (self.config.state / RULES_RECORD).unlink(missing_ok=True)
        return before

    def _containers(self) -> list[dict[str, Any]]:
        """``docker compose ps --all``: one entry per container of the project (a JSON list or
        one object per line, depending on the Compose version)."""
        done = self._run(self.compose_command("ps", "--all", "--format", "json"))
        if done.returncode != 0:
            raise LabError(f"docker compose ps failed: {done.stderr.strip()}")
        text = done.stdout.strip()
        try:
            if text.startswith("["):
                return list(json.loads(text))
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        except ValueError as exc:
            raise LabError(f"docker compose ps: unreadable output ({exc})") from None

    def _states(self) -> dict[str, str]:
        """Every container's state by service (``running (healthy)``, ``exited`` ...)."""
        states: dict[str, str] = {}
        for item in self._containers():
            health = item.get("Health") or ""
            states[item["Service"]] = f"{item['State']}{f' ({health})' if health else ''}"
        return states

    def _running(self) -> dict[str, str]:
        """Running containers by service: their ids."""
        return {e["Service"]: e["ID"] for e in self._containers() if e.get("State") == "running"}

    def _where(self) -> dict[str, str]:
        return self._states()

    def require_up(self) -> None:
        self._ready_to_run()
        running = self._running()
        if not running:
            raise LabError(f"no compose lab is up here: {self.start_hint}")
        missing = [n for n, _ in self._nodes() if n not in running]
        if missing:
            raise LabError(f"the compose lab has no running container for {', '.join(missing)}")

    # ------------------------------------------------------------ firewalls
    def _firewall_rules(self, firewall: str) -> PurePosixPath:
        return PurePosixPath(lab_firewall(self.topology, firewall).rules)

    def _mounted_rules(self, firewall: str) -> Path:
        """The rule file mounted into the firewall's container (loaded when it starts)."""
        rules = self._firewall_rules(firewall)
        return (self.compose_file.resolve().parent / rules).resolve()

    def _recorded(self) -> dict[str, str]:
        with contextlib.suppress(OSError, ValueError):
            loaded = json.loads((self.config.state / RULES_RECORD).read_text())
            if isinstance(loaded, dict):
                return {str(k): str(v) for k, v in loaded.items()}
        return {}

    def rules_path(self, firewall: str) -> Path:
        """The file given to this runner for ``firewall``, else the one ``load_rules`` loaded
        last, else the one mounted into its container."""
        if firewall in self.config.rules:
            return Path(self.config.rules[firewall]).resolve()
        recorded = self._recorded().get(firewall)
        if recorded is not None:
            return Path(recorded)
        return self._mounted_rules(firewall)

    def firewall_node(self, firewall: str) -> FirewallNode:
        """As root, ``nsenter`` into the container's network namespace (this machine's nft,
        iptables and files, so includes next to the file work); otherwise ``docker compose
        exec`` (the image's nft; enough to trace)."""
        self._firewall_rules(firewall)
        if os.geteuid() != 0:
            return FirewallNode(firewall, tuple(self.exec_argv(firewall)))
        container = self._running().get(firewall)
        if container is None:
            raise LabError(f"{firewall} is not running: {self.start_hint}")
        return self._nsenter(firewall, container)

    def load_rules(self, firewall: str, path: Path | None = None) -> LoadResult:
        """As root: the file (nftables or iptables-save, includes next to it) checked, then
        loaded into the container's namespace in place of its rules
        (:func:`simulator.firewall.rules.load_rules`). Otherwise ``nft -f`` in the container:
        the mounted file, or ``path`` sent on stdin (its ``include`` lines must name files
        inside the container)."""
        self._ready_to_run()
        mounted = self._mounted_rules(firewall)
        chosen = Path(path).resolve() if path is not None else mounted
        if os.geteuid() == 0:
            index = load_rules(self.firewall_node(firewall), chosen)
            recorded = {k: v for k, v in self._recorded().items() if k != firewall}
            if chosen != mounted:
                recorded[firewall] = str(chosen)
            self.config.state.mkdir(parents=True, exist_ok=True)
            (self.config.state / RULES_RECORD).write_text(json.dumps(recorded, indent=2) + "\n")
            return LoadResult(firewall, chosen, "; ".join(index.unmapped))
        if chosen == mounted:
            inside = f"{RULES_DIR}/{self._firewall_rules(firewall).name}"
            args, stdin = [*self.exec_argv(firewall), "nft", "-f", inside], None
        else:
            try:
                stdin = chosen.read_text()
            except OSError as exc:
                raise LabError(f"cannot read {chosen}: {exc.strerror}") from None
            args = [*self.exec_argv(firewall), "nft", "-f", "-"]
        done = self._run(args, stdin=stdin)
        if done.returncode != 0:
            raise LabError(f"{firewall}: nft -f {chosen} failed: {done.stderr.strip()}")
        return LoadResult(firewall, chosen)

    # ------------------------------------------------------------ scenarios
    async def vantage(self) -> Vantage:
        """Each node's network namespace (``/proc/PID/ns/net`` of its container), and the lab's
        PKI (issued inside the image) copied to a temporary directory."""
        self.require_up()
        running = self._running()
        return self._vantage({node: running[node] for node, _ in self._nodes()})

    def prepare_host(self, host: Host) -> None:
        configure_container_network(self.topology, host)
