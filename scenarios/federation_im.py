"""A fabrikam.lab user and a contoso user chat both ways over federation (MTLS 5061).

carol is signed in on fabrikam.lab's Edge; bob on contoso's Front End. bob's message goes
Front End -> Edge (internal 5061) -> fabrikam's Edge (5061, the Edge presents its certificate);
carol's answer comes back on the same federation connection, which the Edge accepts because
fabrikam.lab is an allowed partner and its certificate names sip.fabrikam.lab.
"""

from simulator.scenario import Lab, scenario
from simulator.scenario.clients import chat, sign_in, sip_users


@scenario(
    name="federation-im",
    description="A fabrikam.lab user and a contoso user chat both ways over MTLS 5061",
    rows=[
        "sipfed-out-5061",
        "fed-in-5061",
        "int-sip-fe-to-edge",
        "int-sip-edge-to-fe",
        "dns-edge-ext",
    ],
    needs=["access-edge", "front-end", "partner-edge", "dns"],
)
async def run(lab: Lab) -> None:
    async with sip_users(lab, "bob@contoso.lab", "carol@fabrikam.lab") as (bob, carol):
        with lab.step("bob signs in at contoso, carol at fabrikam"):
            await sign_in(lab, bob, carol)

        with lab.step("bob (contoso) sends carol (fabrikam) a message"):
            await chat(lab, bob, carol, "hi carol")

        with lab.step("carol (fabrikam) answers bob (contoso)"):
            got = await chat(lab, carol, bob, "hi bob")
            trust = got.headers.get("ms-edge-proxy-message-trust") or ""
            lab.expect(
                "ms-source-type=DirectPartner" in trust,
                f"the Edge did not mark carol's message as from a direct partner ({trust})",
            )
