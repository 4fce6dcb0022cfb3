"""Lab clients for scenarios: a SIP user agent or an XMPP user at a vantage point of the lab.

::

    async with sip_user(lab, "alice@contoso.lab", via="remote") as alice:   # home, TLS 443
        await alice.register()
    async with xmpp_user(lab, "romeo@jabber.lab") as romeo:                # jabber.lab c2s
        romeo.send_message(mto="alice@contoso.lab", mbody="hi", mtype="chat")

Addresses come from :meth:`Lab.address` (right for every runner), passwords from the
topology's ``[services.*] users`` tables, certificates from ``lab.pki``. The client's socket is
bound to the vantage host's address so that ladders show the user on the right host
(``remote-user``, ``internal-user``, ``fabrikam``, ``pic``, ``jabber``); where that address is
not on this machine (a namespaced lab seen from outside) the client connects unbound.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from sipmessage import Request
from slixmpp import JID

from simulator.errors import EdgesimError
from simulator.pki import CertPaths, user_password
from simulator.scenario.api import Lab
from simulator.sip.emulators.ua import UserAgent
from simulator.tls import client_context
from simulator.xmpp.harness import ChatClient


@dataclass(frozen=True)
class Vantage:
    """Where a SIP client connects to and where it sits."""

    server: str
    """``host:interface`` of the server the client connects to."""
    proto: str
    """The listener's protocol (its port is read from the topology)."""
    server_name: str
    """The name the client verifies on the server certificate."""
    client: str
    """``host:interface`` the client sits on."""


VANTAGES: dict[str, Vantage] = {
    # a contoso user at home: the Access Edge's client port 443
    "remote": Vantage("edge:access", "sip-tls", "sip.contoso.lab", "remote-user:wan"),
    # a contoso user in the office: the Front End pool directly
    "internal": Vantage("fe:lan", "sip-mtls", "fe.contoso.lab", "internal-user:lan"),
    # a fabrikam.lab user on fabrikam's own server
    "fabrikam": Vantage("fabrikam:wan", "sip-mtls", "sip.fabrikam.lab", "fabrikam:wan"),
    # a public IM (pic.lab) user on the provider's server
    "pic": Vantage("pic:wan", "sip-mtls", "sip.pic.lab", "pic:wan"),
    # a partner server talking straight to the Edge's federation port 5061 (needs ``cert``)
    "edge5061": Vantage("edge:access", "sip-mtls", "sip.contoso.lab", "fabrikam:wan"),
}

#: The vantage a user of each domain gets when ``via`` is not given.
DEFAULT_VIA = {"contoso.lab": "internal", "fabrikam.lab": "fabrikam", "pic.lab": "pic"}


def password_of(lab: Lab, user: str) -> str | None:
    """``user@domain``'s password from the ``users`` table of a service on a host of that
    domain (``[services.front-end] users`` for contoso.lab, ``partner-edge`` for fabrikam.lab ...)."""
    return user_password(lab.topology, user, lab.pki.directory)


def port_of(lab: Lab, ref: str, proto: str) -> int:
    """The port of ``host:interface``'s listener speaking ``proto``."""
    iface = lab.interface(ref)
    for listener in lab.topology.host(iface.host).listeners:
        if listener.interface == iface.id and listener.proto == proto:
            return listener.port
    raise EdgesimError(f"{ref} has no {proto} listener in the topology")


def local_address(lab: Lab, ref: str) -> str | None:
    """``ref``'s address if this machine can bind it (always in the embedded lab), else None."""
    address = lab.address(ref)
    with socket.socket() as sock:
        try:
            sock.bind((address, 0))
        except OSError:
            return None
    return address


def _namespaced(lab: Lab, ref: str) -> Callable[[], socket.socket] | None:
    """Sockets made in ``ref``'s network namespace (netns lab), bound to its address."""
    if lab.namespace(ref) is None:
        return None
    return lambda: lab.tcp_socket(ref)


def sip_agent(
    lab: Lab,
    user: str,
    *,
    via: str | None = None,
    cert: CertPaths | None = None,
    password: str | None = None,
    client: str | None = None,
) -> UserAgent:
    """A (not yet connected) :class:`UserAgent` for ``user`` at vantage ``via``; ``client``
    (``host[:interface]``) replaces the vantage's client host, e.g. the Live Messenger-style
    client's own machine for a pic.lab user."""
    domain = user.partition("@")[2]
    where = via or DEFAULT_VIA.get(domain)
    if where is None or where not in VANTAGES:
        raise EdgesimError(f"no vantage point {where!r} for {user} (known: {', '.join(VANTAGES)})")
    vantage = VANTAGES[where]
    return UserAgent(
        f"sip:{user}",
        password=password if password is not None else password_of(lab, user),
        host=lab.address(vantage.server),
        port=port_of(lab, vantage.server, vantage.proto),
        context=client_context([lab.pki.trust_bundle], cert=cert),
        server_name=vantage.server_name,
        local_address=local_address(lab, client or vantage.client),
        sock_factory=_namespaced(lab, client or vantage.client),
    )


@asynccontextmanager
async def sip_user(
    lab: Lab,
    user: str,
    *,
    via: str | None = None,
    cert: CertPaths | None = None,
    password: str | None = None,
) -> AsyncIterator[UserAgent]:
    """A connected :class:`UserAgent` for ``user`` (``alice@contoso.lab``) at ``via``:
    ``remote`` (home, Edge 443), ``internal`` (office, Front End), ``fabrikam``, ``pic``, or
    ``edge5061`` (straight to the Edge's federation port, with ``cert``). Closed on exit."""
    async with sip_agent(lab, user, via=via, cert=cert, password=password) as ua:
        yield ua


