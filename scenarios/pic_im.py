"""A public IM (pic.lab) user and a remote contoso user chat both ways.

dave is signed in on the public IM provider sip.pic.lab; alice works from home through the
Edge's 443. Public IM connectivity is federation with a provider the Edge lists explicitly
(public_providers): the Edge connects to sip.pic.lab on MTLS 5061 and accepts its answers there.
"""

from simulator.scenario import Lab, scenario
from simulator.scenario.clients import chat, sign_in, sip_users


@scenario(
    name="pic-im",
    description="A public IM (pic.lab) user and a remote contoso user chat both ways over 5061",
    rows=["pic-out-5061", "pic-in-5061", "client-in-443"],
    needs=["access-edge", "front-end", "pic", "dns"],
)
async def run(lab: Lab) -> None:
    async with sip_users(lab, ("alice@contoso.lab", "remote"), "dave@pic.lab") as (alice, dave):
        with lab.step("alice signs in from home, dave on the public IM provider"):
            await sign_in(lab, alice, dave)

        with lab.step("alice (contoso) sends dave (pic.lab) a message"):
            await chat(lab, alice, dave, "hi dave")

        with lab.step("dave (pic.lab) answers alice (contoso)"):
            await chat(lab, dave, alice, "hi alice")
