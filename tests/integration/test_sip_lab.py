"""The SIP part of the lab, end to end on loopback: the issue's "Done when" list.

Every test starts the SIP hosts of the default topology (DNS, Edge, Front End, fabrikam, PIC)
with :class:`LocalLab`, on loopback addresses of their own (the topology's addresses are moved
to 10.213.x.y so this file never collides with another lab on the machine), and drives them with
the :class:`UserAgent` client over real TLS/MTLS.
"""

from __future__ import annotations

import asyncio
import logging
import ssl

import pytest

from simulator.lab.topology import Topology
from simulator.pki import LabPki
from tests.siplab import SIP_HOSTS, lab_up, next_incoming
from tests.siplab import sip_topology as build_topology


@pytest.fixture(scope="module")
def sip_topology(tmp_path_factory: pytest.TempPathFactory) -> Topology:
    return build_topology(tmp_path_factory.mktemp("topo"))


pytestmark = pytest.mark.skipif(
    __import__("os").geteuid() != 0, reason="binds ports 443, 5061 and 53 on loopback (needs root)"
)

# ---------------------------------------------------------------------- what works


async def test_services_answer_options(sip_topology: Topology, lab_pki: LabPki) -> None:
    async with lab_up(sip_topology, lab_pki) as lab:
        checks = await lab.lab.check()
        sip_services = {"access-edge", "front-end", "partner-edge", "pic"}
        sip = [c for c in checks if c.service in sip_services]
        assert len(sip) == 6
        assert all(c.ok for c in sip), [c.detail for c in sip if not c.ok]


async def test_remote_user_registers_over_443_and_chats_with_internal_user(
    sip_topology: Topology, lab_pki: LabPki
) -> None:
    async with (
        lab_up(sip_topology, lab_pki) as lab,
        lab.ua("alice@contoso.lab", "remote") as alice,
        lab.ua("bob@contoso.lab", "internal") as bob,
    ):
        assert (await alice.register()).code == 200
        assert (await bob.register()).code == 200
        response = await alice.message("sip:bob@contoso.lab", "hello from home")
        assert response.code == 200
        got = await next_incoming(bob)
        assert got.body == b"hello from home"  # type: ignore[attr-defined]
        trust = got.headers.get("ms-edge-proxy-message-trust")  # type: ignore[attr-defined]
        assert trust is not None and "ms-source-type=InternetUser" in trust
        assert "ms-source-verified-user=verified" in trust
        response = await bob.message("sip:alice@contoso.lab", "hello from the office")
        assert response.code == 200
        got = await next_incoming(alice)
        assert got.body == b"hello from the office"  # type: ignore[attr-defined]


async def test_wrong_password_gets_401(sip_topology: Topology, lab_pki: LabPki) -> None:
    async with lab_up(sip_topology, lab_pki) as lab:
        ua = lab.ua("alice@contoso.lab", "remote")
        ua.password = "not-the-password"
        async with ua:
            assert (await ua.register()).code == 401


async def test_fabrikam_and_contoso_users_chat_both_ways_over_5061(
    sip_topology: Topology, lab_pki: LabPki
) -> None:
    async with (
        lab_up(sip_topology, lab_pki) as lab,
        lab.ua("bob@contoso.lab", "internal") as bob,
        lab.ua("carol@fabrikam.lab", "fabrikam") as carol,
    ):
        assert (await bob.register()).code == 200
        assert (await carol.register()).code == 200
        assert (await bob.message("sip:carol@fabrikam.lab", "hi carol")).code == 200
        got = await next_incoming(carol)
        assert got.body == b"hi carol"  # type: ignore[attr-defined]
        # the inside's Via entries left sealed in the Edge's ms-internal-info ([MS-SIPRE])
        vias = ", ".join(got.headers.getlist("Via"))  # type: ignore[attr-defined]
        assert "ms-internal-info=" in vias
        assert "fe.contoso.lab" not in vias and lab.addr("fe:lan") not in vias
        assert lab.addr("internal-user:lan") not in vias
        assert (await carol.message("sip:bob@contoso.lab", "hi bob")).code == 200
        got = await next_incoming(bob)
        assert got.body == b"hi bob"  # type: ignore[attr-defined]
        trust = got.headers.get("ms-edge-proxy-message-trust")  # type: ignore[attr-defined]
        assert trust is not None and "ms-source-type=DirectPartner" in trust
        # one federation connection carried both directions (reuse)
        proxy = lab.edge.edge.proxy  # type: ignore[union-attr]
        fabrikam_flows = [f for f in proxy.flows.values() if "fabrikam.lab" in f.domains]
        assert len(fabrikam_flows) == 1


