"""A SIP lab for tests: the SIP hosts of the default topology on loopback addresses of their own.

The topology is relocated to loopback 127.213.x.y (:meth:`Topology.relocated`; each test module
picks its own octet) so these tests never collide with another lab on the machine.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from sipmessage import Request

from simulator.lab.runners.local import LocalLab
from simulator.lab.topology import Topology, load_topology
from simulator.pki import LabPki, user_password
from simulator.scenario.api import Lab as ScenarioLab
from simulator.scenario.clients import sip_agent
from simulator.sip.emulators.ua import UserAgent
from simulator.sip.service import AccessEdgeService


def sip_topology(directory: Path, octet: int = 213) -> Topology:
    """The default topology on loopback addresses 127.``octet``.x.y, written to ``directory``
    (for the processes that read it with ``--topology``)."""
    return load_topology().relocated(octet).write(directory / "sip-lab.toml")


SIP_HOSTS = ["dns-int", "dns-ext", "edge", "fe", "fabrikam", "pic"]


class Lab:
    def __init__(self, topology: Topology, pki: LabPki, lab: LocalLab) -> None:
        self.topology = topology
        self.pki = pki
        self.lab = lab

    def password(self, user: str) -> str | None:
        """``user@domain``'s password: the one this lab generated (simulator.pki.secrets)."""
        return user_password(self.topology, user, self.pki.directory)

    def addr(self, ref: str) -> str:
        return str(self.topology.interface(ref).loopback())

    @property
    def edge(self) -> AccessEdgeService:
        for status in self.lab.statuses:
            if status.service == "access-edge":
                assert isinstance(status.instance, AccessEdgeService)
                return status.instance
        raise AssertionError("no access edge")

    def refusals(self) -> list[str]:
        assert self.edge.edge is not None
        return self.edge.edge.refusals

    def ua(self, user: str, where: str, *, cert: tuple[str, ...] | None = None) -> UserAgent:
        """A UA for ``user@domain`` at vantage ``where`` (:func:`simulator.scenario.clients.
        vantages`: ``remote``, ``internal``, ``fabrikam``, ``pic``, ``edge5061``), the one client
        the scenarios use; ``cert``: ``("host", host, interface)`` or a bad certificate's kind."""
        paths = None
        if cert is not None:
            paths = (
                self.pki.bad_cert(*cert)
                if cert[0] != "host"
                else self.pki.host_cert(cert[1], cert[2])
            )
        # a fabrikam or pic.lab user sits on a client host of the internet, not on its server
        client = {"fabrikam": "remote-user:wan", "pic": "messenger:wan"}.get(where)
        lab = ScenarioLab(self.topology, "local", self.pki)
        return sip_agent(lab, user, via=where, cert=paths, client=client)


@asynccontextmanager
async def lab_up(
    topology: Topology,
    pki: LabPki,
    settings: dict[str, dict[str, object]] | None = None,
    hosts: list[str] | None = None,
) -> AsyncIterator[Lab]:
    lab = LocalLab(topology, pki.directory, settings=settings, hosts=hosts or SIP_HOSTS)
    async with lab:
        yield Lab(topology, pki, lab)


async def next_incoming(ua: UserAgent, method: str = "MESSAGE") -> Request:
    while True:
        request = await asyncio.wait_for(ua.incoming.get(), 5)
        if request.method == method:
            return request
