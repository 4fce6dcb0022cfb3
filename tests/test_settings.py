"""Typed service settings: a topology table becomes a dataclass or a one-line ConfigError that
names the file and the entry (simulator.settings), as the XMPP services load theirs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from simulator.errors import ConfigError
from simulator.lab.services import ServiceContext
from simulator.lab.topology import Topology
from simulator.limits import limit
from simulator.pki import LabPki
from simulator.settings import load_settings
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
    ],
)
def test_a_bad_xmpp_setting_stops_the_service_with_the_entry(
    topology: Topology,
    service: str,
    host: str,
    factory: type[XmppProxyService | XmppPartnerService],
    table: dict[str, object],
    entry: str,
) -> None:
    with pytest.raises(ConfigError) as raised:
        factory(context(topology, host, service, table))
    assert f"default.toml: services.{entry}" in str(raised.value)


def test_the_gateway_settings_default_to_the_topology(topology: Topology) -> None:
    ctx = context(topology, "fe", "xmpp-gateway", {"retry": 0.5})
    assert ctx.typed_settings(XmppGatewaySettings) == XmppGatewaySettings(retry=0.5)