async def test_forged_trust_header_from_outside_is_stripped(
    sip_topology: Topology, lab_pki: LabPki
) -> None:
    async with (
        lab_up(sip_topology, lab_pki) as lab,
        lab.ua("bob@contoso.lab", "internal") as bob,
        lab.ua("carol@fabrikam.lab", "fabrikam") as carol,
    ):
        await bob.register()
        await carol.register()
        forged = "ms-source-type=InternalUser;ms-source-network=intranet"
        response = await carol.request(
            "MESSAGE",
            "sip:bob@contoso.lab",
            body=b"x",
            content_type="text/plain",
            headers=[("ms-edge-proxy-message-trust", forged)],
        )
        assert response.code == 200
        got = await next_incoming(bob)
        values = got.headers.getlist("ms-edge-proxy-message-trust")  # type: ignore[attr-defined]
        assert forged not in values
        assert len(values) == 1 and "DirectPartner" in values[0]


async def test_pic_user_chats_both_ways(sip_topology: Topology, lab_pki: LabPki) -> None:
    async with (
        lab_up(sip_topology, lab_pki) as lab,
        lab.ua("alice@contoso.lab", "remote") as alice,
        lab.ua("dave@pic.lab", "pic") as dave,
    ):
        assert (await alice.register()).code == 200
        assert (await dave.register()).code == 200
        assert (await alice.message("sip:dave@pic.lab", "hi dave")).code == 200
        assert (await next_incoming(dave)).body == b"hi dave"  # type: ignore[attr-defined]
        assert (await dave.message("sip:alice@contoso.lab", "hi alice")).code == 200
        got = await next_incoming(alice)
        assert got.body == b"hi alice"  # type: ignore[attr-defined]
        # [MS-SIPRE] 2.2.15: a public IM provider is an AuthorizedServer on the publiccloud
        # network, and ms-remote-fqdn names its server (3.10.1.5)
        assert got.headers.get("ms-edge-proxy-message-trust") == (  # type: ignore[attr-defined]
            "ms-source-type=AuthorizedServer;ms-ep-fqdn=sip.contoso.lab;"
            "ms-source-verified-user=verified;ms-source-network=publiccloud;"
            "ms-remote-fqdn=sip.pic.lab"
        )


async def test_presence_and_call_across_federation(sip_topology: Topology, lab_pki: LabPki) -> None:
    async with lab_up(sip_topology, lab_pki) as lab:  # noqa: SIM117
        async with (
            lab.ua("bob@contoso.lab", "internal") as bob,
            lab.ua("carol@fabrikam.lab", "fabrikam") as carol,
        ):
            await bob.register()
            await carol.register()
            assert (await carol.subscribe("sip:bob@contoso.lab")).code == 200
            notify = await next_incoming(carol, "NOTIFY")
            assert b"<basic>open</basic>" in notify.body  # type: ignore[attr-defined]
            sdp = (
                b"v=0\r\no=bob 1 1 IN IP4 192.0.2.20\r\ns=-\r\nc=IN IP4 192.0.2.20\r\n"
                b"t=0 0\r\nm=audio 5004 RTP/AVP 0\r\n"
            )
            carol.answer_sdp = sdp.replace(b"bob", b"carol")
            response, dialog = await bob.invite("sip:carol@fabrikam.lab", sdp)
            assert response.code == 200 and dialog is not None
            assert response.body == carol.answer_sdp
            invite = await next_incoming(carol, "INVITE")
            assert invite.body == sdp  # type: ignore[attr-defined]
            await next_incoming(carol, "ACK")
            assert (await bob.bye(dialog)).code == 200
            await next_incoming(carol, "BYE")


# ---------------------------------------------------------------------- refusals


async def test_no_client_certificate_on_5061_is_refused_at_tls(
    sip_topology: Topology, lab_pki: LabPki
) -> None:
    async with lab_up(sip_topology, lab_pki) as lab:
        with pytest.raises((ConnectionError, ssl.SSLError, TimeoutError)):
            async with lab.ua("carol@fabrikam.lab", "edge5061") as carol:
                await carol.options("sip:bob@contoso.lab", timeout=3)
        assert any("no client certificate" in r for r in lab.refusals())


async def test_unknown_ca_is_refused_at_tls(sip_topology: Topology, lab_pki: LabPki) -> None:
    async with lab_up(sip_topology, lab_pki) as lab:
        with pytest.raises((ConnectionError, ssl.SSLError, TimeoutError)):
            async with lab.ua(
                "carol@fabrikam.lab", "edge5061", cert=("unknown-ca", "fabrikam", "fabrikam")
            ) as c:
                await c.message("sip:bob@contoso.lab", "x", timeout=3)
        assert any("does not chain to a trusted CA" in r and "refused" in r for r in lab.refusals())


