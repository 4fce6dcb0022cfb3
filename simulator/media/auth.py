"""Long-term credentials (RFC 8489 section 9.2), both ends: the seam for a second dialect.

Server side, :class:`LongTermAuthenticator` challenges (401 with REALM and a NONCE it signs, so
it keeps no state per client), recognises stale nonces (438) and checks MESSAGE-INTEGRITY with
the user's key. Users are static (``username -> password``) and/or time-limited: username
``"<expiry>:<user>"``, password ``base64(HMAC-SHA1(secret, username))``, which is coturn's
``use-auth-secret`` scheme and what the Front End's MRAS hands out (:mod:`simulator.media.mras`).

Client side, :class:`LongTermCredentials` holds a username and password, learns REALM and NONCE
from a challenge and signs requests with the derived key.

The server core talks to an :class:`Authenticator` and the client core to a
:class:`ClientCredentials`; the [MS-TURN] dialect brings its own implementations of both.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
from dataclasses import dataclass
from typing import Any, Protocol

from simulator.media import stun
from simulator.media.errors import Rejection
from simulator.media.stun import Message

NONCE_LENGTH = 16
"""Characters of the NONCEs we issue."""


@dataclass(frozen=True)
class Credential:
    """Who sent an authenticated request, and the key that signs our answers to it."""

    username: str
    """USERNAME as sent (the allocation's owner: later requests must carry the same)."""
    key: bytes
    """The long-term key (MESSAGE-INTEGRITY of the answers)."""
    user: str
    """Whose allocation quota this is: the user, without a time-limited username's expiry."""


class Authenticator(Protocol):
    """Server side of an authentication scheme."""

    def challenge(self, now: float) -> list[tuple[str, Any]]:
        """The attributes of a 401 or 438 (REALM, a fresh NONCE)."""
        ...

    def authenticate(self, message: Message, now: float) -> Credential:
        """The sender of ``message``, or raise a :class:`Rejection` (400, 401, 438)."""
        ...


def parse_time_limited(username: str) -> tuple[int, str] | None:
    """(expiry, user) of a time-limited username ``"<expiry>:<user>"``; None when it is not one.

    The expiry is ASCII digits only: ``str.isdigit`` also takes superscripts, which ``int``
    refuses (an exception from one packet), and other scripts' digits, which ``int`` reads
    (``"١٩٠٠..."`` is 1900...): a username the MRAS never issued must not become a valid one.
    """
    stamp, sep, user = username.partition(":")
    if not sep or not 0 < len(stamp) <= 12 or not (stamp.isascii() and stamp.isdigit()):
        return None
    return int(stamp), user


def time_limited_password(secret: bytes, username: str) -> str:
    """base64(HMAC-SHA1(secret, username)): coturn's ``use-auth-secret`` REST credentials."""
    return base64.b64encode(hmac.new(secret, username.encode(), hashlib.sha1).digest()).decode()


def time_limited_credentials(
    secret: bytes, user: str, now: float, duration: int
) -> tuple[str, str]:
    """(username, password) valid for ``duration`` seconds from ``now``."""
    username = f"{int(now) + duration}:{user}"
    return username, time_limited_password(secret, username)


@dataclass(kw_only=True, eq=False)
class LongTermAuthenticator:
    """RFC 8489 section 9.2 long-term credentials with stateless, signed nonces."""

    realm: str
    """REALM of the challenges; a request naming another is refused."""
    users: dict[str, str]
    """Static users: username -> password."""
    shared_secret: bytes | None
    """Secret of the time-limited usernames (None: static users only)."""
    nonce_key: bytes
    """Key that signs the NONCEs."""
    nonce_lifetime: int
    """Seconds before a NONCE is stale (438)."""

    def challenge(self, now: float) -> list[tuple[str, Any]]:
        return [("REALM", self.realm), ("NONCE", self.nonce(now))]

    def nonce(self, now: float) -> bytes:
        """16 characters: the issue time and a MAC of it, base64url (RFC 8489 section 9.2: the
        server may put what it wants in a NONCE; short, because a 401 must stay small)."""
        stamp = struct.pack("!I", int(now) & 0xFFFFFFFF)
        mac = hmac.new(self.nonce_key, stamp, "sha1").digest()[:8]
        return base64.urlsafe_b64encode(stamp + mac)

    def nonce_state(self, nonce: bytes, now: float) -> str:
        """``fresh``, ``stale`` or ``invalid``."""
        try:
            raw = base64.urlsafe_b64decode(nonce) if len(nonce) == NONCE_LENGTH else b""
        except (ValueError, TypeError):
            return "invalid"
        if len(raw) != 12:
            return "invalid"
        good = hmac.new(self.nonce_key, raw[:4], "sha1").digest()[:8]
        if not hmac.compare_digest(good, raw[4:]):
            return "invalid"
        issued = struct.unpack("!I", raw[:4])[0]
        if now - issued > self.nonce_lifetime or issued > now + 60:
            return "stale"
        return "fresh"

    def user_of(self, username: str) -> str:
        """Whose quota an allocation of ``username`` counts against: a static user, or the
        user of a time-limited username ``<expiry>:<user>``."""
        if username in self.users:
            return username
        parsed = parse_time_limited(username)
        return parsed[1] if parsed is not None else username

    def password_for(self, username: str, now: float) -> str | None:
        """The password of ``username``: a static user, or a time-limited one not yet expired."""
        password = self.users.get(username)
        if password is not None:
            return password
        parsed = parse_time_limited(username)
        if self.shared_secret is None or parsed is None or parsed[0] < now:
            return None
        return time_limited_password(self.shared_secret, username)

    def authenticate(self, message: Message, now: float) -> Credential:
        if "MESSAGE-INTEGRITY" not in message:
            raise Rejection(401, "no credentials", attributes=self.challenge(now))
        username = message.get("USERNAME")
        nonce = message.get("NONCE")
        if username is None or nonce is None or message.get("REALM") is None:
            raise Rejection(400, "USERNAME, REALM or NONCE missing")
        state = self.nonce_state(nonce, now)
        if state == "stale":
            raise Rejection(438, "stale nonce", attributes=self.challenge(now))
        if state == "invalid" or message.get("REALM") != self.realm:
            raise Rejection(401, "invalid nonce or realm", attributes=self.challenge(now))
        password = self.password_for(username, now)
        key = stun.long_term_key(username, self.realm, password) if password is not None else b""
        if password is None or not message.check_integrity(key):
            raise Rejection(401, "wrong credentials", attributes=self.challenge(now))
        return Credential(username, key, self.user_of(username))


class MsTurnAuthenticator:
    """[MS-TURN]'s digest authentication of Allocate requests (sections 3.1.11 and 3.3): a 401
    with NONCE and REALM to a request without MESSAGE-INTEGRITY, then the long-term key over the
    *raw* username and password, MD5(username ":" realm ":" password).

    A Lync client holds the credentials the MRAS handed out base64-decoded (libnice's OC2007
    mode decodes both), so the password behind a time-limited username is the raw HMAC-SHA1
    digest, and a static user's is its password's UTF-8 bytes. Nonces, users and the shared
    secret are those of the RFC authenticator it wraps (one set of credentials, two dialects).
    """

    def __init__(self, inner: LongTermAuthenticator) -> None:
        self.inner = inner

    def challenge(self, now: float) -> list[tuple[str, Any]]:
        return self.inner.challenge(now)

    def raw_password(self, username: str, now: float) -> bytes | None:
        password = self.inner.password_for(username, now)
        if password is None:
            return None
        if username in self.inner.users:
            return password.encode()
        return base64.b64decode(password)

    def authenticate(self, message: Message, now: float) -> Credential:
        inner = self.inner
        if "MESSAGE-INTEGRITY" not in message:
            raise Rejection(401, "no credentials", attributes=self.challenge(now))
        username, nonce = message.get("USERNAME"), message.get("NONCE")
        realm = message.get("REALM")
        if username is None or nonce is None or realm is None:
            raise Rejection(400, "USERNAME, REALM or NONCE missing")
        state = inner.nonce_state(nonce, now)
        if state == "stale":
            raise Rejection(438, "stale nonce", attributes=self.challenge(now))
        if state == "invalid" or realm != inner.realm:
            raise Rejection(401, "invalid nonce or realm", attributes=self.challenge(now))
        password = self.raw_password(username, now)
        key = ms_long_term_key(username.encode(), realm, password or b"")
        if password is None or not message.check_integrity(key):
            raise Rejection(401, "wrong credentials", attributes=self.challenge(now))
        return Credential(username, key, inner.user_of(username))


def ms_long_term_key(username: bytes, realm: str, password: bytes) -> bytes:
    """MD5(username ":" realm ":" password) over raw bytes ([MS-TURN] section 3.1.11)."""
    return hashlib.md5(username + b":" + realm.encode() + b":" + password).digest()


# ------------------------------------------------------------------ client side


class ClientCredentials(Protocol):
    """Client side of an authentication scheme: what to add to a request and how to sign it."""

    username: str

    @property
    def key(self) -> bytes | None:
        """The MESSAGE-INTEGRITY key, None until a challenge told us the realm."""
        ...

    @property
    def realm(self) -> str | None: ...

    def attributes(self) -> list[tuple[str, Any]]:
        """USERNAME, REALM and NONCE for the next request (empty before a challenge)."""
        ...

    def learn(self, challenge: Message) -> bool:
        """Take REALM and NONCE from a 401/438; False if it carries none."""
        ...


class LongTermCredentials:
    """A username and password; REALM, NONCE and the key once a server challenged us.

    One instance may serve several connections to the same server (an RFC 6062 data connection
    signs its ConnectionBind with the control connection's credentials).
    """

    def __init__(self, username: str, password: str, realm: str | None = None) -> None:
        self.username = username
        self.password = password
        self._realm = realm
        self.nonce: bytes | None = None
        self._key: bytes | None = None

    @property
    def key(self) -> bytes | None:
        return self._key

    @property
    def realm(self) -> str | None:
        return self._realm

    def attributes(self) -> list[tuple[str, Any]]:
        if self._key is None or self._realm is None or self.nonce is None:
            return []
        return [("USERNAME", self.username), ("REALM", self._realm), ("NONCE", self.nonce)]

    def learn(self, challenge: Message) -> bool:
        realm, nonce = challenge.get("REALM"), challenge.get("NONCE")
        if realm is None or nonce is None:
            return False
        self._realm, self.nonce = realm, nonce
        self._key = stun.long_term_key(self.username, realm, self.password)
        return True


class MsTurnCredentials(LongTermCredentials):
    """[MS-TURN] client credentials: the MRAS's username and password as a Lync client holds
    them, base64-decoded (:meth:`from_mras`), the key MD5 over the raw bytes (section 3.1.11).
    For a static user the raw password is its UTF-8 bytes."""

    def __init__(self, username: str, password: bytes, realm: str | None = None) -> None:
        super().__init__(username, "", realm)
        self.raw_password = password

    @classmethod
    def from_mras(cls, username: str, password: str) -> MsTurnCredentials:
        """From the time-limited pair the MRAS hands out (its password is base64 already)."""
        return cls(username, base64.b64decode(password))

    def learn(self, challenge: Message) -> bool:
        realm, nonce = challenge.get("REALM"), challenge.get("NONCE")
        if realm is None or nonce is None:
            return False
        self._realm, self.nonce = realm, nonce
        self._key = ms_long_term_key(self.username.encode(), realm, self.raw_password)
        return True
