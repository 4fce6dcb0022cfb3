"""A copy of the default lab that runs only the media services (other areas' services and the
ports they bind stay out of the media tests)."""

from __future__ import annotations

import dataclasses

from simulator.lab.topology import Topology

MEDIA_HOSTS = {"edge": ("av-edge",), "messenger": ("media-peer",)}


def media_only(topology: Topology) -> Topology:
    hosts = tuple(
        dataclasses.replace(host, services=MEDIA_HOSTS[host.id]) if host.id in MEDIA_HOSTS else host
        for host in topology.hosts
    )
    return dataclasses.replace(topology, hosts=hosts)