async def test_certificate_name_mismatch_gets_403(sip_topology: Topology, lab_pki: LabPki) -> None:
    async with lab_up(sip_topology, lab_pki) as lab:
        async with lab.ua(
            "carol@fabrikam.lab", "edge5061", cert=("wrong-name", "fabrikam", "fabrikam")
        ) as c:
            response = await c.message("sip:bob@contoso.lab", "x")
            assert response.code == 403
            assert "does not match the Edge FQDN of fabrikam.lab" in (
                response.headers.get("Warning") or ""
            )
        assert any("does not match the Edge FQDN" in r for r in lab.refusals())


async def test_blocked_domain_gets_403_both_ways(sip_topology: Topology, lab_pki: LabPki) -> None:
    async with lab_up(sip_topology, lab_pki) as lab:  # noqa: SIM117
        async with lab.ua("bob@contoso.lab", "internal") as bob:
            await bob.register()
            response = await bob.message("sip:someone@blocked.lab", "x")
            assert response.code == 403
            assert "domain blocked.lab is blocked" in (response.headers.get("Warning") or "")
            # [MS-OCER] 7.2: the policy refuses the destination domain
            assert response.headers.get("ms-diagnostics") == (
                '1005;reason="Cannot route to destination domain";source="sip.contoso.lab"'
            )
    settings: dict[str, dict[str, object]] = {"access-edge": {"blocked_domains": ["fabrikam.lab"]}}
    async with lab_up(sip_topology, lab_pki, settings) as lab:  # noqa: SIM117
        async with (
            lab.ua("bob@contoso.lab", "internal") as bob,
            lab.ua("carol@fabrikam.lab", "fabrikam") as carol,
        ):
            await bob.register()
            await carol.register()
            response = await carol.message("sip:bob@contoso.lab", "x")
            assert response.code == 403
            assert "domain fabrikam.lab is blocked" in (response.headers.get("Warning") or "")


async def test_unknown_user_gets_404(sip_topology: Topology, lab_pki: LabPki) -> None:
    async with lab_up(sip_topology, lab_pki) as lab:  # noqa: SIM117
        async with lab.ua("carol@fabrikam.lab", "fabrikam") as carol:
            await carol.register()
            response = await carol.message("sip:nobody@contoso.lab", "x")
            assert response.code == 404
            assert (response.headers.get("ms-diagnostics") or "").startswith("4005;")


async def test_registered_user_offline_gets_480(sip_topology: Topology, lab_pki: LabPki) -> None:
    async with lab_up(sip_topology, lab_pki) as lab:  # noqa: SIM117
        async with lab.ua("carol@fabrikam.lab", "fabrikam") as carol:
            await carol.register()
            assert (await carol.message("sip:alice@contoso.lab", "x")).code == 480


async def test_front_end_down_gets_504_with_diagnostics(
    sip_topology: Topology, lab_pki: LabPki
) -> None:
    hosts = [h for h in SIP_HOSTS if h != "fe"]
    async with lab_up(sip_topology, lab_pki, hosts=hosts) as lab:  # noqa: SIM117
        async with lab.ua("alice@contoso.lab", "remote") as alice:
            response = await alice.register()
            assert response.code == 504
            diagnostics = response.headers.get("ms-diagnostics") or ""
            assert diagnostics.startswith('1046;reason="Failed to connect to a peer server"')


async def test_partner_srv_missing_gets_504_1008(sip_topology: Topology, lab_pki: LabPki) -> None:
    settings: dict[str, dict[str, object]] = {"access-edge": {"enable_partner_discovery": True}}
    async with lab_up(sip_topology, lab_pki, settings) as lab:  # noqa: SIM117
        async with lab.ua("bob@contoso.lab", "internal") as bob:
            await bob.register()
            response = await bob.message("sip:x@nowhere.lab", "x")
            assert response.code == 504
            assert response.headers.get("ms-diagnostics") == (
                '1008;reason="Unable to resolve DNS SRV record";source="sip.contoso.lab"'
            )


async def test_partner_a_record_missing_gets_504_1014(
    sip_topology: Topology, lab_pki: LabPki
) -> None:
    """The partner's Edge FQDN has no A record: [MS-OCER] 1014, not 1046."""
    settings: dict[str, dict[str, object]] = {
        "access-edge": {
            "allowed_domains": [{"domain": "fabrikam.lab", "proxy_fqdn": "edge.nowhere.lab"}]
        }
    }
    async with lab_up(sip_topology, lab_pki, settings) as lab:  # noqa: SIM117
        async with lab.ua("bob@contoso.lab", "internal") as bob:
            await bob.register()
            response = await bob.message("sip:carol@fabrikam.lab", "x")
            assert response.code == 504
            assert response.headers.get("ms-diagnostics") == (
                '1014;reason="Unable to resolve DNS A record";source="sip.contoso.lab"'
                ';PeerServer="edge.nowhere.lab"'
            )


