"""NTLM over SIP as Lync authenticates its users ([MS-SIPAE]), server side, sans-IO.

The Front End emulator challenges a REGISTER with ``WWW-Authenticate: NTLM realm="SIP
Communications Service", targetname="<fqdn>", version=4`` ([MS-SIPAE] section 3.3.5.1). The
client answers with ``gssapi-data=""`` (NTLM over SIP is *connectionless* NTLM: the client sends
no NEGOTIATE_MESSAGE, [MS-NLMP] section 3.1.5.2), the server sends its CHALLENGE_MESSAGE in a
second 401 with an ``opaque`` naming the security association (SA) being built, and the client
completes it with its AUTHENTICATE_MESSAGE ([MS-SIPAE] section 3.3.5.2, example in section 4.1).
From then on both sides sign every message: the client in ``Authorization: NTLM ... crand=,
cnum=, response=``, the server in ``Authentication-Info: NTLM rspauth=, srand=, snum=``, each
over the buffer [MS-SIPAE] section 3.2.5.2 builds from the message (version 4: scheme, rand, num,
realm, targetname, Call-ID, CSeq number and method, From URI and tag, To URI and tag, the
P-Asserted-Identity sip and tel URIs, Expires, and the status code of a response, each in angle
brackets).

The NTLM itself is pyspnego's ([MS-NLMP]): message parsing and packing, NTOWFv2, the NTLMv2
response, the key exchange, SIGNKEY/SEALKEY and the MAC. What is composed here is what
connectionless mode adds and pyspnego's connection-oriented contexts do not do: the RC4 handle
is re-initialised for each message with MD5(SealingKey, SeqNum) and the sequence number is the
application's ([MS-NLMP] sections 3.4.3 and 3.4.4). The sequence number Lync applications
supply is 100 on both sides (a Front End's ``rspauth`` ends in ``64000000``), and SIPE verifies
with it, so it is :data:`SEQUENCE` here. pyspnego's own acceptor is not used because it reads
credentials from a file named by a process-wide environment variable and expects a
NEGOTIATE_MESSAGE first; the lab keeps its generated passwords in memory.

Not implemented: Kerberos and TLS-DSK, versions 2 and 3 of the signature buffer, NTLMv1
responses (refused), SA expiry (Lync re-authenticates every eight hours; the lab does not).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import struct
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from sipmessage import Request, Response
from spnego._ntlm_raw.crypto import (
    compute_response_v2,
    md5,
    ntowfv1,
    ntowfv2,
    rc4init,
    rc4k,
    sealkey,
    signkey,
)
from spnego._ntlm_raw.messages import (
    Authenticate,
    AvId,
    Challenge,
    FileTime,
    NegotiateFlags,
    NTClientChallengeV2,
    TargetInfo,
    Version,
)
from spnego._ntlm_raw.security import sign as ntlm_mac

REALM = "SIP Communications Service"
"""The realm a Lync server announces ([MS-SIPAE] section 4.1)."""
VERSION = 4
"""The version of [MS-SIPAE] implemented (section 3.3.5.1: 3 or 4)."""
SEQUENCE = 100
"""The NTLM sequence number Lync applications supply for every signature (connectionless)."""
MAX_PENDING = 1024
"""Handshakes waiting for their AUTHENTICATE_MESSAGE (oldest dropped first)."""

#: What the server offers in its CHALLENGE_MESSAGE: the connectionless flags SIPE insists on
#: (SIGN, DATAGRAM, IDENTIFY, KEY_EXCH) with NTLMv2 session security and 128-bit keys.
CHALLENGE_FLAGS = (
    NegotiateFlags.unicode
    | NegotiateFlags.request_target
    | NegotiateFlags.sign
    | NegotiateFlags.datagram
    | NegotiateFlags.ntlm
    | NegotiateFlags.always_sign
    | NegotiateFlags.target_type_server
    | NegotiateFlags.extended_session_security
    | NegotiateFlags.identity
    | NegotiateFlags.target_info
    | NegotiateFlags.version
    | NegotiateFlags.key_128
    | NegotiateFlags.key_exch
)


class NtlmError(Exception):
    """The client's NTLM message or signature is not acceptable; ``str()`` says why."""


def auth_params(value: str) -> tuple[str, dict[str, str]]:
    """``(scheme, {name: value})`` of an Authorization-style header value (quotes removed)."""
    scheme, _, rest = value.strip().partition(" ")
    found: dict[str, str] = {}
    i, n = 0, len(rest)
    while i < n:
        while i < n and rest[i] in " ,\t":
            i += 1
        eq = rest.find("=", i)
        if eq < 0:
            break
        name = rest[i:eq].strip().lower()
        i = eq + 1
        if i < n and rest[i] == '"':
            end = rest.find('"', i + 1)
            if end < 0:
                raise NtlmError("unterminated quoted value in the authentication header")
            found[name] = rest[i + 1 : end]
            i = end + 1
        else:
            end = rest.find(",", i)
            end = n if end < 0 else end
            found[name] = rest[i:end].strip()
            i = end
    return scheme, found


