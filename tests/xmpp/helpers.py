"""Wire two sans-IO sessions together in memory (as h11's ConnectionPair)."""

from __future__ import annotations

from simulator.certificate import PeerCertificate
from simulator.xmpp.events import (
    DialbackVerifyNeeded,
    TlsRequested,
    XmppEvent,
)
from simulator.xmpp.s2s import Session


def cert(*names: str) -> PeerCertificate:
    return PeerCertificate(
        names[0] if names else None, tuple(names), "Lab Public Root CA", True, True
    )


class Pair:
    """An initiating and a receiving session, TLS simulated by handing each the other's
    certificate, dialback verification answered by ``verifier`` (a receiving-side session of the
    originating domain's authoritative server, or None)."""

    def __init__(
        self,
        initiator: Session,
        receiver: Session,
        *,
        initiator_cert: PeerCertificate | None = None,
        receiver_cert: PeerCertificate | None = None,
        authoritative: Session | None = None,
    ) -> None:
        self.a = initiator
        self.b = receiver
        self.a_cert = initiator_cert
        self.b_cert = receiver_cert
        self.authoritative = authoritative
        self.a_events: list[XmppEvent] = []
        self.b_events: list[XmppEvent] = []
        self.now = 0.0

    def run(self, rounds: int = 20) -> None:
        for _ in range(rounds):
            moved = False
            data = self.a.data_to_send()
            if data:
                moved = True
                self.b.receive_data(data, self.now)
            data = self.b.data_to_send()
            if data:
                moved = True
                self.a.receive_data(data, self.now)
            moved |= self._events(self.a, self.a_events, self.b_cert)
            moved |= self._events(self.b, self.b_events, self.a_cert)
            if not moved:
                return

    def _events(
        self, session: Session, sink: list[XmppEvent], peer: PeerCertificate | None
    ) -> bool:
        moved = False
        while (event := session.next_event()) is not None:
            moved = True
            sink.append(event)
            if isinstance(event, TlsRequested):
                session.tls_established(peer, self.now)
            elif isinstance(event, DialbackVerifyNeeded):
                session.dialback_verified(event.originating, event.receiving, self._verify(event))
        return moved

    def _verify(self, event: DialbackVerifyNeeded) -> bool:
        from simulator.xmpp.s2s import dialback_key

        if self.authoritative is None:
            return False
        expected = dialback_key(
            self.authoritative.config.dialback_secret,
            event.receiving,
            event.originating,
            event.stream_id,
        )
        return expected == event.key
