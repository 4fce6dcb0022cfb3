"""A/V for scenarios: relayed call ends, RTP-sized media, and MRAS over SIP from lab hosts.

The TURN client is the media package's (:class:`simulator.media.aio.AsyncTurnClient`), in
either dialect: RFC TURN (channels, ChannelData, TURN over TLS on 443) or [MS-TURN] as Lync
clients speak it (Set Active Destination, unencapsulated media, the pseudo-TLS exchange on TCP
443; the MRAS's credentials base64-decoded, section 3.1.11). Every
socket it gets comes from :meth:`Lab.udp_socket` / :meth:`Lab.connect_tcp`, so with the netns
runner a client leaves from its host's namespace and crosses the lab's firewalls; with the local
runner it is a plain socket on the host's loopback address.

The clients record what they send and receive (:mod:`simulator.trace`), with the summaries the
A/V Edge uses (:mod:`simulator.media.tracing`), so both ends fold into one arrow; a request
that gets no answer is recorded as ``dropped`` (the ladder stops it at the firewall between the
two hosts), and a TCP connection that is never answered as a dropped ``TCP connect``. Media is
recorded once per channel with its totals, never per packet.
"""

from __future__ import annotations

import asyncio
import ssl
import struct
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from simulator.media import tracing
from simulator.media.actions import Address
from simulator.media.aio import AsyncTurnClient
from simulator.media.auth import ClientCredentials, LongTermCredentials, MsTurnCredentials
from simulator.media.client import ClientConfig
from simulator.media.dialect import RFC, Dialect
from simulator.media.errors import MediaError, RequestRefused
from simulator.media.mras import MediaRelay, credentials_request_body, parse_credentials_response
from simulator.media.msturn import MS_TURN
from simulator.scenario.api import Lab, ScenarioFailure
from simulator.scenario.clients import intercepted, sip_agent
from simulator.sip.emulators.mras import CONTENT_TYPE as MRAS_CONTENT_TYPE
from simulator.sip.emulators.ua import UserAgent
from simulator.tls import client_context
from simulator.trace import record

RTP_PAYLOAD = 160
"""Bytes of one 20 ms G.711 frame: what a PCMU audio call sends 50 times a second."""
RTP_HEADER = 12
REQUEST_TIMEOUT = 3.0
UDP_RTO = 0.25
"""First retransmission of a request over UDP (then doubling, until REQUEST_TIMEOUT)."""
DIALECTS = {"rfc": RFC, "ms-turn": MS_TURN}
"""The dialects a call can use, by the names scenarios give them."""
TURN_FAILURES = (MediaError, OSError, EOFError)
"""What a TURN request can fail with: a refusal or protocol error, no answer (TimeoutError is
an OSError), a socket error, the connection closed."""


