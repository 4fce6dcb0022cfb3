"""``stun-udp``: a STUN Binding request over UDP (:rfc:`8489#section-6`), with the mapped address.

The request is retransmitted with doubling intervals from 250 ms until the probe's deadline. The
client is the media package's (:class:`simulator.media.aio.AsyncTurnClient`); a datagram that is
not STUN is reported as what came back instead.
"""

from __future__ import annotations

from simulator.media.aio import AsyncTurnClient
from simulator.media.client import ClientConfig
from simulator.media.errors import NotStunError, RemoteProtocolError, RequestRefused
from simulator.media.stun import Method
from simulator.probes.base import Outcome, Phase, Verdict, classify, describe_bytes
from simulator.probes.net import Steps
from simulator.probes.spec import ProbeSpec

INITIAL_RTO = 0.25


def udp_config(spec: ProbeSpec) -> ClientConfig:
    """A UDP client that retransmits from 250 ms until the probe's deadline."""
    return ClientConfig(stream=False, rto=INITIAL_RTO, transmissions=20, timeout=spec.timeout)


def not_stun(exc: NotStunError) -> str:
    return f"answered {describe_bytes(exc.data)}: not STUN"


async def probe_stun_udp(spec: ProbeSpec) -> Outcome:
    steps = Steps(spec.timeout)
    client = None
    try:
        client = await AsyncTurnClient.open(
            (spec.address, spec.port), "udp", local_address=spec.bind, config=udp_config(spec)
        )
        response = await steps.run("response", Phase.CONNECT, client.request(Method.BINDING, []))
        mapped = client.mapped
        if mapped is None:
            return Outcome(
                Verdict.PROTOCOL_FAILED,
                "Binding success without a mapped address",
                {},
                steps.timings,
            )
        details = {"mapped": f"{mapped[0]}:{mapped[1]}"}
        if software := response.get("SOFTWARE"):
            details["server"] = software
        return Outcome(
            Verdict.PASSED,
            f"STUN Binding success, mapped address {mapped[0]}:{mapped[1]}",
            details,
            steps.timings,
        )
    except RequestRefused as exc:
        return Outcome(
            Verdict.PROTOCOL_FAILED,
            f"Binding answered with error {exc.code} {exc.reason}",
            {"error": str(exc.code)},
            steps.timings,
        )
    except NotStunError as exc:
        return Outcome(Verdict.PROTOCOL_FAILED, not_stun(exc), {}, steps.timings)
    except RemoteProtocolError as exc:
        return Outcome(Verdict.PROTOCOL_FAILED, str(exc), {}, steps.timings)
    except (OSError, TimeoutError) as exc:
        c = classify(exc, Phase.CONNECT, spec.timeout)
        if c.verdict is Verdict.REFUSED and isinstance(exc, ConnectionRefusedError):
            c = type(c)(Verdict.REFUSED, "ICMP port unreachable")
        return Outcome(c.verdict, c.reason, {}, steps.timings)
    finally:
        if client is not None:
            await client.close()
