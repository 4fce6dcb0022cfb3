"""The topology model: the default lab loads, and every malformed file gives one clear line."""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path

import pytest

from simulator.errors import ConfigError
from simulator.lab.topology import Topology, default_topology_path, load_topology

DEFAULT = default_topology_path().read_text()


def test_default_lab_has_the_zones_hosts_and_firewalls_of_the_design(topology: Topology) -> None:
    assert [z.id for z in topology.zones] == [
        "internet", "perimeter-external", "perimeter-internal", "corporate",
    ]  # fmt: skip
    assert {f.id: f.zones for f in topology.firewalls} == {
        "fw-external": ("internet", "perimeter-external"),
        "fw-internal": ("perimeter-internal", "corporate"),
    }
    fqdns = {f for i in topology.interfaces() for f in i.fqdns}
    for name in ("sip.contoso.lab", "av.contoso.lab", "edge-int.contoso.lab", "fe.contoso.lab",
                 "sip.fabrikam.lab", "xmpp.jabber.lab"):  # fmt: skip
        assert name in fqdns
    edge = topology.host("edge")
    assert {(lst.interface, lst.proto, lst.ports) for lst in edge.listeners} >= {
        ("access", "sip-tls", "443"),
        ("access", "sip-mtls", "5061"),
        ("access", "xmpp-s2s", "5269"),
        ("av", "stun-udp", "3478"),
        ("av", "turn-tls", "443"),
        ("av", "relay", "50000-59999"),
        ("internal", "sip-mtls", "5061"),
        ("internal", "xmpp-mtls", "23456"),
    }


def test_every_address_is_from_the_rfc5737_documentation_ranges(topology: Topology) -> None:
    doc_ranges = [
        ipaddress.IPv4Network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")
    ]
    interfaces = list(topology.interfaces()) + [i for f in topology.firewalls for i in f.interfaces]
    for iface in interfaces:
        assert any(iface.address in net for net in doc_ranges), iface.ref


def test_local_runner_gives_each_interface_its_own_loopback_address(topology: Topology) -> None:
    loopbacks = [i.loopback() for i in topology.interfaces()]
    assert all(a.is_loopback for a in loopbacks)
    assert len(set(loopbacks)) == len(loopbacks)
    assert str(topology.interface("edge:access").loopback()) == "127.51.100.10"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "lab.toml"
    path.write_text(text)
    return path


BAD_EDITS = [
    pytest.param(
        ("[services.pic]", "[services.pics]"),
        "services.pics: no such service (known: access-edge, av-edge, dns,",
        id="settings-for-no-service",
    ),
    pytest.param(
        ('services = ["dns"]', 'services = ["dns", "dhcp"]'),
        "hosts[dns-int].services: no such service 'dhcp' (known: access-edge,",
        id="host-runs-no-such-service",
    ),
    pytest.param(
        ('zone = "corporate", address = "192.0.2.10"', 'zone = "dmz", address = "192.0.2.10"'),
        "hosts[fe].interfaces[lan]: zone 'dmz' is not defined",
        id="unknown-zone",
    ),
    pytest.param(
        ('address = "192.0.2.20"', 'address = "192.0.2.10"'),
        "hosts[internal-user].interfaces[lan]: address 192.0.2.10 is already used by fe:lan",
        id="duplicate-address",
    ),
    pytest.param(
        ('fqdns = ["pc1.contoso.lab"]', 'fqdns = ["fe.contoso.lab"]'),
        "hosts[internal-user].interfaces[lan]: FQDN 'fe.contoso.lab' is already used by fe:lan",
        id="duplicate-fqdn",
    ),
    pytest.param(
        (
            '  { id = "lan", zone = "corporate", address = "192.0.2.20", fqdns = ["pc1.contoso.lab"] },\n',
            "",
        ),
        "hosts[internal-user]: host has no interfaces, so it is in no zone",
        id="host-in-no-zone",
    ),
    pytest.param(
        (
            'service = "xmpp-proxy", proto = "xmpp-s2s", port = 5269',
            'service = "xmpp-proxy", proto = "xmpp-s2s", port = 5061',
        ),
        "hosts[edge].listeners[2]: TCP 198.51.100.10:5061 is already taken by access-edge (sip-mtls)",
        id="two-services-one-port",
    ),
    pytest.param(
        ('address = "192.0.2.53"', 'address = "203.0.113.99"'),
        "hosts[dns-int].interfaces[lan]: address 203.0.113.99 is outside zone 'corporate' (192.0.2.0/24)",
        id="address-outside-zone",
    ),
    pytest.param(
        ('proto = "sip-tls", port = 443', 'proto = "sip-udp", port = 443'),
        "hosts[edge].listeners[0]: unknown proto 'sip-udp'",
        id="unknown-proto",
    ),
    pytest.param(
        (
            'fqdns = ["av.contoso.lab"], ca = "public"',
            'fqdns = ["av.contoso.lab"], ca = "verisign"',
        ),
        "hosts[edge].interfaces[av]: CA 'verisign' is not defined",
        id="unknown-ca",
    ),
    pytest.param(
        ('[[hosts]]\nid = "fe"', '[[hosts]]\nid = "fe"\ncolour = "blue"'),
        "hosts[fe]: unknown key 'colour'",
        id="unknown-key",
    ),
    pytest.param(
        ("port = 5004 }", 'port = "five" }'),
        "hosts[messenger].listeners[1]: 'port' must be an integer, not str",
        id="wrong-type",
    ),
    pytest.param(
        ('[lab]\nname = "contoso"', '[lab\nname = "contoso"'),
        "not valid TOML",
        id="not-toml",
    ),
]