async def test_untrusted_partner_certificate_gets_504_1010(
    sip_topology: Topology, lab_pki: LabPki
) -> None:
    settings: dict[str, dict[str, object]] = {"access-edge": {"trusted_cas": ["public"]}}
    async with lab_up(sip_topology, lab_pki, settings) as lab:  # noqa: SIM117
        async with lab.ua("bob@contoso.lab", "internal") as bob:
            await bob.register()
            response = await bob.message("sip:carol@fabrikam.lab", "x")
            assert response.code == 504
            assert response.headers.get("ms-diagnostics") == (
                '1010;reason="Certificate trust with next-hop server could not be established"'
                ';source="sip.contoso.lab";PeerServer="sip.fabrikam.lab"'
            )


async def test_malformed_request_gets_400_and_connection_stays_usable(
    sip_topology: Topology, lab_pki: LabPki
) -> None:
    async with lab_up(sip_topology, lab_pki) as lab:  # noqa: SIM117
        async with lab.ua("alice@contoso.lab", "remote") as alice:
            for header, value, phrase in (
                ("Max-Forwards", "many", "Malformed Max-Forwards header"),
                ("Supported", None, "Malformed header line"),
            ):
                bad = alice.build("OPTIONS", "sip:sip.contoso.lab")
                raw = bytes(bad)
                if value is None:  # a header line without a colon
                    raw = raw.replace(b"User-Agent:", b"User-Agent")
                else:
                    bad.headers.set(header, value)
                    raw = bytes(bad)
                future = asyncio.get_running_loop().create_future()
                branch = bad.headers.getlist("Via")[0].split("branch=")[1].split(";")[0]
                alice._pending[branch] = future
                await alice.send_raw(raw)
                response = await asyncio.wait_for(future, 5)
                assert (response.code, response.phrase) == (400, phrase)
                # the same connection still works
                assert (await alice.options("sip:sip.contoso.lab")).code == 200


async def test_max_forwards_zero_gets_483_and_a_loop_gets_482(
    sip_topology: Topology, lab_pki: LabPki
) -> None:
    settings: dict[str, dict[str, object]] = {
        "access-edge": {
            "allowed_domains": [
                {"domain": "fabrikam.lab", "proxy_fqdn": "sip.fabrikam.lab"},
                {"domain": "loop.lab", "proxy_fqdn": "sip.contoso.lab"},  # federates with itself
            ]
        }
    }
    async with lab_up(sip_topology, lab_pki, settings) as lab:  # noqa: SIM117
        async with (
            lab.ua("alice@contoso.lab", "remote") as alice,
            lab.ua("bob@contoso.lab", "internal") as bob,
        ):
            await bob.register()
            response = await alice.request(
                "MESSAGE",
                "sip:bob@contoso.lab",
                body=b"x",
                content_type="text/plain",
                headers=[("Max-Forwards", "0")],
            )
            assert response.code == 483
            response = await bob.message("sip:x@loop.lab", "x")
            assert response.code == 482


async def test_oversized_message_gets_513_and_the_connection_closes(
    sip_topology: Topology, lab_pki: LabPki
) -> None:
    settings: dict[str, dict[str, object]] = {"access-edge": {"max_message_bytes": 4096}}
    async with lab_up(sip_topology, lab_pki, settings) as lab:
        ua = lab.ua("alice@contoso.lab", "remote")
        async with ua:
            big = ua.build(
                "MESSAGE", "sip:bob@contoso.lab", body=b"x" * 5000, content_type="text/plain"
            )
            future = asyncio.get_running_loop().create_future()
            branch = big.headers.getlist("Via")[0].split("branch=")[1].split(";")[0]
            ua._pending[branch] = future
            await ua.send_raw(bytes(big))
            response = await asyncio.wait_for(future, 5)
            assert (response.code, response.phrase) == (513, "Message Too Large")
            assert ua.proto is not None
            await asyncio.wait_for(ua.proto.closed, 5)


