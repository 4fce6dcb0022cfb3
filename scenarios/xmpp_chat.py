"""A jabber.lab (XMPP) user and a contoso (SIP) user chat both ways.

romeo is signed in on jabber.lab's XMPP server. His message to alice@contoso.lab goes
server-to-server to the Edge's XMPP proxy on 5269 (STARTTLS, SASL EXTERNAL or dialback), then on
the MTLS link 23456 to the Front End's XMPP gateway, which hands it to alice's SIP client as a
MESSAGE; alice's answer takes the same path back.
"""

from contextlib import AsyncExitStack

from simulator.scenario import Lab, scenario
from simulator.scenario.clients import (
    diagnostics,
    next_chat,
    next_request,
    send_chat,
    sign_in,
    sip_user,
    xmpp_user,
)


@scenario(
    name="xmpp-chat",
    description="A jabber.lab XMPP user and a contoso SIP user chat both ways (5269, 23456)",
    rows=["xmpp-in-5269", "xmpp-out-5269", "xmpp-gw-23456"],
    needs=["access-edge", "front-end", "xmpp-proxy", "xmpp-gateway", "xmpp-partner", "dns"],
)
async def run(lab: Lab) -> None:
    async with AsyncExitStack() as stack:
        with lab.step("alice signs in on the Front End"):
            alice = await stack.enter_async_context(
                sip_user(lab, "alice@contoso.lab", via="internal")
            )
            await sign_in(lab, alice)

        with lab.step("romeo signs in on jabber.lab"):
            romeo = await stack.enter_async_context(xmpp_user(lab, "romeo@jabber.lab"))

        with lab.step("alice (SIP) writes to romeo (XMPP)"):
            answer = await alice.message("sip:romeo@jabber.lab", "hi romeo, from SIP")
            lab.expect(
                answer.code == 200, f"alice's MESSAGE got {answer.code} {diagnostics(answer)}"
            )
            got = await next_chat(romeo, 10)
            lab.expect(got is not None, "romeo's XMPP client never got alice's message")
            lab.expect(
                got == ("alice@contoso.lab", "chat", "hi romeo, from SIP"), f"romeo got {got}"
            )

        with lab.step("romeo (XMPP) answers alice (SIP)"):
            send_chat(romeo, "alice@contoso.lab", "hi alice, from XMPP")
            got_sip = await next_request(alice, timeout=10)
            lab.expect(got_sip is not None, "alice's SIP client never got romeo's message")
            assert got_sip is not None
            lab.expect(got_sip.body == b"hi alice, from XMPP", f"alice got {got_sip.body!r}")
            frm = got_sip.headers.get("From") or ""
            lab.expect("sip:romeo@jabber.lab" in frm, f"the message is not from romeo: {frm}")
