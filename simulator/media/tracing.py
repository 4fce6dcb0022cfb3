"""One-line summaries of STUN/TURN messages, either dialect, for the scenario trace
(:mod:`simulator.trace`).

The A/V Edge adapter and the scenario's TURN clients use the same summaries, so a message both
ends recorded is folded into one arrow of the ladder. Media is summarised, never recorded per
packet: :class:`MediaCounter` records one event when a flow first carries data and one with the
totals when it ends.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from simulator import trace
from simulator.media import msturn
from simulator.media.codes import ERROR_CODES
from simulator.media.errors import RemoteProtocolError
from simulator.media.stun import Message, MessageClass, Method

Address = tuple[str, int]

METHOD_NAMES: dict[int, str] = {
    Method.BINDING: "Binding",
    Method.ALLOCATE: "Allocate",
    Method.REFRESH: "Refresh",
    Method.SEND: "Send",
    Method.DATA: "Data",
    Method.CREATE_PERMISSION: "CreatePermission",
    Method.CHANNEL_BIND: "ChannelBind",
    Method.CONNECT: "Connect",
    Method.CONNECTION_BIND: "ConnectionBind",
    Method.CONNECTION_ATTEMPT: "ConnectionAttempt",
}


def addr(address: Address) -> str:
    return f"{address[0]}:{address[1]}"


def protocol_of(message: Message) -> str:
    return "stun" if message.method == Method.BINDING else "turn"


#: [MS-TURN]'s methods (section 2.2.1), where numbers differ from RFC TURN's (its Send request
#: is RFC's Refresh number, Set Active Destination RFC's Send).
MS_METHOD_NAMES: dict[int, str] = {
    msturn.ALLOCATE: "Allocate",
    msturn.SEND: "Send",
    msturn.SET_ACTIVE_DESTINATION: "Set Active Destination",
    msturn.DATA_INDICATION: "Data",
    Method.BINDING: "Binding",
}


def method_name(method: int, dialect: str = "rfc") -> str:
    """``Allocate``, ``ChannelBind`` ... (``method 0x123`` for one this package does not know)."""
    names = MS_METHOD_NAMES if dialect == msturn.DIALECT else METHOD_NAMES
    return names.get(method, f"method 0x{method:03x}")


def summary(message: Message) -> str:
    """``Allocate request``, ``Allocate success 127.51.100.11:50012``, ``401 Unauthorized`` ..."""
    ms = message.dialect == msturn.DIALECT
    name = method_name(message.method, message.dialect)
    cls = message.message_class
    if cls == MessageClass.REQUEST:
        return f"{name} request"
    if cls == MessageClass.INDICATION:
        return f"{name} indication"
    if cls == MessageClass.ERROR:
        code, reason = message.get("ERROR-CODE", (0, ""))
        known = ERROR_CODES.get(code)
        return f"{code} {known.reason if known else reason}".strip()
    # [MS-TURN] names the relayed address MAPPED-ADDRESS (section 2.2.2.1)
    relayed = message.get("MAPPED-ADDRESS" if ms else "XOR-RELAYED-ADDRESS")
    if message.method == Method.ALLOCATE and relayed is not None:
        return f"{name} success {addr(relayed)}"
    mapped = message.get("XOR-MAPPED-ADDRESS")
    if message.method == Method.BINDING and mapped is not None:
        return f"{name} success {addr(mapped)}"
    return f"{name} success"


def detail(message: Message) -> str:
    parts = [f"{key}: {value!r}" for key, value in message.attributes if key != "MESSAGE-INTEGRITY"]
    return "\n".join(parts)


def record_stun(
    data: bytes, src: Address, dst: Address, event: str, flow: str | None = None
) -> None:
    """Record one STUN message from raw bytes (unparsable bytes are recorded as such)."""
    try:
        message = msturn.parse_either(data)
    except (RemoteProtocolError, ValueError):
        trace.record("stun", addr(src), addr(dst), "malformed STUN", event=event, flow=flow)
        return
    record_message(message, src, dst, event, flow)


def record_message(
    message: Message,
    src: Address,
    dst: Address,
    event: str,
    flow: str | None = None,
    at: float | None = None,
) -> None:
    """Record one STUN message (``at``: when, if not now)."""
    trace.record(
        protocol_of(message), addr(src), addr(dst), summary(message), event=event, flow=flow,
        detail=detail(message), at=at,
    )  # fmt: skip


@dataclass
class _Flow:
    packets: int = 0
    octets: int = 0


@dataclass
class MediaCounter:
    """Counts media per (source, destination); records the first datagram and the totals."""

    flows: dict[tuple[str, str], _Flow] = field(default_factory=dict)

    def count(self, src: str, dst: str, size: int, *, event: str = "sent", what: str = "") -> None:
        flow = self.flows.get((src, dst))
        if flow is None:
            flow = self.flows[(src, dst)] = _Flow()
            trace.record(
                "media", src, dst, "media relayed", event=event,
                detail=f"first datagram: {size} bytes{what}",
            )  # fmt: skip
        flow.packets += 1
        flow.octets += size

    def finish(
        self, *, src: str | None = None, dst: str | None = None, event: str = "sent"
    ) -> None:
        """Record the totals of the flows from ``src`` / to ``dst`` (all by default), forget them."""
        for (flow_src, flow_dst), flow in list(self.flows.items()):
            if src is not None and flow_src != src:
                continue
            if dst is not None and flow_dst != dst:
                continue
            del self.flows[(flow_src, flow_dst)]
            trace.record(
                "media", flow_src, flow_dst, f"media: {flow.packets} packets, {flow.octets} bytes",
                event=event, detail=f"{flow.packets} datagrams, {flow.octets} bytes of payload",
            )  # fmt: skip
