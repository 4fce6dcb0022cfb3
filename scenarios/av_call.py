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
from simulator.scenario.av import AUDIO_CALL_NEEDS, UDP_3478_ROWS, audio_call, expect_media_path


@scenario(
    name="av-call",
    description="A Live Messenger-style client and a contoso user set up relayed audio through "
    "the A/V Edge (MRAS credentials, UDP 3478, relay ports 50000-59999)",
    rows=UDP_3478_ROWS,
    needs=AUDIO_CALL_NEEDS,
)
async def run(lab: Lab) -> None:
    call = await audio_call(lab)
    with lab.step("the messenger used UDP 3478"):
        expect_media_path(lab, call, "UDP 3478")