async def next_request(
    ua: UserAgent, method: str = "MESSAGE", timeout: float = 5.0
) -> Request | None:
    """The next ``method`` request ``ua`` received (others are skipped), or None after
    ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (left := deadline - loop.time()) > 0:
        try:
            request = await asyncio.wait_for(ua.incoming.get(), left)
        except TimeoutError:
            return None
        if request.method == method:
            return request
    return None


async def next_chat(client: ChatClient, timeout: float = 5.0) -> tuple[str, str, str] | None:
    """The next chat message ``client`` received as (bare sender, type, body), or None."""
    try:
        frm, kind, body = await asyncio.wait_for(client.received.get(), timeout)
    except TimeoutError:
        return None
    return frm.split("/")[0], kind, body


async def next_notify(ua: UserAgent, state: str, timeout: float = 10.0) -> Request | None:
    """The next presence NOTIFY ``ua`` received whose PIDF says ``state`` (``open`` or
    ``closed``; other requests and other states are skipped), or None after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (left := deadline - loop.time()) > 0:
        request = await next_request(ua, "NOTIFY", left)
        if request is None:
            return None
        if f"<basic>{state}</basic>".encode() in request.body:
            return request
    return None


async def xmpp_presence(client: ChatClient, jid: str, kind: str, timeout: float = 10.0) -> bool:
    """Wait until ``client`` sees ``jid``'s presence ``kind`` (``available``/``unavailable``;
    a client may see the same state twice); False after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (left := deadline - loop.time()) > 0:
        try:
            who, seen = await asyncio.wait_for(client.presences.get(), left)
        except TimeoutError:
            return False
        if (who, seen) == (jid.lower(), kind):
            return True
    return False


def send_chat(client: ChatClient, to: str, text: str) -> None:
    """Send a one-to-one chat message (``type='chat'``) from ``client`` to the JID ``to``."""
    client.send_message(mto=JID(to), mbody=text, mtype="chat")


class _BoundChatClient(ChatClient):
    """A :class:`ChatClient` whose socket is bound to a given local address."""

    def __init__(
        self,
        jid: str,
        password: str,
        ca: Path,
        source: str | None,
        sock_factory: Callable[[], socket.socket] | None = None,
    ) -> None:
        super().__init__(jid, password, ca)
        self.source = source
        self.sock_factory = sock_factory
        self.failures: asyncio.Queue[object] = asyncio.Queue()
        self.add_event_handler("connection_failed", self.failures.put_nowait)

    async def _attempt_connection(  # slixmpp's connect step, with local_addr
        self, host: str, port: int, tls: bool, server_hostname: str | None
    ) -> bool:
        if self.source is None and self.sock_factory is None:
            return bool(await super()._attempt_connection(host, port, tls, server_hostname))
        self.event_when_connected = "connected"
        self._connect_loop_wait += 1
        if self._current_connection_attempt is None:
            return False
        try:
            if self.sock_factory is not None:
                sock = self.sock_factory()
                await self.loop.sock_connect(sock, (host, port))
                await self.loop.create_connection(
                    lambda: self,
                    sock=sock,
                    ssl=self.get_ssl_context() if tls else None,
                    server_hostname=server_hostname if tls else None,
                )
            else:
                await self.loop.create_connection(
                    lambda: self,
                    host,
                    port,
                    ssl=self.get_ssl_context() if tls else None,
                    server_hostname=server_hostname,
                    local_addr=(self.source, 0) if self.source else None,
                )
        except OSError as exc:
            self.event("connection_failed", exc)
            return False
        self._connect_loop_wait = 0
        return True


def xmpp_host(lab: Lab, user: str) -> str:
    """The ``host:interface`` of the XMPP server with a client port for ``user``'s domain."""
    domain = user.partition("@")[2].split("/")[0]
    for host in lab.topology.hosts:
        if host.domain == domain or any(domain in iface.fqdns for iface in host.interfaces):
            for listener in host.listeners:
                if listener.proto == "xmpp-c2s":
                    return f"{host.id}:{listener.interface}"
    raise EdgesimError(f"no XMPP server with a client port (xmpp-c2s) for {domain} in the topology")


@asynccontextmanager
async def xmpp_user(
    lab: Lab, user: str, *, password: str | None = None, timeout: float = 10.0
) -> AsyncIterator[ChatClient]:
    """A logged-in slixmpp :class:`ChatClient` for ``user`` (``romeo@jabber.lab``) on its
    domain's XMPP server, connected from that server's host. Disconnected on exit."""
    ref = xmpp_host(lab, user)
    bare = user.split("/")[0]
    secret = password if password is not None else password_of(lab, bare)
    if secret is None:
        raise EdgesimError(f"no password for {bare} in the topology's [services.*] users")
    jid = user if "/" in user else f"{user}/scenario"
    client = _BoundChatClient(
        jid, secret, lab.pki.trust_bundle, local_address(lab, ref), _namespaced(lab, ref)
    )
    try:
        await client.login(lab.address(ref), port_of(lab, ref, "xmpp-c2s"), timeout)
        yield client
    finally:
        client.disconnect()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.disconnected, 2)
