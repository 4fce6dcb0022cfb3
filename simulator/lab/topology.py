"""The topology model: zones, hosts, interfaces, listeners, firewalls and CAs of a lab.

One TOML file (``default.toml`` in this package, or the user's own with ``--topology``) is loaded
into frozen dataclasses and validated as a whole. Every problem is reported as a
:class:`~simulator.errors.ConfigError` naming the file and the entry, e.g.
``lab.toml: hosts[edge].interfaces[access]: zone 'dmz' is not defined``.

Every lab runner renders this one model: the local runner maps each interface address to a
loopback address (:meth:`Interface.loopback`), the netns, compose and swarm runners use the
addresses as they are.

A firewall marked ``external = true`` is the user's own device (an appliance or its virtual
edition): no runner renders it. Each of its interfaces names the ``parent`` link of this machine
its zone is attached to (a second NIC, a VLAN sub-interface, a bridge or veth the user made), and
the hosts of that zone route through the device's address there (:meth:`Topology.zone_parent`).
"""

from __future__ import annotations

import ipaddress
import json
import re
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from simulator.errors import ConfigError
from simulator.lab.registry import OTHER_TABLES, SERVICES

#: Listener protocols and the transport(s) each one uses.
PROTOCOLS: dict[str, tuple[str, ...]] = {
    "sip-tls": ("tcp",),
    "sip-mtls": ("tcp",),
    "xmpp-s2s": ("tcp",),
    "xmpp-mtls": ("tcp",),
    "xmpp-c2s": ("tcp",),
    "stun-udp": ("udp",),
    "turn-tcp": ("tcp",),
    "turn-tls": ("tcp",),
    "dns": ("udp", "tcp"),
    "media": ("udp", "tcp"),
    "relay": ("udp", "tcp"),
}

DEFAULT_TOPOLOGY = "default.toml"

PRIVILEGED_BELOW = 1024
"""Ports below this need root (or ``net.ipv4.ip_unprivileged_port_start``) to bind."""
PORT_OFFSET = 8000
"""What the embedded lab adds to a privileged port when it cannot bind it (443 -> 8443,
53 -> 8053): :meth:`Topology.moved`."""

_LINK_NAME = re.compile(r"[A-Za-z0-9_.:@-]{1,15}")
"""A Linux interface name (IFNAMSIZ - 1 characters, no ``/`` or blanks)."""


def default_topology_path() -> Path:
    """The path of the topology shipped in the package."""
    return Path(str(resources.files("simulator.lab").joinpath(DEFAULT_TOPOLOGY)))


@dataclass(frozen=True)
class Zone:
    id: str
    """Zone name, e.g. ``internet``."""
    subnet: ipaddress.IPv4Network
    """The zone's subnet; every address in the zone lies in it."""
    description: str = ""
    public: bool = False
    """Names in this zone are served by the public lab DNS (role ``dns-external``)."""
    dns: str | None = None
    """Id of the DNS host that hosts in this zone ask."""


@dataclass(frozen=True)
class CertificateAuthority:
    id: str
    """Short name used by interfaces (``ca = "public"``)."""
    name: str
    """The CA's common name."""
    description: str = ""


@dataclass(frozen=True)
class Interface:
    host: str
    """Id of the host (or firewall) this interface belongs to."""
    id: str
    """Interface name, unique within its host (e.g. ``access``)."""
    zone: str
    """Id of the zone the interface is attached to."""
    address: ipaddress.IPv4Address
    """The interface's address in its zone."""
    fqdns: tuple[str, ...] = ()
    """DNS names of this address; the first is the primary one (certificate subject)."""
    ca: str | None = None
    """The CA that issues this interface's certificate, if it presents one."""
    loopback_address: ipaddress.IPv4Address | None = None
    """Address used by the local runner; derived from :attr:`address` unless given."""
    cert_names: tuple[str, ...] = ()
    """Further names the interface's certificate carries but DNS does not resolve to it (e.g.
    the SIP domain on the Edge's Access interface, which XMPP federation needs, XEP-0178)."""
    parent: str | None = None
    """Only on an external firewall's interface: the link of this machine the interface's zone
    is attached to (``eth1``, ``eth1.101``, a bridge or veth); see :meth:`Topology.zone_parent`."""

    @property
    def ref(self) -> str:
        """``host:interface``, as used in matrix rows and messages."""
        return f"{self.host}:{self.id}"

    @property
    def fqdn(self) -> str | None:
        return self.fqdns[0] if self.fqdns else None

    def loopback(self) -> ipaddress.IPv4Address:
        """The address the local runner binds: 127.b.c.d for a.b.c.d unless configured."""
        if self.loopback_address is not None:
            return self.loopback_address
        packed = self.address.packed
        return ipaddress.IPv4Address(bytes([127]) + packed[1:])


