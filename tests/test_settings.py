"""Typed service settings: a topology table becomes a dataclass or a one-line ConfigError that
names the file and the entry (simulator.settings), as the XMPP services load theirs."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest

from simulator.dns.aio import DnsLimits
from simulator.dns.service import DnsService
from simulator.errors import ConfigError
from simulator.lab.services import ServiceContext
from simulator.lab.topology import Topology
from simulator.limits import limit
from simulator.media.peer import MediaPeerService
from simulator.media.service import AvEdgeService
from simulator.pki import LabPki
from simulator.probes.run import turn_credentials
from simulator.settings import load_settings
from simulator.sip.proxy import Side
from simulator.sip.service import AccessEdgeService, FrontEndService, PublicImService
from simulator.xmpp.aio import XmppListenerLimits
from simulator.xmpp.gateway import XmppGatewaySettings
from simulator.xmpp.service import XmppPartnerService, XmppProxyService, XmppProxySettings

LAB = Path("lab.toml")


@dataclasses.dataclass(frozen=True)
class Inner:
    cap: int = limit(5, "a cap", "tests/test_settings.py::test_types_are_checked_and_converted")
    """A limit."""


@dataclasses.dataclass(frozen=True)
class Outer:
    on: bool = True
    """A switch."""
    seconds: float = 1.0
    """A time."""
    name: str | None = None
    """A name."""
    names: tuple[str, ...] = ()
    """Names."""
    table: dict[str, str] = dataclasses.field(default_factory=dict)
    """A table."""
    inner: Inner = dataclasses.field(default_factory=Inner)
    """A sub-table."""


def test_types_are_checked_and_converted() -> None:
    table = {"on": False, "seconds": 2, "names": ["a", "b"], "table": {"x": "y"}, "inner": {}}
    got = load_settings(Outer, table, LAB, "services.x")
    assert got == Outer(False, 2.0, None, ("a", "b"), {"x": "y"}, Inner())
    assert isinstance(got.seconds, float)
    assert load_settings(Outer, {}, LAB, "services.x") == Outer()


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"bogus": 1}, "lab.toml: services.x: unknown key 'bogus' (known: inner, name, names,"),
        ({"on": "yes"}, "lab.toml: services.x.on: must be true or false, not a string"),
        ({"seconds": True}, "lab.toml: services.x.seconds: must be a number, not a boolean"),
        ({"names": "a"}, "lab.toml: services.x.names: must be a list of strings, not a string"),
        ({"name": 3}, "lab.toml: services.x.name: must be a string, not an integer"),
        ({"table": {"x": 1}}, "lab.toml: services.x.table: must be a table of strings"),
        ({"inner": {"cap": -1}}, "lab.toml: services.x.inner.cap: must not be negative"),
        ({"inner": {"size": 1}}, "lab.toml: services.x.inner: unknown key 'size' (known: cap)"),
        ({"inner": 3}, "lab.toml: services.x.inner: must be a table"),
    ],
)
def test_bad_values_name_the_file_and_the_entry(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(Outer, table, LAB, "services.x")
    assert str(raised.value).startswith(message)


def context(
    topology: Topology, host: str, service: str, settings: dict[str, object]
) -> ServiceContext:
    return ServiceContext(
        topology, topology.host(host), service, LabPki("/nonexistent"), "local", settings
    )


def test_the_xmpp_proxy_reads_its_table_typed(topology: Topology) -> None:
    table = {"partners": ["Jabber.lab"], "idle_timeout": 30, "listener_limits": {}}
    settings = context(topology, "edge", "xmpp-proxy", table).typed_settings(XmppProxySettings)
    assert settings.partners == ("Jabber.lab",) and settings.idle_timeout == 30.0
    assert settings.listener_limits == XmppListenerLimits()
    assert settings.allow_dialback and settings.verify_server_names is None


@pytest.mark.parametrize(
    ("service", "host", "factory", "table", "entry"),
    [
        ("xmpp-proxy", "edge", XmppProxyService, {"idle_timeout": "10"}, "xmpp-proxy.idle_timeout"),
        ("xmpp-proxy", "edge", XmppProxyService, {"partner": ["x"]}, "xmpp-proxy: unknown key"),
        ("xmpp-partner", "jabber", XmppPartnerService, {"users": ["romeo"]}, "xmpp-partner.users"),
        (
            "access-edge",
            "edge",
            AccessEdgeService,
            {"allow_outside_users": "yes"},
            "access-edge.allow_outside_users: must be true or false, not a string",
        ),
        (
            "access-edge",
            "edge",
            AccessEdgeService,
            {"client_limits": {"idle_timeout": "1"}},
            "access-edge.client_limits.idle_timeout: must be a number, not a string",
        ),
        (
            "access-edge",
            "edge",
            AccessEdgeService,
            {"served_domain": ["contoso.lab"]},
            "access-edge: unknown key 'served_domain'",
        ),
        (
            "access-edge",
            "edge",
            AccessEdgeService,
            {"tls_max_version": "1.1"},
            "access-edge.tls_max_version: must be one of 1.2, 1.3",
        ),
        ("front-end", "fe", FrontEndService, {"ntlm": 1}, "front-end.ntlm: must be true or false"),
        ("pic", "pic", PublicImService, {"user": ["dave"]}, "pic: unknown key 'user'"),
        (
            "av-edge",
            "edge",
            AvEdgeService,
            {"max_channels": "100"},
            "av-edge.max_channels: must be a non-negative integer, not a string",
        ),
        ("av-edge", "edge", AvEdgeService, {"relay_ports": "1-2"}, "av-edge: unknown key"),
        (
            "av-edge",
            "edge",
            AvEdgeService,
            {"listener_limits": {"max_connections": -1}},
            "av-edge.listener_limits.max_connections: must not be negative",
        ),
        (
            "dns",
            "dns-ext",
            DnsService,
            {"listener_limits": {"max_per_source": "16"}},
            "dns.listener_limits.max_per_source: must be an integer, not a string",
        ),
        ("dns", "dns-int", DnsService, {"zones": []}, "dns: unknown key 'zones' (known: listener"),
        (
            "media-peer",
            "messenger",
            MediaPeerService,
            {"port": 50000},
            "media-peer: unknown key 'port' (this table takes no settings)",
        ),
    ],
)
def test_a_bad_service_setting_stops_the_service_with_the_entry(
    topology: Topology,
    service: str,
    host: str,
    factory: Callable[[ServiceContext], object],
    table: dict[str, object],
    entry: str,
) -> None:
    with pytest.raises(ConfigError) as raised:
        factory(context(topology, host, service, table))
    assert f"default.toml: services.{entry}" in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_sub_table_replaces_keys_of_the_fields_default() -> None:
    @dataclasses.dataclass(frozen=True)
    class Limits:
        caps: Inner = dataclasses.field(default_factory=lambda: Inner(cap=7))
        """A sub-table whose default is not the class's."""

    assert load_settings(Limits, {"caps": {}}, LAB, "services.x").caps == Inner(cap=7)
    assert load_settings(Limits, {"caps": {"cap": 2}}, LAB, "services.x").caps == Inner(cap=2)


