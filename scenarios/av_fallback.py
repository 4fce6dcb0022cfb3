"""With UDP 3478 blocked at the external firewall, the same call falls back to TCP 443.

Lync clients try the A/V Edge over UDP 3478 first and, when nothing answers, TURN over TCP 443.
The scenario takes the rules fw-external enforces now, removes the rule that lets the messenger
reach the A/V interface on UDP 3478, loads them for the call and restores the previous rules
afterwards. The ladder shows the Allocate over UDP stopping at fw-external and the call
continuing over TCP 443.
"""

from simulator.scenario import Lab, scenario
from simulator.scenario.av import (
    AUDIO_CALL_NEEDS,
    TCP_443_ROWS,
    audio_call,
    expect_media_path,
    udp_3478_blocked,
)


@scenario(
    name="av-fallback",
    description="With UDP 3478 blocked at fw-external, the messenger's audio call falls back "
    "to TCP 443 through the A/V Edge",
    rows=TCP_443_ROWS,
    needs=AUDIO_CALL_NEEDS,
    firewall=True,
    timeout=60.0,
)
async def run(lab: Lab) -> None:
    async with udp_3478_blocked(lab):
        call = await audio_call(lab)
    with lab.step("the messenger fell back to TCP 443"):
        expect_media_path(lab, call, "TCP 443")