@dataclass(frozen=True)
class Listener:
    host: str
    interface: str
    service: str
    """The service that owns the listener (``access-edge``, ``av-edge``, ...)."""
    proto: str
    """Wire protocol, a key of :data:`PROTOCOLS`."""
    port_low: int
    port_high: int
    """Inclusive port range the lab binds; ``port_low == port_high`` for a single port."""
    moved_by: int = 0
    """How far the lab moved this listener from the port the matrix names (0: not moved;
    see :meth:`Topology.moved`)."""

    @property
    def transports(self) -> tuple[str, ...]:
        return PROTOCOLS[self.proto]

    @property
    def real_low(self) -> int:
        """The first port as the matrix and a real Edge name it (443 when bound on 8443)."""
        return self.port_low - self.moved_by

    @property
    def real_high(self) -> int:
        return self.port_high - self.moved_by

    @property
    def real_port(self) -> int:
        return self.real_low

    @property
    def port(self) -> int:
        return self.port_low

    @property
    def ports(self) -> str:
        if self.port_low == self.port_high:
            return str(self.port_low)
        return f"{self.port_low}-{self.port_high}"


@dataclass(frozen=True)
class Host:
    id: str
    roles: tuple[str, ...]
    interfaces: tuple[Interface, ...]
    listeners: tuple[Listener, ...] = ()
    services: tuple[str, ...] = ()
    """Services this host runs (keys of the service registry)."""
    domain: str | None = None
    """The SIP/XMPP domain this host belongs to or serves."""
    description: str = ""

    def interface(self, interface_id: str) -> Interface:
        for iface in self.interfaces:
            if iface.id == interface_id:
                return iface
        raise KeyError(f"{self.id}:{interface_id}")

    def listeners_of(self, service: str) -> tuple[Listener, ...]:
        return tuple(lst for lst in self.listeners if lst.service == service)

    def listener_for(self, interface: str, proto: str) -> Listener | None:
        """The first listener of ``interface`` speaking ``proto`` (a key of :data:`PROTOCOLS`)."""
        return next(
            (lst for lst in self.listeners if lst.interface == interface and lst.proto == proto),
            None,
        )

    def listener_on(self, interface: str, transport: str, low: int, high: int) -> Listener | None:
        """The listener of ``interface`` that covers any of ``transport`` ports low-high (the
        real ports, as the matrix names them, also when the lab moved the listener)."""
        for lst in self.listeners:
            if (
                lst.interface == interface
                and transport in lst.transports
                and lst.real_low <= high
                and low <= lst.real_high
            ):
                return lst
        return None

    @property
    def zones(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(i.zone for i in self.interfaces))


@dataclass(frozen=True)
class Firewall:
    id: str
    interfaces: tuple[Interface, ...]
    rules: str
    """Path of the nftables rule file, relative to the repository root (none when external)."""
    description: str = ""
    external: bool = False
    """The user's own device: edgesim renders, loads and traces nothing for it; its zones are
    attached to the ``parent`` links its interfaces name (``edgesim lab plan`` prints what the
    device needs)."""

    @property
    def zones(self) -> tuple[str, ...]:
        return tuple(i.zone for i in self.interfaces)

    def interface_in(self, zone_id: str) -> Interface | None:
        """The firewall's interface in ``zone_id`` (None when it does not join that zone)."""
        return next((i for i in self.interfaces if i.zone == zone_id), None)


@dataclass(frozen=True)
class SrvRecord:
    name: str
    target: str
    port: int
    priority: int = 0
    weight: int = 0


