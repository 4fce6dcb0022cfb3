"""Bounded fuzzing in CI: each sans-IO entry point the internet reaches, fed Hypothesis bytes
(random and mutated from a valid seed), lets only our own protocol errors escape. The long run
is ``scripts/fuzz.py`` (atheris)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz_targets import SIP_SEED, TARGETS, XMPP_HEADER

SEEDS = {
    "sip-framing": SIP_SEED,
    "sip-validate": SIP_SEED[40:],
    "sip-proxy": SIP_SEED[-60:],
    "xmpp-stream": b"<message from='romeo@jabber.lab' to='alice@contoso.lab'><body>x</body></message>",
    "xmpp-s2s": b"<db:result from='jabber.lab' to='contoso.lab'>k</db:result>",
    "dns-answer": bytes.fromhex("123401000001000000000000037369700763") + b"\x00\x00\x01\x00\x01",
    # an Allocate with REQUESTED-TRANSPORT UDP and an Allocate success with XOR-RELAYED-ADDRESS
    "turn-server": bytes.fromhex("000300082112a4426564676573696d2d66757a7a0019000411000000"),
    "turn-client": bytes.fromhex(
        "0103000c2112a4426564676573696d2d66757a7a00160008000121f55e12a443"
    ),
    # libnice's unauthenticated MS-TURN Allocate (Magic Cookie attribute, MS-Version) and the
    # Edge's 401 to it
    "ms-turn-server": bytes.fromhex(
        "000300106dfa7bb6894d763cc64e7f95975d05b7000f000472c64bc68008000400000001"
    ),
    "ms-turn-client": bytes.fromhex(
        "0113001c6dfa7bb6894d763cc64e7f95975d05b7000f000472c64bc60009000800000401"
        "00150001720014000161"
    ),
}
_ = XMPP_HEADER


@st.composite
def mutated(draw: st.DrawFn, seed: bytes) -> bytes:
    """The seed with a few bytes replaced, inserted or cut, or plain random bytes."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=400))
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["set", "insert", "cut"]))
        chunk = draw(st.binary(min_size=1, max_size=8))
        if op == "insert" or not data:
            data[at:at] = chunk
        elif op == "set":
            data[at : at + len(chunk)] = chunk
        else:
            del data[at : at + len(chunk)]
    return bytes(data)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_only_our_errors_escape(name: str) -> None:
    target = TARGETS[name]

    @settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(data=mutated(SEEDS[name]))
    def run(data: bytes) -> None:
        target(data)

    run()
