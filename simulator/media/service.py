"""The A/V Edge as a lab service (``av-edge``): STUN/TURN listeners and the relay range.

Listeners come from the topology (``simulator/lab/default.toml``, host ``edge``):

- ``stun-udp`` (UDP 3478 on the A/V and internal interfaces): STUN and TURN over UDP;
- ``turn-tcp`` (TCP 3478 on the A/V interface, TCP 443 on the internal one): TURN over TCP;
- ``turn-tls`` (TCP 443 on the A/V interface): TURN over TLS with the interface's certificate,
  and plain TURN over TCP on the same port (a TLS ClientHello's first byte tells them apart);
- ``relay`` (50000-59999 on the A/V interface): where relayed transport addresses are bound.

All listeners share one TURN core, so an internal client and an external one relay through the
same allocations table, as on a real Edge.

Settings (``[services.av-edge]``), all optional:

``realm``
    REALM of the long-term credentials (default: the host's domain).
``users``
    Static long-term users: a list of names (each lab generates their passwords; ``edgesim
    secrets`` shows them), or a table ``name = "password"``.
``shared_secret``
    Secret shared with the Front End's MRAS for time-limited credentials (string). Leave it out:
    each lab generates its own (``edgesim secrets`` shows it).
``port_range``
    Relay ports, ``"low-high"`` (default: the ``relay`` listener's range).
``user_quota``, ``total_quota``
    Allocations per user (a time-limited username's user, without its expiry) and in total (486
    beyond; defaults 10 and 1000).
``max_permissions``, ``max_channels``, ``max_connections``
    Permissions, channels and RFC 6062 peer connections per allocation (508 beyond; defaults
    100, 100, 32).
``unauthenticated_rate``, ``unauthenticated_burst``
    Answers per second (and at once) to requests that do not authenticate, per source IP, over
    UDP (defaults 10 and 20; rate 0 turns the limit off).
``max_packet_rate``, ``max_bandwidth``
    Packets, and payload bytes, per second relayed per allocation (default: no cap).
``default_lifetime``, ``max_lifetime``, ``nonce_lifetime``
    Seconds.
``denied_zones``
    Zones whose hosts are forbidden peers (default: ``perimeter-internal``, ``corporate``).
``allowed_peers``, ``denied_peers``
    Lists of IPv4 networks allowed, or refused, whatever else the policy says (allowed first;
    coturn's ``allowed-peer-ip`` and ``denied-peer-ip``).
``listener_limits``
    A table of :class:`~simulator.media.aio.TurnListenerLimits` fields (connections in total
    and per source, first-byte, TLS handshake and idle timeouts, buffers): docs/limits.md.
``deny_loopback``, ``deny_reserved``
    Refuse loopback peers, and the reserved ranges coturn deployments deny (private, link-local,
    CGNAT, documentation, benchmarking ...), unless the topology names them as lab hosts
    (default true; :mod:`simulator.media.policy`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import secrets
import ssl
import time
from typing import Any

from simulator.errors import ConfigError
from simulator.lab.services import BoundListener, ServiceContext
from simulator.lab.topology import Host, Topology
from simulator.limits import settings_from
from simulator.media.aio import AsyncTurnClient, AsyncTurnServer, ListenerSpec, TurnListenerLimits
from simulator.media.auth import LongTermCredentials, time_limited_credentials
from simulator.media.config import TurnConfig
from simulator.media.errors import MediaError
from simulator.media.msturn import EDGE
from simulator.media.policy import PeerPolicy
from simulator.tls import client_context, server_context

log = logging.getLogger(__name__)

DEFAULT_DENIED_ZONES = ("perimeter-internal", "corporate")


def peer_policy(topology: Topology, edge: Host, settings: dict[str, Any]) -> PeerPolicy:
    """The relay's peer policy for ``edge`` in ``topology``: the lab's hosts (their addresses in
    every runner: the topology's and the embedded lab's 127.b.c.d), its zone subnets (so Docker's
    bridge gateway, the firewalls and bridges are refused), the Edge's own addresses, and the
    ``[services.av-edge]`` knobs (``denied_zones``, ``allowed_peers``, ``denied_peers``,
    ``deny_loopback``, ``deny_reserved``)."""
    path = str(topology.path)
    lab_hosts: dict[ipaddress.IPv4Address, str] = {}
    for iface in topology.interfaces():
        lab_hosts[iface.address] = iface.zone
        lab_hosts[iface.loopback()] = iface.zone
    own = frozenset(a for i in edge.interfaces for a in (i.address, i.loopback()))
    denied_zones = settings.get("denied_zones", list(DEFAULT_DENIED_ZONES))
    if not isinstance(denied_zones, list):
        raise ConfigError(path, "services.av-edge.denied_zones", "must be a list of zone ids")
    known = {z.id for z in topology.zones}
    for zone in denied_zones:
        if zone not in known:
            raise ConfigError(
                path, "services.av-edge.denied_zones", f"zone {zone!r} is not defined"
            )
    return PeerPolicy(
        lab_hosts=lab_hosts,
        lab_subnets=tuple((zone.subnet, zone.id) for zone in topology.zones),
        own=own,
        denied_zones=frozenset(denied_zones),
        allowed=_networks(settings.get("allowed_peers", []), "allowed_peers", path),
        denied=_networks(settings.get("denied_peers", []), "denied_peers", path),
        deny_loopback=_bool(settings, "deny_loopback", path),
        deny_reserved=_bool(settings, "deny_reserved", path),
    )


def _bool(settings: dict[str, Any], key: str, path: str) -> bool:
    value = settings.get(key, True)
    if not isinstance(value, bool):
        raise ConfigError(path, f"services.av-edge.{key}", "must be true or false")
    return value


def _networks(value: object, key: str, path: str) -> tuple[ipaddress.IPv4Network, ...]:
    entry = f"services.av-edge.{key}"
    if not isinstance(value, list):
        raise ConfigError(path, entry, "must be a list of IPv4 networks")
    try:
        return tuple(ipaddress.IPv4Network(str(v), strict=False) for v in value)
    except ValueError as exc:
        raise ConfigError(path, entry, str(exc)) from None


def _int(settings: dict[str, Any], key: str, default: int, path: str) -> int:
    value = settings.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(path, f"services.av-edge.{key}", "must be a non-negative integer")
    return value


def _rate(settings: dict[str, Any], path: str) -> float | None:
    value = settings.get("unauthenticated_rate", 10)
    if value == 0:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        raise ConfigError(
            path, "services.av-edge.unauthenticated_rate", "must be a non-negative number"
        )
    return float(value)


def _shared_secret(ctx: ServiceContext) -> bytes:
    """The secret shared with the Front End's MRAS: the lab's own (``edgesim secrets``)."""
    secret = ctx.settings.get("shared_secret")
    if not isinstance(secret, str) or not secret:
        raise ConfigError(
            str(ctx.topology.path),
            "services.av-edge.shared_secret",
            "missing (a lab runner fills it in from the lab's secrets, simulator.pki.secrets)",
        )
    return secret.encode()


def listener_limits(ctx: ServiceContext) -> TurnListenerLimits:
    """``[services.av-edge.listener_limits]``: any field of :class:`TurnListenerLimits`."""
    try:
        limits: TurnListenerLimits = settings_from(
            TurnListenerLimits,
            ctx.settings.get("listener_limits", {}),
            "services.av-edge.listener_limits",
        )
    except ValueError as exc:
        entry, _, why = str(exc).partition(": ")
        raise ConfigError(str(ctx.topology.path), entry, why) from None
    return limits


def turn_config(ctx: ServiceContext, relay_address: str, ports: tuple[int, int]) -> TurnConfig:
    """Build the TURN core's settings from the ``[services.av-edge]`` table."""
    s = dict(ctx.settings)
    path = str(ctx.topology.path)
    users = s.get("users", {})
    if not isinstance(users, dict) or not all(isinstance(v, str) for v in users.values()):
        raise ConfigError(path, "services.av-edge.users", 'must be a table of name = "password"')
    port_range = s.get("port_range")
    if port_range is not None:
        try:
            low_s, _, high_s = str(port_range).partition("-")
            ports = (int(low_s), int(high_s or low_s))
        except ValueError:
            raise ConfigError(path, "services.av-edge.port_range", "must be 'low-high'") from None
        if not 0 < ports[0] <= ports[1] < 65536:
            raise ConfigError(
                path, "services.av-edge.port_range", "ports must be 1-65535, low first"
            )
    caps: dict[str, int | None] = {}
    for key in ("max_packet_rate", "max_bandwidth"):
        value = s.get(key)
        if value is not None and (not isinstance(value, int) or value <= 0):
            raise ConfigError(path, f"services.av-edge.{key}", "must be a positive integer")
        caps[key] = value
    return TurnConfig(
        relay_address=relay_address,
        realm=str(s.get("realm", ctx.host.domain or "contoso.lab")),
        users={str(k): v for k, v in users.items()},
        port_low=ports[0],
        port_high=ports[1],
        default_lifetime=_int(s, "default_lifetime", 600, path),
        max_lifetime=_int(s, "max_lifetime", 3600, path),
        nonce_lifetime=_int(s, "nonce_lifetime", 600, path),
        user_quota=_int(s, "user_quota", 10, path),
        total_quota=_int(s, "total_quota", 1000, path),
        max_permissions=_int(s, "max_permissions", 100, path),
        max_channels=_int(s, "max_channels", 100, path),
        max_connections=_int(s, "max_connections", 32, path),
        unauthenticated_rate=_rate(s, path),
        unauthenticated_burst=_int(s, "unauthenticated_burst", 20, path),
        max_packet_rate=caps["max_packet_rate"],
        max_bandwidth=caps["max_bandwidth"],
        policy=peer_policy(ctx.topology, ctx.host, s),
        nonce_key=os.urandom(16),
        seed=secrets.randbits(32),
        shared_secret=_shared_secret(ctx),  # last: every setting above is checked first
    )


class AvEdgeService:
    """STUN/TURN on the Edge's A/V (and internal) interfaces, relays on the A/V address."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.server: AsyncTurnServer | None = None
        self.secret = _shared_secret(ctx)

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
            config, [spec for _, spec in specs], limits=listener_limits(ctx), dialect=EDGE
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
        return bound

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None

    async def check(self, bound: BoundListener) -> str | None:
        """A STUN Binding on each listener; an Allocate (time-limited credentials) for the relay."""
        if bound.listener.proto == "relay":
            return await self._check_relay(bound)
        if bound.listener.proto == "turn-tls":
            iface = self.ctx.host.interface(bound.listener.interface)
            tls = client_context([self.ctx.pki.trust_bundle])
            return await binding_check(bound.address, bound.port, "tls", tls, iface.fqdn)
        return await binding_check(bound.address, bound.port, bound.transport)

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
    "binding_check",
    "listener_limits",
    "peer_policy",
    "relay_check",
    "turn_config",
]
