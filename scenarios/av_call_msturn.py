"""The av-call call in [MS-TURN], the dialect Lync clients and Lync's A/V Edge speak.

Both ends allocate in [MS-TURN] (the Magic Cookie attribute, 16-byte transaction ids, the MRAS's
credentials base64-decoded), set the other's relayed address as their active destination and
send the audio unencapsulated; the A/V Edge relays it between its two relayed addresses on
50000-59999, as with RFC TURN in av-call. The credentials come from the Edge's A/V
Authentication service through the Front End (SIP SERVICE, then SIP/MTLS 5062).
"""

from simulator.scenario import Lab, scenario
from simulator.scenario.av import AUDIO_CALL_NEEDS, UDP_3478_ROWS, audio_call, expect_media_path


@scenario(
    name="av-call-msturn",
    description="av-call in MS-TURN, as Lync speaks it: Set Active Destination and unencapsulated "
    "audio through the A/V Edge (UDP 3478, relay ports 50000-59999)",
    rows=UDP_3478_ROWS,
    needs=AUDIO_CALL_NEEDS,
)
async def run(lab: Lab) -> None:
    call = await audio_call(lab, dialect="ms-turn")
    with lab.step("the messenger used UDP 3478 in MS-TURN"):
        expect_media_path(lab, call, "UDP 3478", "MS-TURN")
