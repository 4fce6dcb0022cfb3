"""The lab's service names: what a host's ``services`` list and a ``[services.NAME]`` table may
name (data only: the topology loader checks names against it without importing a service)."""

from __future__ import annotations

#: Service name -> "module:Class". Each issue that brings a service fills its entry's module.
SERVICES: dict[str, str] = {
    "dns": "simulator.dns.service:DnsService",
    "media-peer": "simulator.media.peer:MediaPeerService",
    "access-edge": "simulator.sip.service:AccessEdgeService",
    "front-end": "simulator.sip.service:FrontEndService",
    "partner-edge": "simulator.sip.service:PartnerEdgeService",
    "pic": "simulator.sip.service:PublicImService",
    "xmpp-proxy": "simulator.xmpp.service:XmppProxyService",
    "xmpp-partner": "simulator.xmpp.service:XmppPartnerService",
    "xmpp-gateway": "simulator.xmpp.service:XmppGatewayService",
    "av-edge": "simulator.media.service:AvEdgeService",
}

#: Which issue brings a service that is not available yet (for the "not yet" message).
PLANNED: dict[str, str] = {
    "access-edge": "issue #3 (Access Edge)",
    "front-end": "issue #3 (Access Edge)",
    "partner-edge": "issue #3 (Access Edge)",
    "pic": "issue #3 (Access Edge)",
    "xmpp-proxy": "issue #4 (XMPP proxy)",
    "xmpp-partner": "issue #4 (XMPP proxy)",
    "xmpp-gateway": "issue #4 (XMPP proxy)",
    "av-edge": "issue #5 (A/V Edge)",
    "media-peer": "issue #5 (A/V Edge)",
}

#: ``[services.NAME]`` tables that configure something other than a service.
OTHER_TABLES: dict[str, str] = {
    "probes": "the TURN account of `edgesim probe` (simulator.probes.run.ProbeSettings)",
}
