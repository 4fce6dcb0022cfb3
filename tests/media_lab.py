"""Media test helpers: a copy of the default lab that runs only the media services (other areas'
services and the ports they bind stay out of the media tests), and a TURN server on the A/V
address."""

from __future__ import annotations

import dataclasses

from simulator.lab.topology import Topology
from simulator.media.aio import AsyncTurnServer, ListenerSpec
from simulator.media.config import TurnConfig
from simulator.media.dialect import RFC, Dialect
from simulator.media.policy import PeerPolicy
from simulator.pki import LabPki
from simulator.tls import server_context

MEDIA_HOSTS = {"edge": ("av-edge",), "messenger": ("media-peer",)}


def media_only(topology: Topology) -> Topology:
    hosts = tuple(
        dataclasses.replace(host, services=MEDIA_HOSTS[host.id]) if host.id in MEDIA_HOSTS else host
        for host in topology.hosts
    )
    return dataclasses.replace(topology, hosts=hosts)


def av_server(
    topology: Topology,
    lab_pki: LabPki,
    *,
    users: dict[str, str],
    ports: tuple[int, int],
    policy: PeerPolicy,
    address: str = "127.51.100.11",
    dialect: Dialect = RFC,
    shared_secret: bytes | None = None,
) -> AsyncTurnServer:
    """A TURN server on the Edge's A/V loopback address, not started: UDP, TCP and TLS (with the
    A/V interface's certificate), each on a free port. ``async with`` runs it."""
    config = TurnConfig(
        relay_address=address,
        users=users,
        port_low=ports[0],
        port_high=ports[1],
        policy=policy,
        shared_secret=shared_secret,
    )
    tls = server_context(lab_pki.interface_cert(topology.interface("edge:av")))
    specs = [
        ListenerSpec("udp", address, 0),
        ListenerSpec("tcp", address, 0),
        ListenerSpec("tls", address, 0, tls),
    ]
    return AsyncTurnServer(config, specs, dialect=dialect)
