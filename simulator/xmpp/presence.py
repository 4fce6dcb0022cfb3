"""Sans-IO server-side presence (:rfc:`6121` sections 3 and 4) for the jabber.lab emulator.

:class:`PresenceServer` keeps each local user's roster (subscription state per contact) and the
last presence of each connected resource, and turns the presence stanzas a user sends, or that
arrive for a user, into the stanzas the server must route. It never touches a socket: the
service routes what it returns (to local resources or over S2S).

What it does:

- subscription requests and answers both ways (``subscribe``, ``subscribed``, ``unsubscribe``,
  ``unsubscribed``), stamped with the user's bare JID on the way out (section 3.1.2), with the
  roster updated on both sides (``none``/``to``/``from``/``both``, "ask" pending-out, pending-in);
  a ``subscribe`` from a contact already approved is answered ``subscribed`` by the server
  (section 3.1.3); after an approval the user's current presence goes to the new subscriber
  (section 3.1.5);
- initial presence (section 4.2): broadcast to the contacts subscribed to the user (``from``,
  ``both``), probes to the contacts the user is subscribed to (``to``, ``both``), pending
  requests delivered; presence updates and ``unavailable`` broadcast likewise (sections 4.4,
  4.5), also when a resource goes away without one;
- probes (section 4.3): answered with the last presence of each resource, or ``unavailable``,
  to a contact subscribed to the user; ignored otherwise;
- presence for a user with no connected resource is dropped, never bounced (section 4.3.2).

Not implemented: roster pushes and roster storage across restarts, pre-approval, directed
presence bookkeeping, presence priorities.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from simulator.xmpp.s2s import bare_jid, domain_of
from simulator.xmpp.stream import NS_SERVER, element, qname

SUBSCRIPTION_TYPES = frozenset({"subscribe", "subscribed", "unsubscribe", "unsubscribed"})


@dataclass
class RosterItem:
    """One contact of a user's roster."""

    to: bool = False
    """The user receives the contact's presence (subscription ``to``/``both``)."""
    from_: bool = False
    """The contact receives the user's presence (subscription ``from``/``both``)."""
    ask: bool = False
    """The user asked to subscribe and awaits the answer (pending-out)."""
    pending_in: bool = False
    """The contact asked to subscribe and awaits the user's answer."""

    @property
    def subscription(self) -> str:
        return {(False, False): "none", (True, False): "to", (False, True): "from"}.get(
            (self.to, self.from_), "both"
        )


@dataclass
class _User:
    roster: dict[str, RosterItem] = field(default_factory=dict)
    online: dict[str, ET.Element | None] = field(default_factory=dict)
    """Connected full JIDs -> their last broadcast presence (None before initial presence)."""
    requests: dict[str, ET.Element] = field(default_factory=dict)
    """Pending subscription requests by contact, delivered when the user comes online."""


def _presence(from_: str, to: str, kind: str | None = None) -> ET.Element:
    attrs = {"from": from_, "to": to}
    if kind is not None:
        attrs["type"] = kind
    return element(qname(NS_SERVER, "presence"), attrs)


def _copy(stanza: ET.Element, from_: str, to: str) -> ET.Element:
    out = ET.Element(stanza.tag, {**stanza.attrib, "from": from_, "to": to})
    out.text = stanza.text
    out.extend(list(stanza))
    return out


