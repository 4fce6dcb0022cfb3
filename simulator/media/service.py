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
    Allocations per user and in total (486 beyond).
``max_packet_rate``, ``max_bandwidth``
    Packets, and payload bytes, per second relayed per allocation (default: no cap).
``default_lifetime``, ``max_lifetime``, ``nonce_lifetime``
    Seconds.
``denied_zones``
    Zones whose addresses are forbidden peers (default: ``perimeter-internal``, ``corporate``).
``allowed_peers``, ``denied_peers``
    Lists of IPv4 networks that override the zone rule (allowed first).
``deny_loopback``
    Refuse loopback peers that are not lab interfaces (default true).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import secrets
import time
from typing import Any

from simulator.errors import ConfigError
from simulator.lab.services import BoundListener, ServiceContext
from simulator.lab.topology import Topology
from simulator.media import stun
from simulator.media.aio import AsyncTurnServer, ListenerSpec
from simulator.media.framing import StreamFramer
from simulator.media.turn import PeerPolicy, TurnConfig, time_limited_credentials
from simulator.tls import client_context, server_context

log = logging.getLogger(__name__)

DEFAULT_DENIED_ZONES = ("perimeter-internal", "corporate")


def lab_zone_map(topology: Topology) -> tuple[tuple[ipaddress.IPv4Network, str], ...]:
    """(network, zone) of every lab address, /32s (real and loopback) before the zone subnets."""
    hosts: list[tuple[ipaddress.IPv4Network, str]] = []
    for iface in topology.interfaces():
        hosts.append((ipaddress.IPv4Network(f"{iface.address}/32"), iface.zone))
        hosts.append((ipaddress.IPv4Network(f"{iface.loopback()}/32"), iface.zone))
    for fw in topology.firewalls:
        for iface in fw.interfaces:
            hosts.append((ipaddress.IPv4Network(f"{iface.address}/32"), iface.zone))
            hosts.append((ipaddress.IPv4Network(f"{iface.loopback()}/32"), iface.zone))
    subnets = [(zone.subnet, zone.id) for zone in topology.zones]
    return tuple(hosts + subnets)


def _networks(value: object, entry: str, path: str) -> tuple[ipaddress.IPv4Network, ...]:
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
    denied_zones = s.get("denied_zones", list(DEFAULT_DENIED_ZONES))
    if not isinstance(denied_zones, list):
        raise ConfigError(path, "services.av-edge.denied_zones", "must be a list of zone ids")
    known = {z.id for z in ctx.topology.zones}
    for zone in denied_zones:
        if zone not in known:
            raise ConfigError(
                path, "services.av-edge.denied_zones", f"zone {zone!r} is not defined"
            )
    caps: dict[str, int | None] = {}
    for key in ("max_packet_rate", "max_bandwidth"):
        value = s.get(key)
        if value is not None and (not isinstance(value, int) or value <= 0):
            raise ConfigError(path, f"services.av-edge.{key}", "must be a positive integer")
        caps[key] = value
    policy = PeerPolicy(
        lab_zones=lab_zone_map(ctx.topology),
        denied_zones=frozenset(denied_zones),
        allowed=_networks(s.get("allowed_peers", []), "services.av-edge.allowed_peers", path),
        denied=_networks(s.get("denied_peers", []), "services.av-edge.denied_peers", path),
        deny_loopback=bool(s.get("deny_loopback", True)),
    )
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
        max_packet_rate=caps["max_packet_rate"],
        max_bandwidth=caps["max_bandwidth"],
        policy=policy,
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
        self.server = AsyncTurnServer(config, [spec for _, spec in specs])
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
            return await stream_binding(bound.address, bound.port, tls, iface.fqdn)
        if bound.transport == "udp":
            return await udp_binding(bound.address, bound.port)
        return await stream_binding(bound.address, bound.port, None, None)

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
        return await udp_allocate(
            (bound.address, stun_listener.port),
            username,
            password,
            (bound.listener.port_low, bound.listener.port_high),
        )


# ------------------------------------------------------------------ small STUN clients (checks)


