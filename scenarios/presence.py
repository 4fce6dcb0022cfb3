"""A fabrikam.lab user subscribes to a contoso user's presence across federation.

carol (fabrikam) sends SUBSCRIBE (Event: presence) for bob@contoso.lab; it crosses fabrikam's
Edge, contoso's Access Edge on 5061 and reaches the Front End, which accepts it and sends NOTIFY
with bob's state (PIDF) back the same way: open while bob is signed in, closed when he signs out.
"""

from simulator.scenario import Lab, scenario
from simulator.scenario.clients import diagnostics, expect_notify, sign_in, sip_users


@scenario(
    name="presence",
    description="A fabrikam user subscribes to a contoso user's presence and gets NOTIFY with it",
    rows=["sipfed-out-5061", "int-sip-edge-to-fe", "int-sip-fe-to-edge"],
    needs=["access-edge", "front-end", "partner-edge", "dns"],
)
async def run(lab: Lab) -> None:
    async with sip_users(lab, "bob@contoso.lab", "carol@fabrikam.lab") as (bob, carol):
        with lab.step("bob signs in at contoso, carol at fabrikam"):
            await sign_in(lab, bob, carol)

        with lab.step("carol subscribes to bob's presence"):
            answer = await carol.subscribe("sip:bob@contoso.lab")
            lab.expect(
                answer.code == 200, f"carol's SUBSCRIBE got {answer.code} {diagnostics(answer)}"
            )

        with lab.step("the Front End tells carol that bob is online"):
            await expect_notify(lab, carol, "open", "bob is signed in")

        with lab.step("bob signs out: carol is told he is offline"):
            answer = await bob.register(expires=0)
            lab.expect(answer.code == 200, f"bob's sign-out got {answer.code}")
            await expect_notify(lab, carol, "closed", "bob signed out")
