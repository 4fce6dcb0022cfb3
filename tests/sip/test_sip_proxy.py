"""The Access Edge core's decisions: routing by side, policy, trust header, loops, timers."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sipmessage import Request, Response

from simulator.errors import ConfigError
from simulator.settings import load_settings
from simulator.sip.build import response_for
from simulator.sip.connection import SipConnection
from simulator.sip.errors import RemoteProtocolError
from simulator.sip.events import RequestReceived, ResponseReceived
from simulator.sip.proxy import (
    EdgeConfig,
    EdgeProxy,
    Forward,
    Partner,
    Send,
    Side,
    ToFlow,
    ToInternal,
    ToPartner,
    VerifyPartner,
)
from tests.sip.sip_helpers import message

CONFIG = EdgeConfig(
    allowed_domains=(Partner("fabrikam.lab", "sip.fabrikam.lab"),),
    public_providers=(Partner("pic.lab", "sip.pic.lab", "pic"),),
    blocked_domains=("blocked.lab",),
    transaction_timeout=32.0,
)


def parse(data: bytes) -> Request:
    conn = SipConnection()
    conn.receive_data(data, 0.0)
    event = conn.next_event()
    assert isinstance(event, RequestReceived)
    return event.request


def reparse_response(response: Response) -> Response:
    conn = SipConnection()
    conn.receive_data(bytes(response), 0.0)
    event = conn.next_event()
    assert isinstance(event, ResponseReceived)
    return event.response


class Edge:
    def __init__(self, config: EdgeConfig = CONFIG) -> None:
        self.proxy = EdgeProxy(config)
        self.fabrikam = self.proxy.flow_opened(
            Side.FEDERATION, ("203.0.113.10", 40000), ["sip.fabrikam.lab"]
        )
        self.fe = self.proxy.flow_opened(Side.INTERNAL, ("192.0.2.10", 40001), ["pool.contoso.lab"])
        self.client = self.proxy.flow_opened(Side.CLIENT, ("203.0.113.40", 40002))


def only(actions: Sequence[object]) -> object:
    assert len(actions) == 1, actions
    return actions[0]


def refusal(actions: Sequence[object]) -> tuple[int, str]:
    action = only(actions)
    assert isinstance(action, Send) and isinstance(action.message, Response)
    warning = action.message.headers.get("Warning") or ""
    return action.message.code, warning.split('"')[1] if '"' in warning else ""


def test_partner_request_goes_inside_with_trust_header_and_via() -> None:
    edge = Edge()
    forged = message(extra="ms-edge-proxy-message-trust: ms-source-type=InternalUser\n")
    action = only(edge.proxy.receive_request(edge.fabrikam.id, parse(forged), 0.0))
    assert isinstance(action, Forward) and action.target == ToInternal()
    out = parse(bytes(action.request))  # what goes on the wire parses again
    vias = out.headers.getlist("Via")
    assert vias[0].startswith("SIP/2.0/TLS edge-int.contoso.lab:5061;branch=z9hG4bK-es")
    assert vias[1].endswith(";rport=40000;received=203.0.113.10")
    assert out.headers.get("Max-Forwards") == "69"
    assert out.headers.getlist("ms-edge-proxy-message-trust") == [
        "ms-source-type=DirectPartner;ms-ep-fqdn=sip.contoso.lab;"
        "ms-source-verified-user=verified;ms-source-network=federation"
    ]
    assert out.body == b"hello"


def test_response_goes_back_by_via() -> None:
    edge = Edge()
    forward = only(edge.proxy.receive_request(edge.fabrikam.id, parse(message()), 0.0))
    assert isinstance(forward, Forward)
    edge.proxy.sent_on(forward.branch, edge.fe.id)  # as the adapter does
    response = reparse_response(response_for(forward.request, 200))
    action = only(edge.proxy.receive_response(edge.fe.id, response, 1.0))
    assert isinstance(action, Send) and action.flow_id == edge.fabrikam.id
    assert isinstance(action.message, Response)
    assert [v.split(";")[0] for v in action.message.headers.getlist("Via")] == [
        "SIP/2.0/TLS 203.0.113.10:5061"
    ]
    assert edge.proxy.get_timer() is None  # the transaction is over


def test_policy_refusals() -> None:
    edge = Edge()
    cases = [
        (
            edge.fe.id,
            message(uri="sip:x@blocked.lab", sender="sip:bob@contoso.lab"),
            403,
            "domain blocked.lab is blocked",
        ),
        (
            edge.fe.id,
            message(uri="sip:x@other.lab", sender="sip:bob@contoso.lab"),
            403,
            "domain other.lab is not an allowed partner domain",
        ),
        (
            edge.fabrikam.id,
            message(uri="sip:dave@pic.lab"),
            403,
            "Domain pic.lab is not served here",
        ),
        (
            edge.fabrikam.id,
            message(sender="sip:mallory@contoso.lab"),
            403,
            "A federated peer cannot send as contoso.lab",
        ),
        (
            edge.fabrikam.id,
            message(sender="sip:dave@pic.lab"),
            403,
            "Peer certificate does not match the Edge FQDN of pic.lab (sip.pic.lab)",
        ),
        (
            edge.client.id,
            message(sender="sip:carol@fabrikam.lab"),
            403,
            "From domain fabrikam.lab is not served here",
        ),
        (edge.client.id, message(max_forwards="0"), 483, "Too Many Hops"),
        (
            edge.fe.id,
            message(uri="sip:alice@contoso.lab", sender="sip:bob@contoso.lab"),
            480,
            "No route to contoso.lab user outside",
        ),
    ]
    for flow_id, data, code, reason in cases:
        actions = edge.proxy.receive_request(flow_id, parse(data), 0.0)
        assert refusal(actions) == (code, reason)
        answer = only(actions)
        assert isinstance(answer, Send) and isinstance(answer.message, Response)
        diagnostics = answer.message.headers.get("ms-diagnostics")
        if flow_id == edge.fe.id and code == 403:  # a destination domain policy refuses
            assert diagnostics == (
                '1005;reason="Cannot route to destination domain";source="sip.contoso.lab"'
            )
        else:
            assert diagnostics is None
    assert len(edge.proxy.refusals) == len(cases)


def test_federation_off_and_public_im_off() -> None:
    config = EdgeConfig(
        allowed_domains=CONFIG.allowed_domains,
        public_providers=CONFIG.public_providers,
        allow_federated_users=False,
        enable_public_im=False,
    )
    edge = Edge(config)
    out = message(uri="sip:carol@fabrikam.lab", sender="sip:bob@contoso.lab")
    assert refusal(edge.proxy.receive_request(edge.fe.id, parse(out), 0.0)) == (
        403,
        "federation is disabled",
    )
    out = message(uri="sip:dave@pic.lab", sender="sip:bob@contoso.lab")
    assert refusal(edge.proxy.receive_request(edge.fe.id, parse(out), 0.0)) == (
        403,
        "public IM connectivity is disabled (pic.lab)",
    )


def test_internal_peer_must_be_the_pool() -> None:
    edge = Edge()
    stranger = edge.proxy.flow_opened(Side.INTERNAL, ("192.0.2.99", 1), ["pc1.contoso.lab"])
    out = message(uri="sip:carol@fabrikam.lab", sender="sip:bob@contoso.lab")
    assert refusal(edge.proxy.receive_request(stranger.id, parse(out), 0.0)) == (
        403,
        "Peer is not the internal next hop",
    )


def test_outbound_to_partner_and_pic() -> None:
    edge = Edge()
    for uri, partner in (
        ("sip:carol@fabrikam.lab", "fabrikam.lab"),
        ("sip:dave@pic.lab", "pic.lab"),
    ):
        out = message(uri=uri, sender="sip:bob@contoso.lab")
        action = only(edge.proxy.receive_request(edge.fe.id, parse(out), 0.0))
        assert isinstance(action, Forward) and isinstance(action.target, ToPartner)
        assert action.target.partner.domain == partner
        assert action.request.headers.getlist("Via")[0].startswith(
            "SIP/2.0/TLS sip.contoso.lab:5061;"
        )
    assert edge.proxy.flow_for_partner("fabrikam.lab") is edge.fabrikam  # reused both ways


def test_open_federation_asks_for_srv_check() -> None:
    config = EdgeConfig(enable_partner_discovery=True)
    proxy = EdgeProxy(config)
    flow = proxy.flow_opened(Side.FEDERATION, ("203.0.113.77", 1), ["sip.newco.lab"])
    request = parse(message(sender="sip:erin@newco.lab"))
    action = only(proxy.receive_request(flow.id, request, 0.0))
    assert isinstance(action, VerifyPartner) and action.domain == "newco.lab"
    forward = only(proxy.partner_verified(flow.id, "newco.lab", ["sip.newco.lab"], request, 0.0))
    assert isinstance(forward, Forward) and forward.target == ToInternal()
    other = proxy.flow_opened(Side.FEDERATION, ("203.0.113.78", 1), ["sip.evil.lab"])
    request = parse(message(sender="sip:erin@newco.lab", call_id="c2"))
    only(proxy.receive_request(other.id, request, 0.0))
    assert refusal(
        proxy.partner_verified(other.id, "newco.lab", ["sip.newco.lab"], request, 0.0)
    ) == (403, "Peer certificate does not match the DNS SRV target of newco.lab")


def test_loop_gets_482_and_spiral_passes() -> None:
    edge = Edge()
    out = message(uri="sip:carol@fabrikam.lab", sender="sip:bob@contoso.lab")
    first = only(edge.proxy.receive_request(edge.fe.id, parse(out), 0.0))
    assert isinstance(first, Forward)
    # the same request comes back from the inside again: a loop
    again = parse(bytes(first.request))
    assert refusal(edge.proxy.receive_request(edge.fe.id, again, 0.0)) == (482, "Loop Detected")
    # a remote user's request to a partner passes the Edge twice: a spiral
    remote = message(uri="sip:carol@fabrikam.lab", sender="sip:alice@contoso.lab", call_id="s1")
    inward = only(edge.proxy.receive_request(edge.client.id, parse(remote), 0.0))
    assert isinstance(inward, Forward) and inward.target == ToInternal()
    outward = only(edge.proxy.receive_request(edge.fe.id, parse(bytes(inward.request)), 0.0))
    assert isinstance(outward, Forward) and isinstance(outward.target, ToPartner)


def test_register_from_remote_user_gets_path_and_requests_find_the_flow_back() -> None:
    edge = Edge()
    register = message(
        "REGISTER",
        "sip:contoso.lab",
        sender="sip:alice@contoso.lab",
        to="sip:alice@contoso.lab",
        body="",
    )
    action = only(edge.proxy.receive_request(edge.client.id, parse(register), 0.0))
    assert isinstance(action, Forward)
    path = action.request.headers.get("Path")
    assert path == f"<sip:edge-int.contoso.lab:5061;transport=tls;lr;edgeflow={edge.client.id}>"
    edge.proxy.sent_on(action.branch, edge.fe.id)
    ok = reparse_response(response_for(action.request, 200))
    only(edge.proxy.receive_response(edge.fe.id, ok, 0.0))
    assert edge.proxy.flows[edge.client.id].user == "sip:alice@contoso.lab"
    # the Front End sends to alice with the Path as Route
    inbound = message(
        uri="sip:alice@contoso.lab", sender="sip:bob@contoso.lab", extra=f"Route: {path}\n"
    )
    action = only(edge.proxy.receive_request(edge.fe.id, parse(inbound), 0.0))
    assert isinstance(action, Forward) and action.target == ToFlow(edge.client.id)
    assert action.request.headers.getlist("Route") == []


def test_invite_gets_double_record_route() -> None:
    edge = Edge()
    invite = message("INVITE", sender="sip:carol@fabrikam.lab", body="v=0\r\n")
    action = only(edge.proxy.receive_request(edge.fabrikam.id, parse(invite), 0.0))
    assert isinstance(action, Forward)
    assert action.request.headers.getlist("Record-Route") == [
        "<sip:edge-int.contoso.lab:5061;transport=tls;lr>",
        "<sip:sip.contoso.lab:5061;transport=tls;lr>",
    ]


def test_silent_next_hop_gets_408_at_timer_f() -> None:
    edge = Edge()
    action = only(edge.proxy.receive_request(edge.fabrikam.id, parse(message()), 10.0))
    assert isinstance(action, Forward)
    assert edge.proxy.get_timer() == 42.0
    assert edge.proxy.handle_timer(41.9) == []
    sent = only(edge.proxy.handle_timer(42.0))
    assert isinstance(sent, Send) and sent.flow_id == edge.fabrikam.id
    assert isinstance(sent.message, Response) and sent.message.code == 408
    assert edge.proxy.get_timer() is None


def test_unreachable_next_hop_gets_504_with_ms_diagnostics() -> None:
    edge = Edge()
    out = message(uri="sip:carol@fabrikam.lab", sender="sip:bob@contoso.lab")
    action = only(edge.proxy.receive_request(edge.fe.id, parse(out), 0.0))
    assert isinstance(action, Forward)
    for kind, code in (
        ("srv", 1008),
        ("dns-a", 1014),
        ("untrusted", 1010),
        ("connect", 1046),
        ("tls", 1047),
    ):
        edge2 = Edge()
        fwd = only(edge2.proxy.receive_request(edge2.fe.id, parse(out), 0.0))
        assert isinstance(fwd, Forward)
        sent = only(edge2.proxy.next_hop_failed(fwd.branch, kind, "why", "sip.fabrikam.lab"))
        assert isinstance(sent, Send) and isinstance(sent.message, Response)
        assert sent.message.code == 504
        diag = sent.message.headers.get("ms-diagnostics") or ""
        assert diag.startswith(f"{code};reason=")
        assert 'PeerServer="sip.fabrikam.lab"' in diag
        reparse_response(sent.message)  # parses again


def test_options_to_the_edge_is_answered_by_the_edge() -> None:
    edge = Edge()
    options = message("OPTIONS", "sip:sip.contoso.lab", sender="sip:carol@fabrikam.lab", body="")
    sent = only(edge.proxy.receive_request(edge.fabrikam.id, parse(options), 0.0))
    assert (
        isinstance(sent, Send) and isinstance(sent.message, Response) and sent.message.code == 200
    )


def edge_settings(table: dict[str, object]) -> EdgeConfig:
    """``table`` as an ``[services.access-edge]`` table of ``lab.toml``."""
    return load_settings(EdgeConfig, table, "lab.toml", "services.access-edge")


def test_settings_table() -> None:
    config = edge_settings(
        {
            "allowed_domains": [
                {"domain": "Fabrikam.lab", "proxy_fqdn": "SIP.fabrikam.lab"},
                "x.lab",
            ],
            "blocked_domains": ["Blocked.lab"],
            "enable_partner_discovery": True,
        }
    )
    assert config.allowed_domains == (
        Partner("fabrikam.lab", "sip.fabrikam.lab"),
        Partner("x.lab", None),
    )
    assert config.blocked_domains == ("blocked.lab",)
    with pytest.raises(ConfigError) as raised:
        edge_settings({"allow_everything": True})
    assert str(raised.value).startswith(
        "lab.toml: services.access-edge: unknown key 'allow_everything' (known: "
    )


def test_serialiser_reuses_the_received_uri_only_while_unchanged() -> None:
    from sipmessage import URI

    from simulator.sip.build import to_bytes

    request = parse(message(uri="sip:bob@contoso.lab;transport=tls"))
    assert to_bytes(request) == bytes(request)
    request.uri = URI.parse("sip:carol@fabrikam.lab")
    assert to_bytes(request).startswith(b"MESSAGE sip:carol@fabrikam.lab SIP/2.0\r\n")
    assert to_bytes(request) == bytes(request)


def test_cancel_leaves_with_the_branch_of_its_invite() -> None:
    edge = Edge()
    invite = message("INVITE", sender="sip:carol@fabrikam.lab", body="v=0\r\n")
    forwarded = only(edge.proxy.receive_request(edge.fabrikam.id, parse(invite), 0.0))
    assert isinstance(forwarded, Forward)
    edge.proxy.sent_on(forwarded.branch, edge.fe.id)
    cancel = message("CANCEL", sender="sip:carol@fabrikam.lab", body="")
    cancelled = only(edge.proxy.receive_request(edge.fabrikam.id, parse(cancel), 0.0))
    assert isinstance(cancelled, Forward) and cancelled.target == ToInternal()
    assert cancelled.branch == forwarded.branch
    # the 200 to the CANCEL goes back upstream without ending the INVITE transaction
    ok = reparse_response(response_for(cancelled.request, 200))
    sent = only(edge.proxy.receive_response(edge.fe.id, ok, 1.0))
    assert isinstance(sent, Send) and sent.flow_id == edge.fabrikam.id
    assert edge.proxy.get_timer() == 32.0  # Timer B still runs for the INVITE


def test_indexed_headers_behave_like_sipmessage_headers() -> None:
    from sipmessage import Headers

    from simulator.sip.build import IndexedHeaders

    plain, indexed = Headers(), IndexedHeaders()
    for headers in (plain, indexed):
        headers.add("Via", "SIP/2.0/TLS a;branch=z9hG4bK1")
        headers.add("via", "SIP/2.0/TLS b;branch=z9hG4bK2")
        headers.add("Route", "<sip:x;lr>")
        headers.getlist("VIA").insert(0, "SIP/2.0/TLS c;branch=z9hG4bK3")
        headers.remove("route")
        headers.set("Max-Forwards", "69")
        headers.getlist("Missing").append("ignored")
        headers.setlist("Record-Route", ["<sip:r1;lr>", "<sip:r2;lr>"])
    assert str(indexed) == str(plain)
    for name in ("via", "Route", "max-forwards", "RECORD-ROUTE", "Missing"):
        assert indexed.getlist(name) == plain.getlist(name)
        assert indexed.get(name) == plain.get(name)


def test_next_hop_connection_lost_gets_503() -> None:
    edge = Edge()
    forward = only(edge.proxy.receive_request(edge.fabrikam.id, parse(message()), 0.0))
    assert isinstance(forward, Forward)
    edge.proxy.sent_on(forward.branch, edge.fe.id)
    sent = only(edge.proxy.flow_closed(edge.fe.id))
    assert isinstance(sent, Send) and sent.flow_id == edge.fabrikam.id
    assert isinstance(sent.message, Response) and sent.message.code == 503
    assert edge.proxy.get_timer() is None


_TEXT = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=126, exclude_characters="\r\n"),
    max_size=40,
)


@given(
    route=_TEXT,
    user=st.from_regex(r"[a-z0-9.+-]{1,12}", fullmatch=True),
    host=st.sampled_from(["contoso.lab", "fabrikam.lab", "pic.lab", "sip.contoso.lab", "x.lab"]),
    sender=st.sampled_from(["contoso.lab", "fabrikam.lab", "pic.lab", "blocked.lab", "1.2.3.4"]),
    extra=_TEXT,
    method=st.sampled_from(["MESSAGE", "INVITE", "ACK", "CANCEL", "OPTIONS", "REGISTER", "BYE"]),
    side=st.sampled_from(["fabrikam", "fe", "client"]),
)
@settings(max_examples=120, deadline=None)
def test_proxy_never_raises_on_parseable_input(
    route: str, user: str, host: str, sender: str, extra: str, method: str, side: str
) -> None:
    """Whatever passes validation, the core answers or forwards; it never raises."""
    data = message(
        method,
        f"sip:{user}@{host}",
        sender=f"sip:someone@{sender}",
        extra=f"Route: {route}\nX-Extra: {extra}\n",
    )
    conn = SipConnection()
    conn.receive_data(data, 0.0)
    try:
        event = conn.next_event()
    except RemoteProtocolError:
        return
    assert isinstance(event, RequestReceived)
    edge = Edge(EdgeConfig(**{**CONFIG.__dict__, "enable_partner_discovery": True}))
    flow = {"fabrikam": edge.fabrikam, "fe": edge.fe, "client": edge.client}[side]
    for action in edge.proxy.receive_request(flow.id, event.request, 0.0):
        bytes(action.request if isinstance(action, (Forward, VerifyPartner)) else action.message)
        if isinstance(action, Forward) and method != "ACK":
            edge.proxy.sent_on(action.branch, edge.fe.id)
            reply = reparse_response(response_for(action.request, 200))
            edge.proxy.receive_response(edge.fe.id, reply, 1.0)
    edge.proxy.handle_timer(100.0)


def test_the_inside_vias_leave_sealed_in_ms_internal_info_and_come_back() -> None:
    """[MS-SIPRE] ``ms-internal-info``: what leaves the organisation carries one Via, the
    Edge's; the Front End's (and its clients') ride sealed in it and return with the answer."""
    edge = Edge()
    inside = message(uri="sip:carol@fabrikam.lab", sender="sip:bob@contoso.lab").replace(
        b"Via: SIP/2.0/TLS 203.0.113.10:5061;branch=z9hG4bK-peer-1;rport",
        b"Via: SIP/2.0/TLS fe.contoso.lab:5061;branch=z9hG4bK-fe-1\r\n"
        b"Via: SIP/2.0/TLS 192.0.2.50:50123;branch=z9hG4bK-bob-1",
    )
    forward = only(edge.proxy.receive_request(edge.fe.id, parse(inside), 0.0))
    assert isinstance(forward, Forward) and isinstance(forward.target, ToPartner)
    wire = bytes(forward.request)
    assert b"fe.contoso.lab" not in wire and b"192.0.2." not in wire
    out = parse(wire)
    (via,) = out.headers.getlist("Via")
    assert via.startswith("SIP/2.0/TLS sip.contoso.lab:5061;branch=z9hG4bK-es")
    assert ';ms-internal-info="' in via
    edge.proxy.sent_on(forward.branch, edge.fabrikam.id)
    answer = reparse_response(response_for(out, 200))
    sent = only(edge.proxy.receive_response(edge.fabrikam.id, answer, 1.0))
    assert isinstance(sent, Send) and sent.flow_id == edge.fe.id
    assert isinstance(sent.message, Response)
    vias = ",".join(reparse_response(sent.message).headers.getlist("Via")).split(",")
    assert [v.strip().split(";")[0] for v in vias] == [
        "SIP/2.0/TLS fe.contoso.lab:5061",
        "SIP/2.0/TLS 192.0.2.50:50123",
    ]
    # a token the partner changed does not verify: the answer is dropped
    forward = only(edge.proxy.receive_request(edge.fe.id, parse(inside), 2.0))
    assert isinstance(forward, Forward)
    edge.proxy.sent_on(forward.branch, edge.fabrikam.id)
    forged = bytes(response_for(parse(bytes(forward.request)), 200)).replace(
        b'ms-internal-info="', b'ms-internal-info="A'
    )
    assert edge.proxy.receive_response(edge.fabrikam.id, reparse_response_bytes(forged), 3.0) == []
    # what comes in from outside keeps its Vias (the inside may see the partner's hops)
    inbound = only(edge.proxy.receive_request(edge.fabrikam.id, parse(message()), 4.0))
    assert isinstance(inbound, Forward)
    assert "ms-internal-info" not in " ".join(inbound.request.headers.getlist("Via"))


def test_an_answer_after_its_caller_left_is_dropped_quietly() -> None:
    """A client that leaves right after sending (SIPE de-registering as it signs out): the
    answer that arrives afterwards is no stray response, and no refusal is recorded."""
    edge = Edge()
    register = message(
        "REGISTER",
        "sip:contoso.lab",
        sender="sip:alice@contoso.lab",
        to="sip:alice@contoso.lab",
        body="",
    )
    forward = only(edge.proxy.receive_request(edge.client.id, parse(register), 0.0))
    assert isinstance(forward, Forward)
    edge.proxy.sent_on(forward.branch, edge.fe.id)
    assert edge.proxy.flow_closed(edge.client.id) == []
    refusals = list(edge.proxy.refusals)
    answer = reparse_response(response_for(forward.request, 200))
    assert edge.proxy.receive_response(edge.fe.id, answer, 1.0) == []
    assert edge.proxy.refusals == refusals


def reparse_response_bytes(data: bytes) -> Response:
    conn = SipConnection()
    conn.receive_data(data, 0.0)
    event = conn.next_event()
    assert isinstance(event, ResponseReceived)
    return event.response


def test_verification_levels_decide_what_the_edge_vouches_for() -> None:
    """New-CsAllowedDomain -VerificationLevel: AlwaysVerifiable, AlwaysUnverifiable, or the
    partner's own claim (UseSourceVerification), into ms-source-verified-user."""
    claim = "ms-edge-proxy-message-trust: ms-source-type=InternetUser;ms-source-verified-user=verified\n"
    for level, extra, expected in (
        ("AlwaysVerifiable", "", "verified"),
        ("AlwaysUnverifiable", claim, "unverified"),
        ("UseSourceVerification", claim, "verified"),
        ("UseSourceVerification", "", "unverified"),
    ):
        config = edge_settings(
            {
                "allowed_domains": [
                    {
                        "domain": "fabrikam.lab",
                        "proxy_fqdn": "sip.fabrikam.lab",
                        "verification_level": level,
                    }
                ]
            }
        )
        edge = Edge(config)
        action = only(edge.proxy.receive_request(edge.fabrikam.id, parse(message(extra=extra)), 0))
        assert isinstance(action, Forward)
        (trust,) = action.request.headers.getlist("ms-edge-proxy-message-trust")
        assert f"ms-source-verified-user={expected};" in trust, (level, trust)
        assert trust.startswith("ms-source-type=DirectPartner;")
    with pytest.raises(ConfigError, match="allowed_domains: verification_level 'Sometimes'"):
        edge_settings({"allowed_domains": [{"domain": "x.lab", "verification_level": "Sometimes"}]})
