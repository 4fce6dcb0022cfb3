"""The port matrix: every seed row is there, with the implicit and negative rows, and resolves."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator.errors import ConfigError
from simulator.lab.topology import Topology
from simulator.matrix import Expectation, load_matrix, resolve, resolve_all
from simulator.matrix.model import PROBE_KINDS, Matrix, default_matrix_path

# The ten rows of the seed tables (shared/seeds/PORTS.md), as (seed, label, source, destination).
SEED_ROWS = {
    ("sip-federation", "Access/SIP(MTLS)/TCP/5061", "edge:access", "any@internet"),
    ("public-im", "Access/SIP(MTLS)/TCP/5061", "pic", "edge:access"),
    ("public-im", "Access/SIP(MTLS)/TCP/5061", "edge:access", "pic"),
    ("public-im", "Access/SIP(TLS)/TCP/443", "remote-client", "edge:access"),
    ("public-im", "A/V/RTP/TCP/50000-59999", "edge:av", "messenger-client"),
    ("public-im", "A/V/STUN,MSTURN/UDP/3478", "edge:av", "messenger-client"),
    ("public-im", "A/V/STUN,MSTURN/UDP/3478", "messenger-client", "edge:av"),
    ("xmpp", "XMPP/XMPP/TCP/5269", "xmpp-partner", "edge:access"),
    ("xmpp", "XMPP/XMPP/TCP/5269", "edge:access", "any@internet"),
    ("xmpp", "XMPP/XMPP(MTLS)/TCP/23456", "front-end", "edge:internal"),
}


@pytest.fixture(scope="module")
def matrix() -> Matrix:
    return load_matrix()


def test_all_ten_seed_rows_are_in_the_matrix_with_their_seed_table(matrix: Matrix) -> None:
    seeded = {
        (r.seed, r.label, r.source, r.destination)
        for r in matrix.rows
        if r.seed in ("sip-federation", "public-im", "xmpp")
    }
    assert seeded == SEED_ROWS
    assert all(r.expect is Expectation.OPEN for r in matrix.rows if r.seed != "negative")


def test_internal_sip_hop_is_there_in_both_directions(matrix: Matrix) -> None:
    implicit_sip = {
        (r.source, r.destination)
        for r in matrix.rows
        if r.label == "Access/SIP(MTLS)/TCP/5061" and r.seed == "implicit"
    }
    internal = {pair for pair in implicit_sip if "front-end" in pair}
    assert internal == {("front-end", "edge:internal"), ("edge:internal", "front-end")}
    # the seed statements: federated partners initiate communication over MTLS 5061
    assert ("partner-edge", "edge:access") in implicit_sip


def test_av_from_the_internal_side_and_the_443_fallback_are_there(matrix: Matrix) -> None:
    implicit = {
        (r.transport, r.ports, r.source, r.destination) for r in matrix.rows if r.seed == "implicit"
    }
    assert ("udp", "3478", "internal-client", "edge:internal") in implicit
    assert ("tcp", "443", "internal-client", "edge:internal") in implicit
    assert ("tcp", "443", "any@internet", "edge:av") in implicit  # Lync: Any -> A/V Edge 443


def test_negative_rows_cover_the_internal_interface_and_the_front_end(matrix: Matrix) -> None:
    negative = {(r.ports, r.destination) for r in matrix.rows if r.expect is Expectation.BLOCKED}
    assert {
        ("23456", "edge:internal"),
        ("5061", "edge:internal"),
        ("5061", "front-end"),
    } <= negative
    assert all(r.seed == "negative" for r in matrix.rows if r.expect is Expectation.BLOCKED)


def test_every_row_names_a_known_probe_and_resolves_in_the_default_lab(
    matrix: Matrix, topology: Topology
) -> None:
    for resolved in resolve_all(matrix, topology):
        assert resolved.row.probe in PROBE_KINDS
        assert resolved.resolved, (resolved.row.id, resolved.problems)


def test_resolution_gives_concrete_addresses(matrix: Matrix, topology: Topology) -> None:
    rr = resolve(matrix.row("pic-in-5061"), topology)
    assert [(e.ref, e.address, e.loopback) for e in rr.sources] == [
        ("pic:wan", "203.0.113.20", "127.0.113.20")
    ]
    assert [(e.ref, e.address, e.fqdn) for e in rr.destinations] == [
        ("edge:access", "198.51.100.10", "sip.contoso.lab")
    ]
    # "Any" as a destination means the hosts that listen on the port.
    rr = resolve(matrix.row("xmpp-out-5269"), topology)
    assert [e.ref for e in rr.destinations] == ["jabber:wan"]
    rr = resolve(matrix.row("sipfed-out-5061"), topology)
    assert [e.ref for e in rr.destinations] == ["fabrikam:wan", "pic:wan"]


def test_a_row_whose_role_is_missing_says_why(
    matrix: Matrix, topology: Topology, tmp_path: Path
) -> None:
    from simulator.lab.topology import default_topology_path, load_topology

    text = (
        default_topology_path()
        .read_text()
        .replace('roles = ["pic", "federated-partner"]', 'roles = ["federated-partner"]')
    )
    path = tmp_path / "lab.toml"
    path.write_text(text)
    rr = resolve(matrix.row("pic-in-5061"), load_topology(path))
    assert not rr.resolved
    assert rr.problems == ("source: no host with role 'pic' in the topology",)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('expect = "blocked"', 'expect = "maybe"', "expect must be 'open' or 'blocked'"),
        ('probe = "dns"', 'probe = "ping"', "unknown probe kind 'ping'"),
        ('ports = "5060"', 'ports = "50x"', "'50x' is not a port or port range"),
        ('seed = "xmpp"', 'seed = "jabber"', "seed 'jabber' is not defined"),
    ],
)
def test_malformed_matrix_file_names_the_row(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    text = default_matrix_path().read_text()
    assert old in text
    path = tmp_path / "rows.toml"
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ConfigError) as info:
        load_matrix(path)
    assert expected in str(info.value)
    assert "rows[" in str(info.value)