@dataclass(frozen=True)
class Topology:
    path: Path
    name: str
    zones: tuple[Zone, ...]
    hosts: tuple[Host, ...]
    firewalls: tuple[Firewall, ...]
    cas: tuple[CertificateAuthority, ...]
    srv: tuple[SrvRecord, ...] = field(default=())
    description: str = ""
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    """``[services.<name>]`` tables: settings handed to each service (policy, users ...)."""
    port_offset: int = 0
    """Added to every port below :data:`PRIVILEGED_BELOW` that the lab binds or names in DNS
    (0: the real ports); see :meth:`moved`."""

    # ---------------------------------------------------------------- ports
    def lab_port(self, port: int) -> int:
        """The port the lab uses for ``port`` as the matrix names it (8443 for 443 when the
        privileged ports are moved; unprivileged ports never move)."""
        return port + self.port_offset if port < PRIVILEGED_BELOW else port

    def privileged_ports(self) -> list[int]:
        """The listeners' real ports below :data:`PRIVILEGED_BELOW`, sorted."""
        return sorted({lst.real_low for lst in self.listeners() if lst.real_low < PRIVILEGED_BELOW})

    def moved(self, offset: int = PORT_OFFSET) -> Topology:
        """This topology with every privileged listener port and SRV record moved by ``offset``
        (what the embedded lab runs when this user cannot bind ports below 1024).

        Only the lab's ports move: matrix rows keep naming the real ones, and
        :meth:`Host.listener_on` and :meth:`lab_port` translate. A moved port that collides
        with another listener of the same address is a :class:`ConfigError`.
        """
        if offset == self.port_offset:
            return self
        if self.port_offset:
            raise ValueError("moved() applies to a topology as loaded (not yet moved)")
        moved = replace(self, port_offset=offset, hosts=self._hosts_moved(offset))
        moved = replace(
            moved,
            srv=tuple(replace(s, port=moved.lab_port(s.port)) for s in self.srv),
        )
        spans: dict[tuple[str, str], list[Listener]] = {}
        for host in moved.hosts:
            for lst in host.listeners:
                address = str(host.interface(lst.interface).address)
                for transport in lst.transports:
                    taken = spans.setdefault((address, transport), [])
                    for other in taken:
                        if other.port_low <= lst.port_high and lst.port_low <= other.port_high:
                            mover, fixed = (lst, other) if lst.moved_by else (other, lst)
                            raise ConfigError(
                                self.path,
                                f"hosts[{host.id}].listeners",
                                f"{mover.service} ({mover.proto}) moved to port "
                                f"{mover.port_low} collides with {fixed.service} ({fixed.proto}) "
                                f"on {address}",
                            )
                    taken.append(lst)
        return moved

    def relocated(self, octet: int) -> Topology:
        """This topology on loopback addresses of its own: each interface's local-runner address
        becomes ``127.<octet>.<n>.<d>`` for an address ``a.b.c.d`` in the n-th /24 network the
        topology uses (1, 2, ... in the order the interfaces name them).

        A test or benchmark that runs the embedded lab picks its own ``octet`` (1-254), so it
        never collides with another lab on the machine. The lab's own addresses (what the netns
        and compose runners, the matrix and DNS in those runners use) stay as they are.
        """
        if not 1 <= octet <= 254:
            raise ValueError(f"octet {octet} is outside 1-254")
        networks: list[ipaddress.IPv4Network] = []
        for iface in self._all_interfaces():
            net = ipaddress.IPv4Network(f"{iface.address}/24", strict=False)
            if net not in networks:
                networks.append(net)
        if len(networks) > 255:
            raise ValueError("relocated() fits at most 255 /24 networks")

        def move(iface: Interface) -> Interface:
            n = networks.index(ipaddress.IPv4Network(f"{iface.address}/24", strict=False)) + 1
            loopback = ipaddress.IPv4Address(f"127.{octet}.{n}.{iface.address.packed[3]}")
            return replace(iface, loopback_address=loopback)

        return replace(
            self,
            hosts=tuple(
                replace(h, interfaces=tuple(move(i) for i in h.interfaces)) for h in self.hosts
            ),
            firewalls=tuple(
                replace(f, interfaces=tuple(move(i) for i in f.interfaces)) for f in self.firewalls
            ),
        )

    def with_ports(self, ports: dict[int, int]) -> Topology:
        """This topology with listener ports and SRV records moved as ``ports`` maps them
        (``{5269: 25269}``), as if the file named the new ports: for a test lab that needs
        neither the real ports nor ports another lab holds. A listener range moves when its first
        port is mapped, keeping its width."""

        def move(lst: Listener) -> Listener:
            if lst.port_low not in ports:
                return lst
            low = ports[lst.port_low]
            return replace(lst, port_low=low, port_high=low + lst.port_high - lst.port_low)

        return replace(
            self,
            hosts=tuple(
                replace(h, listeners=tuple(move(lst) for lst in h.listeners)) for h in self.hosts
            ),
            srv=tuple(replace(r, port=ports.get(r.port, r.port)) for r in self.srv),
        )

    def write(self, path: Path) -> Topology:
        """Write this topology as a topology file at ``path`` (for ``--topology`` in another
        process) and return it as loaded from there."""
        if self.port_offset:
            raise ValueError("write() takes a topology as loaded (not moved)")
        path.write_text(render_topology(self), "utf-8")
        return load_topology(path)

    def _all_interfaces(self) -> Iterator[Interface]:
        yield from self.interfaces()
        for fw in self.firewalls:
            yield from fw.interfaces

    def _hosts_moved(self, offset: int) -> tuple[Host, ...]:
        def move(lst: Listener) -> Listener:
            by = offset if lst.port_high < PRIVILEGED_BELOW else 0
            return replace(
                lst, port_low=lst.port_low + by, port_high=lst.port_high + by, moved_by=by
            )

        return tuple(
            replace(h, listeners=tuple(move(lst) for lst in h.listeners)) for h in self.hosts
        )

    # ---------------------------------------------------------------- look-ups
    def zone(self, zone_id: str) -> Zone:
        for zone in self.zones:
            if zone.id == zone_id:
                return zone
        raise KeyError(zone_id)

    def host(self, host_id: str) -> Host:
        for host in self.hosts:
            if host.id == host_id:
                return host
        raise KeyError(host_id)

    def hosts_with_role(self, role: str) -> list[Host]:
        return [h for h in self.hosts if role in h.roles]

    def hosts_in_zone(self, zone_id: str) -> list[Host]:
        return [h for h in self.hosts if zone_id in h.zones]

    def interfaces(self) -> Iterator[Interface]:
        """Every host interface (not the firewalls')."""
        for host in self.hosts:
            yield from host.interfaces

    def listeners(self) -> Iterator[Listener]:
        for host in self.hosts:
            yield from host.listeners

    def interface(self, ref: str) -> Interface:
        """Look up ``host:interface``."""
        host_id, _, iface_id = ref.partition(":")
        return self.host(host_id).interface(iface_id)

    def interface_by_fqdn(self, fqdn: str) -> Interface | None:
        fqdn = fqdn.lower().rstrip(".")
        for iface in self.interfaces():
            if fqdn in iface.fqdns:
                return iface
        return None

    def firewall_between(self, zone_a: str, zone_b: str) -> Firewall | None:
        for fw in self.firewalls:
            if {zone_a, zone_b} <= set(fw.zones):
                return fw
        return None

    def firewall(self, firewall_id: str) -> Firewall:
        for fw in self.firewalls:
            if fw.id == firewall_id:
                return fw
        raise KeyError(firewall_id)

    @property
    def external_firewalls(self) -> tuple[Firewall, ...]:
        """The user's own devices (``external = true``)."""
        return tuple(fw for fw in self.firewalls if fw.external)

    @property
    def lab_firewalls(self) -> tuple[Firewall, ...]:
        """The firewalls a runner renders (every one not marked external)."""
        return tuple(fw for fw in self.firewalls if not fw.external)

    def zone_parent(self, zone_id: str) -> str | None:
        """The link of this machine zone ``zone_id`` is attached to (an external firewall's
        interface in the zone names it), or None: the zone is the runner's own network."""
        for fw in self.external_firewalls:
            iface = fw.interface_in(zone_id)
            if iface is not None:
                return iface.parent
        return None

    def nameserver_for(self, iface: Interface) -> Interface | None:
        """The interface of the DNS host that ``iface``'s zone uses, if any."""
        dns = self.zone(iface.zone).dns
        if dns is None:
            return None
        return self.host(dns).interfaces[0]

    def domains(self) -> list[str]:
        return sorted({h.domain for h in self.hosts if h.domain})


