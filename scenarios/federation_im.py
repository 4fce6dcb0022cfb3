"""A fabrikam.lab user and a contoso user chat both ways over federation (MTLS 5061).

carol is signed in on fabrikam.lab's Edge; bob on contoso's Front End. bob's message goes
Front End -> Edge (internal 5061) -> fabrikam's Edge (5061, the Edge presents its certificate);
carol's answer comes back on the same federation connection, which the Edge accepts because
fabrikam.lab is an allowed partner and its certificate names sip.fabrikam.lab.
"""

from simulator.scenario import Lab, scenario
from simulator.scenario.clients import next_request, sip_user


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
    async with (
        sip_user(lab, "bob@contoso.lab", via="internal") as bob,
        sip_user(lab, "carol@fabrikam.lab", via="fabrikam") as carol,
    ):
        with lab.step("bob signs in at contoso, carol at fabrikam"):
            for ua in (bob, carol):
                answer = await ua.register()
                lab.expect(answer.code == 200, f"{ua.aor}'s REGISTER got {answer.code}")

        with lab.step("bob (contoso) sends carol (fabrikam) a message"):
            answer = await bob.message("sip:carol@fabrikam.lab", "hi carol")
            diag = answer.headers.get("ms-diagnostics") or answer.headers.get("Warning") or ""
            lab.expect(
                answer.code == 200, f"bob's MESSAGE got {answer.code} {answer.phrase} {diag}"
            )
            got = await next_request(carol)
            lab.expect(got is not None and got.body == b"hi carol", "carol never got bob's message")

        with lab.step("carol (fabrikam) answers bob (contoso)"):
            answer = await carol.message("sip:bob@contoso.lab", "hi bob")
            diag = answer.headers.get("ms-diagnostics") or answer.headers.get("Warning") or ""
            lab.expect(
                answer.code == 200, f"carol's MESSAGE got {answer.code} {answer.phrase} {diag}"
            )
            got = await next_request(bob)
            lab.expect(got is not None, "bob never got carol's answer")
            assert got is not None
            trust = got.headers.get("ms-edge-proxy-message-trust") or ""
            lab.expect(
                "ms-source-type=DirectPartner" in trust,
                f"the Edge did not mark carol's message as from a direct partner ({trust})",
            )
