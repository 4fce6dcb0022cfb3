"""Who a domain server's users are: digest (RFC 3261 22.4) and [MS-SIPAE] NTLM with signing.

:class:`Authenticator` answers a REGISTER's credentials for :class:`DomainServer`. With NTLM
enabled (the Front End, as Lync authenticates external users), the 401 offers digest and NTLM
([MS-SIPAE] section 3.3.5.1: one challenge per protocol the server supports); the
lab's own user agents pick digest, a Lync-dialect client (SIPE) picks NTLM. Once an NTLM security
association (SA) is up, the server keeps it per endpoint (the From URI and its ``epid``,
[MS-SIPAE] section 3.3.5.2): it verifies the signature on every request that carries one and
signs every message it sends to that endpoint with ``Authentication-Info`` ([MS-SIPAE] 3.3.5;
SIPE drops final responses and requests that are not signed once it is authenticated).
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from email.utils import formatdate

from sipmessage import Request, Response

from simulator.sip import digest
from simulator.sip.build import params, remove_header, uri_of
from simulator.sip.ntlm import NtlmError, NtlmServer, SecurityAssociation, auth_params

log = logging.getLogger(__name__)

MAX_NONCES = 10000
MAX_SAS = 10000
AUTH_HEADERS = ("Authorization", "Proxy-Authorization")


def endpoint_of(value: str) -> tuple[str, str]:
    """``(aor, epid)`` of a From/To value: the URI without parameters, lower case."""
    return uri_of(value).split(";", 1)[0].lower(), params(value).get("epid") or ""


@dataclass
class Verdict:
    """What a REGISTER's credentials earned."""

    user: str | None = None
    """The user the credentials proved (lower case), or None."""
    challenge: list[tuple[str, str]] | None = None
    """Headers of the 401 to send instead (a fresh challenge, or NTLM's second leg)."""
    sa: SecurityAssociation | None = None
    """The NTLM SA the REGISTER completed or used."""
    reason: str = ""


