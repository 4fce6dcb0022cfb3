"""A fabrikam.lab user subscribes to a contoso user's presence across federation.

carol (fabrikam) sends SUBSCRIBE (Event: presence) for bob@contoso.lab; it crosses fabrikam's
Edge, contoso's Access Edge on 5061 and reaches the Front End, which accepts it and sends NOTIFY
with bob's state (PIDF) back the same way: open while bob is signed in, closed when he signs out.
"""

from simulator.scenario import Lab, scenario
from simulator.scenario.clients import next_request, sip_user


@scenario(
    name="presence",
    description="A fabrikam user subscribes to a contoso user's presence and gets NOTIFY with it",
    rows=["sipfed-out-5061", "int-sip-edge-to-fe", "int-sip-fe-to-edge"],
    needs=["access-edge", "front-end", "partner-edge", "dns"],
)
async def run(lab: Lab) -> None:
    async with (
        sip_user(lab, "bob@contoso.lab", via="internal") as bob,
        sip_user(lab, "carol@fabrikam.lab", via="fabrikam") as carol,
    ):
        with lab.step("bob signs in at contoso, carol at fabrikam"):
            for ua in (bob, carol):
                answer = await ua.register()
                lab.expect(answer.code == 200, f"{ua.aor}'s REGISTER got {answer.code}")

        with lab.step("carol subscribes to bob's presence"):
            answer = await carol.subscribe("sip:bob@contoso.lab")
            diag = answer.headers.get("ms-diagnostics") or answer.headers.get("Warning") or ""
            lab.expect(answer.code == 200, f"carol's SUBSCRIBE got {answer.code} {diag}")

        with lab.step("the Front End tells carol that bob is online"):
            notify = await next_request(carol, "NOTIFY")
            lab.expect(notify is not None, "carol never got a NOTIFY for bob")
            assert notify is not None
            lab.expect(
                b"<basic>open</basic>" in notify.body,
                f"bob is signed in but the NOTIFY says: {notify.body.decode(errors='replace')}",
            )

        with lab.step("bob signs out: carol is told he is offline"):
            answer = await bob.register(expires=0)
            lab.expect(answer.code == 200, f"bob's sign-out got {answer.code}")
            notify = await next_request(carol, "NOTIFY")
            lab.expect(notify is not None, "carol was not told that bob signed out")
            assert notify is not None
            lab.expect(
                b"<basic>closed</basic>" in notify.body,
                f"bob signed out but the NOTIFY says: {notify.body.decode(errors='replace')}",
            )
