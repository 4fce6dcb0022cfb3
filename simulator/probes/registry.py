"""Probe kind -> probe function (``async (ProbeSpec) -> Outcome``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from simulator.probes.base import Outcome
from simulator.probes.dns import probe_dns
from simulator.probes.sip import probe_sip_mtls, probe_sip_tls
from simulator.probes.spec import ProbeSpec
from simulator.probes.stun import probe_stun_udp
from simulator.probes.tcp import probe_tcp_connect
from simulator.probes.turn import (
    probe_relay_tcp_egress,
    probe_turn_relay_udp,
    probe_turn_tcp,
    probe_turn_tls,
)
from simulator.probes.xmpp import probe_xmpp_mtls, probe_xmpp_s2s

ProbeFunction = Callable[[ProbeSpec], Awaitable[Outcome]]

PROBES: dict[str, ProbeFunction] = {
    "sip-tls": probe_sip_tls,
    "sip-mtls": probe_sip_mtls,
    "xmpp-s2s": probe_xmpp_s2s,
    "xmpp-mtls": probe_xmpp_mtls,
    "stun-udp": probe_stun_udp,
    "turn-tcp": probe_turn_tcp,
    "turn-tls": probe_turn_tls,
    "turn-relay-udp": probe_turn_relay_udp,
    "relay-tcp-egress": probe_relay_tcp_egress,
    "tcp-connect": probe_tcp_connect,
    "dns": probe_dns,
}

#: Kinds that present the source's certificate when it has one.
PRESENTS_CERTIFICATE = {"sip-mtls", "xmpp-mtls", "xmpp-s2s"}