class Authenticator:
    """Digest and, when ``ntlm`` is given, [MS-SIPAE] NTLM for one domain."""

    def __init__(self, domain: str, users: dict[str, str], ntlm: NtlmServer | None) -> None:
        self.domain = domain
        self.users = users
        self.ntlm = ntlm
        self.nonces: set[str] = set()
        self.sas: dict[str, SecurityAssociation] = {}
        """opaque -> SA."""
        self.endpoints: dict[tuple[str, str], str] = {}
        """(aor, epid) -> opaque of the endpoint's SA."""

    # ------------------------------------------------------------------ challenges
    def challenge(self) -> list[tuple[str, str]]:
        """The headers of a first 401: NTLM (when enabled), then digest, and the Date."""
        nonce = secrets.token_hex(12)
        self.nonces.add(nonce)
        if len(self.nonces) > MAX_NONCES:
            self.nonces.pop()
        # digest first: generic agents (SIPp) answer the first challenge; a Lync client looks
        # for its protocol among all of them
        headers = [
            ("Date", formatdate(usegmt=True)),
            ("WWW-Authenticate", digest.challenge(self.domain, nonce)),
        ]
        if self.ntlm is not None:
            headers.append(("WWW-Authenticate", self.ntlm.offer()))
        return headers

    def _ntlm_params(self, request: Request) -> dict[str, str] | None:
        if self.ntlm is None:
            return None
        for name in AUTH_HEADERS:
            for value in request.headers.getlist(name):
                try:
                    scheme, found = auth_params(value)
                except NtlmError:
                    continue
                if scheme.upper() == "NTLM" and self.ntlm.matches(found):
                    return found
        return None

    # ------------------------------------------------------------------ REGISTER
    def register(self, request: Request) -> Verdict:
        """Check a REGISTER's credentials ([MS-SIPAE] 3.3.5.1-3.3.5.2, RFC 3261 22.4)."""
        ntlm = self._ntlm_params(request)
        if ntlm is not None:
            return self._register_ntlm(request, ntlm)
        credentials = request.headers.get("Authorization")
        if credentials and credentials.lstrip().lower().startswith("digest"):
            who = digest.check(
                credentials,
                method="REGISTER",
                realm=self.domain,
                passwords=self.users,
                nonces=self.nonces,
            )
            if who is not None:
                return Verdict(user=who.lower())
            return Verdict(challenge=self.challenge(), reason="digest credentials do not match")
        return Verdict(challenge=self.challenge(), reason="no credentials")

    def _register_ntlm(self, request: Request, found: dict[str, str]) -> Verdict:
        assert self.ntlm is not None
        gssapi = found.get("gssapi-data")
        if gssapi == "" or (gssapi is None and "opaque" not in found):
            challenged = self.ntlm.challenge()
            headers = [("Date", formatdate(usegmt=True)), ("WWW-Authenticate", challenged.header)]
            return Verdict(challenge=headers, reason="NTLM: CHALLENGE_MESSAGE sent")
        try:
            if gssapi:
                sa = self.ntlm.authenticate(found).sa
                self._keep(sa)
            else:
                sa = self._sa_for(found)
            if "response" in found:
                sa.verify(request, found)
        except NtlmError as exc:
            log.info("NTLM refused: %s", exc)
            return Verdict(challenge=self.challenge(), reason=f"NTLM: {exc}")
        return Verdict(user=_lab_user(sa.user, self.domain), sa=sa)

    def _keep(self, sa: SecurityAssociation) -> None:
        self.sas[sa.opaque] = sa
        while len(self.sas) > MAX_SAS:
            self.sas.pop(next(iter(self.sas)))

    def _sa_for(self, found: dict[str, str]) -> SecurityAssociation:
        sa = self.sas.get(found.get("opaque", ""))
        if sa is None:
            raise NtlmError("no security association has this opaque value")
        return sa

    def bind(self, request: Request, sa: SecurityAssociation) -> None:
        """Remember ``sa`` as the SA of the REGISTER's endpoint (From URI and epid)."""
        self.endpoints[endpoint_of(request.headers["From"])] = sa.opaque

    def unbind(self, aor: str) -> None:
        """Forget the SAs of ``aor``'s endpoints (it signed out or its connection closed)."""
        for key in [k for k in self.endpoints if k[0] == aor]:
            self.sas.pop(self.endpoints.pop(key), None)

    # ------------------------------------------------------------------ other requests
    def check(self, request: Request) -> str | None:
        """Verify an NTLM-signed request; the reason it fails, or None (also when unsigned).

        The credentials meant for this server are removed, so they do not travel on.
        """
        found = self._ntlm_params(request)
        if found is None:
            return None
        try:
            self._sa_for(found).verify(request, found)
        except NtlmError as exc:
            return str(exc)
        for name in AUTH_HEADERS:
            remove_header(request, name)
        return None

    # ------------------------------------------------------------------ signing
    def sa_for_message(
        self, message: Request | Response, binding_sa: str | None = None
    ) -> SecurityAssociation | None:
        """The SA of the endpoint ``message`` goes to: a response goes back to its From, a
        request to its To (or the binding it was routed to)."""
        if not self.endpoints:
            return None
        value = message.headers.get("From" if isinstance(message, Response) else "To") or ""
        aor, epid = endpoint_of(value)
        opaque = self.endpoints.get((aor, epid))
        if opaque is None and isinstance(message, Request):
            opaque = binding_sa
        return self.sas.get(opaque) if opaque else None

    def sign(self, message: Request | Response, binding_sa: str | None = None) -> None:
        """Add ``Authentication-Info`` to a message for an NTLM endpoint (replacing any)."""
        sa = self.sa_for_message(message, binding_sa)
        if sa is None:
            return
        remove_header(message, "Authentication-Info")
        message.headers.add("Authentication-Info", sa.sign(message))


def _lab_user(name: str, domain: str) -> str:
    """The lab user name an NTLM user name stands for (``alice@contoso.lab``, ``C\\alice``)."""
    name = name.lower().rsplit("\\", 1)[-1]
    local, _, at = name.partition("@")
    return local if at == domain.lower() or not at else name


__all__ = ["Authenticator", "Verdict", "endpoint_of"]