@dataclass
class RelayClient:
    """One end of a relayed call: who it is, its TURN client (the media package's one), and
    the media it sent (the trace records media once per channel, with its totals)."""

    name: str
    """Who this is in the scenario's messages (``messenger`` ...)."""
    client: AsyncTurnClient
    sent: dict[int, list[int]] = field(default_factory=dict)
    """Per channel: [packets, bytes] of media sent."""

    @property
    def server(self) -> Address:
        return self.client.server

    @property
    def local(self) -> Address:
        return self.client.local

    @property
    def relayed(self) -> Address | None:
        return self.client.relayed

    @property
    def ms(self) -> bool:
        """True when this client speaks [MS-TURN]."""
        return self.client.core.ms

    @property
    def path(self) -> str:
        """``UDP 3478``, ``TCP 443`` (TLS and pseudo-TLS included): how this client reaches the
        relay."""
        kind = "UDP" if self.client.transport_name == "udp" else "TCP"
        return f"{kind} {self.server[1]}"

    async def allocate(self) -> Address:
        return await self.client.allocate()

    async def permit(self, peer: Address) -> None:
        await self.client.create_permission(peer)

    async def bind(self, channel: int, peer: Address) -> None:
        """RFC: ChannelBind; [MS-TURN]: Set Active Destination (media goes unencapsulated)."""
        if self.ms:
            await self.client.set_active_destination(peer)
        else:
            await self.client.channel_bind(channel, peer)

    def send_media(self, channel: int, payload: bytes) -> None:
        if self.ms:
            self.client.send_raw(payload)
        else:
            self.client.send_channel_data(channel, payload)
        counts = self.sent.setdefault(channel, [0, 0])
        counts[0] += 1
        counts[1] += len(payload)

    async def receive_media(self, channel: int, timeout: float) -> bytes | None:
        """The payload of the next ChannelData on ``channel``, None after ``timeout``."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            got = await self.client.receive(left)
            if got is None:
                return None
            if got.channel == channel or (self.ms and got.channel is None):
                return got.data
        return None

    def record_media(self, channel: int, received: int) -> None:
        """One trace event for what went over ``channel``: packets and bytes each way."""
        packets, octets = self.sent.get(channel, [0, 0])
        how = "to the active destination, unencapsulated" if self.ms else f"channel 0x{channel:04x}"
        record(
            "media", tracing.addr(self.local), tracing.addr(self.server),
            f"RTP over {self.path}: {packets} sent, {received} received",
            detail=f"{how}: {packets} datagrams ({octets} bytes) sent, "
            f"{received} received, relayed address {self.relayed}",
        )  # fmt: skip

    async def close(self) -> None:
        """Release the allocation (Refresh with LIFETIME 0), close the socket."""
        try:
            await self.client.release(self.client.core.config.timeout)
        finally:
            await self.client.close()


async def relay_client(
    lab: Lab,
    vantage: str,
    server: Address,
    transport: str,
    username: str,
    password: str,
    *,
    tls: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    timeout: float = REQUEST_TIMEOUT,
    dialect: Dialect = RFC,
    credentials: ClientCredentials | None = None,
) -> RelayClient:
    """A TURN client on ``vantage`` (``host[:interface]``), its socket from the lab (the host's
    namespace with the netns runner), recording its transactions in the trace.

    ``dialect``: RFC TURN, or [MS-TURN] (``simulator.media.msturn.MS_TURN``), where ``tls``
    means TCP with the pseudo-TLS exchange ([MS-TURN] section 2.1.1), as a Lync client uses TCP
    443. ``credentials`` replace ``username``/``password`` (e.g. :class:`MsTurnCredentials`).

    A TCP connection the firewall drops raises TimeoutError after ``timeout``, recorded as a
    dropped ``TCP connect``; a refused one an OSError, recorded as refused."""
    name = lab.interface(vantage).host
    if credentials is None:
        credentials = LongTermCredentials(username, password)
    ms = dialect is MS_TURN
    if transport == "udp":
        config = ClientConfig(stream=False, rto=UDP_RTO, timeout=timeout)
        client = await AsyncTurnClient.open(
            server, "udp", credentials=credentials, sock=lab.udp_socket(vantage),
            config=config, record=True, dialect=dialect,
        )  # fmt: skip
        return RelayClient(name, client)
    source = (lab.address(vantage), 0)
    try:
        sock = await lab.connect_tcp(vantage, server, timeout)
    except TimeoutError:
        record(
            "tcp", tracing.addr(source), tracing.addr(server), f"TCP connect to {server[1]}",
            event="dropped", detail=f"no SYN-ACK within {timeout:.0f} s",
        )  # fmt: skip
        raise TimeoutError(f"TCP {server[1]} to {server[0]}: no answer (dropped)") from None
    except OSError as exc:
        record(
            "tcp", tracing.addr(source), tracing.addr(server), f"TCP connect to {server[1]}",
            event="refused", detail=str(exc),
        )  # fmt: skip
        raise
    config = ClientConfig(stream=True, timeout=timeout)
    client = await AsyncTurnClient.open(
        server, "tcp", credentials=credentials, sock=sock, config=config, record=True,
        dialect=dialect, pseudo_tls=ms and transport == "tls",
    )  # fmt: skip
    if transport == "tls" and not ms:
        if tls is None:
            await client.close()
            raise ValueError("TURN over TLS needs an SSL context")
        try:
            await asyncio.wait_for(client.start_tls(tls, server_hostname), timeout)
        except (OSError, TimeoutError) as exc:
            await client.close()
            raise ConnectionError(f"TLS to {server[0]}:{server[1]} failed: {exc}") from None
    return RelayClient(name, client)


def rtp_packet(seq: int, ssrc: int, payload_type: int = 0) -> bytes:
    """A 172-byte RTP packet: 12-byte header (PCMU by default) + 20 ms of audio."""
    header = struct.pack("!BBHII", 0x80, payload_type, seq & 0xFFFF, seq * RTP_PAYLOAD, ssrc)
    return header + bytes((seq + i) & 0xFF for i in range(RTP_PAYLOAD))


# ---------------------------------------------------------------- SIP from a lab host


def pic_user(lab: Lab, user: str = "dave", vantage: str = "messenger") -> UserAgent:
    """``user``@pic.lab, the Live Messenger-style client's SIP account, on ``vantage``,
    connecting to the public IM provider (host ``pic``) on 5061."""
    if user not in lab.settings("pic").get("users", {}):
        raise ScenarioFailure(f"{user} is not a user of [services.pic] in the topology")
    domain = lab.settings("pic").get("domain", "pic.lab")
    return sip_agent(lab, f"{user}@{domain}", via="pic", client=vantage)


def relay_sdp(user: str, relayed: Address, session: int) -> bytes:
    """An audio offer/answer whose only candidate is the relayed address (PCMU, 20 ms)."""
    ip, port = relayed
    return (
        f"v=0\r\no={user} {session} 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\n"
        f"a=candidate:1 1 UDP 16777215 {ip} {port} typ relay\r\n"
    ).encode()


def sdp_address(body: bytes) -> Address | None:
    """The audio address of an SDP body (c= and m=audio), None when it has none."""
    ip, port = None, None
    for line in body.decode(errors="replace").splitlines():
        if line.startswith("c=IN IP4 "):
            ip = line.split()[2]
        elif line.startswith("m=audio "):
            port = int(line.split()[1])
    return (ip, port) if ip and port else None


def contoso_user(lab: Lab, user: str, vantage: str = "internal-user") -> UserAgent:
    """``user``@contoso.lab on ``vantage``, connecting to the Front End on 5061."""
    if user not in lab.settings("front-end").get("users", {}):
        raise ScenarioFailure(f"{user} is not a user of [services.front-end] in the topology")
    domain = lab.settings("front-end").get("domain", "contoso.lab")
    return sip_agent(lab, f"{user}@{domain}", via="internal", client=vantage)


async def mras_credentials(ua: UserAgent) -> tuple[str, str, int, list[MediaRelay]]:
    """Ask for relay credentials (SIP SERVICE to the Front End, which passes it to the Edge's A/V
    Authentication service over 5062): user, password, minutes, relays. Fails the scenario with
    the SIP status and why (the Warning: e.g. 5062 unreachable) when it is not 200."""
    identity = f"{ua.user}@{ua.domain}"
    response = await ua.request(
        "SERVICE",
        f"sip:{identity}",
        body=credentials_request_body(identity),
        content_type=MRAS_CONTENT_TYPE,
    )
    if response.code != 200:
        why = response.headers.get("Warning") or response.headers.get("ms-diagnostics") or ""
        if why.startswith("399 "):  # 399 host "text"
            why = why.split(" ", 2)[-1].strip('"')
        raise ScenarioFailure(
            f"MRAS answered {response.code} {response.phrase}, not 200"
            + (f": {why}" if why else "")
        )
    return parse_credentials_response(response.body)


# ---------------------------------------------------------------- the audio call


async def _incoming(ua: UserAgent, method: str, timeout: float = 5.0) -> Any:
    """The next request ``method`` ``ua`` received (others are skipped), within ``timeout``."""
    async with asyncio.timeout(timeout):
        while True:
            request = await ua.incoming.get()
            if request.method == method:
                return request


@dataclass
class CallReport:
    """What :func:`audio_call` found: how each end reached the relay and what got through."""

    messenger_path: str
    """``UDP 3478`` or ``TCP 443``."""
    contoso_path: str
    relayed: dict[str, Address]
    """The relayed address of each end."""
    received: dict[str, int]
    """RTP packets each end received."""
    sent: int
    """RTP packets each end sent."""
    fallback_reason: str = ""
    """Why the messenger left UDP 3478 (empty when it did not)."""
    dialect: str = "RFC TURN"
    """``RFC TURN`` or ``MS-TURN``: what both ends spoke to the A/V Edge."""


def _port_range(lab: Lab) -> tuple[int, int]:
    text = str(lab.settings("av-edge").get("port_range", "50000-59999"))
    low, _, high = text.partition("-")
    return int(low), int(high or low)


def _relay_address(lab: Lab, relay: MediaRelay) -> str:
    iface = lab.topology.interface_by_fqdn(relay.host)
    if iface is None:
        raise ScenarioFailure(f"MRAS names relay {relay.host}, which no lab interface has")
    return lab.address(f"{iface.host}:{iface.id}")


def _credentials(
    dialect: Dialect, username: str, password: str, *, mras: bool
) -> ClientCredentials:
    """The client credentials for ``dialect``: [MS-TURN] keys over the raw bytes, the MRAS's
    password base64-decoded as a Lync client holds it (section 3.1.11)."""
    if dialect is not MS_TURN:
        return LongTermCredentials(username, password)
    if mras:
        return MsTurnCredentials.from_mras(username, password)
    return MsTurnCredentials(username, password.encode())


def _dialect_name(dialect: Dialect) -> str:
    return "MS-TURN" if dialect is MS_TURN else "RFC TURN"


async def _messenger_client(
    lab: Lab, relay: MediaRelay, username: str, password: str, dialect: Dialect = RFC
) -> tuple[RelayClient, str]:
    """UDP 3478 first; when that gets no answer, TCP 443 (TURN over TLS, or [MS-TURN] after the
    pseudo-TLS exchange), as Lync clients do."""
    server = _relay_address(lab, relay)
    creds = _credentials(dialect, username, password, mras=False)
    fallback = ""
    if relay.udp_port is not None:
        client = await relay_client(
            lab, "messenger", (server, relay.udp_port), "udp", username, password,
            dialect=dialect, credentials=creds,
        )  # fmt: skip
        try:
            await client.allocate()
            return client, fallback
        except RequestRefused as exc:
            await client.close()
            raise ScenarioFailure(f"the A/V Edge refused the messenger over UDP: {exc}") from None
        except TURN_FAILURES as exc:
            await client.close()
            fallback = str(exc)
            lab.note(f"UDP {relay.udp_port} got no answer: the messenger falls back to TCP 443")
    if relay.tcp_port is None:
        raise ScenarioFailure(f"no UDP answer and MRAS lists no TCP port: {fallback}")
    tls = client_context([lab.pki.trust_bundle])
    creds = _credentials(dialect, username, password, mras=False)
    tcp = (server, relay.tcp_port)
    opened: RelayClient | None = None
    try:
        opened = await relay_client(
            lab, "messenger", tcp, "tls", username, password,
            tls=tls, server_hostname=relay.host, dialect=dialect, credentials=creds,
        )  # fmt: skip
        await opened.allocate()
    except TURN_FAILURES as exc:
        if opened is not None:
            await opened.close()
        tried = f"{fallback or 'UDP not tried'}; then {exc}"
        why = await intercepted(lab, "messenger", tcp, relay.host)
        if why:
            raise ScenarioFailure(
                f"the messenger cannot reach the A/V Edge over TCP {tcp[1]}: {why} "
                f"(the client saw: {tried})"
            ) from None
        raise ScenarioFailure(f"the messenger cannot reach the A/V Edge: {tried}") from None
    return opened, fallback


async def _stream(
    sender: RelayClient, receiver: RelayClient, channel: int, packets: int, ssrc: int
) -> int:
    """``packets`` RTP packets from ``sender`` 20 ms apart; how many ``receiver`` got."""

    async def send() -> None:
        for seq in range(packets):
            sender.send_media(channel, rtp_packet(seq, ssrc))
            await asyncio.sleep(0.02)  # pacing of a 20 ms audio codec, not synchronisation

    async def receive() -> int:
        seen: set[int] = set()
        while len(seen) < packets:
            payload = await receiver.receive_media(channel, 2.0)
            if payload is None:
                break
            if len(payload) >= RTP_HEADER and struct.unpack_from("!I", payload, 8)[0] == ssrc:
                seen.add(struct.unpack_from("!H", payload, 2)[0])
        return len(seen)

    _, got = await asyncio.gather(send(), receive())
    return got


async def audio_call(
    lab: Lab, *, packets: int = 50, user: str = "bob", dialect: str = "rfc"
) -> CallReport:
    """A Live Messenger-style client (host ``messenger``) and ``user``@contoso.lab (on
    ``internal-user``) set up audio through the A/V Edge, both ends relayed.

    The contoso user signs in at the Front End and gets relay credentials from its MRAS (SIP
    SERVICE), then allocates on the Edge's internal interface; the messenger allocates on the
    A/V interface with the Edge's static account (``[services.av-edge.users]``), over UDP 3478
    or, when that gets no answer, TCP 443. The messenger's user (dave@pic.lab) signs in at the
    public IM provider; the contoso user calls him (INVITE across federation) with an SDP offer
    naming his relayed address, and dave's answer names the messenger's. Each end permits and
    binds a channel to the address the other's SDP named and sends ``packets`` RTP packets;
    media goes client -> relay -> relay -> client, on the relay ports 50000-59999. BYE ends it.

    ``dialect``: ``rfc`` (RFC TURN: channels and ChannelData, TURN over TLS on 443) or
    ``ms-turn`` ([MS-TURN] as Lync clients speak it: Set Active Destination and unencapsulated
    media, the pseudo-TLS exchange on TCP 443).
    """
    if dialect not in DIALECTS:
        raise ScenarioFailure(f"unknown TURN dialect {dialect!r}: one of {', '.join(DIALECTS)}")
    turn = DIALECTS[dialect]
    low, high = _port_range(lab)
    static_users = {
        k: v for k, v in lab.settings("av-edge").get("users", {}).items() if "probe" not in k
    }
    if not static_users:
        raise ScenarioFailure("[services.av-edge.users] has no account for the messenger")
    m_user, m_password = next(iter(static_users.items()))
    clients: list[RelayClient] = []
    ua = contoso_user(lab, user)
    dave = pic_user(lab)
    try:
        with lab.step(f"{user} signs in at the Front End from his workstation"):
            await ua.connect()
            reply = await ua.register()
            lab.expect(reply.code == 200, f"REGISTER answered {reply.code} {reply.phrase}")

        with lab.step(f"{user} asks the Front End's MRAS for relay credentials (SIP SERVICE)"):
            username, password, minutes, relays = await mras_credentials(ua)
            by_location = {r.location: r for r in relays}
            lab.expect(
                {"internet", "intranet"} <= set(by_location),
                f"MRAS listed {sorted(by_location)}, not internet and intranet relays",
            )
            lab.expect(minutes > 0, f"MRAS granted the credentials for {minutes} minutes")

        with lab.step(f"{user} allocates a relay on the Edge's internal interface (UDP 3478)"):
            intranet = by_location["intranet"]
            server = (_relay_address(lab, intranet), intranet.udp_port or 3478)
            bob = await relay_client(
                lab, "internal-user", server, "udp", username, password, dialect=turn,
                credentials=_credentials(turn, username, password, mras=True),
            )  # fmt: skip
            clients.append(bob)
            try:
                bob_relay = await bob.allocate()
            except TURN_FAILURES as exc:
                raise ScenarioFailure(f"{user}'s Allocate failed: {exc}") from None

        with lab.step("the Live Messenger-style client allocates a relay on the A/V Edge"):
            messenger, fallback = await _messenger_client(
                lab, by_location["internet"], m_user, m_password, turn
            )
            clients.append(messenger)
            assert messenger.relayed is not None
            how = ""
            if turn is MS_TURN:
                how = " in MS-TURN" + (" (pseudo-TLS)" if messenger.path.startswith("TCP") else "")
            lab.note(f"media path: the messenger reached the A/V Edge over {messenger.path}{how}")

        with lab.step("both relays are on the A/V interface, in the relay port range"):
            av = lab.address("edge:av")
            for who, relayed in (("messenger", messenger.relayed), (user, bob_relay)):
                lab.expect(relayed[0] == av, f"{who}'s relay is on {relayed[0]}, not {av}")
                lab.expect(
                    low <= relayed[1] <= high,
                    f"{who}'s relayed port {relayed[1]} is outside {low}-{high}",
                )

        with lab.step("dave (the messenger's user) signs in at the public IM provider"):
            await dave.connect()
            reply = await dave.register()
            lab.expect(reply.code == 200, f"dave's REGISTER answered {reply.code} {reply.phrase}")

        with lab.step(f"{user} calls dave@pic.lab: the SDP offer and answer carry the relays"):
            dave.answer_sdp = relay_sdp("dave", messenger.relayed, 2)
            response, dialog = await ua.invite(
                f"sip:dave@{dave.domain}", relay_sdp(user, bob_relay, 1)
            )
            lab.expect(
                response.code == 200 and dialog is not None,
                f"the INVITE to dave@{dave.domain} was answered {response.code} {response.phrase}",
            )
            offered = await _incoming(dave, "INVITE")
            messenger_peer = sdp_address(response.body)
            bob_peer = sdp_address(offered.body)
            lab.expect(
                messenger_peer == messenger.relayed,
                f"the SDP answer names {messenger_peer}, not the messenger's relay",
            )
            lab.expect(bob_peer == bob_relay, f"the SDP offer names {bob_peer}, not {user}'s relay")
            assert dialog is not None and messenger_peer is not None and bob_peer is not None

        bind = (
            "sets the other's relayed address as its active destination"
            if turn is MS_TURN
            else "permits and binds a channel to the other's relayed address"
        )
        with lab.step(f"each end {bind}"):
            for client, peer in ((messenger, bob_peer), (bob, messenger_peer)):
                try:
                    await client.permit(peer)
                    await client.bind(0x4000, peer)
                except TURN_FAILURES as exc:
                    raise ScenarioFailure(f"{client.name}: {exc}") from None

        with lab.step(f"audio both ways: {packets} RTP packets of 20 ms each way"):
            to_bob, to_messenger = await asyncio.gather(
                _stream(messenger, bob, 0x4000, packets, 0x11111111),
                _stream(bob, messenger, 0x4000, packets, 0x22222222),
            )
            messenger.record_media(0x4000, to_messenger)
            bob.record_media(0x4000, to_bob)
            need = packets - packets // 20  # 5 % loss at most
            lab.expect(
                to_bob >= need, f"{user} received {to_bob} of the messenger's {packets} packets"
            )
            lab.expect(
                to_messenger >= need,
                f"the messenger received {to_messenger} of {user}'s {packets} packets",
            )

        with lab.step(f"{user} hangs up"):
            bye = await ua.bye(dialog)
            lab.expect(bye.code == 200, f"BYE answered {bye.code} {bye.phrase}")
        return CallReport(
            messenger.path,
            bob.path,
            {"messenger": messenger.relayed, user: bob_relay},
            {"messenger": to_messenger, user: to_bob},
            packets,
            fallback,
            _dialect_name(turn),
        )
    finally:
        for client in reversed(clients):
            await client.close()
        await ua.close()
        await dave.close()


AUDIO_CALL_NEEDS = ("av-edge", "front-end", "pic")
"""The services :func:`audio_call` needs: the A/V Edge, the Front End (MRAS) and the public IM
provider (the messenger's user)."""
UDP_3478_ROWS = ("msn-stun-in-3478", "av-int-stun-3478", "av-relay-udp-out", "av-auth-5062")
"""The matrix rows an audio call exercises when the messenger reaches the A/V Edge on UDP 3478:
the messenger's and the contoso user's allocations, the relayed media, the MRAS credentials."""
TCP_443_ROWS = ("msn-stun-in-3478", "av-turn-443-in", "av-relay-udp-out", "av-auth-5062")
"""The rows of the same call when UDP 3478 is blocked and the messenger falls back to TCP 443."""


def expect_media_path(lab: Lab, call: CallReport, path: str, dialect: str = "RFC TURN") -> None:
    """The scenario fails unless the messenger reached the A/V Edge over ``path`` (``UDP
    3478`` or ``TCP 443``) in ``dialect`` (``RFC TURN`` or ``MS-TURN``), and, on TCP 443, only
    after trying UDP 3478."""
    lab.expect(
        (call.messenger_path, call.dialect) == (path, dialect),
        f"the messenger reached the A/V Edge over {call.messenger_path} in {call.dialect}, not "
        f"{path} in {dialect}" + (f" ({call.fallback_reason})" if call.fallback_reason else ""),
    )
    if path == "TCP 443":
        lab.expect(call.fallback_reason, "the messenger never tried UDP 3478")


# ---------------------------------------------------------------- UDP 3478 blocked

FALLBACK_FIREWALL = "fw-external"


@asynccontextmanager
async def udp_3478_blocked(lab: Lab) -> AsyncIterator[None]:
    """For the block, :data:`FALLBACK_FIREWALL` enforces its rules less the accepts of UDP 3478
    to the A/V Edge (:func:`without_udp_3478`), as one step of the ladder; the previous rules
    afterwards."""
    firewall = FALLBACK_FIREWALL
    av, messenger = lab.address("edge:av"), lab.address("messenger")
    with lab.step(f"block UDP 3478 to the A/V Edge at {firewall}"):
        rules, removed, added = without_udp_3478(await lab.firewall_rules(firewall), av, messenger)
        lab.expect(removed, f"{firewall} has no rule accepting UDP 3478 to {av}: nothing to block")
        if added:
            lab.note(
                f"{firewall} opens A/V TCP 443 to remote-user only (av-turn-443-in); "
                "opened to the messenger too, as Lync's Any -> A/V 443 rule"
            )
    async with lab.firewall_changed(firewall, rules):
        yield


"""The firewall the fallback scenarios block UDP 3478 at."""


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
