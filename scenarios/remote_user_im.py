"""A remote contoso user signs in over TLS 443 on the Access Edge and chats with an office user.

alice works from home: her client reaches the Edge's Access interface on 443 (the only port a
remote user needs), the Edge authenticates her against the Front End pool through the internal
firewall (MTLS 5061 both ways), and relays her messages to bob, who is signed in on the Front End
in the office. The Edge stamps what it relays with ms-edge-proxy-message-trust.
"""

from simulator.scenario import Lab, scenario
from simulator.scenario.clients import chat, sign_in, sip_users


@scenario(
    name="remote-user-im",
    description="A remote contoso user signs in over 443 and chats both ways with an office user",
    rows=["client-in-443", "int-sip-edge-to-fe", "int-sip-fe-to-edge"],
    needs=["access-edge", "front-end", "dns"],
)
async def run(lab: Lab) -> None:
    async with sip_users(lab, ("alice@contoso.lab", "remote"), "bob@contoso.lab") as (alice, bob):
        with lab.step("alice signs in from home through the Edge on TLS 443"):
            await sign_in(lab, alice)

        with lab.step("bob signs in on the Front End in the office"):
            await sign_in(lab, bob)

        with lab.step("alice sends bob a message from home"):
            got = await chat(lab, alice, bob, "hello from home")
            trust = got.headers.get("ms-edge-proxy-message-trust") or ""
            lab.expect(
                "ms-source-type=InternetUser" in trust,
                f"the Edge did not mark alice as an authorized remote user ({trust or 'no header'})",
            )

        with lab.step("bob answers from the office"):
            await chat(lab, bob, alice, "hello from the office")
