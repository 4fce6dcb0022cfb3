"""The service registry: what a lab runner starts on each host.

A host in the topology lists the services it runs (``services = ["access-edge", ...]``) and the
listeners each one owns. A runner looks every service up here, builds a :class:`ServiceContext`
for it and awaits :meth:`Service.start`. A service whose module is not there yet is reported as
*not available* and the rest of the lab starts anyway.

Writing a service: a class taking a :class:`ServiceContext`, with ``async start()`` returning the
:class:`BoundListener` list it opened and ``async stop()``; optionally ``async check(bound)``
returning None when the listener answers at protocol level, or a one-line reason when it does
not (the runner falls back to a TCP connect for TCP listeners).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Protocol, TypeVar, runtime_checkable

from simulator.dns.resolver import LabResolver
from simulator.lab.registry import SERVICES
from simulator.lab.runners.base import ListenerInfo
from simulator.lab.topology import Host, Interface, Listener, Topology
from simulator.pki import LabPki
from simulator.settings import load_settings

T = TypeVar("T")


@dataclass(frozen=True)
class BoundListener:
    """A socket a service actually listens on."""

    listener: Listener
    transport: str
    """``tcp`` or ``udp``."""
    address: str
    port: int
    """The first port for a range listener (a relay allocates its ports on demand)."""

    def __str__(self) -> str:
        return f"{self.address}:{self.listener.ports if self.listener.port_low != self.listener.port_high else self.port}/{self.transport}"

    def info(self) -> ListenerInfo:
        """The listener as ready files and checks carry it between processes."""
        return ListenerInfo(
            str(self),
            self.listener.interface,
            self.listener.proto,
            self.listener.port_low,
            self.transport,
            self.address,
            self.port,
        )


@dataclass
class ServiceContext:
    """Everything a service needs from the lab it runs in."""

    topology: Topology
    host: Host
    service: str
    pki: LabPki
    runner: str
    """The runner's name (``local``, ``netns``, ``compose``): its addressing decides the
    addresses (:func:`address_of`)."""
    settings: dict[str, object] = field(default_factory=dict)
    """Service settings (federation policy, credentials ...), from the lab configuration."""
    neighbours: dict[str, Service] = field(default_factory=dict)
    """The services already started on the same host, by name (one dict per host): how the
    Front End's XMPP gateway finds the Front End it bridges to, in every runner."""

    def typed_settings(self, cls: type[T]) -> T:
        """:attr:`settings` as the service's settings dataclass ``cls``
        (:func:`simulator.settings.load_settings`): a ConfigError names the topology file and
        the ``services.<name>`` entry."""
        return load_settings(cls, self.settings, self.topology.path, f"services.{self.service}")

    def address(self, iface: Interface | str) -> str:
        """The address this runner uses for an interface (``iface`` may be ``host:id`` or an id)."""
        if isinstance(iface, str):
            iface = self.topology.interface(iface) if ":" in iface else self.host.interface(iface)
        return address_of(iface, self.runner)

    @property
    def listeners(self) -> tuple[Listener, ...]:
        return self.host.listeners_of(self.service)

    def resolver(self, iface: Interface | str | None = None) -> LabResolver:
        """A DNS resolver that asks the lab DNS of ``iface``'s zone (the host's first by default)."""
        if iface is None:
            iface = self.host.interfaces[0]
        elif isinstance(iface, str):
            iface = self.host.interface(iface)
        return resolver_for(self.topology, iface, self.runner)


def address_of(iface: Interface, runner: str) -> str:
    """The address of ``iface`` in the lab of runner ``runner`` (loopback or the lab's own)."""
    from simulator.lab.runners import addressing_of

    return str(iface.loopback() if addressing_of(runner) == "loopback" else iface.address)


def resolver_for(topology: Topology, iface: Interface, runner: str) -> LabResolver:
    ns = topology.nameserver_for(iface)
    if ns is None:
        return LabResolver(None)
    dns_port = next(
        (lst.port for lst in topology.host(ns.host).listeners if lst.proto == "dns"), 53
    )
    return LabResolver((address_of(ns, runner), dns_port), source=address_of(iface, runner))


@runtime_checkable
class Service(Protocol):
    async def start(self) -> list[BoundListener]: ...

    async def stop(self) -> None: ...


class ServiceFactory(Protocol):
    def __call__(self, ctx: ServiceContext) -> Service: ...


def load_service(name: str) -> ServiceFactory | None:
    """The factory of a registered service, or None if its module is not there yet."""
    target = SERVICES.get(name)
    if target is None:
        return None
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            return None
        raise
    factory = getattr(module, attr, None)
    return factory
