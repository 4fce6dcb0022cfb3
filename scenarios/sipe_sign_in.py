"""A real Lync-dialect client (SIPE) signs in through the Access Edge, sees presence and chats.

SIPE (pidgin-sipe, driven headless through BitlBee) runs on the remote user's host with that
host's own resolver, hosts file and certificate store: it finds the Edge by
``_sip._tls.contoso.lab`` in the lab DNS, checks the Edge's certificate against the lab CA,
and signs in over TLS 443 with NTLM as [MS-SIPAE] describes (three REGISTERs: the challenge,
the CHALLENGE_MESSAGE, the AUTHENTICATE_MESSAGE), every later message signed both ways.

Then it works as Lync does ([MS-PRES] enhanced presence): it reads alice's roaming contact list
(bob in the office, carol at fabrikam.lab, dave at the public IM provider, romeo on jabber.lab),
subscribes to the contacts' presence in one batch, and, told by the Front End to resubscribe
for the contacts of other domains, subscribes to each at their own server: through the Edge's
5061 for carol and dave, through the XMPP gateway, 23456 and 5269 for romeo. Each contact sees
alice come online, and alice chats with each both ways. Skipped where SIPE, a C compiler
or root is missing.
"""

from contextlib import AsyncExitStack

from simulator.scenario import Lab, scenario
from simulator.scenario.clients import (
    next_chat,
    next_notify,
    next_request,
    password_of,
    send_chat,
    sip_user,
    xmpp_presence,
    xmpp_user,
)
from simulator.scenario.sipe import sipe_user

PRESENCE_WAIT = 30.0


@scenario(
    name="sipe-sign-in",
    description="SIPE signs in over 443 with NTLM, sees its contacts' presence and chats with "
    "an office, a fabrikam, a public IM and a jabber.lab user",
    rows=[
        "client-in-443",
        "int-sip-edge-to-fe",
        "int-sip-fe-to-edge",
        "sipfed-out-5061",
        "pic-out-5061",
        "xmpp-gw-23456",
        "xmpp-out-5269",
        "xmpp-in-5269",
    ],
    needs=[
        "access-edge",
        "front-end",
        "partner-edge",
        "pic",
        "xmpp-proxy",
        "xmpp-gateway",
        "xmpp-partner",
        "dns",
    ],
    timeout=150.0,
)
async def run(lab: Lab) -> None:
    password = password_of(lab, "alice@contoso.lab")
    lab.expect(password is not None, "alice has no password in this lab")
    assert password is not None
    async with AsyncExitStack() as stack:
        bob = await stack.enter_async_context(sip_user(lab, "bob@contoso.lab", via="internal"))
        carol = await stack.enter_async_context(sip_user(lab, "carol@fabrikam.lab"))
        dave = await stack.enter_async_context(sip_user(lab, "dave@pic.lab", via="pic"))
        with lab.step("bob signs in at the office, carol at fabrikam, dave at the PIC"):
            for who, ua in (("bob", bob), ("carol", carol), ("dave", dave)):
                answer = await ua.register()
                lab.expect(answer.code == 200, f"{who}'s REGISTER got {answer.code}")
        with lab.step("romeo signs in on jabber.lab"):
            romeo = await stack.enter_async_context(xmpp_user(lab, "romeo@jabber.lab"))
        with lab.step("bob and carol watch alice's presence (SIP SUBSCRIBE)"):
            for who, ua in (("bob", bob), ("carol", carol)):
                answer = await ua.subscribe("sip:alice@contoso.lab")
                lab.expect(answer.code == 200, f"{who}'s SUBSCRIBE got {answer.code}")

        with lab.step("SIPE signs in as alice from home: DNS SRV, TLS 443, NTLM"):
            alice = await stack.enter_async_context(sipe_user(lab, "alice@contoso.lab", password))

        with lab.step("SIPE shows its contacts' presence: bob, carol, dave and romeo online"):
            for uri in (
                "sip:bob@contoso.lab",
                "sip:carol@fabrikam.lab",
                "sip:dave@pic.lab",
                "sip:romeo@jabber.lab",
            ):
                try:
                    await alice.wait_presence(uri, ("available", "away"), PRESENCE_WAIT)
                except TimeoutError:
                    seen = alice.presence.get(uri.lower(), "never shown")
                    lab.expect(False, f"SIPE never showed {uri} online (last: {seen})")

        with lab.step("bob, carol and romeo see alice online"):
            for who, ua in (("bob", bob), ("carol", carol)):
                notify = await next_notify(ua, "open", PRESENCE_WAIT)
                lab.expect(notify is not None, f"{who} never saw alice come online")
            romeo.send_presence(pto="alice@contoso.lab", ptype="subscribe")
            online = await xmpp_presence(romeo, "alice@contoso.lab", "available", PRESENCE_WAIT)
            lab.expect(online, "romeo (XMPP) never saw alice online")

        for name, ua, uri in (
            ("bob", bob, "sip:bob@contoso.lab"),
            ("carol", carol, "sip:carol@fabrikam.lab"),
            ("dave", dave, "sip:dave@pic.lab"),
        ):
            with lab.step(f"SIPE sends {name} a message"):
                text = f"hello {name}, from SIPE"
                await alice.send(uri, text)
                got = await next_request(ua, "MESSAGE", timeout=15)
                lab.expect(got is not None, f"{name} never received SIPE's message")
                assert got is not None
                lab.expect(text.encode() in got.body, f"{name} received {got.body!r}")

            with lab.step(f"{name} answers; SIPE shows it"):
                answer = await ua.message("sip:alice@contoso.lab", f"hi alice, {name} here")
                lab.expect(
                    answer.code == 200, f"{name}'s MESSAGE got {answer.code} {answer.phrase}"
                )
                chat = await alice.next_chat(15)
                lab.expect(chat is not None, f"SIPE never showed {name}'s answer")
                assert chat is not None
                lab.expect(f"{name} here" in chat.text, f"SIPE showed {chat.text!r}")

        with lab.step("SIPE sends romeo (XMPP) a message"):
            await alice.send("sip:romeo@jabber.lab", "hello romeo, from SIPE")
            got_xmpp = await next_chat(romeo, 15)
            lab.expect(got_xmpp is not None, "romeo never received SIPE's message")
            assert got_xmpp is not None
            lab.expect(
                got_xmpp[0] == "alice@contoso.lab" and "from SIPE" in got_xmpp[2],
                f"romeo received {got_xmpp}",
            )
        with lab.step("romeo answers; SIPE shows it"):
            send_chat(romeo, "alice@contoso.lab", "hi alice, romeo here")
            chat = await alice.next_chat(15)
            lab.expect(chat is not None, "SIPE never showed romeo's answer")
            assert chat is not None
            lab.expect("romeo here" in chat.text, f"SIPE showed {chat.text!r}")

        with lab.step("carol signs out; SIPE shows her offline"):
            answer = await carol.register(expires=0)
            lab.expect(answer.code == 200, f"carol's de-REGISTER got {answer.code}")
            try:
                await alice.wait_presence("sip:carol@fabrikam.lab", ("offline",), PRESENCE_WAIT)
            except TimeoutError:
                lab.expect(False, "SIPE still shows carol online")
