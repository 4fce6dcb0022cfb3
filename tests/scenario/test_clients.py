"""Where scenario clients sit comes from the topology's roles, domains and listeners."""

from __future__ import annotations

import dataclasses

from simulator.lab.topology import Topology
from simulator.scenario.clients import Vantage, default_via, vantages


def test_the_default_lab_gives_the_five_vantage_points(topology: Topology) -> None:
    assert vantages(topology) == {
        "remote": Vantage("edge:access", "sip-tls", "sip.contoso.lab", "remote-user:wan"),
        "internal": Vantage("fe:lan", "sip-mtls", "fe.contoso.lab", "internal-user:lan"),
        "fabrikam": Vantage("fabrikam:wan", "sip-mtls", "sip.fabrikam.lab", "fabrikam:wan"),
        "pic": Vantage("pic:wan", "sip-mtls", "sip.pic.lab", "pic:wan"),
        "edge5061": Vantage("edge:access", "sip-mtls", "sip.contoso.lab", "fabrikam:wan"),
    }
    assert default_via(topology) == {
        "contoso.lab": "internal",
        "fabrikam.lab": "fabrikam",
        "pic.lab": "pic",
    }


def test_a_topology_without_a_partner_has_no_partner_vantage(topology: Topology) -> None:
    hosts = tuple(
        dataclasses.replace(h, roles=tuple(r for r in h.roles if r != "federated-partner"))
        if h.id == "pic"
        else h
        for h in topology.hosts
    )
    edited = dataclasses.replace(topology, hosts=hosts)
    assert "pic" not in vantages(edited) and "pic.lab" not in default_via(edited)
    assert vantages(edited)["edge5061"].client == "fabrikam:wan"
