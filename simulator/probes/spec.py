"""What one probe needs to know: where it leaves from, where it goes, what it presents."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from simulator.pki import CertPaths


@dataclass(frozen=True)
class TurnCredentials:
    username: str
    password: str
    realm: str | None = None
    """None: take the realm from the server's 401 (long-term credentials, RFC 5389 §10.2)."""


@dataclass(frozen=True)
class ProbeSpec:
    kind: str
    """Probe kind, a key of ``simulator.matrix.model.PROBE_KINDS``."""
    address: str
    """Destination address (for relay rows: the TURN server the relay belongs to)."""
    port: int
    """Destination port (the first of a range)."""
    port_high: int | None = None
    """Last port of a range (``tcp-connect`` samples it), None for a single port."""
    bind: str | None = None
    """Source address to bind (the source host's address in the runner), None: any."""
    fqdn: str | None = None
    """The destination's name: TLS SNI and name check, SIP Request-URI host."""
    domain: str | None = None
    """The destination's SIP/XMPP domain (XMPP ``to``)."""
    source_domain: str | None = None
    """The source's domain (SIP From, XMPP ``from``)."""
    trust: tuple[Path, ...] = ()
    """CA files the probe trusts for the server certificate."""
    lab_cas: tuple[Path, ...] = ()
    """Every CA the lab made (a lab destination's certificates come from one of them); a TLS
    path that fails with a certificate from none of them is reported as intercepted. Empty
    against a real deployment."""
    client_cert: CertPaths | None = None
    """Certificate (and key) presented for MTLS."""
    timeout: float = 2.0
    """Seconds for the whole probe."""
    peer: tuple[str, int] | None = None
    """TURN rows: the peer the relay sends to (address, port)."""
    turn: TurnCredentials | None = None
    dns_name: str | None = None
    """``dns``: the SRV name to ask for."""
    transport: str = "tcp"
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def ports(self) -> str:
        if self.port_high is None or self.port_high == self.port:
            return str(self.port)
        return f"{self.port}-{self.port_high}"
