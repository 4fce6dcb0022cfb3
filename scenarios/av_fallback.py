"""With UDP 3478 blocked at the external firewall, the same call falls back to TCP 443.

Lync clients try the A/V Edge over UDP 3478 first and, when nothing answers, TURN over TCP 443.
The scenario takes the rules fw-external enforces now, removes the rule that lets the messenger
reach the A/V interface on UDP 3478, loads them for the call and restores the previous rules
afterwards. The ladder shows the Allocate over UDP stopping at fw-external and the call
continuing over TCP 443.
"""

from simulator.scenario import Lab, scenario
from simulator.scenario.av import audio_call

FIREWALL = "fw-external"


def without_udp_3478(rules: str, av: str, messenger: str) -> tuple[str, list[str], bool]:
    """The rules minus every accept of UDP 3478 to ``av``; whether TCP 443 from ``messenger``
    to ``av`` had to be added (the shipped rules open it for the remote user only)."""
    kept: list[str] = []
    removed: list[str] = []
    tcp_443 = False
    for line in rules.splitlines():
        words = line.split()
        to_av = f"daddr {av}" in line
        if to_av and "udp" in words and "3478" in words and "accept" in words:
            removed.append(line.strip())
            continue
        if to_av and "tcp" in words and "443" in words and "accept" in words:
            tcp_443 = tcp_443 or f"saddr {messenger}" in line or "saddr" not in line
        kept.append(line)
    added = False
    if not tcp_443:
        for index, line in enumerate(kept):
            if "hook forward" in line:
                kept.insert(
                    index + 1, f"\t\tip saddr {messenger} ip daddr {av} tcp dport 443 accept"
                )
                added = True
                break
    return "\n".join(kept) + "\n", removed, added


@scenario(
    name="av-fallback",
    description="With UDP 3478 blocked at fw-external, the messenger's audio call falls back "
    "to TCP 443 through the A/V Edge",
    rows=["msn-stun-in-3478", "av-turn-443-in", "av-relay-udp-out"],
    needs=["av-edge", "front-end", "pic"],
    firewall=True,
    timeout=60.0,
)
async def run(lab: Lab) -> None:
    av, messenger = lab.address("edge:av"), lab.address("messenger")
    with lab.step(f"block UDP 3478 to the A/V Edge at {FIREWALL}"):
        rules, removed, added = without_udp_3478(await lab.firewall_rules(FIREWALL), av, messenger)
        lab.expect(removed, f"{FIREWALL} has no rule accepting UDP 3478 to {av}: nothing to block")
        if added:
            lab.note(
                f"{FIREWALL} opens A/V TCP 443 to remote-user only (av-turn-443-in); "
                "opened to the messenger too, as Lync's Any -> A/V 443 rule"
            )
    async with lab.firewall_changed(FIREWALL, rules):
        call = await audio_call(lab)
    with lab.step("the messenger fell back to TCP 443"):
        lab.expect(
            call.messenger_path == "TCP 443",
            f"the messenger used {call.messenger_path} although UDP 3478 was blocked",
        )
        lab.expect(call.fallback_reason, "the messenger never tried UDP 3478")
