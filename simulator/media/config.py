"""Settings of the TURN server core (the ``[services.av-edge]`` table maps onto these)."""

from __future__ import annotations

from dataclasses import dataclass, field

from simulator.media.policy import PeerPolicy


@dataclass(frozen=True)
class TurnConfig:
    """Settings of the TURN core (the ``[services.av-edge]`` table maps onto these)."""

    relay_address: str
    """The relayed transport addresses' IP (the A/V interface)."""
    realm: str = "contoso.lab"
    """REALM of the long-term credentials."""
    users: dict[str, str] = field(default_factory=dict)
    """Static long-term users: username -> password."""
    shared_secret: bytes | None = None
    """Secret for time-limited credentials (``expiry:user``, base64 HMAC-SHA1 password)."""
    port_low: int = 50000
    """First port of the relay range."""
    port_high: int = 59999
    """Last port of the relay range (inclusive)."""
    default_lifetime: int = 600
    """Allocation lifetime when the client asks for less or nothing (RFC 8656 section 3.2)."""
    max_lifetime: int = 3600
    """The most an allocation is granted."""
    permission_lifetime: int = 300
    """RFC 8656 section 9: permissions last 300 s."""
    channel_lifetime: int = 600
    """RFC 8656 section 12: channel bindings last 600 s."""
    nonce_lifetime: int = 600
    """A NONCE older than this is stale (438)."""
    connection_bind_timeout: int = 30
    """RFC 6062 section 5.3: a peer connection must be bound within 30 s."""
    user_quota: int = 10
    """Allocations one user may hold at once (486 beyond)."""
    total_quota: int = 1000
    """Allocations the server holds at once (486 beyond)."""
    max_permissions: int = 100
    """Permissions (peer IP addresses) one allocation may hold (508 beyond)."""
    max_channels: int = 100
    """Channels one allocation may bind (508 beyond; RFC 8656 allows 16384 numbers)."""
    max_connections: int = 32
    """RFC 6062 peer connections one TCP allocation may hold, dialled out or in (508 beyond)."""
    unauthenticated_rate: float | None = 10.0
    """Answers per second to requests that did not authenticate (Binding, 401, 438, 400 before
    authentication), per source IP, over UDP; past it they are dropped, so a spoofed source
    cannot use the server as an amplifier (coturn's ``--unauthorized-ratelimit``). None: no
    limit."""
    unauthenticated_burst: int = 20
    """How many such answers one source IP may get at once."""
    max_packet_rate: int | None = None
    """Packets per second each allocation may relay (both directions together); None: no cap."""
    max_bandwidth: int | None = None
    """Bytes of payload per second each allocation may relay (both directions); None: no cap."""
    policy: PeerPolicy = field(default_factory=PeerPolicy)
    """Which peers are forbidden."""
    nonce_key: bytes = b"edgesim-nonce-key"
    """Key that signs nonces (the adapter passes random bytes)."""
    seed: int = 0
    """Seed of the relay port choice."""
    software: str = "edgesim A/V Edge"
    """SOFTWARE attribute of responses."""
