"""A real Lync-dialect client (SIPE) signs in through the Access Edge and chats.

SIPE (pidgin-sipe, driven headless through BitlBee) runs on the remote user's host with that
host's own resolver, hosts file and certificate store: it finds the Edge by
``_sip._tls.contoso.lab`` in the lab DNS, checks the Edge's certificate against the lab CA,
and signs in over TLS 443 with NTLM as [MS-SIPAE] describes (three REGISTERs: the challenge,
the CHALLENGE_MESSAGE, the AUTHENTICATE_MESSAGE), every later message signed both ways. It then
chats with bob in the office and with carol at fabrikam.lab across federation. Skipped where
SIPE or root is missing.
"""

from contextlib import AsyncExitStack

from simulator.scenario import Lab, scenario
from simulator.scenario.clients import next_request, password_of, sip_user
from simulator.scenario.sipe import sipe_user


@scenario(
    name="sipe-sign-in",
    description="SIPE signs in over 443 with NTLM through the Edge and chats with bob and carol",
    rows=["client-in-443", "int-sip-edge-to-fe", "int-sip-fe-to-edge", "sipfed-out-5061"],
    needs=["access-edge", "front-end", "partner-edge", "dns"],
    timeout=90.0,
)
async def run(lab: Lab) -> None:
    password = password_of(lab, "alice@contoso.lab")
    lab.expect(password is not None, "alice has no password in this lab")
    assert password is not None
    async with AsyncExitStack() as stack:
        bob = await stack.enter_async_context(sip_user(lab, "bob@contoso.lab", via="internal"))
        carol = await stack.enter_async_context(sip_user(lab, "carol@fabrikam.lab"))
        with lab.step("bob signs in at the office, carol at fabrikam"):
            for who, ua in (("bob", bob), ("carol", carol)):
                answer = await ua.register()
                lab.expect(answer.code == 200, f"{who}'s REGISTER got {answer.code}")

        with lab.step("SIPE signs in as alice from home: DNS SRV, TLS 443, NTLM"):
            alice = await stack.enter_async_context(sipe_user(lab, "alice@contoso.lab", password))
        for name, ua, uri in (
            ("bob", bob, "sip:bob@contoso.lab"),
            ("carol", carol, "sip:carol@fabrikam.lab"),
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
