"""Sans-IO MRAS: the Media Relay Authentication Service of the Front End ([MS-AVEDGEA]).

A Lync client gets its A/V Edge (TURN) credentials by sending the Front End a SIP SERVICE request
whose body is an ``application/msrtc-media-relay-auth+xml`` ``credentialsRequest``; the 200 OK
carries a ``credentialsResponse`` with a username, a password, their duration (minutes) and the
media relay list (host, UDP and TCP ports, per location ``internet`` / ``intranet``).

The credentials are time-limited TURN credentials derived from the secret the Front End shares
with the A/V Edge (:func:`simulator.media.turn.time_limited_credentials`): username
``"<expiry>:<user>"``, password ``base64(HMAC-SHA1(secret, username))``. The Edge's TURN core
accepts them without any other coordination.

Wiring into the SIP Front End (``service_handlers[content_type]``)::

    from simulator.media.mras import CONTENT_TYPE, MediaRelay, answer_credentials_request

    relays = [MediaRelay("internet", "av.contoso.lab", udp_port=3478, tcp_port=443),
              MediaRelay("intranet", "edge-int.contoso.lab", udp_port=3478, tcp_port=443)]
    service_handlers[CONTENT_TYPE] = lambda body, identity: answer_credentials_request(
        body, identity=identity, relays=relays, secret=b"edgesim-mras-shared-secret",
        now=time.time())

or, from the topology: ``relays_from_topology(topology)``; the secret is the lab's own
(``service_settings(topology, "av-edge", pki_dir)["shared_secret"]``, :mod:`simulator.pki.secrets`).

``identity`` is the SIP URI the Front End authenticated (the request's From); a request for
another identity, or a body that is not a well-formed credentialsRequest, raises
:class:`MrasError` (answer the SERVICE request with 400 and ``str(exc)`` as the reason).

Not implemented: the ``version`` 1.0 dialect's differences, ``directIPAddress`` relays, the
optional ``realm`` element.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from simulator.lab.topology import Topology
from simulator.media.auth import time_limited_credentials

CONTENT_TYPE = "application/msrtc-media-relay-auth+xml"
NAMESPACE = "http://schemas.microsoft.com/2006/09/sip/mrasp"
MAX_BODY = 16 * 1024
DEFAULT_DURATION = 480
"""Minutes (8 hours), the Lync default."""
MAX_DURATION = 480
"""Minutes: the most a credentialsRequest is granted, whatever it asks for."""


class MrasError(ValueError):
    """The credentialsRequest cannot be answered; ``str()`` is the reason for a SIP 400."""


@dataclass(frozen=True)
class MediaRelay:
    """One entry of the mediaRelayList ([MS-AVEDGEA] 2.2.4.4)."""

    location: str
    """``internet`` (clients outside: the A/V Edge's external interface) or ``intranet``."""
    host: str
    """The relay's FQDN (or address)."""
    udp_port: int | None = 3478
    """UDP port of STUN/TURN."""
    tcp_port: int | None = 443
    """TCP port of TURN over TCP (the fallback when UDP is blocked)."""


@dataclass(frozen=True)
class CredentialsRequest:
    """A parsed credentialsRequest ([MS-AVEDGEA] 2.2.3.1.2)."""

    request_id: str
    credentials_request_id: str
    identity: str
    location: str | None
    duration: int | None
    """Minutes asked for, if any."""
    to: str
    from_: str
    version: str


def _q(name: str) -> str:
    return f"{{{NAMESPACE}}}{name}"


def parse_credentials_request(body: bytes) -> CredentialsRequest:
    """Parse the XML body; :class:`MrasError` for anything that is not a credentialsRequest."""
    if len(body) > MAX_BODY:
        raise MrasError("credentialsRequest larger than 16 KiB")
    if b"<!DOCTYPE" in body.upper() or b"<!ENTITY" in body.upper():
        raise MrasError("DTDs and entities are not allowed")
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise MrasError(f"malformed XML: {exc}") from None
    if root.tag != _q("request"):
        raise MrasError("root element is not an mrasp <request>")
    request = root.find(_q("credentialsRequest"))
    if request is None:
        raise MrasError("no <credentialsRequest>")
    identity = (request.findtext(_q("identity")) or "").strip()
    if not identity:
        raise MrasError("<identity> missing")
    duration_text = request.findtext(_q("duration"))
    duration = None
    if duration_text is not None:
        try:
            duration = int(duration_text.strip())
        except ValueError:
            raise MrasError("<duration> is not a number") from None
        if duration <= 0:
            raise MrasError("<duration> must be positive")
    return CredentialsRequest(
        request_id=root.get("requestID", ""),
        credentials_request_id=request.get("credentialsRequestID", ""),
        identity=identity,
        location=request.findtext(_q("location")),
        duration=duration,
        to=root.get("to", ""),
        from_=root.get("from", ""),
        version=root.get("version", "2.0"),
    )


def _user_of(uri: str) -> str:
    uri = uri.strip().strip("<>")
    return uri[4:] if uri.lower().startswith("sip:") else uri


def build_credentials_response(
    request: CredentialsRequest,
    *,
    username: str,
    password: str,
    duration: int,
    relays: list[MediaRelay],
) -> bytes:
    """The credentialsResponse XML ([MS-AVEDGEA] 2.2.3.1.3)."""
    ET.register_namespace("", NAMESPACE)
    root = ET.Element(
        _q("response"),
        {
            "requestID": request.request_id,
            "version": request.version,
            "serverVersion": "2.0",
            "to": request.from_,
            "from": request.to,
            "reasonPhrase": "OK",
        },
    )
    response = ET.SubElement(
        root, _q("credentialsResponse"), {"credentialsRequestID": request.credentials_request_id}
    )
    credentials = ET.SubElement(response, _q("credentials"))
    ET.SubElement(credentials, _q("username")).text = username
    ET.SubElement(credentials, _q("password")).text = password
    ET.SubElement(credentials, _q("duration")).text = str(duration)
    relay_list = ET.SubElement(response, _q("mediaRelayList"))
    for relay in relays:
        entry = ET.SubElement(relay_list, _q("mediaRelay"))
        ET.SubElement(entry, _q("location")).text = relay.location
        ET.SubElement(entry, _q("hostName")).text = relay.host
        if relay.udp_port is not None:
            ET.SubElement(entry, _q("udpPort")).text = str(relay.udp_port)
        if relay.tcp_port is not None:
            ET.SubElement(entry, _q("tcpPort")).text = str(relay.tcp_port)
    data: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return data


def answer_credentials_request(
    body: bytes,
    *,
    identity: str,
    relays: list[MediaRelay],
    secret: bytes,
    now: float,
) -> bytes:
    """Answer a SIP SERVICE credentialsRequest body with a credentialsResponse body.

    ``identity`` is the authenticated SIP URI of the requester; the body's ``<identity>`` must be
    the same user. The duration granted is what was asked for, capped at 480 minutes. Raises
    :class:`MrasError` (answer 400) for a malformed body or another identity.
    """
    request = parse_credentials_request(body)
    if _user_of(request.identity).lower() != _user_of(identity).lower():
        raise MrasError("credentials asked for another identity")
    minutes = min(request.duration or DEFAULT_DURATION, MAX_DURATION)
    username, password = time_limited_credentials(secret, _user_of(identity), now, minutes * 60)
    return build_credentials_response(
        request, username=username, password=password, duration=minutes, relays=relays
    )


def credentials_request_body(
    identity: str,
    *,
    request_id: str = "1",
    duration: int = DEFAULT_DURATION,
    location: str = "internet",
    to: str = "",
    from_: str = "",
) -> bytes:
    """A credentialsRequest body as a Lync client sends it (for clients and tests)."""
    return (
        f'<?xml version="1.0" encoding="utf-8"?>'
        f'<request xmlns="{NAMESPACE}" requestID="{request_id}" version="2.0" '
        f'to="{to}" from="{from_ or identity}" route="">'
        f'<credentialsRequest credentialsRequestID="{request_id}">'
        f"<identity>{identity}</identity><location>{location}</location>"
        f"<duration>{duration}</duration></credentialsRequest></request>"
    ).encode()


def parse_credentials_response(body: bytes) -> tuple[str, str, int, list[MediaRelay]]:
    """(username, password, duration minutes, relays) from a credentialsResponse (for clients)."""
    root = ET.fromstring(body)
    response = root.find(_q("credentialsResponse"))
    if response is None:
        raise MrasError("no <credentialsResponse>")
    creds = response.find(_q("credentials"))
    if creds is None:
        raise MrasError("no <credentials>")
    relays = []
    for entry in response.iter(_q("mediaRelay")):
        udp = entry.findtext(_q("udpPort"))
        tcp = entry.findtext(_q("tcpPort"))
        relays.append(
            MediaRelay(
                entry.findtext(_q("location")) or "",
                entry.findtext(_q("hostName")) or "",
                int(udp) if udp else None,
                int(tcp) if tcp else None,
            )
        )
    return (
        creds.findtext(_q("username")) or "",
        creds.findtext(_q("password")) or "",
        int(creds.findtext(_q("duration")) or 0),
        relays,
    )


def relays_from_topology(topology: Topology) -> list[MediaRelay]:
    """The media relay list of the topology's A/V Edges (hosts running ``av-edge``).

    ``internet``: the interface with a ``relay`` listener (its FQDN, UDP ``stun-udp`` port and
    TCP ``turn-tls``/``turn-tcp`` port, 443 preferred); ``intranet``: the host's other interfaces
    with STUN/TURN listeners. The list names FQDNs, which the lab DNS resolves in every runner.
    """
    relays: list[MediaRelay] = []
    for host in topology.hosts:
        if "av-edge" not in host.services:
            continue
        listeners = host.listeners_of("av-edge")
        relay_ifaces = {lst.interface for lst in listeners if lst.proto == "relay"}
        for iface in host.interfaces:
            mine = [lst for lst in listeners if lst.interface == iface.id]
            udp = next((lst.port for lst in mine if lst.proto == "stun-udp"), None)
            tcp_ports = sorted(
                (lst.real_port != 443, lst.port)
                for lst in mine
                if lst.proto in ("turn-tls", "turn-tcp")
            )
            tcp = tcp_ports[0][1] if tcp_ports else None
            if udp is None and tcp is None:
                continue
            location = "internet" if iface.id in relay_ifaces else "intranet"
            relays.append(MediaRelay(location, iface.fqdn or str(iface.address), udp, tcp))
    return relays
