"""With UDP 3478 blocked at the external firewall, the same call falls back to TCP 443.

Lync clients try the A/V Edge over UDP 3478 first and, when nothing answers, TURN over TCP 443.
The scenario takes the rules fw-external enforces now, removes the rule that lets the messenger
reach the A/V interface on UDP 3478, loads them for the call and restores the previous rules
afterwards. The ladder shows the Allocate over UDP stopping at fw-external and the call
continuing over TCP 443.
"""

from simulator.scenario import Lab, scenario
from simulator.scenario.av import audio_call, udp_3478_blocked


@scenario(
    name="av-fallback",
    description="With UDP 3478 blocked at fw-external, the messenger's audio call falls back "
    "to TCP 443 through the A/V Edge",
    rows=["msn-stun-in-3478", "av-turn-443-in", "av-relay-udp-out", "av-auth-5062"],
    needs=["av-edge", "front-end", "pic"],
    firewall=True,
    timeout=60.0,
)
async def run(lab: Lab) -> None:
    async with udp_3478_blocked(lab):
        call = await audio_call(lab)
    with lab.step("the messenger fell back to TCP 443"):
        lab.expect(
            call.messenger_path == "TCP 443",
            f"the messenger used {call.messenger_path} although UDP 3478 was blocked",
        )
        lab.expect(call.fallback_reason, "the messenger never tried UDP 3478")
