"""MRAS: a credentialsRequest gets credentials the TURN core accepts; bad bodies a reason."""

from __future__ import annotations

import pytest

from simulator.lab.topology import Topology
from simulator.media.avauth import mras_target, relays_from_topology, trusted_servers
from simulator.media.mras import (
    MediaRelay,
    MrasError,
    answer_credentials_request,
    credentials_request_body,
    parse_credentials_response,
)
from simulator.media.stun import MessageClass
from simulator.media.turn import TurnServer
from tests.media.media_helpers import T0, Client, config

SECRET = b"s3cret"
RELAYS = [
    MediaRelay("internet", "av.contoso.lab", 3478, 443),
    MediaRelay("intranet", "edge-int.contoso.lab", 3478, 443),
]


def test_credentials_response_carries_working_turn_credentials_and_the_relay_list() -> None:
    body = credentials_request_body("sip:alice@contoso.lab", request_id="42", duration=60)
    answer = answer_credentials_request(
        body, identity="sip:alice@contoso.lab", relays=RELAYS, secret=SECRET, now=T0
    )
    assert b"credentialsResponse" in answer and b'credentialsRequestID="42"' in answer
    username, password, minutes, relays = parse_credentials_response(answer)
    assert minutes == 60
    assert username == f"{int(T0) + 3600}:alice@contoso.lab"
    assert relays == RELAYS
    server = TurnServer(config(users={}, shared_secret=SECRET))
    reply = Client(server, username, password).allocate(T0 + 10)
    assert reply.message_class == MessageClass.SUCCESS
    late = Client(server, username, password, address=("127.0.113.40", 40009))
    assert late.allocate(T0 + 3601).get("ERROR-CODE")[0] == 401


def test_duration_is_capped_at_eight_hours() -> None:
    body = credentials_request_body("sip:alice@contoso.lab", duration=100000)
    answer = answer_credentials_request(
        body, identity="sip:alice@contoso.lab", relays=RELAYS, secret=SECRET, now=T0
    )
    assert parse_credentials_response(answer)[2] == 480


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<not-xml", "malformed XML"),
        (b'<request xmlns="urn:other"/>', "root element is not an mrasp <request>"),
        (credentials_request_body("sip:bob@contoso.lab"), "another identity"),
        (credentials_request_body("sip:alice@contoso.lab", duration=-1), "must be positive"),
        (
            b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa">]><request/>',
            "DTDs and entities are not allowed",
        ),
        (b"<r>" + b"x" * 20000 + b"</r>", "larger than 16 KiB"),
        (
            b'<request xmlns="http://schemas.microsoft.com/2006/09/sip/mrasp"/>',
            "no <credentialsRequest>",
        ),
    ],
)
def test_bad_requests_raise_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(MrasError, match=reason):
        answer_credentials_request(
            body, identity="sip:alice@contoso.lab", relays=RELAYS, secret=SECRET, now=T0
        )


def test_relay_list_comes_from_the_topology(topology: Topology) -> None:
    assert relays_from_topology(topology) == [
        MediaRelay("internet", "av.contoso.lab", 3478, 443),
        MediaRelay("intranet", "edge-int.contoso.lab", 3478, 443),
    ]


def test_the_a_v_authentication_service_is_on_the_edges_internal_interface_5062(
    topology: Topology,
) -> None:
    target = mras_target(topology)
    assert target is not None
    assert (target.host, target.fqdn, target.port) == ("edge", "edge-int.contoso.lab", 5062)
    # it answers the Front End pool's servers only
    assert trusted_servers(topology) == ("fe.contoso.lab", "pool.contoso.lab")
