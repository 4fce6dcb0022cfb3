"""The A/V Edge as a lab service (``av-edge``): STUN/TURN listeners and the relay range.

Listeners come from the topology (``simulator/lab/default.toml``, host ``edge``):

- ``stun-udp`` (UDP 3478 on the A/V and internal interfaces): STUN and TURN over UDP;
- ``turn-tcp`` (TCP 3478 on the A/V interface, TCP 443 on the internal one): TURN over TCP;
- ``turn-tls`` (TCP 443 on the A/V interface): TURN over TLS with the interface's certificate,
  and plain TURN over TCP on the same port (a TLS ClientHello's first byte tells them apart);
- ``relay`` (50000-59999 on the A/V interface): where relayed transport addresses are bound;
- ``sip-mtls`` (TCP 5062 on the internal interface): the A/V Authentication service (MRAS), where
  the Front End gets relay credentials for its users (:mod:`simulator.media.avauth`); it trusts
  client certificates of the internal interface's CA and answers Front End servers only.

All listeners share one TURN core, so an internal client and an external one relay through the
same allocations table, as on a real Edge.

Settings: ``[services.av-edge]``, all optional, is :class:`AvEdgeSettings` (each field's
docstring says what its key does), loaded typed at start: an unknown key or a value of the wrong
type is a ConfigError naming the topology file and the entry.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import secrets
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from simulator.errors import ConfigError
from simulator.lab.services import BoundListener, ServiceContext
from simulator.lab.topology import Host, Listener, Topology
from simulator.media.aio import AsyncTurnClient, AsyncTurnServer, ListenerSpec, TurnListenerLimits
from simulator.media.auth import LongTermCredentials, time_limited_credentials
from simulator.media.avauth import (
    SERVICE_NAME,
    AvAuthServer,
    relays_from_topology,
    trusted_servers,
)
from simulator.media.config import TurnConfig
from simulator.media.errors import MediaError
from simulator.media.msturn import EDGE
from simulator.media.policy import PeerPolicy
from simulator.settings import load_settings, setting
from simulator.sip.service import options_check
from simulator.tls import client_context, server_context

log = logging.getLogger(__name__)

DEFAULT_DENIED_ZONES = ("perimeter-internal", "corporate")


def _port_range(value: object) -> tuple[int, int]:
    try:
        low_s, _, high_s = str(value).partition("-")
        ports = (int(low_s), int(high_s or low_s))
    except ValueError:
        raise ValueError("must be 'low-high'") from None
    if not 0 < ports[0] <= ports[1] < 65536:
        raise ValueError("ports must be 1-65535, low first")
    return ports


def _networks(value: object) -> tuple[ipaddress.IPv4Network, ...]:
    if not isinstance(value, list | tuple):
        raise ValueError("must be a list of IPv4 networks")
    return tuple(ipaddress.IPv4Network(str(v), strict=False) for v in value)


@dataclass(frozen=True)
class AvEdgeSettings:
    """``[services.av-edge]``: the A/V Edge's TURN server. A count or time left out is the TURN
    core's default (:class:`TurnConfig`, whose values the docstrings repeat)."""

    realm: str | None = None
    """REALM of the long-term credentials (default: the host's domain)."""
    users: dict[str, str] = setting(factory=dict, what='a table of name = "password"')
    """Static long-term users, name -> password: the topology lists names (each lab generates
    their passwords, ``edgesim secrets`` shows them), or a table ``name = "password"``."""
    shared_secret: str | None = None
    """Secret of the time-limited credentials the A/V Authentication service hands out and the
    TURN core checks, kept inside the Edge. Leave it out: each lab generates its own (``edgesim
    secrets`` shows it)."""
    port_range: tuple[int, int] | None = setting(None, parse=_port_range)
    """Relay ports, ``"low-high"`` (default: the ``relay`` listener's range)."""
    user_quota: int | None = setting(None, minimum=0)
    """Allocations per user (a time-limited username's user, without its expiry); 486 beyond
    (default 10)."""
    total_quota: int | None = setting(None, minimum=0)
    """Allocations in total; 486 beyond (default 1000)."""
    max_permissions: int | None = setting(None, minimum=0)
    """Permissions per allocation; 508 beyond (default 100)."""
    max_channels: int | None = setting(None, minimum=0)
    """Channels per allocation; 508 beyond (default 100)."""
    max_connections: int | None = setting(None, minimum=0)
    """RFC 6062 peer connections per allocation; 508 beyond (default 32)."""
    unauthenticated_rate: float | None = setting(None, minimum=0)
    """Answers per second to requests that do not authenticate, per source IP, over UDP
    (default 10; 0 turns the limit off)."""
    unauthenticated_burst: int | None = setting(None, minimum=0)
    """Such answers one source IP may get at once (default 20)."""
    max_packet_rate: int | None = setting(None, minimum=1)
    """Packets per second relayed per allocation, both directions together (default: no
    cap)."""
    max_bandwidth: int | None = setting(None, minimum=1)
    """Payload bytes per second relayed per allocation, both directions together (default: no
    cap)."""
    default_lifetime: int | None = setting(None, minimum=0)
    """Seconds an allocation lives when the client asks for less or nothing (default 600)."""
    max_lifetime: int | None = setting(None, minimum=0)
    """The most seconds an allocation is granted (default 3600)."""
    nonce_lifetime: int | None = setting(None, minimum=0)
    """Seconds before a NONCE is stale and earns a 438 (default 600)."""
    denied_zones: tuple[str, ...] = setting(DEFAULT_DENIED_ZONES, what="a list of zone ids")
    """Zones (of the topology) whose hosts are forbidden peers."""
    allowed_peers: tuple[ipaddress.IPv4Network, ...] = setting((), parse=_networks)
    """IPv4 networks allowed as peers whatever else the policy says (checked first; coturn's
    ``allowed-peer-ip``)."""
    denied_peers: tuple[ipaddress.IPv4Network, ...] = setting((), parse=_networks)
    """IPv4 networks refused as peers (coturn's ``denied-peer-ip``)."""
    deny_loopback: bool = True
    """Refuse loopback peers unless the topology names them as lab hosts."""
    deny_reserved: bool = True
    """Refuse the reserved ranges coturn deployments deny (private, link-local, CGNAT,
    documentation, benchmarking ...) unless the topology names them as lab hosts
    (:mod:`simulator.media.policy`)."""
    listener_limits: TurnListenerLimits = field(default_factory=TurnListenerLimits)
    """A table of :class:`~simulator.media.aio.TurnListenerLimits` fields (connections in
    total and per source, first-byte, TLS handshake and idle timeouts, buffers): docs/limits.md."""