def test_the_access_edge_defaults_come_from_the_topology(topology: Topology) -> None:
    """Keys left out take the host's domain and its interfaces' FQDNs; the Front End's
    certificate names follow internal_next_hop; each side keeps its own connection caps."""
    table: dict[str, object] = {
        "internal_next_hop": "Pool2.contoso.lab",
        "client_limits": {"idle_timeout": 5},
    }
    config = AccessEdgeService(context(topology, "edge", "access-edge", table)).config
    assert config.served_domains == ("contoso.lab",)
    assert (config.external_fqdn, config.internal_fqdn) == (
        "sip.contoso.lab",
        "edge-int.contoso.lab",
    )
    assert config.internal_peer_names == ("pool2.contoso.lab",)
    assert config.client_limits.idle_timeout == 5.0
    assert config.client_limits.max_connections == 20_000  # the 443 side's cap, not SipLimits'
    assert config.limits_for(Side.FEDERATION).max_connections == 2_000


def test_a_sip_domain_service_reads_its_table_typed(topology: Topology) -> None:
    table = {
        "users": {"Alice": "pw"},
        "contacts": {"Alice": ["sip:bob@contoso.lab"]},
        "service_handlers": {"Application/X": "m:f"},
    }
    service = FrontEndService(context(topology, "fe", "front-end", table))
    assert service.config.domain == "contoso.lab" and service.config.ntlm
    assert service.config.contacts == {"alice": ["sip:bob@contoso.lab"]}
    assert service.handler_factories == {"application/x": "m:f"}
    assert not PublicImService(context(topology, "pic", "pic", {})).config.ntlm


def test_the_gateway_settings_default_to_the_topology(topology: Topology) -> None:
    ctx = context(topology, "fe", "xmpp-gateway", {"retry": 0.5})
    assert ctx.typed_settings(XmppGatewaySettings) == XmppGatewaySettings(retry=0.5)


def test_the_dns_listener_limits_come_from_its_table(topology: Topology) -> None:
    service = DnsService(
        context(topology, "dns-ext", "dns", {"listener_limits": {"max_per_source": 2}})
    )
    assert service.settings.listener_limits == DnsLimits(max_per_source=2)


def test_the_probes_turn_account_is_typed(topology: Topology, tmp_path: Path) -> None:
    """``[services.probes]`` is read like a service's table: a typo is an error naming it."""
    probes = {"turn_username": "edgesim-probe", "turn_password": "not-the-lab-one"}
    good = dataclasses.replace(topology, settings={**topology.settings, "probes": probes})
    credentials = turn_credentials(good, LabPki(tmp_path))
    assert credentials is not None
    assert (credentials.username, credentials.password) == ("edgesim-probe", "not-the-lab-one")
    typo = {"turn_user": "edgesim-probe"}
    bad = dataclasses.replace(topology, settings={**topology.settings, "probes": typo})
    with pytest.raises(ConfigError, match=r"services\.probes: unknown key 'turn_user'"):
        turn_credentials(bad, LabPki(tmp_path))
