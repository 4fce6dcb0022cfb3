"""The lab network plan shared by the netns and compose runners."""

from __future__ import annotations

from simulator.lab.network import ephemeral_port_range, host_routes, link_name
from simulator.lab.topology import Topology
from simulator.matrix import load_matrix


def test_edge_routes_default_outside_and_corporate_inside(topology: Topology) -> None:
    edge = topology.host("edge")
    routes = {r.destination: (str(r.gateway), r.device) for r in host_routes(topology, edge)}
    fw_ext = topology.firewall_between("internet", "perimeter-external")
    fw_int = topology.firewall_between("perimeter-internal", "corporate")
    assert fw_ext is not None and fw_int is not None
    ext_inside = next(i for i in fw_ext.interfaces if i.zone == "perimeter-external")
    int_outside = next(i for i in fw_int.interfaces if i.zone == "perimeter-internal")
    assert routes == {
        "default": (str(ext_inside.address), "access"),
        str(topology.zone("corporate").subnet): (str(int_outside.address), "internal"),
    }


def test_single_zone_hosts_route_everything_via_their_firewall(topology: Topology) -> None:
    for host in topology.hosts:
        if len(host.zones) != 1:
            continue
        routes = host_routes(topology, host)
        assert [r.destination for r in routes] == ["default"], host.id
        gateway = routes[0].gateway
        assert gateway in topology.zone(host.zones[0]).subnet
        assert any(i.address == gateway for fw in topology.firewalls for i in fw.interfaces)


def test_link_names_fit_the_kernel_limit(topology: Topology) -> None:
    names = [link_name(i) for i in topology.interfaces()]
    assert all(0 < len(n) <= 15 for n in names)


def test_ephemeral_ports_stay_out_of_source_side_ranges() -> None:
    matrix = load_matrix()
    low, high = ephemeral_port_range(matrix)
    for row in matrix.rows:
        if row.port_side == "source":
            assert high < row.port_low or low > row.port_high, row.id
    assert high - low > 10000
