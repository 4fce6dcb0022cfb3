"""What a Lync Server 2013 Front End tells a Lync-dialect client about presence ([MS-PRES]).

Pure functions building and reading the XML bodies the Front End emulator exchanges with a
Lync client (SIPE) once it signed in:

- the roaming self data (``vnd-microsoft-roaming-self``: categories, containers, subscribers)
  and the provisioning groups (``vnd-microsoft-provisioning-v2``) a client subscribes to
  after REGISTER, before it publishes its own state;
- the batch category subscription: the resources of a ``batchSub`` body
  (``application/msrtc-adrl-categorylist+xml``, [MS-PRES] section 6.8), answered with an RLMI
  list (:rfc:`4662`) in a ``multipart/related`` body: the ``state`` category of each contact
  this server hosts, and ``state="resubscribe"`` for the others, which the client then
  subscribes to one by one at their own servers (through the Edge, or the XMPP gateway);
- the ``state`` category ([MS-PRES] aggregate state; the Lync 2013 schema's availability
  ranges: 3000-4499 available, 18000 and higher offline) and the availability a client
  publishes (``application/msrtc-category-publish+xml``).

Not implemented: containers and access levels, contact cards, notes, calendar data, the
Unified Contact Store, publications other than ``state``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from xml.sax.saxutils import quoteattr

AVAILABLE = 3500
"""Availability of a signed-in contact ("Available", the 3000-4499 range)."""
OFFLINE = 18500
"""Availability of a contact who is not signed in (18000 and higher: "Offline")."""
OFFLINE_FROM = 18000
"""The lowest availability that means offline."""

ROAMING_SELF = "vnd-microsoft-roaming-self"
PROVISIONING_V2 = "vnd-microsoft-provisioning-v2"
CATEGORIES_TYPE = "application/msrtc-event-categories+xml"
BATCH_TYPE = "application/msrtc-adrl-categorylist+xml"
PUBLISH_TYPE = "application/msrtc-category-publish+xml"

NS_CATEGORIES = "http://schemas.microsoft.com/2006/09/sip/categories"
NS_STATE = "http://schemas.microsoft.com/2006/09/sip/state"
NS_RLMI = "urn:ietf:params:xml:ns:rlmi"
BOUNDARY = "edgesim-presence"


def roaming_self(aor: str) -> tuple[str, bytes]:
    """(Content-Type, body) of a user's roaming self data: no publications yet, no containers,
    no subscribers awaiting authorization."""
    body = (
        '<roamingData xmlns="http://schemas.microsoft.com/2006/09/sip/roaming-self">'
        f'<categories xmlns="{NS_CATEGORIES}" uri={quoteattr(aor)}/>'
        '<containers xmlns="http://schemas.microsoft.com/2006/09/sip/container-management"/>'
        '<subscribers xmlns="http://schemas.microsoft.com/2006/09/sip/presence-subscribers"/>'
        "</roamingData>"
    )
    return "application/vnd-microsoft-roaming-self+xml", body.encode()


def provisioning(domain: str, *, mras: bool = False) -> tuple[str, bytes]:
    """(Content-Type, body) of the provisioning groups: the server configuration only
    ([MS-SIPREGE] section 2.2.2.5.1, a few of its elements), with the MRAS URI (where the
    client asks for A/V relay credentials) when ``mras``."""
    mras_uri = f"<mrasUri>sip:{domain};gruu;opaque=srvr:MRAS:lab</mrasUri>" if mras else ""
    body = (
        '<provisionGroupList xmlns="http://schemas.microsoft.com/2006/09/sip/'
        'provisiongrouplist-notification">'
        '<provisionGroup name="ServerConfiguration">'
        f"<focusFactoryUri>sip:{domain};gruu;opaque=app:conf:focusfactory</focusFactoryUri>"
        f"<absExternalServerUrl></absExternalServerUrl><dlxExternalUrl></dlxExternalUrl>"
        f"{mras_uri}</provisionGroup></provisionGroupList>"
    )
    return "application/vnd-microsoft-roaming-provisioning-v2+xml", body.encode()


MAX_BODY = 256 * 1024
"""Bodies larger than this are not read."""


def _parse(body: bytes) -> ET.Element | None:
    """``body`` as XML, or None: too large, malformed, or declaring a DTD or entities (a body
    from a client is not trusted: no entity expansion)."""
    if len(body) > MAX_BODY or b"<!" in body:
        return None
    try:
        return ET.fromstring(body)
    except ET.ParseError:
        return None


def batch_resources(body: bytes) -> list[str]:
    """The resource URIs of a ``batchSub`` (or an RFC 4826-style ``adhoclist``) body."""
    root = _parse(body)
    if root is None:
        return []
    return [
        uri
        for node in root.iter()
        if node.tag.rsplit("}", 1)[-1] == "resource" and (uri := node.get("uri"))
    ]


def state_categories(uri: str, availability: int, publish_time: str) -> bytes:
    """A ``<categories>`` document with the aggregate ``state`` of ``uri``."""
    return (
        f'<categories xmlns="{NS_CATEGORIES}" uri={quoteattr(uri)}>'
        f'<category name="state" instance="0" publishTime="{publish_time}">'
        f'<state xmlns="{NS_STATE}" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="aggregateState">'
        f"<availability>{availability}</availability></state></category></categories>"
    ).encode()


def batch_notification(
    owner: str, local: dict[str, int], remote: list[str], publish_time: str
) -> tuple[str, bytes]:
    """(Content-Type, body) answering a batch subscription of ``owner``: an RLMI list (every
    resource: ``active`` for ``local`` ones with their availability, ``resubscribe`` for
    ``remote`` ones) and a categories part per local resource, as ``multipart/related``."""
    resources = "".join(
        f'<resource uri={quoteattr(uri)}><instance id="{n}" state="active" cid="c{n}"/></resource>'
        for n, uri in enumerate(local, 1)
    ) + "".join(
        f'<resource uri={quoteattr(uri)}><instance id="r{n}" state="resubscribe"/></resource>'
        for n, uri in enumerate(remote, 1)
    )
    rlmi = (
        f'<list xmlns="{NS_RLMI}" uri={quoteattr(owner)} version="1" fullState="true">'
        f"{resources}</list>"
    ).encode()
    parts = [(b"application/rlmi+xml", b"rlmi", rlmi)] + [
        (CATEGORIES_TYPE.encode(), f"c{n}".encode(), state_categories(uri, avail, publish_time))
        for n, (uri, avail) in enumerate(local.items(), 1)
    ]
    # each part ends with an empty line before the delimiter: libpurple's MIME parser (which
    # SIPE uses) drops four bytes before each boundary
    body = b"".join(
        b"--" + BOUNDARY.encode() + b"\r\n"
        b"Content-ID: <" + cid + b">\r\n"
        b"Content-Type: " + ctype + b"\r\n\r\n" + content + b"\r\n\r\n"
        for ctype, cid, content in parts
    )
    body += b"--" + BOUNDARY.encode() + b"--\r\n"
    content_type = (
        f'multipart/related; type="application/rlmi+xml"; start="<rlmi>"; boundary={BOUNDARY}'
    )
    return content_type, body


def published_availability(body: bytes) -> int | None:
    """The availability a client publishes in its ``state`` categories (the lowest, i.e. the
    most available, of the user and machine states), or None when it publishes none."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return None
    values = [
        int(text)
        for node in root.iter()
        if node.tag.rsplit("}", 1)[-1] == "availability"
        and (text := (node.text or "").strip()).isdigit()
    ]
    return min(values) if values else None


__all__ = [
    "AVAILABLE",
    "BATCH_TYPE",
    "CATEGORIES_TYPE",
    "OFFLINE",
    "PROVISIONING_V2",
    "PUBLISH_TYPE",
    "ROAMING_SELF",
    "batch_notification",
    "batch_resources",
    "provisioning",
    "published_availability",
    "roaming_self",
    "state_categories",
]