async def test_service_requests_reach_the_front_end_hook(
    sip_topology: Topology, lab_pki: LabPki
) -> None:
    """The hook the A/V team's MRAS handler plugs into: SERVICE by Content-Type."""
    from sipmessage import Request, Response

    from simulator.sip.build import response_for
    from simulator.sip.service import FrontEndService

    seen: list[Request] = []

    async def mras(request: Request) -> Response:
        seen.append(request)
        body = b"<credentialsResponse/>"
        headers = [("Content-Type", "application/msrtc-media-relay-auth+xml")]
        return response_for(request, 200, headers=headers, body=body)

    async with lab_up(sip_topology, lab_pki) as lab:
        fe = next(s.instance for s in lab.lab.statuses if s.service == "front-end")
        assert isinstance(fe, FrontEndService) and fe.server is not None
        fe.server.service_handlers["application/msrtc-media-relay-auth+xml"] = mras
        async with lab.ua("alice@contoso.lab", "remote") as alice:
            assert (await alice.register()).code == 200
            response = await alice.request(
                "SERVICE",
                "sip:alice@contoso.lab",
                body=b"<request/>",
                content_type="application/msrtc-media-relay-auth+xml",
            )
            assert response.code == 200
            assert response.body == b"<credentialsResponse/>"
            assert seen and seen[0].body == b"<request/>"
            other = await alice.request(
                "SERVICE", "sip:alice@contoso.lab", body=b"{}", content_type="application/json"
            )
            assert other.code == 415


@pytest.mark.parametrize(
    ("kind", "reason"),
    [("server-only", "not valid for this use"), ("expired", "out of its validity period")],
)
async def test_unusable_client_certificate_is_refused_on_5061(
    sip_topology: Topology, lab_pki: LabPki, kind: str, reason: str
) -> None:
    """A partner certificate without clientAuth, or expired, is refused at the handshake."""
    async with lab_up(sip_topology, lab_pki) as lab:
        with pytest.raises((ConnectionError, ssl.SSLError, TimeoutError)):
            async with lab.ua(
                "carol@fabrikam.lab", "edge5061", cert=(kind, "fabrikam", "fabrikam")
            ) as c:
                await c.message("sip:bob@contoso.lab", "x", timeout=3)
        assert any("refused" in r and reason in r for r in lab.refusals()), lab.refusals()


async def test_open_federation_finds_and_verifies_partners_by_srv(
    sip_topology: Topology, lab_pki: LabPki
) -> None:
    """No allowed-domain entry: the Edge discovers fabrikam's Edge by DNS SRV, both ways."""
    settings: dict[str, dict[str, object]] = {
        "access-edge": {"allowed_domains": [], "enable_partner_discovery": True}
    }
    async with (
        lab_up(sip_topology, lab_pki, settings) as lab,
        lab.ua("bob@contoso.lab", "internal") as bob,
        lab.ua("carol@fabrikam.lab", "fabrikam") as carol,
    ):
        await bob.register()
        await carol.register()
        assert (await carol.message("sip:bob@contoso.lab", "found you")).code == 200
        assert (await next_incoming(bob)).body == b"found you"  # type: ignore[attr-defined]
        assert (await bob.message("sip:carol@fabrikam.lab", "and back")).code == 200
        assert (await next_incoming(carol)).body == b"and back"  # type: ignore[attr-defined]


async def test_silent_next_hop_gets_408(sip_topology: Topology, lab_pki: LabPki) -> None:
    """carol's client takes the MESSAGE and never answers: the Edge's Timer F gives 408."""
    settings: dict[str, dict[str, object]] = {"access-edge": {"transaction_timeout": 0.5}}
    async with (
        lab_up(sip_topology, lab_pki, settings) as lab,
        lab.ua("bob@contoso.lab", "internal") as bob,
        lab.ua("carol@fabrikam.lab", "fabrikam") as carol,
    ):
        await bob.register()
        await carol.register()
        carol.auto_answer = False
        response = await bob.message("sip:carol@fabrikam.lab", "anyone there?", timeout=5)
        assert response.code == 408
        assert "Next hop did not answer" in (response.headers.get("Warning") or "")
        assert (await next_incoming(carol)).body == b"anyone there?"  # type: ignore[attr-defined]