def _between(text: str, start: str, end: str) -> str:
    at = text.find(start)
    if at < 0:
        return ""
    at += len(start)
    stop = text.find(end, at)
    return text[at:] if stop < 0 else text[at:stop]


def _tag(value: str) -> str:
    return _between(value, ";tag=", ";")


def _identity_uris(value: str) -> tuple[str, str]:
    """The sip and tel URIs of a P-Asserted-Identity value (either may be empty)."""
    sip = tel = ""
    for part in value.split(","):
        uri = _between(part, "<", ">") or part.strip()
        if uri.lower().startswith(("sip:", "sips:")) and not sip:
            sip = uri
        elif uri.lower().startswith("tel:") and not tel:
            tel = uri
    return sip, tel


def signature_buffer(
    message: Request | Response, *, scheme: str, rand: str, num: str, realm: str, targetname: str
) -> bytes:
    """The buffer [MS-SIPAE] section 3.2.5.2 signs for ``message`` (version 4).

    Values are taken as they appear in the message (case kept, [MS-SIPAE] 3.2.5.2).
    """
    h = message.headers
    cseq_num, _, cseq_method = (h.get("CSeq") or "").strip().partition(" ")
    from_value = h.get("From") or ""
    to_value = h.get("To") or ""
    identity = h.get("P-Asserted-Identity") or h.get("P-Preferred-Identity") or ""
    pai_sip, pai_tel = _identity_uris(identity) if identity else ("", "")
    fields = [
        scheme,
        rand,
        num,
        realm,
        targetname,
        h.get("Call-ID") or "",
        cseq_num,
        cseq_method.strip(),
        _between(from_value, "<", ">"),
        _tag(from_value),
        _between(to_value, "<", ">"),
        _tag(to_value),
        pai_sip,
        pai_tel,
        h.get("Expires") or "",
    ]
    text = "".join(f"<{v}>" for v in fields)
    if isinstance(message, Response):
        text += f"<{message.code}>"
    return text.encode("utf-8")


def datagram_mac(flags: int, sign_key: bytes, seal_key: bytes, data: bytes) -> bytes:
    """The NTLM signature of ``data`` in connectionless mode ([MS-NLMP] 3.4.4 with 3.4.3:
    the RC4 handle re-initialised with MD5(SealingKey, SeqNum); SeqNum = :data:`SEQUENCE`)."""
    seq = struct.pack("<I", SEQUENCE)
    handle = rc4init(md5(seal_key + seq) if flags & NegotiateFlags.datagram else seal_key)
    return ntlm_mac(flags, handle, sign_key, SEQUENCE, data)


@dataclass
class SecurityAssociation:
    """An established NTLM SA between the server and one client endpoint ([MS-SIPAE] 3.1)."""

    user: str
    """The user name the client authenticated as (``alice@contoso.lab``, ``CONTOSO\\alice``)."""
    opaque: str
    realm: str
    targetname: str
    flags: int
    session_key: bytes
    snum: int = 0
    random: Callable[[int], bytes] = field(default=os.urandom, repr=False)

    def _mac(self, message: Request | Response, usage: str, rand: str, num: str) -> bytes:
        """The MAC of ``message``'s signature buffer under the ``usage`` side's session keys."""
        data = signature_buffer(
            message,
            scheme="NTLM",
            rand=rand,
            num=num,
            realm=self.realm,
            targetname=self.targetname,
        )
        sign = signkey(self.flags, self.session_key, usage)
        seal = sealkey(self.flags, self.session_key, usage)
        return datagram_mac(self.flags, sign, seal, data)

    def client_signature(self, message: Request | Response, crand: str, cnum: str) -> bytes:
        """The signature the client must have put on ``message`` (for tests and checks)."""
        return self._mac(message, "initiate", crand, cnum)

    def verify(self, message: Request, params: dict[str, str]) -> None:
        """Check the client's ``response`` on ``message``; :class:`NtlmError` if it is wrong."""
        crand, cnum = params.get("crand", ""), params.get("cnum", "")
        try:
            given = binascii.unhexlify(params.get("response", ""))
        except (binascii.Error, ValueError):
            raise NtlmError("the message signature is not hexadecimal") from None
        if not hmac.compare_digest(given, self.client_signature(message, crand, cnum)):
            raise NtlmError("the message signature does not verify")

    def sign(self, message: Request | Response) -> str:
        """The ``Authentication-Info`` value that signs ``message`` ([MS-SIPAE] 3.3.5)."""
        self.snum += 1
        srand = self.random(4).hex().upper()
        snum = str(self.snum)
        rspauth = self._mac(message, "accept", srand, snum).hex().upper()
        return (
            f'NTLM rspauth="{rspauth}", srand="{srand}", snum="{snum}", '
            f'opaque="{self.opaque}", qop="auth", targetname="{self.targetname}", '
            f'realm="{self.realm}"'
        )


@dataclass
class Challenged:
    """The client must answer this second 401 (``WWW-Authenticate`` value)."""

    header: str
    challenge: bytes
    """The CHALLENGE_MESSAGE (for the ladder and tests)."""