#: Settings handed to :class:`TurnConfig` as they are, when given.
TURN_KEYS = (
    "user_quota",
    "total_quota",
    "max_permissions",
    "max_channels",
    "max_connections",
    "unauthenticated_burst",
    "max_packet_rate",
    "max_bandwidth",
    "default_lifetime",
    "max_lifetime",
    "nonce_lifetime",
)


def av_edge_settings(
    topology: Topology, table: AvEdgeSettings | Mapping[str, object]
) -> AvEdgeSettings:
    """``[services.av-edge]`` of ``topology`` typed (a ConfigError names the file and entry)."""
    return load_settings(AvEdgeSettings, table, topology.path, f"services.{SERVICE_NAME}")


def peer_policy(
    topology: Topology, edge: Host, settings: AvEdgeSettings | Mapping[str, object]
) -> PeerPolicy:
    """The relay's peer policy for ``edge`` in ``topology``: the lab's hosts (their addresses in
    every runner: the topology's and the embedded lab's 127.b.c.d), its zone subnets (so Docker's
    bridge gateway, the firewalls and bridges are refused), the Edge's own addresses, and the
    ``[services.av-edge]`` knobs (``denied_zones``, ``allowed_peers``, ``denied_peers``,
    ``deny_loopback``, ``deny_reserved``)."""
    typed = av_edge_settings(topology, settings)
    lab_hosts: dict[ipaddress.IPv4Address, str] = {}
    for iface in topology.interfaces():
        lab_hosts[iface.address] = iface.zone
        lab_hosts[iface.loopback()] = iface.zone
    own = frozenset(a for i in edge.interfaces for a in (i.address, i.loopback()))
    known = {z.id for z in topology.zones}
    for zone in typed.denied_zones:
        if zone not in known:
            raise ConfigError(
                topology.path, "services.av-edge.denied_zones", f"zone {zone!r} is not defined"
            )
    return PeerPolicy(
        lab_hosts=lab_hosts,
        lab_subnets=tuple((zone.subnet, zone.id) for zone in topology.zones),
        own=own,
        denied_zones=frozenset(typed.denied_zones),
        allowed=typed.allowed_peers,
        denied=typed.denied_peers,
        deny_loopback=typed.deny_loopback,
        deny_reserved=typed.deny_reserved,
    )


