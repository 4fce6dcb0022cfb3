"""With UDP 3478 blocked at the external firewall, the MS-TURN call falls back to TCP 443.

As av-fallback, in [MS-TURN]: the messenger's Allocate over UDP 3478 stops at fw-external, and
it opens TCP 443 with the pseudo-TLS exchange ([MS-TURN] section 2.1.1: a TLS-looking
ClientHello answered by a ServerHello and ServerHelloDone, then framed MS-TURN in the clear),
the way Lync clients cross firewalls that pass only what looks like TLS. The previous rules are
restored afterwards.
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
    name="av-fallback-msturn",
    description="With UDP 3478 blocked at fw-external, the MS-TURN call falls back to TCP 443 "
    "with the pseudo-TLS exchange",
    rows=TCP_443_ROWS,
    needs=AUDIO_CALL_NEEDS,
    firewall=True,
    timeout=60.0,
)
async def run(lab: Lab) -> None:
    async with udp_3478_blocked(lab):
        call = await audio_call(lab, dialect="ms-turn")
    with lab.step("the messenger fell back to TCP 443 in MS-TURN (pseudo-TLS)"):
        expect_media_path(lab, call, "TCP 443", "MS-TURN")