async def test_cancel_and_failure_ack_keep_the_invite_branch_at_every_hop(
    sip_topology: Topology, lab_pki: LabPki
) -> None:
    """bob calls carol, gives up: carol sees CANCEL and ACK on her INVITE's transaction."""
    from simulator.sip.build import response_for, top_via

    async with (
        lab_up(sip_topology, lab_pki) as lab,
        lab.ua("bob@contoso.lab", "internal") as bob,
        lab.ua("carol@fabrikam.lab", "fabrikam") as carol,
    ):
        await bob.register()
        await carol.register()
        carol.auto_answer = False
        invite = bob.build(
            "INVITE", "sip:carol@fabrikam.lab", body=b"v=0\r\n", content_type="application/sdp"
        )
        call = asyncio.create_task(bob.send_invite(invite))
        at_carol = await next_incoming(carol, "INVITE")
        cancelling = asyncio.create_task(bob.cancel(invite))
        cancel = await next_incoming(carol, "CANCEL")
        assert top_via(cancel) == top_via(at_carol)  # type: ignore[arg-type]
        assert carol.proto is not None
        carol.proto.send(response_for(cancel, 200))  # type: ignore[arg-type]
        assert (await asyncio.wait_for(cancelling, 5)).code == 200
        carol.proto.send(response_for(at_carol, 487))  # type: ignore[arg-type]
        response, dialog = await asyncio.wait_for(call, 5)
        assert (response.code, dialog) == (487, None)
        ack = await next_incoming(carol, "ACK")
        assert top_via(ack) == top_via(at_carol)  # type: ignore[arg-type]


async def test_edge_without_its_dns_fails_federation_with_1008(
    sip_topology: Topology, lab_pki: LabPki
) -> None:
    """What a firewall blocking the Edge's DNS looks like: discovery fails, 504 with 1008."""
    settings: dict[str, dict[str, object]] = {
        "access-edge": {"allowed_domains": [], "enable_partner_discovery": True}
    }
    hosts = [h for h in SIP_HOSTS if h != "dns-ext"]
    async with (
        lab_up(sip_topology, lab_pki, settings, hosts=hosts) as lab,
        lab.ua("bob@contoso.lab", "internal") as bob,
    ):
        await bob.register()
        response = await bob.message("sip:carol@fabrikam.lab", "x", timeout=8)
        assert response.code == 504
        assert (response.headers.get("ms-diagnostics") or "").startswith("1008;")
        assert "_sipfederationtls._tcp.fabrikam.lab" in (response.headers.get("Warning") or "")


NASTY = [
    b"\x00\x01\x02garbage\r\n\r\n",
    b"\xff\xfe\xfd\r\n\r\n",
    b"OPTIONS sip:sip.contoso.lab SIP/2.0\r\nContent-Length: -1\r\n\r\n",
    b"SIP/2.0 200 OK\r\nVia: SIP/2.0/TLS x;branch=z9hG4bK-esdeadbeef-99-1\r\nFrom: <sip:a@b>;tag=1\r\n"
    b"To: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n",
    b"MESSAGE sip:bob@contoso.lab SIP/2.0\r\nVia: SIP/2.0/TLS h;branch=z9hG4bKx\r\n"
    b"Route: <sip:edge-int.contoso.lab;lr;edgeflow=999999>\r\nFrom: <sip:alice@contoso.lab>;tag=1\r\n"
    b"To: <sip:bob@contoso.lab>\r\nCall-ID: y\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n",
    b"INVITE tel:+15550100 SIP/2.0\r\n" + b"X: y\r\n" * 2000 + b"\r\n",
]