def _shared_secret(ctx: ServiceContext, settings: AvEdgeSettings) -> bytes:
    """The secret of the A/V Authentication service and the TURN core: the lab's own
    (``edgesim secrets``); it never leaves the Edge."""
    if not settings.shared_secret:
        raise ConfigError(
            str(ctx.topology.path),
            "services.av-edge.shared_secret",
            "missing (a lab runner fills it in from the lab's secrets, simulator.pki.secrets)",
        )
    return settings.shared_secret.encode()


def listener_limits(ctx: ServiceContext) -> TurnListenerLimits:
    """``[services.av-edge.listener_limits]``: any field of :class:`TurnListenerLimits`."""
    return ctx.typed_settings(AvEdgeSettings).listener_limits


def turn_config(ctx: ServiceContext, relay_address: str, ports: tuple[int, int]) -> TurnConfig:
    """Build the TURN core's settings from the ``[services.av-edge]`` table."""
    s = ctx.typed_settings(AvEdgeSettings)
    low, high = s.port_range if s.port_range is not None else ports
    given: dict[str, Any] = {k: getattr(s, k) for k in TURN_KEYS if getattr(s, k) is not None}
    if s.unauthenticated_rate is not None:
        given["unauthenticated_rate"] = s.unauthenticated_rate or None  # 0: no limit
    return TurnConfig(
        relay_address=relay_address,
        realm=s.realm if s.realm is not None else ctx.host.domain or "contoso.lab",
        users=dict(s.users),
        port_low=low,
        port_high=high,
        policy=peer_policy(ctx.topology, ctx.host, s),
        nonce_key=os.urandom(16),
        seed=secrets.randbits(32),
        shared_secret=_shared_secret(ctx, s),  # last: every setting above is checked first
        **given,
    )


