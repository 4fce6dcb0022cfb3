"""The lab DNS as a lab service (hosts with ``services = ["dns"]``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from simulator.dns.aio import DnsLimits, DnsServer
from simulator.dns.resolver import LabResolver, ResolutionError
from simulator.dns.zone import DnsZone, Records
from simulator.lab.services import BoundListener, ServiceContext, address_of
from simulator.lab.topology import Interface, Topology


@dataclass(frozen=True)
class DnsSettings:
    """``[services.dns]``."""

    listener_limits: DnsLimits = field(default_factory=DnsLimits)
    """What each DNS listener accepts over TCP (``[services.dns.listener_limits]``, any field of
    :class:`~simulator.dns.aio.DnsLimits`; docs/limits.md)."""


class DnsService:
    """Public view on hosts with role ``dns-external``, the full lab on the others."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.settings = ctx.typed_settings(DnsSettings)
        records = build_records(
            ctx.topology,
            public_only="dns-external" in ctx.host.roles,
            address=lambda iface: address_of(iface, ctx.runner),
        )
        self.zone = DnsZone(records)
        self.servers: list[DnsServer] = []

    async def start(self) -> list[BoundListener]:
        bound: list[BoundListener] = []
        for lst in self.ctx.listeners:
            server = DnsServer(
                self.zone, self.ctx.address(lst.interface), lst.port, self.settings.listener_limits
            )
            await server.start()
            self.servers.append(server)
            bound += [BoundListener(lst, t, server.address, server.port) for t in ("udp", "tcp")]
        return bound

    async def check(self, bound: BoundListener) -> str | None:
        """Ask for the SRV record of the first lab domain with an SRV record."""
        name = next(iter(self.zone.records.srv), None) or next(iter(self.zone.records.a), None)
        if name is None:
            return None
        try:
            resolver = LabResolver((bound.address, bound.port), timeout=2.0)
            if name in self.zone.records.srv:
                await resolver.srv(name)
            else:
                await resolver.a(name)
        except ResolutionError as exc:
            return str(exc)
        return None

    async def stop(self) -> None:
        for server in self.servers:
            await server.stop()


def build_records(
    topology: Topology, *, public_only: bool, address: Callable[[Interface], str]
) -> Records:
    """Records of the topology; ``public_only`` keeps names in public zones only."""
    a: dict[str, list[str]] = {}
    for iface in topology.interfaces():
        if public_only and not topology.zone(iface.zone).public:
            continue
        for fqdn in iface.fqdns:
            a.setdefault(fqdn, []).append(address(iface))
    srv: dict[str, list[tuple[int, int, int, str]]] = {}
    for rec in topology.srv:
        if rec.target in a:
            srv.setdefault(rec.name, []).append((rec.priority, rec.weight, rec.port, rec.target))
    suffixes = {".".join(n.split(".")[-2:]) for n in a} | {".".join(n.split(".")[-2:]) for n in srv}
    suffixes |= set(topology.domains())
    return Records(
        {k: tuple(v) for k, v in a.items()},
        {k: tuple(v) for k, v in srv.items()},
        tuple(sorted(suffixes)),
    )
