"""Permissions, channels and the data path of UDP relays (RFC 8656 sections 9-13).

CreatePermission and ChannelBind install permissions (per peer IP, 300 s) and channel bindings
(channel number <-> peer transport address, 600 s). Send indications and ChannelData go to a
peer only with a permission; a peer's datagram comes back to the client as ChannelData when a
channel is bound to it, else as a Data indication. ChannelData over a stream is padded to four
bytes (RFC 8656 section 12.5). Everything refused on the data path is dropped and counted, as the
RFC says (sections 10.2, 11.5, 12.4); the optional packet-rate and bandwidth caps too.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from simulator.media.actions import Action, Address, ListenerId, RelayTo, SendTo
from simulator.media.allocations import active, owner
from simulator.media.context import Allocation, Channel, Request, TurnState
from simulator.media.errors import Rejection
from simulator.media.events import ChannelBound, PermissionCreated
from simulator.media.states import AllocationState
from simulator.media.stun import Message, MessageClass, Method

CHANNEL_MIN = 0x4000
CHANNEL_MAX = 0x7FFF


def peer_addresses(state: TurnState, req: Request, *, ports: bool) -> list[Address]:
    """Every XOR-PEER-ADDRESS of ``req``, each allowed by the peer policy (else 400/443/403);
    with ``ports``, the port is judged too (ChannelBind and Connect name one; a permission is
    per IP address, RFC 8656 section 9)."""
    peers: list[Address] = req.message.get_all("XOR-PEER-ADDRESS")
    if not peers:
        raise Rejection(400, "XOR-PEER-ADDRESS missing")
    config = state.config
    for peer in peers:
        if ":" in peer[0]:
            raise Rejection(443, "IPv6 peer for an IPv4 relay")
        why = config.policy.refuse(
            peer[0],
            peer[1] if ports else None,
            relay=config.relay_address,
            relay_ports=state.ports,
        )
        if why is not None:
            raise Rejection(403, why)
    return peers


def has_permission(alloc: Allocation, ip: str, now: float) -> bool:
    expiry = alloc.permissions.get(ip)
    return expiry is not None and expiry > now


def permit(state: TurnState, alloc: Allocation, ip: str, now: float) -> None:
    if ip not in alloc.permissions:
        state.events.append(PermissionCreated(alloc.id, ip))
    alloc.permissions[ip] = now + state.config.permission_lifetime
    state.arm(alloc.permissions[ip])


def make_room(state: TurnState, alloc: Allocation, ips: set[str], now: float) -> None:
    """508 unless ``alloc`` can hold permissions for ``ips`` too (RFC 8656 section 10.2: a
    request the server cannot fulfil for a capacity limit)."""
    held = {ip for ip, expires in alloc.permissions.items() if expires > now}
    if len(held | ips) > state.config.max_permissions:
        raise Rejection(508, f"more than {state.config.max_permissions} permissions")


def create_permission(state: TurnState, req: Request) -> list[Action]:
    """RFC 8656 section 10.2: one permission per XOR-PEER-ADDRESS, all or none."""
    alloc = owner(state, req)
    peers = peer_addresses(state, req, ports=False)
    make_room(state, alloc, {peer[0] for peer in peers}, req.now)
    for peer in peers:
        permit(state, alloc, peer[0], req.now)
    return [state.reply(req)]


def channel_bind(state: TurnState, req: Request) -> list[Action]:
    """RFC 8656 section 12.2: bind (or refresh) a channel to a peer, with its permission."""
    alloc = owner(state, req)
    if alloc.transport != "udp":
        raise Rejection(400, "ChannelBind on a TCP allocation")
    number = req.message.get("CHANNEL-NUMBER")
    if number is None or not CHANNEL_MIN <= number <= CHANNEL_MAX:
        raise Rejection(400, "CHANNEL-NUMBER missing or out of range")
    peers = peer_addresses(state, req, ports=True)
    if len(peers) != 1:
        raise Rejection(400, "one XOR-PEER-ADDRESS expected")
    peer, now = peers[0], req.now
    bound = alloc.channels.get(number)
    if bound is not None and bound.expires > now and bound.peer != peer:
        raise Rejection(400, "channel bound to another peer")
    other = alloc.peer_channels.get(peer)
    if other is not None and other != number and alloc.channels[other].expires > now:
        raise Rejection(400, "peer bound to another channel")
    if bound is None or bound.expires <= now:
        live = sum(1 for channel in alloc.channels.values() if channel.expires > now)
        if live >= state.config.max_channels:
            raise Rejection(508, f"more than {state.config.max_channels} channels")
    make_room(state, alloc, {peer[0]}, now)
    if other is not None and other != number:
        alloc.channels.pop(other, None)
    if bound is not None and bound.peer != peer:
        alloc.peer_channels.pop(bound.peer, None)
    if bound is None or bound.peer != peer:
        state.events.append(ChannelBound(alloc.id, number, peer))
    alloc.channels[number] = Channel(peer, now + state.config.channel_lifetime)
    alloc.peer_channels[peer] = number
    state.arm(now + state.config.channel_lifetime)
    permit(state, alloc, peer[0], now)
    return [state.reply(req)]


def over_cap(state: TurnState, alloc: Allocation, size: int, now: float) -> bool:
    """Token buckets of the packet-rate and bandwidth caps: True if this packet exceeds one."""
    elapsed = max(0.0, now - alloc.token_time)
    alloc.token_time = now
    rate, bandwidth = state.config.max_packet_rate, state.config.max_bandwidth
    if rate is not None:
        alloc.tokens = min(float(rate), alloc.tokens + elapsed * rate)
    if bandwidth is not None:
        alloc.byte_tokens = min(float(bandwidth), alloc.byte_tokens + elapsed * bandwidth)
    if (rate is not None and alloc.tokens < 1.0) or (
        bandwidth is not None and alloc.byte_tokens < size
    ):
        return True
    alloc.tokens -= 1.0
    alloc.byte_tokens -= size
    return False


def send_indication(
    state: TurnState, msg: Message, source: Address, listener: ListenerId, now: float
) -> list[Action]:
    """RFC 8656 section 11.2: relay the DATA of a Send indication to a permitted peer."""
    alloc = active(state, listener, source, now)
    if alloc is None or alloc.transport != "udp":
        state.drop("Send indication without allocation", source)
        return []
    peer = msg.get("XOR-PEER-ADDRESS")
    data = msg.get("DATA")
    if peer is None or data is None:
        state.drop("Send indication without XOR-PEER-ADDRESS or DATA", source)
        return []
    if not has_permission(alloc, peer[0], now):
        state.drop("data to peer without permission", source)
        return []
    if peer[0] == state.config.relay_address and peer[1] not in state.ports:
        # the permission for the relay address is for its relayed ports (a channel to a
        # listener is refused at ChannelBind; an indication names its port each time)
        state.drop("data to the Edge's own listener", source)
        return []
    return relay_to_peer(state, alloc, peer, data, source, now)


def channel_data(
    state: TurnState, data: bytes, source: Address, listener: ListenerId, now: float
) -> list[Action]:
    """RFC 8656 section 12.4: relay a ChannelData message's data to the channel's peer."""
    if len(data) < 4:
        state.drop("truncated ChannelData", source)
        return []
    number, length = struct.unpack_from("!HH", data)
    if len(data) < 4 + length or (not listener.stream and len(data) > 4 + length + 3):
        state.drop("ChannelData length mismatch", source)
        return []
    alloc = state.allocations.get((listener, source))
    channel = alloc.channels.get(number) if alloc is not None else None
    if alloc is None or channel is None or channel.expires <= now:
        state.drop("ChannelData for an unbound channel", source)
        return []
    if not has_permission(alloc, channel.peer[0], now):
        state.drop("data to peer without permission", source)
        return []
    return relay_to_peer(state, alloc, channel.peer, data[4 : 4 + length], source, now)


def relay_to_peer(
    state: TurnState, alloc: Allocation, peer: Address, data: bytes, source: Address, now: float
) -> list[Action]:
    """The last step of every way a client's data goes to a peer (Send indication, ChannelData,
    [MS-TURN] Send and raw data), its permission checked: within the caps, counted, relayed."""
    if state.capped and over_cap(state, alloc, len(data), now):
        state.drop("rate cap", source)
        return []
    state.stats["relayed.to_peer"] += 1
    return [RelayTo(alloc.id, peer, data)]


def from_peer(
    state: TurnState,
    relay: int,
    data: bytes,
    peer: Address,
    now: float,
    ms_to_client: Callable[[TurnState, Allocation, Address, bytes], list[Action]],
) -> list[Action]:
    """RFC 8656 sections 11.3 and 12.5: a peer's datagram to the client, as ChannelData on a
    bound channel, else in a Data indication; without a permission it is dropped. An MS-TURN
    allocation's data goes as ``ms_to_client`` frames it."""
    alloc = state.by_id.get(relay)
    if alloc is None or alloc.state is not AllocationState.ACTIVE:
        state.drop("no allocation", peer)
        return []
    expiry = alloc.permissions.get(peer[0])
    if expiry is None or expiry <= now:
        state.drop("peer without permission", peer)
        return []
    if state.capped and over_cap(state, alloc, len(data), now):
        state.drop("rate cap", peer)
        return []
    state.stats["relayed.from_peer"] += 1
    if alloc.dialect != "rfc":
        return ms_to_client(state, alloc, peer, data)
    number = alloc.peer_channels.get(peer)
    if number is not None:
        channel = alloc.channels.get(number)
        if channel is not None and channel.expires > now:
            frame = struct.pack("!HH", number, len(data)) + data
            if alloc.listener.stream and len(data) % 4:
                frame += bytes(4 - len(data) % 4)
            return [SendTo(alloc.listener, alloc.client, frame)]
    indication = Message(
        Method.DATA,
        MessageClass.INDICATION,
        state.rng.randbytes(12),
        [("XOR-PEER-ADDRESS", peer), ("DATA", data)],
    )
    return [
        SendTo(alloc.listener, alloc.client, state.dialect.encode(indication, fingerprint=False))
    ]


def expire(alloc: Allocation, now: float, deadlines: list[float]) -> None:
    """Drop the lapsed permissions and channels of ``alloc``; add the remaining deadlines."""
    for ip, expires in list(alloc.permissions.items()):
        if expires <= now:
            del alloc.permissions[ip]
        else:
            deadlines.append(expires)
    for number, channel in list(alloc.channels.items()):
        if channel.expires <= now:
            del alloc.channels[number]
            alloc.peer_channels.pop(channel.peer, None)
        else:
            deadlines.append(channel.expires)