class AvEdgeService:
    """STUN/TURN on the Edge's A/V (and internal) interfaces, relays on the A/V address."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.settings = ctx.typed_settings(AvEdgeSettings)
        self.server: AsyncTurnServer | None = None
        self.auth: list[AvAuthServer] = []
        self.secret = _shared_secret(ctx, self.settings)

    async def start(self) -> list[BoundListener]:
        ctx = self.ctx
        relay = next((lst for lst in ctx.listeners if lst.proto == "relay"), None)
        if relay is None:
            raise ConfigError(
                ctx.topology.path, f"hosts[{ctx.host.id}]", "av-edge needs a relay listener"
            )
        relay_address = ctx.address(relay.interface)
        config = turn_config(ctx, relay_address, (relay.port_low, relay.port_high))
        specs: list[tuple[Any, ListenerSpec]] = []
        for lst in ctx.listeners:
            address = ctx.address(lst.interface)
            if lst.proto == "stun-udp":
                specs.append((lst, ListenerSpec("udp", address, lst.port)))
            elif lst.proto == "turn-tcp":
                specs.append((lst, ListenerSpec("tcp", address, lst.port)))
            elif lst.proto == "turn-tls":
                iface = ctx.host.interface(lst.interface)
                tls = server_context(ctx.pki.require(ctx.pki.interface_cert(iface)))
                specs.append((lst, ListenerSpec("tls", address, lst.port, tls)))
        self.server = AsyncTurnServer(
            config, [spec for _, spec in specs], limits=self.settings.listener_limits, dialect=EDGE
        )
        await self.server.start()
        bound: list[BoundListener] = []
        for (lst, _spec), lid in zip(specs, self.server.listeners, strict=True):
            bound.append(
                BoundListener(
                    lst, "udp" if lid.transport == "udp" else "tcp", lid.address, lid.port
                )
            )
        bound += [BoundListener(relay, t, relay_address, relay.port_low) for t in ("udp", "tcp")]
        for lst in ctx.listeners:
            if lst.proto == "sip-mtls":
                bound.append(await self._start_auth(lst))
        return bound

    async def _start_auth(self, lst: Listener) -> BoundListener:
        """The A/V Authentication service (MRAS) on ``lst`` (SIP/MTLS, TCP 5062)."""
        ctx = self.ctx
        iface = ctx.host.interface(lst.interface)
        ca = iface.ca or "internal"
        server = AvAuthServer(
            ctx.address(iface),
            lst.port,
            cert=ctx.pki.require(ctx.pki.interface_cert(iface)),
            client_trust=[ctx.pki.ca_cert(ca)],
            trusted=trusted_servers(ctx.topology),
            relays=relays_from_topology(ctx.topology),
            secret=self.secret,
            fqdn=iface.fqdn or str(iface.address),
        )
        address, port = await server.start()
        self.auth.append(server)
        return BoundListener(lst, "tcp", address, port)

    async def stop(self) -> None:
        for auth in self.auth:
            await auth.stop()
        self.auth = []
        if self.server is not None:
            await self.server.stop()
            self.server = None

    async def check(self, bound: BoundListener) -> str | None:
        """A STUN Binding on each listener; an Allocate (time-limited credentials) for the relay."""
        if bound.listener.proto == "relay":
            return await self._check_relay(bound)
        if bound.listener.proto == "sip-mtls":
            return await self._check_auth(bound)
        if bound.listener.proto == "turn-tls":
            iface = self.ctx.host.interface(bound.listener.interface)
            tls = client_context([self.ctx.pki.trust_bundle])
            return await binding_check(bound.address, bound.port, "tls", tls, iface.fqdn)
        return await binding_check(bound.address, bound.port, bound.transport)

    async def _check_auth(self, bound: BoundListener) -> str | None:
        """SIP OPTIONS over MTLS, presenting the interface's own certificate."""
        iface = self.ctx.host.interface(bound.listener.interface)
        cert = self.ctx.pki.interface_cert(iface)
        return await options_check(
            bound, cert, [self.ctx.pki.trust_bundle], iface.fqdn, want_200=True
        )

    async def _check_relay(self, bound: BoundListener) -> str | None:
        """Allocate through the relay interface's UDP STUN listener, over the network.

        Works from any process (``lab check-host`` runs in the host's namespace, not in the
        process that serves), so it asks the listener rather than this object's server.
        """
        stun_listener = next(
            (
                lst
                for lst in self.ctx.listeners
                if lst.proto == "stun-udp" and lst.interface == bound.listener.interface
            ),
            None,
        )
        if stun_listener is None:
            return "no UDP STUN listener on the relay's interface to allocate through"
        username, password = time_limited_credentials(self.secret, "probe", time.time(), 60)
        return await relay_check(
            (bound.address, stun_listener.port),
            username,
            password,
            (bound.listener.port_low, bound.listener.port_high),
        )


# ------------------------------------------------------------------ checks (the TURN client)


async def binding_check(
    address: str,
    port: int,
    transport: str = "udp",
    tls: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    timeout: float = 2.0,
) -> str | None:
    """A STUN Binding on ``address:port``: None when it is answered with a mapped address."""
    try:
        async with asyncio.timeout(timeout):
            client = await AsyncTurnClient.open(
                (address, port), transport, tls=tls, server_hostname=server_hostname
            )
            async with client:
                await client.binding()
    except TimeoutError:
        return "no STUN answer"
    except (MediaError, OSError, EOFError) as exc:
        return f"STUN Binding failed: {exc}"
    return None


async def relay_check(
    server: tuple[str, int],
    username: str,
    password: str,
    ports: tuple[int, int],
    timeout: float = 4.0,
) -> str | None:
    """Allocate over UDP, check the relayed port is in ``ports``, release it. None when all is
    well."""
    try:
        async with asyncio.timeout(timeout):
            client = await AsyncTurnClient.open(
                server, "udp", credentials=LongTermCredentials(username, password)
            )
            async with client:
                relayed = await client.allocate()
                await client.release()
    except TimeoutError:
        return "no TURN answer"
    except (MediaError, OSError, EOFError) as exc:
        return f"Allocate failed: {exc}"
    if not ports[0] <= relayed[1] <= ports[1]:
        return f"relayed port {relayed[1]} outside {ports[0]}-{ports[1]}"
    return None


__all__ = [
    "AvEdgeService",
    "AvEdgeSettings",
    "binding_check",
    "listener_limits",
    "peer_policy",
    "relay_check",
    "turn_config",
]
