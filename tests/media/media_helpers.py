"""A scripted TURN client for the core tests: builds requests, reads answers (no sockets)."""

from __future__ import annotations

import ipaddress
import itertools
from typing import Any

from simulator.media import stun
from simulator.media.stun import Message, MessageClass, Method
from simulator.media.turn import (
    Action,
    ListenerId,
    OpenRelay,
    PeerPolicy,
    RelayTo,
    SendTo,
    TurnConfig,
    TurnServer,
)

UDP = ListenerId("udp", "127.51.100.11", 3478)
TCP = ListenerId("tcp", "127.51.100.11", 3478)
CLIENT = ("127.0.113.40", 40000)
PEER = ("127.0.113.50", 5004)
REALM = "contoso.lab"
T0 = 1_800_000_000.0

_tids = itertools.count(1)


def tid() -> bytes:
    return next(_tids).to_bytes(12, "big")


def config(**kwargs: Any) -> TurnConfig:
    base: dict[str, Any] = {
        "relay_address": "127.51.100.11",
        "realm": REALM,
        "users": {"alice": "alice-pw", "bob": "bob-pw"},
        "shared_secret": b"s3cret",
        # the internet zone of the local runner: peers there may be relayed to
        "policy": PeerPolicy(lab_zones=((ipaddress.IPv4Network("127.0.113.0/24"), "internet"),)),
    }
    base.update(kwargs)
    return TurnConfig(**base)


def request(method: int, *attrs: tuple[str, Any]) -> Message:
    return Message(method, MessageClass.REQUEST, tid(), list(attrs))


def replies(actions: list[Action]) -> list[Message]:
    return [stun.parse(a.data) for a in actions if isinstance(a, SendTo) and a.data[0] < 0x40]


def only_reply(actions: list[Action]) -> Message:
    (reply,) = replies(actions)
    return reply


def error_code(message: Message) -> int | None:
    value = message.get("ERROR-CODE")
    return None if value is None else int(value[0])


class Client:
    """One TURN client (a 5-tuple) with long-term credentials, driving a TurnServer."""

    def __init__(
        self,
        server: TurnServer,
        user: str = "alice",
        password: str = "alice-pw",
        *,
        address: tuple[str, int] = CLIENT,
        listener: ListenerId = UDP,
    ) -> None:
        self.server = server
        self.user = user
        self.password = password
        self.address = address
        self.listener = listener
        self.nonce: bytes | None = None
        self.key = stun.long_term_key(user, REALM, password)

    def send(self, data: bytes, now: float = T0) -> list[Action]:
        return self.server.receive(data, self.address, self.listener, now)

    def signed(self, message: Message) -> bytes:
        message.attributes += [("USERNAME", self.user), ("REALM", REALM), ("NONCE", self.nonce)]
        return stun.encode(message, integrity_key=self.key)

    def ask(self, message: Message, now: float = T0) -> list[Action]:
        """Send ``message`` with credentials, fetching a nonce first if we have none."""
        if self.nonce is None:
            challenge = only_reply(self.send(stun.encode(message), now))
            assert error_code(challenge) == 401
            self.nonce = challenge.get("NONCE")
            message = Message(message.method, message.message_class, tid(), message.attributes)
        return self.send(self.signed(message), now)

    def allocate(self, now: float = T0, *attrs: tuple[str, Any]) -> Message:
        """Allocate (UDP unless told), confirm the relay bind, return the success response."""
        attrs = attrs or (("REQUESTED-TRANSPORT", 17),)
        actions = self.ask(request(Method.ALLOCATE, *attrs), now)
        opens = [a for a in actions if isinstance(a, OpenRelay)]
        if not opens:
            return only_reply(actions)
        self.relay = opens[0].relay
        return only_reply(self.server.relay_opened(self.relay, now))

    def permit(self, peer: tuple[str, int] = PEER, now: float = T0) -> Message:
        return only_reply(
            self.ask(request(Method.CREATE_PERMISSION, ("XOR-PEER-ADDRESS", peer)), now)
        )

    def bind(self, channel: int, peer: tuple[str, int] = PEER, now: float = T0) -> Message:
        return only_reply(
            self.ask(
                request(
                    Method.CHANNEL_BIND, ("CHANNEL-NUMBER", channel), ("XOR-PEER-ADDRESS", peer)
                ),
                now,
            )
        )


def relayed(actions: list[Action]) -> list[RelayTo]:
    return [a for a in actions if isinstance(a, RelayTo)]
