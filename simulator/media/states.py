"""The states of allocations and RFC 6062 peer connections, and their one transition table.

``docs/media.md`` draws its state diagram from :data:`TRANSITIONS`; a move the table does not list
is a :class:`~simulator.media.errors.LocalProtocolError` (a bug in the core, not the peer's fault).
"""

from __future__ import annotations

from enum import Enum

from simulator.media.errors import LocalProtocolError


class AllocationState(Enum):
    PENDING = "pending"
    """Allocate accepted, the relayed address not bound yet."""
    ACTIVE = "active"
    """Answered; relaying."""


class ConnectionState(Enum):
    """An RFC 6062 peer connection."""

    CONNECTING = "connecting"
    """Connect received, the relay is dialling the peer."""
    READY = "ready"
    """Connected (or the peer dialled in); waiting for the client's ConnectionBind (30 s)."""
    BOUND = "bound"
    """Joined to a client data connection: raw bytes both ways."""


#: Every transition of the core's state machines; a pair missing here is a LocalProtocolError.
TRANSITIONS: dict[tuple[Enum, str], Enum] = {
    (AllocationState.PENDING, "relay opened"): AllocationState.ACTIVE,
    (ConnectionState.CONNECTING, "peer connected"): ConnectionState.READY,
    (ConnectionState.READY, "connection bound"): ConnectionState.BOUND,
}


def advance(state: Enum, event: str) -> Enum:
    """The state after ``event``; LocalProtocolError if the table has no such transition."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise LocalProtocolError(f"no transition from {state} on {event!r}") from None
