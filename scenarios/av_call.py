"""A Live Messenger-style client and a contoso user set up audio through the A/V Edge.

Lync clients get media relay credentials from the Front End (MRAS, a SIP SERVICE request), not
from the Edge; the A/V Edge checks them with the secret it shares with the Front End. Both ends
of the call use the relay: the contoso user from the corporate network through the Edge's
internal interface, the messenger from the internet through the A/V interface on UDP 3478. The
contoso user calls the messenger's user (dave@pic.lab) across federation; the SDP offer and
answer carry the two relayed addresses. The audio (RTP-sized datagrams, 20 ms apart) is relayed between two relayed addresses of the A/V
Edge, on ports 50000-59999. The ladder shows which path the messenger used.
"""

from simulator.scenario import Lab, scenario
from simulator.scenario.av import audio_call


@scenario(
    name="av-call",
    description="A Live Messenger-style client and a contoso user set up relayed audio through "
    "the A/V Edge (MRAS credentials, UDP 3478, relay ports 50000-59999)",
    rows=["msn-stun-in-3478", "av-int-stun-3478", "av-relay-udp-out", "av-auth-5062"],
    needs=["av-edge", "front-end", "pic"],
)
async def run(lab: Lab) -> None:
    call = await audio_call(lab)
    with lab.step("the messenger used UDP 3478"):
        lab.expect(
            call.messenger_path == "UDP 3478",
            f"the messenger reached the A/V Edge over {call.messenger_path}, not UDP 3478"
            + (f" ({call.fallback_reason})" if call.fallback_reason else ""),
        )
