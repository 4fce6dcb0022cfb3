"""A remote contoso user signs in over TLS 443 on the Access Edge and chats with an office user.

alice works from home: her client reaches the Edge's Access interface on 443 (the only port a
remote user needs), the Edge authenticates her against the Front End pool through the internal
firewall (MTLS 5061 both ways), and relays her messages to bob, who is signed in on the Front End
in the office. The Edge stamps what it relays with ms-edge-proxy-message-trust.
"""

from simulator.scenario import Lab, scenario
from simulator.scenario.clients import next_request, sip_user


@scenario(
    name="remote-user-im",
    description="A remote contoso user signs in over 443 and chats both ways with an office user",
    rows=["client-in-443", "int-sip-edge-to-fe", "int-sip-fe-to-edge"],
    needs=["access-edge", "front-end", "dns"],
)
async def run(lab: Lab) -> None:
    async with (
        sip_user(lab, "alice@contoso.lab", via="remote") as alice,
        sip_user(lab, "bob@contoso.lab", via="internal") as bob,
    ):
        with lab.step("alice signs in from home through the Edge on TLS 443"):
            answer = await alice.register()
            lab.expect(answer.code == 200, f"alice's REGISTER got {answer.code} {answer.phrase}")

        with lab.step("bob signs in on the Front End in the office"):
            answer = await bob.register()
            lab.expect(answer.code == 200, f"bob's REGISTER got {answer.code} {answer.phrase}")

        with lab.step("alice sends bob a message from home"):
            answer = await alice.message("sip:bob@contoso.lab", "hello from home")
            lab.expect(answer.code == 200, f"alice's MESSAGE got {answer.code} {answer.phrase}")
            got = await next_request(bob)
            lab.expect(got is not None, "bob's client never received alice's message")
            assert got is not None
            lab.expect(got.body == b"hello from home", f"bob received {got.body!r}")
            trust = got.headers.get("ms-edge-proxy-message-trust") or ""
            lab.expect(
                "ms-source-type=InternetUser" in trust,
                f"the Edge did not mark alice as an authorized remote user ({trust or 'no header'})",
            )

        with lab.step("bob answers from the office"):
            answer = await bob.message("sip:alice@contoso.lab", "hello from the office")
            lab.expect(answer.code == 200, f"bob's MESSAGE got {answer.code} {answer.phrase}")
            got = await next_request(alice)
            lab.expect(got is not None, "alice's client at home never received bob's answer")
            assert got is not None
            lab.expect(got.body == b"hello from the office", f"alice received {got.body!r}")