# -------------------------------------------------------------------- writing


def render_topology(topology: Topology) -> str:
    """The topology file of ``topology``: :func:`load_topology` reads it back equal."""
    out: list[str] = []

    def line(key: str, value: object) -> None:
        out.append(f"{_toml_key(key)} = {_toml(value)}")

    def interface(iface: Interface) -> dict[str, object]:
        table: dict[str, object] = {
            "id": iface.id,
            "zone": iface.zone,
            "address": str(iface.address),
        }
        if iface.fqdns:
            table["fqdns"] = list(iface.fqdns)
        if iface.ca is not None:
            table["ca"] = iface.ca
        if iface.loopback_address is not None:
            table["loopback"] = str(iface.loopback_address)
        if iface.cert_names:
            table["cert_names"] = list(iface.cert_names)
        return table

    out.append("[lab]")
    line("name", topology.name)
    line("description", topology.description)
    for zone in topology.zones:
        out += ["", "[[zones]]"]
        line("id", zone.id)
        line("subnet", str(zone.subnet))
        line("description", zone.description)
        line("public", zone.public)
        if zone.dns is not None:
            line("dns", zone.dns)
    for ca in topology.cas:
        out += ["", "[[cas]]"]
        line("id", ca.id)
        line("name", ca.name)
        line("description", ca.description)
    for fw in topology.firewalls:
        out += ["", "[[firewalls]]"]
        line("id", fw.id)
        line("description", fw.description)
        line("rules", fw.rules)
        line("interfaces", [interface(i) for i in fw.interfaces])
    for host in topology.hosts:
        out += ["", "[[hosts]]"]
        line("id", host.id)
        line("roles", list(host.roles))
        if host.domain is not None:
            line("domain", host.domain)
        line("description", host.description)
        line("services", list(host.services))
        line("interfaces", [interface(i) for i in host.interfaces])
        listeners: list[dict[str, object]] = []
        for lst in host.listeners:
            table: dict[str, object] = {
                "interface": lst.interface,
                "service": lst.service,
                "proto": lst.proto,
            }
            if lst.port_low == lst.port_high:
                table["port"] = lst.port_low
            else:
                table["ports"] = lst.ports
            listeners.append(table)
        line("listeners", listeners)
    for rec in topology.srv:
        out += ["", "[[srv]]"]
        for key in ("name", "target", "port", "priority", "weight"):
            line(key, getattr(rec, key))
    for name, settings in topology.settings.items():
        out += ["", f"[services.{_toml_key(name)}]"]
        for key, value in settings.items():
            line(key, value)
    return "\n".join(out) + "\n"


