"""A SIP lab for tests: the SIP hosts of the default topology on loopback addresses of their own.

The topology's addresses are moved to 10.213.x.y (loopback 127.213.x.y) so these tests never
collide with another lab on the machine.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from simulator.lab.runners.local import LocalLab
from simulator.lab.topology import Topology, default_topology_path, load_topology
from simulator.pki import LabPki, user_password
from simulator.sip.emulators.ua import UserAgent
from simulator.sip.service import AccessEdgeService
from simulator.tls import client_context


def sip_topology(directory: Path, octet: int = 213) -> Topology:
    text = default_topology_path().read_text()
    text = text.replace("203.0.113.", f"10.{octet}.1.").replace("198.51.100.", f"10.{octet}.2.")
    text = text.replace("192.0.2.", f"10.{octet}.3.")
    path = directory / "sip-lab.toml"
    path.write_text(text)
    return load_topology(path)


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
        """A UA for ``user@domain`` connected to ``where`` (a key of ``targets``)."""
        targets = {
            "remote": ("edge:access", 443, "sip.contoso.lab", "remote-user:wan"),
            "edge5061": ("edge:access", 5061, "sip.contoso.lab", "fabrikam:wan"),
            "internal": ("fe:lan", 5061, "fe.contoso.lab", "internal-user:lan"),
            "fabrikam": ("fabrikam:wan", 5061, "sip.fabrikam.lab", "remote-user:wan"),
            "pic": ("pic:wan", 5061, "sip.pic.lab", "messenger:wan"),
        }
        ref, port, server_name, local = targets[where]
        paths = None
        if cert is not None:
            paths = (
                self.pki.bad_cert(*cert)
                if cert[0] != "host"
                else self.pki.host_cert(cert[1], cert[2])
            )
        context = client_context([self.pki.trust_bundle], cert=paths)
        return UserAgent(
            f"sip:{user}",
            password=self.password(user),
            host=self.addr(ref),
            port=port,
            context=context,
            server_name=server_name,
            local_address=self.addr(local),
        )


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


async def next_incoming(ua: UserAgent, method: str = "MESSAGE") -> object:
    while True:
        request = await asyncio.wait_for(ua.incoming.get(), 5)
        if request.method == method:
            return request
