"""Settings of the TURN server core (the ``[services.av-edge]`` table maps onto these).

Fields declared with :func:`simulator.limits.limit` are rows of docs/limits.md, each with the
test that shows it is enforced.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from simulator.limits import limit
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
    default_lifetime: int = limit(
        600,
        "allocation lifetime when the client asks less, s",
        "tests/media/test_turn.py::test_allocation_expires_by_timer",
    )
    """Allocation lifetime when the client asks for less or nothing (RFC 8656 section 3.2)."""
    max_lifetime: int = limit(
        3600,
        "allocation lifetime at most, s",
        "tests/media/test_turn.py::test_refresh_extends_and_zero_deletes",
    )
    """The most an allocation is granted."""
    permission_lifetime: int = limit(
        300,
        "permission lifetime (only CreatePermission, ChannelBind refresh it), s",
        "tests/media/test_turn.py::test_permission_and_channel_expire_on_their_lifetimes",
    )
    """RFC 8656 section 9: permissions last 300 s."""
    channel_lifetime: int = limit(
        600,
        "channel lifetime (only ChannelBind refreshes it), s",
        "tests/media/test_turn.py::test_permission_and_channel_expire_on_their_lifetimes",
    )
    """RFC 8656 section 12: channel bindings last 600 s."""
    nonce_lifetime: int = limit(
        600,
        "NONCE lifetime (438 after), s",
        "tests/media/test_turn.py::test_stale_nonce_gets_438_with_a_new_nonce_then_succeeds",
    )
    """A NONCE older than this is stale (438)."""
    connection_bind_timeout: int = limit(
        30,
        "RFC 6062: a peer connection bound within, s",
        "tests/media/test_turn.py::test_inbound_peer_connection_needs_permission_and_is_announced",
    )
    """RFC 6062 section 5.3: a peer connection must be bound within 30 s."""
    user_quota: int = limit(
        10,
        "allocations per user (a time-limited username's user), 486",
        "tests/media/test_hardening.py::test_the_user_quota_counts_the_user_not_the_time_limited_username",
    )
    """Allocations one user may hold at once (486 beyond)."""
    total_quota: int = limit(
        1000,
        "allocations in total, 486",
        "tests/media/test_turn.py::test_user_quota_and_total_quota_give_486",
    )
    """Allocations the server holds at once (486 beyond)."""
    max_permissions: int = limit(
        100,
        "permissions per allocation, 508",
        "tests/media/test_hardening.py::test_one_create_permission_cannot_make_thousands",
    )
    """Permissions (peer IP addresses) one allocation may hold (508 beyond)."""
    max_channels: int = limit(
        100,
        "channels per allocation, 508",
        "tests/media/test_hardening.py::test_channels_per_allocation_are_bounded",
    )
    """Channels one allocation may bind (508 beyond; RFC 8656 allows 16384 numbers)."""
    max_connections: int = limit(
        32,
        "RFC 6062 peer connections per allocation, 508",
        "tests/media/test_hardening.py::test_rfc6062_connections_per_allocation_are_bounded",
    )
    """RFC 6062 peer connections one TCP allocation may hold, dialled out or in (508 beyond)."""
    unauthenticated_rate: float | None = limit(
        10.0,
        "UDP: answers to requests that do not authenticate, per source IP, per s (then dropped)",
        "tests/media/test_hardening.py::test_a_spoofed_flood_is_not_amplified",
    )
    """Answers per second to requests that did not authenticate (Binding, 401, 438, 400 before
    authentication), per source IP, over UDP; past it they are dropped, so a spoofed source
    cannot use the server as an amplifier (coturn's ``--unauthorized-ratelimit``). None: no
    limit."""
    unauthenticated_burst: int = limit(
        20,
        "UDP: such answers to one source IP at once",
        "tests/media/test_hardening.py::test_a_spoofed_flood_is_not_amplified",
    )
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