@pytest.mark.parametrize("port", [443, 5061])
async def test_hostile_bytes_never_take_the_edge_down(
    sip_topology: Topology, lab_pki: LabPki, port: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    async with lab_up(sip_topology, lab_pki) as lab:
        where = "remote" if port == 443 else "edge5061"
        cert = None if port == 443 else ("host", "fabrikam", "fabrikam")
        for data in NASTY:
            ua = lab.ua("alice@contoso.lab", where, cert=cert)
            async with ua:
                await ua.send_raw(data)
                await ua.send_raw(b"\r\n\r\n")  # a ping: answered while the connection lives
        async with lab.ua("alice@contoso.lab", where, cert=cert) as ua:
            assert (await ua.options("sip:sip.contoso.lab")).code == 200
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []  # no handler blew up, no traceback
    assert any("bad message" in r.getMessage() for r in caplog.records)


async def test_remote_user_call_stays_on_the_edge_both_ways(
    sip_topology: Topology, lab_pki: LabPki
) -> None:
    """INVITE from a remote user: Record-Route keeps the dialog on the Edge; bob hangs up."""
    async with (
        lab_up(sip_topology, lab_pki) as lab,
        lab.ua("alice@contoso.lab", "remote") as alice,
        lab.ua("bob@contoso.lab", "internal") as bob,
    ):
        await alice.register()
        await bob.register()
        response, dialog = await alice.invite("sip:bob@contoso.lab", b"v=0\r\n")
        assert response.code == 200 and dialog is not None
        record_route = response.headers.getlist("Record-Route")
        # RFC 5658: the entry facing the callee on top; alice's route set is the reverse
        assert [r.split(";")[0] for r in record_route] == [
            "<sip:edge-int.contoso.lab:5061",
            "<sip:sip.contoso.lab:443",
        ]
        invite = await next_incoming(bob, "INVITE")
        await next_incoming(bob, "ACK")
        bobs_side = bob.dialogs[invite.headers["Call-ID"]]  # type: ignore[attr-defined]
        assert (await bob.bye(bobs_side)).code == 200
        bye = await next_incoming(alice, "BYE")
        assert bye.headers.getlist("Route") == []  # type: ignore[attr-defined]


async def test_registration_expires(sip_topology: Topology, lab_pki: LabPki) -> None:
    from simulator.sip.service import FrontEndService

    async with (
        lab_up(sip_topology, lab_pki) as lab,
        lab.ua("bob@contoso.lab", "internal") as bob,
        lab.ua("carol@fabrikam.lab", "fabrikam") as carol,
    ):
        response = await bob.register(expires=60)
        assert (response.code, response.headers.get("Expires")) == (200, "60")
        assert (await carol.message("sip:bob@contoso.lab", "x")).code == 200
        fe = next(s.instance for s in lab.lab.statuses if s.service == "front-end")
        assert isinstance(fe, FrontEndService) and fe.server is not None
        (binding,) = fe.server.live_bindings("sip:bob@contoso.lab")
        binding.expires_at = asyncio.get_running_loop().time() - 1  # as if 60 s had passed
        assert (await carol.message("sip:bob@contoso.lab", "x")).code == 480
        assert (await bob.register(expires=0)).code == 200


async def test_service_handlers_from_settings(sip_topology: Topology, lab_pki: LabPki) -> None:
    settings: dict[str, dict[str, object]] = {
        "front-end": {"service_handlers": {"application/x-test": "tests.sip_mras_stub:factory"}}
    }
    async with (
        lab_up(sip_topology, lab_pki, settings) as lab,
        lab.ua("bob@contoso.lab", "internal") as bob,
    ):
        await bob.register()
        response = await bob.request(
            "SERVICE", "sip:bob@contoso.lab", body=b"<q/>", content_type="application/x-test"
        )
        assert (response.code, response.body) == (200, b"<credentials host='fe'/>")


async def test_partner_going_away_mid_transaction_gets_503(
    sip_topology: Topology, lab_pki: LabPki
) -> None:
    async with (
        lab_up(sip_topology, lab_pki) as lab,
        lab.ua("bob@contoso.lab", "internal") as bob,
        lab.ua("carol@fabrikam.lab", "fabrikam") as carol,
    ):
        await bob.register()
        await carol.register()
        carol.auto_answer = False
        sending = asyncio.create_task(bob.message("sip:carol@fabrikam.lab", "still there?"))
        await next_incoming(carol)  # the MESSAGE is out, nobody answers
        partner = next(s.instance for s in lab.lab.statuses if s.service == "partner-edge")
        assert partner is not None
        await partner.stop()  # fabrikam's Edge goes down, its connections close
        response = await asyncio.wait_for(sending, 5)
        assert response.code == 503
        assert "Next hop closed the connection" in (response.headers.get("Warning") or "")


async def test_probe_options_classifies_outcomes(sip_topology: Topology, lab_pki: LabPki) -> None:
    from simulator.sip.emulators.ua import probe_options
    from simulator.tls import client_context

    async with lab_up(sip_topology, lab_pki) as lab:
        edge = lab.addr("edge:access")
        plain = client_context([lab_pki.trust_bundle])
        partner = client_context(
            [lab_pki.trust_bundle], cert=lab_pki.host_cert("fabrikam", "fabrikam")
        )
        ok = await probe_options(edge, 443, context=plain, server_name="sip.contoso.lab")
        assert ok.ok and ok.code == 200
        mtls = await probe_options(edge, 5061, context=partner, server_name="sip.contoso.lab")
        assert mtls.ok
        refused = await probe_options(edge, 5061, context=plain, server_name="sip.contoso.lab")
        assert refused.stage == "tls" and not refused.ok
        closed = await probe_options(edge, 5062, context=plain, server_name="sip.contoso.lab")
        assert closed.stage == "connect"
        wrong = await probe_options(edge, 443, context=plain, server_name="sip.fabrikam.lab")
        assert wrong.stage == "tls" and "does not match the server name" in wrong.detail


async def test_partner_resetting_the_handshake_gets_504_1047_with_the_winsock_error(
    sip_topology: Topology, lab_pki: LabPki
) -> None:
    """A partner Edge that does not trust our certificate resets the connection in the TLS
    handshake (as Windows does): 1047 with WinsockFailureCode 10054, as real traces show."""
    import socket
    import struct

    fabrikam = str(sip_topology.interface("fabrikam:wan").loopback())
    hosts = ["dns-int", "dns-ext", "edge", "fe"]  # fabrikam's 5061 is the resetting server below

    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(5)  # the ClientHello's record header
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    server = await asyncio.start_server(reset, fabrikam, 5061)
    try:
        async with lab_up(sip_topology, lab_pki, hosts=hosts) as lab:  # noqa: SIM117
            async with lab.ua("bob@contoso.lab", "internal") as bob:
                await bob.register()
                response = await bob.message("sip:carol@fabrikam.lab", "x")
    finally:
        server.close()
        await server.wait_closed()
    assert response.code == 504
    assert response.headers.get("ms-diagnostics") == (
        '1047;reason="Failed to complete TLS negotiation with a federated peer server"'
        ';WinsockFailureCode="10054(WSAECONNRESET)"'
        ';WinsockFailureDescription="The peer forced closure of the connection"'
        ';source="sip.contoso.lab";PeerServer="sip.fabrikam.lab"'
    )


async def test_tls_max_version_caps_the_edge_at_tls_1_2(
    sip_topology: Topology, lab_pki: LabPki
) -> None:
    """tls_max_version = "1.2": a client that insists on TLS 1.3 fails the handshake on 443, as
    against Lync Server 2013 on Windows Server 2012 R2; a TLS 1.2 client signs in."""
    import ssl

    settings: dict[str, dict[str, object]] = {"access-edge": {"tls_max_version": "1.2"}}
    async with lab_up(sip_topology, lab_pki, settings) as lab:
        ua = lab.ua("alice@contoso.lab", "remote")
        assert ua.context is not None
        ua.context.minimum_version = ssl.TLSVersion.TLSv1_3
        with pytest.raises((ssl.SSLError, ConnectionResetError)):  # refused: protocol version
            async with ua:
                pass
        async with lab.ua("alice@contoso.lab", "remote") as alice:
            assert (await alice.register()).code == 200
            assert alice.proto is not None
            assert alice.proto.transport.get_extra_info("ssl_object").version() == "TLSv1.2"


async def test_a_partners_verification_level_is_honoured(
    sip_topology: Topology, lab_pki: LabPki
) -> None:
    """fabrikam.lab on AlwaysUnverifiable: the Edge marks carol unverified ([MS-SIPRE] 2.2.15)
    and the Front End lets her reach only the users who list her as a contact."""
    settings: dict[str, dict[str, object]] = {
        "access-edge": {
            "allowed_domains": [
                {
                    "domain": "fabrikam.lab",
                    "proxy_fqdn": "sip.fabrikam.lab",
                    "verification_level": "AlwaysUnverifiable",
                }
            ]
        }
    }
    async with (
        lab_up(sip_topology, lab_pki, settings) as lab,
        lab.ua("alice@contoso.lab", "internal") as alice,
        lab.ua("bob@contoso.lab", "internal") as bob,
        lab.ua("carol@fabrikam.lab", "fabrikam") as carol,
    ):
        for ua in (alice, bob, carol):
            assert (await ua.register()).code == 200
        refused = await carol.message("sip:bob@contoso.lab", "spam?")
        assert refused.code == 403
        assert "not on the user's contact list" in (refused.headers.get("Warning") or "")
        assert (await carol.message("sip:alice@contoso.lab", "hi alice")).code == 200
        got = await next_incoming(alice)
        trust = got.headers.get("ms-edge-proxy-message-trust") or ""  # type: ignore[attr-defined]
        assert "ms-source-type=DirectPartner" in trust
        assert "ms-source-verified-user=unverified" in trust


async def test_a_partners_notify_reaches_a_remote_user(
    sip_topology: Topology, lab_pki: LabPki
) -> None:
    """A NOTIFY from fabrikam to a remote user passes the Edge twice (in by the federation route
    set, out through the user's Path): a spiral, not a loop (482)."""
    async with (
        lab_up(sip_topology, lab_pki) as lab,
        lab.ua("alice@contoso.lab", "remote") as alice,
        lab.ua("carol@fabrikam.lab", "fabrikam") as carol,
    ):
        assert (await alice.register()).code == 200
        assert (await carol.register()).code == 200
        assert (await alice.subscribe("sip:carol@fabrikam.lab")).code == 200
        first = await next_incoming(alice, "NOTIFY")
        assert b"<basic>open</basic>" in first.body  # type: ignore[attr-defined]
        assert (await carol.register(expires=0)).code == 200
        gone = await next_incoming(alice, "NOTIFY")
        assert b"<basic>closed</basic>" in gone.body  # type: ignore[attr-defined]
        assert not any("Loop Detected" in r for r in lab.refusals())