@dataclass
class Established:
    """The AUTHENTICATE_MESSAGE verified: ``sa`` signs from now on."""

    sa: SecurityAssociation
    authenticate: bytes


@dataclass
class _Pending:
    challenge: Challenge
    packed: bytes


class NtlmServer:
    """The server side of [MS-SIPAE] NTLM for one realm and target (a Front End pool)."""

    def __init__(
        self,
        *,
        targetname: str,
        users: dict[str, str],
        domain: str,
        realm: str = REALM,
        random: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.targetname = targetname
        self.realm = realm
        self.domain = domain
        self.netbios = domain.split(".", 1)[0].upper()
        self.random = random
        self._nt_hashes = {name.lower(): ntowfv1(password) for name, password in users.items()}
        self._pending: OrderedDict[str, _Pending] = OrderedDict()

    def offer(self) -> str:
        """The first ``WWW-Authenticate`` value ([MS-SIPAE] 3.3.5.1)."""
        return f'NTLM realm="{self.realm}", targetname="{self.targetname}", version={VERSION}'

    def matches(self, params: dict[str, str]) -> bool:
        """True when an authorization header is for this server's realm and target."""
        return params.get("realm") == self.realm and params.get("targetname") == self.targetname

    def _user(self, name: str, domain: str) -> str | None:
        """The lab user (lower case) an NTLM user name and domain stand for, if any."""
        name = name.lower()
        local, _, at_domain = name.partition("@")
        if at_domain:
            return local if at_domain == self.domain.lower() else None
        if domain and domain.upper() not in (self.netbios, self.domain.upper()):
            return None
        return name

    def challenge(self, now_filetime: FileTime | None = None) -> Challenged:
        """Start an SA: the CHALLENGE_MESSAGE and the 401 value carrying it."""
        opaque = self.random(4).hex().upper()
        info = TargetInfo()
        info[AvId.nb_domain_name] = self.netbios
        info[AvId.nb_computer_name] = self.targetname.split(".", 1)[0].upper()
        info[AvId.dns_domain_name] = self.domain
        info[AvId.dns_computer_name] = self.targetname
        info[AvId.dns_tree_name] = self.domain
        info[AvId.timestamp] = now_filetime or FileTime.now()
        challenge = Challenge(
            CHALLENGE_FLAGS,
            self.random(8),
            target_info=info,
            version=Version(6, 3, 9600, 15),
        )
        return self._register(opaque, challenge)

    def _register(self, opaque: str, challenge: Challenge) -> Challenged:
        packed = challenge.pack()
        self._pending[opaque] = _Pending(challenge, packed)
        while len(self._pending) > MAX_PENDING:
            self._pending.popitem(last=False)
        gssapi = base64.b64encode(packed).decode()
        header = (
            f'NTLM opaque="{opaque}", gssapi-data="{gssapi}", '
            f'targetname="{self.targetname}", realm="{self.realm}", version={VERSION}'
        )
        return Challenged(header, packed)

    def authenticate(self, params: dict[str, str]) -> Established:
        """Verify the AUTHENTICATE_MESSAGE in ``params['gssapi-data']`` for ``params['opaque']``."""
        opaque = params.get("opaque", "")
        pending = self._pending.pop(opaque, None)
        if pending is None:
            raise NtlmError("no NTLM handshake is waiting for this opaque value")
        try:
            token = base64.b64decode(params.get("gssapi-data", ""), validate=True)
            auth = Authenticate.unpack(token)
        except Exception:
            raise NtlmError("the AUTHENTICATE_MESSAGE does not parse") from None
        user = self._user(auth.user_name or "", auth.domain_name or "")
        nt_hash = self._nt_hashes.get(user or "")
        if user is None or nt_hash is None:
            raise NtlmError(f"unknown user {auth.user_name!r}")
        nt_response = auth.nt_challenge_response or b""
        if len(nt_response) <= 24:
            raise NtlmError("NTLMv1 responses are not accepted")
        try:
            client = NTClientChallengeV2.unpack(nt_response[16:])
        except Exception:
            raise NtlmError("the NTLMv2 response does not parse") from None
        response_key = ntowfv2(auth.user_name or "", nt_hash, auth.domain_name)
        expected, _, key_exchange_key = compute_response_v2(
            response_key,
            pending.challenge.server_challenge,
            client.challenge_from_client,
            client.time_stamp,
            client.av_pairs,
        )
        if not hmac.compare_digest(expected[:16], nt_response[:16]):
            raise NtlmError(f"wrong password for {auth.user_name!r}")
        flags = int(auth.flags)
        if flags & NegotiateFlags.key_exch:
            session_key = rc4k(key_exchange_key, auth.encrypted_random_session_key or b"")
        else:
            session_key = key_exchange_key
        sa = SecurityAssociation(
            user=auth.user_name or "",
            opaque=opaque,
            realm=self.realm,
            targetname=self.targetname,
            flags=flags,
            session_key=session_key,
            random=self.random,
        )
        return Established(sa, token)


__all__ = [
    "REALM",
    "Challenged",
    "Established",
    "NtlmError",
    "NtlmServer",
    "SecurityAssociation",
    "auth_params",
    "signature_buffer",
]