def _toml_key(key: str) -> str:
    return key if key and all(c.isalnum() or c in "-_" for c in key) else json.dumps(key)


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} to a topology file")


# -------------------------------------------------------------------- loading


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """The TOML file at ``path`` (a ``what`` file: topology, matrix, target), or a ConfigError
    naming it."""
    try:
        return tomllib.loads(path.read_text("utf-8"))
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read {what} file: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(path, "", f"not valid TOML: {exc}") from None


def load_topology(path: Path | str | None = None) -> Topology:
    """Load and validate a topology file (the shipped default when ``path`` is None)."""
    path = Path(path) if path is not None else default_topology_path()
    return _Loader(path).load(read_toml(path, "topology"))


class _Loader:
    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, entry: str, message: str) -> ConfigError:
        return ConfigError(self.path, entry, message)

    # -- typed field access --------------------------------------------------
    def _get(
        self, table: dict[str, Any], key: str, kind: type, entry: str, default: Any = ...
    ) -> Any:
        if key not in table:
            if default is ...:
                raise self.fail(entry, f"missing required key '{key}'")
            return default
        value = table[key]
        if kind is int and isinstance(value, bool):
            raise self.fail(entry, f"'{key}' must be an integer, not {value!r}")
        if not isinstance(value, kind):
            raise self.fail(
                entry, f"'{key}' must be {_kind_name(kind)}, not {type(value).__name__}"
            )
        return value

    def _str_list(self, table: dict[str, Any], key: str, entry: str) -> tuple[str, ...]:
        value = self._get(table, key, list, entry, [])
        for item in value:
            if not isinstance(item, str):
                raise self.fail(entry, f"'{key}' must be a list of strings")
        return tuple(value)

    def _tables(self, data: dict[str, Any], key: str, entry: str) -> list[dict[str, Any]]:
        value = data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self.fail(entry or key, f"'{key}' must be an array of tables ([[{key}]])")
        return value

    def _address(self, text: str, entry: str) -> ipaddress.IPv4Address:
        try:
            return ipaddress.IPv4Address(text)
        except ValueError:
            raise self.fail(entry, f"'{text}' is not an IPv4 address") from None

    def _check_keys(self, table: dict[str, Any], allowed: Iterable[str], entry: str) -> None:
        unknown = sorted(set(table) - set(allowed))
        if unknown:
            raise self.fail(entry, f"unknown key '{unknown[0]}'")

    # -- the file --------------------------------------------------------------
    def load(self, data: dict[str, Any]) -> Topology:
        self._check_keys(data, {"lab", "zones", "cas", "firewalls", "hosts", "srv", "services"}, "")
        settings = data.get("services", {})
        if not isinstance(settings, dict) or not all(
            isinstance(v, dict) for v in settings.values()
        ):
            raise self.fail(
                "services", "'services' must hold one table per service ([services.NAME])"
            )
        for name in settings:
            if name not in SERVICES and name not in OTHER_TABLES:
                known = ", ".join(sorted([*SERVICES, *OTHER_TABLES]))
                raise self.fail(f"services.{name}", f"no such service (known: {known})")
        lab = data.get("lab", {})
        if not isinstance(lab, dict):
            raise self.fail("lab", "'lab' must be a table")
        name = self._get(lab, "name", str, "lab", "lab")
        description = self._get(lab, "description", str, "lab", "")

        zones = self._zones(data)
        zone_ids = {z.id: z for z in zones}
        cas = self._cas(data)
        ca_ids = {c.id for c in cas}
        if not zones:
            raise self.fail("zones", "the topology defines no zones")

        hosts = [
            self._host(t, i, zone_ids, ca_ids)
            for i, t in enumerate(self._tables(data, "hosts", ""))
        ]
        firewalls = [
            self._firewall(t, i, zone_ids)
            for i, t in enumerate(self._tables(data, "firewalls", ""))
        ]
        srv = [self._srv(t, i) for i, t in enumerate(self._tables(data, "srv", ""))]
        topo = Topology(
            path=self.path,
            name=name,
            description=description,
            zones=tuple(zones),
            hosts=tuple(hosts),
            firewalls=tuple(firewalls),
            cas=tuple(cas),
            srv=tuple(srv),
            settings=settings,
        )
        self._cross_checks(topo)
        return topo

    def _zones(self, data: dict[str, Any]) -> list[Zone]:
        zones: list[Zone] = []
        for i, table in enumerate(self._tables(data, "zones", "")):
            entry = f"zones[{table.get('id', i)}]"
            self._check_keys(table, {"id", "subnet", "description", "public", "dns"}, entry)
            zid = self._get(table, "id", str, entry)
            subnet_text = self._get(table, "subnet", str, entry)
            try:
                subnet = ipaddress.IPv4Network(subnet_text)
            except ValueError:
                raise self.fail(entry, f"'{subnet_text}' is not an IPv4 network") from None
            if any(z.id == zid for z in zones):
                raise self.fail(entry, f"zone '{zid}' is defined twice")
            for other in zones:
                if other.subnet.overlaps(subnet):
                    raise self.fail(
                        entry, f"subnet {subnet} overlaps zone '{other.id}' ({other.subnet})"
                    )
            zones.append(
                Zone(
                    zid,
                    subnet,
                    self._get(table, "description", str, entry, ""),
                    self._get(table, "public", bool, entry, False),
                    self._get(table, "dns", str, entry, None),
                )
            )
        return zones

    def _cas(self, data: dict[str, Any]) -> list[CertificateAuthority]:
        cas: list[CertificateAuthority] = []
        for i, table in enumerate(self._tables(data, "cas", "")):
            entry = f"cas[{table.get('id', i)}]"
            self._check_keys(table, {"id", "name", "description"}, entry)
            cid = self._get(table, "id", str, entry)
            if any(c.id == cid for c in cas):
                raise self.fail(entry, f"CA '{cid}' is defined twice")
            cas.append(
                CertificateAuthority(
                    cid,
                    self._get(table, "name", str, entry),
                    self._get(table, "description", str, entry, ""),
                )
            )
        return cas

    def _interface(
        self,
        owner: str,
        table: Any,
        index: int,
        entry_prefix: str,
        zone_ids: dict[str, Zone],
        ca_ids: set[str],
        external: bool = False,
    ) -> Interface:
        if not isinstance(table, dict):
            raise self.fail(f"{entry_prefix}.interfaces[{index}]", "an interface must be a table")
        entry = f"{entry_prefix}.interfaces[{table.get('id', index)}]"
        keys = {"id", "zone", "address", "fqdns", "ca", "loopback", "cert_names", "parent"}
        self._check_keys(table, keys, entry)
        parent = self._get(table, "parent", str, entry, None)
        if parent is not None and not external:
            raise self.fail(
                entry,
                "'parent' is only for an external firewall's interfaces (external = true)",
            )
        if external and parent is None:
            raise self.fail(
                entry,
                "an external firewall's interface needs 'parent': the link of this machine its "
                "zone is attached to (e.g. eth1.101)",
            )
        if parent is not None and (not _LINK_NAME.fullmatch(parent) or parent == "lo"):
            raise self.fail(
                entry, f"parent '{parent}' is not a network interface name (1-15 characters)"
            )
        iid = self._get(table, "id", str, entry)
        zone = self._get(table, "zone", str, entry)
        if zone not in zone_ids:
            raise self.fail(entry, f"zone '{zone}' is not defined (zones: {', '.join(zone_ids)})")
        address = self._address(self._get(table, "address", str, entry), entry)
        if address not in zone_ids[zone].subnet:
            raise self.fail(
                entry, f"address {address} is outside zone '{zone}' ({zone_ids[zone].subnet})"
            )
        ca = self._get(table, "ca", str, entry, None)
        if ca is not None and ca not in ca_ids:
            raise self.fail(entry, f"CA '{ca}' is not defined")
        fqdns = tuple(f.lower().rstrip(".") for f in self._str_list(table, "fqdns", entry))
        cert_names = tuple(
            f.lower().rstrip(".") for f in self._str_list(table, "cert_names", entry)
        )
        loopback_text = self._get(table, "loopback", str, entry, None)
        loopback = self._address(loopback_text, entry) if loopback_text else None
        if loopback is not None and not loopback.is_loopback:
            raise self.fail(entry, f"loopback {loopback} is not in 127.0.0.0/8")
        return Interface(owner, iid, zone, address, fqdns, ca, loopback, cert_names, parent)

    def _host(
        self, table: dict[str, Any], index: int, zone_ids: dict[str, Zone], ca_ids: set[str]
    ) -> Host:
        entry = f"hosts[{table.get('id', index)}]"
        self._check_keys(
            table,
            {"id", "roles", "domain", "description", "services", "interfaces", "listeners"},
            entry,
        )
        hid = self._get(table, "id", str, entry)
        raw_ifaces = self._get(table, "interfaces", list, entry, [])
        if not raw_ifaces:
            raise self.fail(entry, "host has no interfaces, so it is in no zone")
        interfaces = [
            self._interface(hid, t, i, entry, zone_ids, ca_ids) for i, t in enumerate(raw_ifaces)
        ]
        seen: set[str] = set()
        for iface in interfaces:
            if iface.id in seen:
                raise self.fail(f"{entry}.interfaces[{iface.id}]", "interface id used twice")
            seen.add(iface.id)
        services = self._str_list(table, "services", entry)
        for name in services:
            if name not in SERVICES:
                known = ", ".join(sorted(SERVICES))
                raise self.fail(f"{entry}.services", f"no such service '{name}' (known: {known})")
        listeners = [
            self._listener(hid, t, i, entry, seen, services)
            for i, t in enumerate(self._get(table, "listeners", list, entry, []))
        ]
        return Host(
            id=hid,
            roles=self._str_list(table, "roles", entry),
            interfaces=tuple(interfaces),
            listeners=tuple(listeners),
            services=services,
            domain=self._get(table, "domain", str, entry, None),
            description=self._get(table, "description", str, entry, ""),
        )

    def _listener(
        self,
        host: str,
        table: Any,
        index: int,
        host_entry: str,
        interfaces: set[str],
        services: tuple[str, ...],
    ) -> Listener:
        entry = f"{host_entry}.listeners[{index}]"
        if not isinstance(table, dict):
            raise self.fail(entry, "a listener must be a table")
        self._check_keys(table, {"interface", "service", "proto", "port", "ports"}, entry)
        iface = self._get(table, "interface", str, entry)
        if iface not in interfaces:
            raise self.fail(entry, f"interface '{iface}' is not an interface of host '{host}'")
        service = self._get(table, "service", str, entry)
        if service not in services:
            raise self.fail(entry, f"service '{service}' is not in the host's services")
        proto = self._get(table, "proto", str, entry)
        if proto not in PROTOCOLS:
            raise self.fail(entry, f"unknown proto '{proto}' (known: {', '.join(PROTOCOLS)})")
        if ("port" in table) == ("ports" in table):
            raise self.fail(entry, "give exactly one of 'port' or 'ports'")
        if "port" in table:
            low = high = self._get(table, "port", int, entry)
        else:
            low, high = parse_port_range(self._get(table, "ports", str, entry), self.fail, entry)
        for port in (low, high):
            if not 1 <= port <= 65535:
                raise self.fail(entry, f"port {port} is outside 1-65535")
        return Listener(host, iface, service, proto, low, high)

    def _firewall(self, table: dict[str, Any], index: int, zone_ids: dict[str, Zone]) -> Firewall:
        entry = f"firewalls[{table.get('id', index)}]"
        self._check_keys(table, {"id", "description", "rules", "interfaces", "external"}, entry)
        fid = self._get(table, "id", str, entry)
        external = self._get(table, "external", bool, entry, False)
        if external and "rules" in table:
            raise self.fail(
                entry, "an external firewall's rules live on the device: edgesim loads none"
            )
        raw = self._get(table, "interfaces", list, entry)
        interfaces = [
            self._interface(fid, t, i, entry, zone_ids, set(), external) for i, t in enumerate(raw)
        ]
        if len({i.zone for i in interfaces}) < 2:
            raise self.fail(entry, "a firewall needs interfaces in at least two zones")
        return Firewall(
            fid,
            tuple(interfaces),
            "" if external else self._get(table, "rules", str, entry, f"lab/firewall/{fid}.nft"),
            self._get(table, "description", str, entry, ""),
            external,
        )

    def _srv(self, table: dict[str, Any], index: int) -> SrvRecord:
        entry = f"srv[{table.get('name', index)}]"
        self._check_keys(table, {"name", "target", "port", "priority", "weight"}, entry)
        return SrvRecord(
            self._get(table, "name", str, entry).lower().rstrip("."),
            self._get(table, "target", str, entry).lower().rstrip("."),
            self._get(table, "port", int, entry),
            self._get(table, "priority", int, entry, 0),
            self._get(table, "weight", int, entry, 0),
        )

    # -- whole-model checks ------------------------------------------------------
    def _cross_checks(self, topo: Topology) -> None:
        ids: dict[str, str] = {}
        for kind, items in (("host", topo.hosts), ("firewall", topo.firewalls)):
            for item in items:
                if item.id in ids:
                    raise self.fail(
                        f"{kind}s[{item.id}]", f"id '{item.id}' is already used by a {ids[item.id]}"
                    )
                ids[item.id] = kind

        addresses: dict[ipaddress.IPv4Address, str] = {}
        loopbacks: dict[ipaddress.IPv4Address, str] = {}
        fqdns: dict[str, str] = {}
        all_ifaces: list[tuple[str, Interface]] = [
            (f"hosts[{i.host}].interfaces[{i.id}]", i) for i in topo.interfaces()
        ] + [
            (f"firewalls[{fw.id}].interfaces[{i.id}]", i)
            for fw in topo.firewalls
            for i in fw.interfaces
        ]
        for entry, iface in all_ifaces:
            if iface.address in addresses:
                raise self.fail(
                    entry, f"address {iface.address} is already used by {addresses[iface.address]}"
                )
            addresses[iface.address] = iface.ref
            if iface.loopback() in loopbacks:
                raise self.fail(
                    entry,
                    f"loopback address {iface.loopback()} is already used by {loopbacks[iface.loopback()]}"
                    " (set 'loopback' on one of them)",
                )
            loopbacks[iface.loopback()] = iface.ref
            for fqdn in iface.fqdns:
                if fqdn in fqdns:
                    raise self.fail(entry, f"FQDN '{fqdn}' is already used by {fqdns[fqdn]}")
                fqdns[fqdn] = iface.ref

        bound: dict[tuple[str, str, int], str] = {}
        for host in topo.hosts:
            for index, lst in enumerate(host.listeners):
                entry = f"hosts[{host.id}].listeners[{index}]"
                address = str(host.interface(lst.interface).address)
                for transport in lst.transports:
                    for port in _overlap_keys(lst):
                        key = (address, transport, port)
                        if key in bound:
                            raise self.fail(
                                entry,
                                f"{transport.upper()} {address}:{port} is already taken by {bound[key]}",
                            )
                    for port in _overlap_keys(lst):
                        bound[(address, transport, port)] = f"{lst.service} ({lst.proto})"
        for srv in topo.srv:
            if srv.target not in fqdns:
                raise self.fail(f"srv[{srv.name}]", f"target '{srv.target}' is no interface's FQDN")
        for zone in topo.zones:
            if zone.dns is not None and zone.dns not in {h.id for h in topo.hosts}:
                raise self.fail(f"zones[{zone.id}]", f"dns host '{zone.dns}' is not defined")
        self._check_parents(topo)

    def _check_parents(self, topo: Topology) -> None:
        """One link per zone, one zone per link: a zone on an external device's link is one
        network, and two zones on one link would be one broadcast domain."""
        zone_of_parent: dict[str, str] = {}
        parent_of_zone: dict[str, tuple[str, str]] = {}
        for fw in topo.external_firewalls:
            for iface in fw.interfaces:
                entry = f"firewalls[{fw.id}].interfaces[{iface.id}]"
                assert iface.parent is not None  # checked when the interface was read
                seen = parent_of_zone.get(iface.zone)
                if seen is not None and seen[0] != iface.parent:
                    raise self.fail(
                        entry,
                        f"zone '{iface.zone}' is on parent '{seen[0]}' already ({seen[1]}); "
                        f"one zone, one link",
                    )
                other = zone_of_parent.get(iface.parent)
                if other is not None and other != iface.zone:
                    raise self.fail(
                        entry,
                        f"parent '{iface.parent}' carries zone '{other}' already; give each "
                        "zone its own link (a VLAN sub-interface each)",
                    )
                parent_of_zone[iface.zone] = (iface.parent, iface.ref)
                zone_of_parent[iface.parent] = iface.zone


def _overlap_keys(listener: Listener) -> range:
    return range(listener.port_low, listener.port_high + 1)


def parse_port_range(text: str, fail: Any, entry: str) -> tuple[int, int]:
    """Parse ``"5061"`` or ``"50000-59999"`` (also ``"50,000-59,999"`` as the seeds write it)."""
    cleaned = text.replace(",", "").replace(" ", "")
    low_text, sep, high_text = cleaned.partition("-")
    try:
        low = int(low_text)
        high = int(high_text) if sep else low
    except ValueError:
        raise fail(entry, f"'{text}' is not a port or port range") from None
    if low > high:
        raise fail(entry, f"port range '{text}' is empty")
    return low, high


def _kind_name(kind: type) -> str:
    return {str: "a string", int: "an integer", list: "a list", dict: "a table"}.get(
        kind, kind.__name__
    )