class PresenceServer:
    """Rosters and presence of the users of ``domains`` (stanzas in ``jabber:server``)."""

    def __init__(self, domains: frozenset[str]) -> None:
        self.domains = domains
        self.users: dict[str, _User] = {}

    def _user(self, bare: str) -> _User:
        return self.users.setdefault(bare.lower(), _User())

    def item(self, user: str, contact: str) -> RosterItem:
        """``user``'s roster entry for ``contact`` (created empty)."""
        return self._user(user).roster.setdefault(bare_jid(contact).lower(), RosterItem())

    def is_local(self, jid: str | None) -> bool:
        return domain_of(jid) in self.domains and "@" in (jid or "")

    # ------------------------------------------------------------------ resources
    def connected(self, full_jid: str) -> None:
        """A resource bound (no presence yet: it becomes available with its initial one)."""
        self._user(bare_jid(full_jid)).online.setdefault(full_jid, None)

    def disconnected(self, full_jid: str) -> list[ET.Element]:
        """A resource went away: ``unavailable`` to the subscribers if it was available."""
        user = self._user(bare_jid(full_jid))
        last = user.online.pop(full_jid, None)
        if last is None or last.get("type") == "unavailable":
            return []
        return self._broadcast(full_jid, _presence(full_jid, "", "unavailable"))

    # ------------------------------------------------------------------ from a local user
    def from_user(self, full_jid: str, stanza: ET.Element) -> list[ET.Element]:
        """A presence stanza a connected user sent (``from`` already its full JID)."""
        kind = stanza.get("type")
        to = stanza.get("to")
        bare = bare_jid(full_jid)
        if kind in SUBSCRIPTION_TYPES and to:
            return self._user_subscription(bare, bare_jid(to), kind or "", stanza)
        if to:  # directed presence: routed as is
            return [stanza]
        if kind not in (None, "unavailable"):
            return []
        user = self._user(bare)
        first = user.online.get(full_jid) is None and kind is None
        user.online[full_jid] = stanza
        out = self._broadcast(full_jid, stanza)
        if first:  # initial presence: probes, and the requests that waited
            out += [
                _presence(bare, contact, "probe")
                for contact, item in user.roster.items()
                if item.to
            ]
            out += [_copy(req, req.get("from") or "", full_jid) for req in user.requests.values()]
        return out

    def _broadcast(self, full_jid: str, stanza: ET.Element) -> list[ET.Element]:
        user = self._user(bare_jid(full_jid))
        return [
            _copy(stanza, full_jid, contact) for contact, item in user.roster.items() if item.from_
        ]

    def _user_subscription(
        self, bare: str, contact: str, kind: str, stanza: ET.Element
    ) -> list[ET.Element]:
        item = self.item(bare, contact)
        out = [_presence(bare, contact, kind)]
        if kind == "subscribe":
            item.ask = not item.to
        elif kind == "subscribed":
            item.from_, item.pending_in = True, False
            self._user(bare).requests.pop(contact, None)
            out += self.current(bare, contact)  # section 3.1.5
        elif kind == "unsubscribe":
            item.to = item.ask = False
        else:  # unsubscribed: the contact no longer sees us
            was = item.from_
            item.from_, item.pending_in = False, False
            self._user(bare).requests.pop(contact, None)
            if was:
                out += [_presence(full, contact, "unavailable") for full in self._available(bare)]
        return out

    def _available(self, bare: str) -> list[str]:
        user = self._user(bare)
        return [
            full
            for full, last in user.online.items()
            if last is not None and last.get("type") != "unavailable"
        ]

    def current(self, bare: str, to: str) -> list[ET.Element]:
        """``bare``'s presence as ``to`` should see it now: each available resource's last
        presence, or one ``unavailable``."""
        user = self._user(bare)
        available = self._available(bare)
        if not available:
            return [_presence(bare, to, "unavailable")]
        return [_copy(user.online[full] or _presence(full, to), full, to) for full in available]

    # ------------------------------------------------------------------ for a local user
    def for_user(self, stanza: ET.Element) -> tuple[list[ET.Element], list[ET.Element]]:
        """A presence stanza addressed to a local user (from a contact, local or remote).

        Returns (to deliver to the user's resources, to route elsewhere).
        """
        kind = stanza.get("type")
        bare = bare_jid(stanza.get("to") or "")
        contact = bare_jid(stanza.get("from") or "")
        user = self._user(bare)
        item = self.item(bare, contact)
        if kind == "probe":
            return [], (self.current(bare, contact) if item.from_ else [])
        if kind == "subscribe":
            if item.from_:  # already approved: the server answers (section 3.1.3)
                return [], [_presence(bare, contact, "subscribed"), *self.current(bare, contact)]
            item.pending_in = True
            user.requests[contact] = stanza
        elif kind == "subscribed":
            if not item.ask and item.to:
                return [], []
            item.to, item.ask = True, False
        elif kind == "unsubscribe":
            item.from_, item.pending_in = False, False
            user.requests.pop(contact, None)
        elif kind == "unsubscribed":
            item.to = item.ask = False
        if not user.online:
            return [], []  # nobody to tell; requests wait for the user (section 3.1.3)
        return [stanza], []


__all__ = ["SUBSCRIPTION_TYPES", "PresenceServer", "RosterItem"]
