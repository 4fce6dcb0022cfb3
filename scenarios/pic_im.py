"""A public IM (pic.lab) user and a remote contoso user chat both ways.

dave is signed in on the public IM provider sip.pic.lab; alice works from home through the
Edge's 443. Public IM connectivity is federation with a provider the Edge lists explicitly
(public_providers): the Edge connects to sip.pic.lab on MTLS 5061 and accepts its answers there.
"""

from simulator.scenario import Lab, scenario
from simulator.scenario.clients import next_request, sip_user


@scenario(
    name="pic-im",
    description="A public IM (pic.lab) user and a remote contoso user chat both ways over 5061",
    rows=["pic-out-5061", "pic-in-5061", "client-in-443"],
    needs=["access-edge", "front-end", "pic", "dns"],
)
async def run(lab: Lab) -> None:
    async with (
        sip_user(lab, "alice@contoso.lab", via="remote") as alice,
        sip_user(lab, "dave@pic.lab", via="pic") as dave,
    ):
        with lab.step("alice signs in from home, dave on the public IM provider"):
            for ua in (alice, dave):
                answer = await ua.register()
                lab.expect(answer.code == 200, f"{ua.aor}'s REGISTER got {answer.code}")

        with lab.step("alice (contoso) sends dave (pic.lab) a message"):
            answer = await alice.message("sip:dave@pic.lab", "hi dave")
            lab.expect(answer.code == 200, f"alice's MESSAGE got {answer.code} {answer.phrase}")
            got = await next_request(dave)
            lab.expect(got is not None and got.body == b"hi dave", "dave never got the message")

        with lab.step("dave (pic.lab) answers alice (contoso)"):
            answer = await dave.message("sip:alice@contoso.lab", "hi alice")
            lab.expect(answer.code == 200, f"dave's MESSAGE got {answer.code} {answer.phrase}")
            got = await next_request(alice)
            lab.expect(got is not None and got.body == b"hi alice", "alice never got the answer")
