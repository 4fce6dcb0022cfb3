"""The core tests' TURN client: the package's client core wired to the server core in memory."""

from __future__ import annotations

import ipaddress
import itertools
from typing import Any

from simulator.media import stun
from simulator.media.actions import Action, ListenerId, OpenRelay, RelayTo, SendTo
from simulator.media.auth import LongTermCredentials
from simulator.media.client import ClientConfig, TurnClient
from simulator.media.config import TurnConfig
from simulator.media.events import ClientEvent, TransactionAnswered
from simulator.media.policy import PeerPolicy
from simulator.media.stun import Message, MessageClass, Method
from simulator.media.turn import TurnServer

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
        "policy": PeerPolicy(allowed=(ipaddress.IPv4Network("127.0.113.0/24"),)),
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
    """One TURN client (a 5-tuple) driving a TurnServer in memory: the package's client core
    (:class:`simulator.media.client.TurnClient`) wired to the server core, no sockets.

    :meth:`ask` sends a request through the client core (which answers a 401/438 challenge by
    itself, as every client does) and returns the server's actions of the last exchange; the
    client core's answers are in :attr:`answers`. :meth:`send` and :meth:`signed` are for raw,
    hand-made messages.
    """

    def __init__(
        self,
        server: TurnServer,
        user: str = "alice",
        password: str = "alice-pw",
        *,
        address: tuple[str, int] = CLIENT,
        listener: ListenerId = UDP,
        credentials: LongTermCredentials | None = None,
    ) -> None:
        self.server = server
        self.user = user
        self.address = address
        self.listener = listener
        self.creds = credentials or LongTermCredentials(user, password)
        self.core = TurnClient(
            ClientConfig(stream=listener.stream), self.creds, transaction_ids=tid
        )
        self.answers: list[TransactionAnswered] = []
        self.received: list[ClientEvent] = []
        """The client core's other events (data from peers ...)."""
        self.relay: int | None = None

    @property
    def key(self) -> bytes:
        assert self.creds.key is not None, "no challenge answered yet"
        return self.creds.key

    @property
    def nonce(self) -> bytes | None:
        return self.creds.nonce

    def use_nonce(self, nonce: bytes) -> None:
        """Sign the next requests with ``nonce`` (as if a server had sent it)."""
        self.creds.learn(
            Message(0, MessageClass.ERROR, tid(), [("REALM", REALM), ("NONCE", nonce)])
        )

    def send(self, data: bytes, now: float = T0) -> list[Action]:
        return self.server.receive(data, self.address, self.listener, now)

    def signed(self, message: Message) -> bytes:
        """``message`` with our credentials and MESSAGE-INTEGRITY (a challenge must have come)."""
        message.attributes += self.creds.attributes()
        return stun.encode(message, integrity_key=self.key)

    def deliver(self, actions: list[Action], now: float = T0) -> None:
        """Hand the client core what the server sent us."""
        for action in actions:
            if isinstance(action, SendTo) and action.client == self.address:
                if self.listener.stream:
                    self.core.receive_data(action.data, now)
                else:
                    self.core.receive_datagram(action.data, now)
        while (event := self.core.next_event()) is not None:
            if isinstance(event, TransactionAnswered):
                self.answers.append(event)
            else:
                self.received.append(event)

    def ask(self, message: Message, now: float = T0) -> list[Action]:
        """Send ``message``'s method and attributes through the client core; the server's actions
        of the last exchange (after a credentials challenge, those of the retry)."""
        self.core.request(message.method, message.attributes, now)
        actions: list[Action] = []
        while out := self.core.data_to_send():
            actions = [a for data in out for a in self.send(data, now)]
            self.deliver(actions, now)
        return actions

    def allocate(self, now: float = T0, *attrs: tuple[str, Any]) -> Message:
        """Allocate (UDP unless told), confirm the relay bind, return the final answer."""
        attrs = attrs or (("REQUESTED-TRANSPORT", 17),)
        actions = self.ask(request(Method.ALLOCATE, *attrs), now)
        opens = [a for a in actions if isinstance(a, OpenRelay)]
        if not opens:
            return only_reply(actions)
        self.relay = opens[0].relay
        answer = self.server.relay_opened(self.relay, now)
        self.deliver(answer, now)
        return only_reply(answer)

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