@pytest.mark.parametrize(("edit", "expected"), BAD_EDITS)
def test_malformed_topology_gives_one_line_naming_file_and_entry(
    tmp_path: Path, edit: tuple[str, str], expected: str
) -> None:
    old, new = edit
    assert old in DEFAULT, "the edit no longer applies to default.toml"
    path = _write(tmp_path, DEFAULT.replace(old, new, 1))
    with pytest.raises(ConfigError) as info:
        load_topology(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert expected in message
    assert info.value.exit_code == 2


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read topology file"):
        load_topology(tmp_path / "nope.toml")


def test_user_topology_round_trips(tmp_path: Path) -> None:
    path = _write(tmp_path, DEFAULT.replace('name = "contoso"', 'name = "my-lab"'))
    assert load_topology(path).name == "my-lab"


def test_moved_ports_keep_the_matrix_names_and_move_listeners_and_srv(topology: Topology) -> None:
    """What the embedded lab runs without root: ports below 1024 move by 8000, nothing else."""
    from simulator.lab.topology import PORT_OFFSET

    moved = topology.moved()
    assert topology.privileged_ports() == [53, 443] and PORT_OFFSET == 8000
    sip = moved.host("edge").listener_on("access", "tcp", 443, 443)
    assert sip is not None and (sip.port, sip.real_port, sip.proto) == (8443, 443, "sip-tls")
    assert moved.host("edge").listener_on("access", "tcp", 8443, 8443) is None
    federation = moved.host("edge").listener_on("access", "tcp", 5061, 5061)
    assert federation is not None and federation.port == 5061 and federation.moved_by == 0
    relay = next(lst for lst in moved.host("edge").listeners if lst.proto == "relay")
    assert (relay.port_low, relay.port_high) == (50000, 59999)
    srv = {s.name: s.port for s in moved.srv}
    assert srv["_sip._tls.contoso.lab"] == 8443
    assert srv["_sipfederationtls._tcp.contoso.lab"] == 5061
    assert (moved.lab_port(53), moved.lab_port(5269), topology.lab_port(443)) == (8053, 5269, 443)
    assert moved.moved(PORT_OFFSET) is moved and topology.moved(0) is topology


def test_a_moved_port_that_collides_is_a_config_error(tmp_path: Path) -> None:
    text = (
        default_topology_path()
        .read_text()
        .replace(
            '{ interface = "access", service = "xmpp-proxy", proto = "xmpp-s2s", port = 5269 },',
            '{ interface = "access", service = "xmpp-proxy", proto = "xmpp-s2s", port = 8443 },',
        )
    )
    path = tmp_path / "lab.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"access-edge \(sip-tls\) moved to port 8443 collides"):
        load_topology(path).moved()


# ------------------------------------------------------------------ one API to move a lab


def test_relocated_gives_every_interface_a_loopback_of_its_own(topology: Topology) -> None:
    moved = topology.relocated(213)
    loopbacks = [i.loopback() for i in moved.interfaces()]
    assert len(set(loopbacks)) == len(loopbacks)
    assert all(str(a).startswith("127.213.") for a in loopbacks)
    # the lab's own addresses (netns, compose, the matrix) do not move
    assert [i.address for i in moved.interfaces()] == [i.address for i in topology.interfaces()]
    assert moved.interface("edge:access").loopback() != topology.interface("edge:access").loopback()
    with pytest.raises(ValueError, match="outside 1-254"):
        topology.relocated(0)


def test_with_ports_moves_listeners_and_srv_records(topology: Topology) -> None:
    moved = topology.with_ports({5269: 25269, 53: 25353})
    s2s = moved.host("edge").listener_for("access", "xmpp-s2s")
    assert s2s is not None and s2s.port == 25269
    relay = moved.host("edge").listener_for("av", "relay")
    assert relay is not None and (relay.port_low, relay.port_high) == (50000, 59999)
    assert {r.port for r in moved.srv if r.name.startswith("_xmpp-server.")} == {25269}


def test_written_topology_loads_back_equal(topology: Topology, tmp_path: Path) -> None:
    edited = topology.relocated(214).with_ports({5061: 25061})
    written = edited.write(tmp_path / "lab.toml")
    assert written.path == tmp_path / "lab.toml"
    assert dataclasses.replace(written, path=edited.path) == edited
    with pytest.raises(ValueError, match="not moved"):
        topology.moved().write(tmp_path / "moved.toml")