class _Datagram(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait(data)


async def udp_transaction(
    server: tuple[str, int], messages: list[bytes], timeout: float = 2.0
) -> list[stun.Message]:
    """Send each request in turn over one UDP socket and collect the answers."""
    loop = asyncio.get_running_loop()
    local = (server[0], 0)
    transport, proto = await loop.create_datagram_endpoint(_Datagram, local_addr=local)
    answers: list[stun.Message] = []
    try:
        for data in messages:
            transport.sendto(data, server)
            answers.append(stun.parse(await asyncio.wait_for(proto.queue.get(), timeout)))
    finally:
        transport.close()
    return answers


async def udp_binding(address: str, port: int) -> str | None:
    request = stun.Message(stun.Method.BINDING, stun.MessageClass.REQUEST, os.urandom(12))
    try:
        (answer,) = await udp_transaction((address, port), [stun.encode(request)])
    except TimeoutError:
        return "no STUN answer"
    if answer.message_class != stun.MessageClass.SUCCESS or "XOR-MAPPED-ADDRESS" not in answer:
        return "STUN Binding failed"
    return None


async def stream_binding(
    address: str, port: int, tls: Any, server_hostname: str | None
) -> str | None:
    request = stun.Message(stun.Method.BINDING, stun.MessageClass.REQUEST, os.urandom(12))
    try:
        reader, writer = await asyncio.open_connection(
            address, port, ssl=tls, server_hostname=server_hostname if tls else None
        )
    except OSError as exc:
        return f"connect failed: {exc}"
    try:
        writer.write(stun.encode(request))
        framer = StreamFramer()
        while True:
            chunk = await asyncio.wait_for(reader.read(4096), 2.0)
            if not chunk:
                return "connection closed without a STUN answer"
            frames = framer.frames(chunk)
            if frames:
                answer = stun.parse(frames[0])
                if answer.message_class == stun.MessageClass.SUCCESS:
                    return None
                return "STUN Binding failed"
    except TimeoutError:
        return "no STUN answer"
    finally:
        writer.close()


async def udp_allocate(
    server: tuple[str, int], username: str, password: str, ports: tuple[int, int]
) -> str | None:
    """Allocate, check the relayed port is in ``ports``, release it. None when all is well."""
    tid = os.urandom(12)
    first = stun.Message(
        stun.Method.ALLOCATE, stun.MessageClass.REQUEST, tid, [("REQUESTED-TRANSPORT", 17)]
    )
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(_Datagram, local_addr=(server[0], 0))
    try:
        transport.sendto(stun.encode(first), server)
        challenge = stun.parse(await asyncio.wait_for(proto.queue.get(), 2.0))
        realm, nonce = challenge.get("REALM"), challenge.get("NONCE")
        if challenge.get("ERROR-CODE", (0, ""))[0] != 401 or realm is None:
            return "Allocate without credentials was not challenged with 401"
        key = stun.long_term_key(username, realm, password)
        creds = [("USERNAME", username), ("REALM", realm), ("NONCE", nonce)]
        request = stun.Message(
            stun.Method.ALLOCATE,
            stun.MessageClass.REQUEST,
            os.urandom(12),
            [("REQUESTED-TRANSPORT", 17), *creds],
        )
        transport.sendto(stun.encode(request, integrity_key=key), server)
        answer = stun.parse(await asyncio.wait_for(proto.queue.get(), 2.0))
        if answer.message_class != stun.MessageClass.SUCCESS:
            return f"Allocate failed: {answer.get('ERROR-CODE')}"
        relayed = answer.get("XOR-RELAYED-ADDRESS")
        release = stun.Message(
            stun.Method.REFRESH,
            stun.MessageClass.REQUEST,
            os.urandom(12),
            [("LIFETIME", 0), *creds],
        )
        transport.sendto(stun.encode(release, integrity_key=key), server)
        await asyncio.wait_for(proto.queue.get(), 2.0)
        if not ports[0] <= relayed[1] <= ports[1]:
            return f"relayed port {relayed[1]} outside {ports[0]}-{ports[1]}"
        return None
    except TimeoutError:
        return "no TURN answer"
    finally:
        transport.close()


__all__ = [
    "AvEdgeService",
    "lab_zone_map",
    "stream_binding",
    "turn_config",
    "udp_allocate",
    "udp_binding",
]
