"""Lab clients for scenarios: a SIP user agent or an XMPP user at a vantage point of the lab.

::

    async with sip_user(lab, "alice@contoso.lab", via="remote") as alice:   # home, TLS 443
        await sign_in(lab, alice)
    async with xmpp_user(lab, "romeo@jabber.lab") as romeo:                # jabber.lab c2s
        send_chat(romeo, "alice@contoso.lab", "hi")

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
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sipmessage import Request, Response

from simulator.errors import EdgesimError
from simulator.lab.topology import Host, Interface, Topology
from simulator.pki import CertPaths, user_password
from simulator.scenario.api import Lab, ScenarioFailure
from simulator.sip.emulators.ua import UserAgent
from simulator.tls import client_context, interception, tls_failure_reason
from simulator.xmpp.client import ChatClient


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


def vantages(topology: Topology) -> dict[str, Vantage]:
    """The vantage points of the topology's SIP users, from its roles and listeners:

    - ``remote``: a user at home (role ``remote-client``) on the Edge's client port (the Edge's
      ``sip-tls`` listener, TLS 443);
    - ``internal``: a user in the office (role ``internal-client``) on the Front End pool
      (role ``front-end``, its ``sip-mtls`` listener);
    - one per federated partner (role ``federated-partner`` with a ``sip-mtls`` listener), named
      by its host id (``fabrikam``, ``pic``): a user of that partner on the partner's server;
    - ``edge5061``: a partner server straight on the Edge's federation port (the ``sip-mtls``
      listener beside the client port), from the first partner's host.
    """
    out: dict[str, Vantage] = {}

    def first(role: str) -> Host | None:
        return next(iter(topology.hosts_with_role(role)), None)

    def serving(host: Host | None, proto: str, interface: str | None = None) -> Interface | None:
        for lst in host.listeners if host is not None else ():
            if lst.proto == proto and interface in (None, lst.interface):
                return host.interface(lst.interface) if host is not None else None
        return None

    def vantage(server: Interface, proto: str, client: Interface) -> Vantage:
        return Vantage(server.ref, proto, server.fqdn or str(server.address), client.ref)

    edge, front_end = first("edge"), first("front-end")
    home, office = first("remote-client"), first("internal-client")
    access = serving(edge, "sip-tls")
    if access is not None and home is not None:
        out["remote"] = vantage(access, "sip-tls", home.interfaces[0])
    pool = serving(front_end, "sip-mtls")
    if pool is not None and office is not None:
        out["internal"] = vantage(pool, "sip-mtls", office.interfaces[0])
    partners = [
        (host, iface)
        for host in topology.hosts_with_role("federated-partner")
        if (iface := serving(host, "sip-mtls")) is not None
    ]
    for host, iface in partners:
        out[host.id] = vantage(iface, "sip-mtls", iface)
    federation = serving(edge, "sip-mtls", access.id) if access is not None else None
    if federation is not None and partners:
        out["edge5061"] = vantage(federation, "sip-mtls", partners[0][1])
    return out


def default_via(topology: Topology) -> dict[str, str]:
    """The vantage a user of each domain gets when ``via`` is not given: the office for the
    Front End's domain, each partner's own server for the partner's domain."""
    out = {h.domain: h.id for h in topology.hosts_with_role("federated-partner") if h.domain}
    for host in topology.hosts_with_role("front-end"):
        if host.domain:
            out[host.domain] = "internal"
    return out


def password_of(lab: Lab, user: str) -> str | None:
    """``user@domain``'s password from the ``users`` table of a service on a host of that
    domain (``[services.front-end] users`` for contoso.lab, ``partner-edge`` for fabrikam.lab ...)."""
    return user_password(lab.topology, user, lab.pki.directory)


def port_of(lab: Lab, ref: str, proto: str) -> int:
    """The port of ``host:interface``'s listener speaking ``proto``."""
    iface = lab.interface(ref)
    listener = lab.topology.host(iface.host).listener_for(iface.id, proto)
    if listener is None:
        raise EdgesimError(f"{ref} has no {proto} listener in the topology")
    return listener.port


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


INTERCEPTION_TIMEOUT = 3.0
"""Seconds the interception check after a failed TLS handshake may take (connect, then again
for the handshake that fetches the certificate)."""


def vantage_of(lab: Lab, user: str, via: str | None = None) -> Vantage:
    """The vantage point ``via`` (a key of :func:`vantages`), or ``user``'s default one."""
    domain = user.partition("@")[2]
    known = vantages(lab.topology)
    where = via or default_via(lab.topology).get(domain)
    if where is None or where not in known:
        raise EdgesimError(f"no vantage point {where!r} for {user} (known: {', '.join(known)})")
    return known[where]


async def intercepted(
    lab: Lab, vantage: str, server: tuple[str, int], server_hostname: str | None
) -> str:
    """Why a TLS (or pseudo-TLS) path from ``vantage`` to ``server`` failed, when a
    TLS-inspecting middlebox re-signed it (:func:`simulator.tls.interception`, one handshake
    from the same host); empty otherwise."""
    try:
        sock = await lab.connect_tcp(vantage, server, INTERCEPTION_TIMEOUT)
    except (OSError, TimeoutError):
        return ""
    found = await interception(
        server[0], server[1], lab.pki.all_cas(), server_hostname=server_hostname, sock=sock,
        timeout=INTERCEPTION_TIMEOUT,
    )  # fmt: skip
    return found.describe() if found is not None else ""


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
    vantage = vantage_of(lab, user, via)
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
    """A connected :class:`UserAgent` for ``user`` (``alice@contoso.lab``) at ``via`` (a key of
    :func:`vantages`): ``remote`` (home, Edge 443), ``internal`` (office, Front End), a partner's
    host id (``fabrikam``, ``pic``), or ``edge5061`` (straight to the Edge's federation port,
    with ``cert``). Closed on exit.

    When its TLS handshake fails because a TLS-inspecting middlebox re-signed the server's
    certificate, the scenario fails saying so and naming the middlebox's CA (as the probes do)."""
    ua = sip_agent(lab, user, via=via, cert=cert, password=password)
    try:
        await ua.connect()
    except ssl.SSLError as exc:
        client = vantage_of(lab, user, via).client
        why = await intercepted(lab, client, (ua.host, ua.port), ua.server_name)
        if not why:
            raise
        raise ScenarioFailure(
            f"{user} cannot reach {ua.server_name or ua.host}: {why} "
            f"(the client saw: {tls_failure_reason(exc)})"
        ) from None
    try:
        yield ua
    finally:
        await ua.close()


@asynccontextmanager
async def sip_users(
    lab: Lab, *users: str | tuple[str, str]
) -> AsyncIterator[tuple[UserAgent, ...]]:
    """:func:`sip_user` for several users, connected in order and closed in reverse: each
    ``"bob@contoso.lab"`` at its domain's vantage (:func:`default_via`: the office for the Front
    End's domain, a partner's own server for the partner's), or ``("alice@contoso.lab",
    "remote")`` at the vantage named::

        async with sip_users(lab, ("alice@contoso.lab", "remote"), "bob@contoso.lab") as (a, b):
    """
    async with contextlib.AsyncExitStack() as stack:
        agents = []
        for user in users:
            name, via = (user, None) if isinstance(user, str) else user
            agents.append(await stack.enter_async_context(sip_user(lab, name, via=via)))
        yield tuple(agents)


def diagnostics(answer: Response) -> str:
    """Why a SIP answer says it failed: its ms-diagnostics header, else Warning, else ""."""
    return answer.headers.get("ms-diagnostics") or answer.headers.get("Warning") or ""


def _status(answer: Response) -> str:
    return " ".join(part for part in (str(answer.code), answer.phrase, diagnostics(answer)) if part)


async def sign_in(lab: Lab, *uas: UserAgent) -> None:
    """REGISTER each of ``uas`` in turn; the scenario fails unless each is answered 200."""
    for ua in uas:
        answer = await ua.register()
        lab.expect(answer.code == 200, f"{ua.aor}'s REGISTER got {_status(answer)}")


async def chat(lab: Lab, sender: UserAgent, to: UserAgent, text: str) -> Request:
    """``sender`` sends ``to`` an instant message (SIP MESSAGE) with ``text``; the scenario
    fails unless it is answered 200 and ``to`` receives ``text`` within 5 s. Returns the
    MESSAGE as ``to`` received it (its headers say what the Edge stamped on it)."""
    answer = await sender.message(to.aor, text)
    lab.expect(answer.code == 200, f"{sender.aor}'s MESSAGE got {_status(answer)}")
    got = await next_request(to)
    lab.expect(got is not None, f"{to.aor} never got {sender.aor}'s message")
    assert got is not None
    lab.expect(got.body == text.encode(), f"{to.aor} received {got.body!r}, not {text!r}")
    return got


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


async def expect_notify(lab: Lab, ua: UserAgent, state: str, why: str) -> Request:
    """The next NOTIFY ``ua`` receives (within 5 s) must say presence ``state`` (``open`` or
    ``closed``, the PIDF ``<basic>``); ``why`` it must, for the failure message."""
    notify = await next_request(ua, "NOTIFY")
    lab.expect(notify is not None, f"{why} but {ua.aor} got no NOTIFY")
    assert notify is not None
    lab.expect(
        f"<basic>{state}</basic>".encode() in notify.body,
        f"{why} but the NOTIFY says: {notify.body.decode(errors='replace')}",
    )
    return notify


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
    client.send_chat(to, text)


def xmpp_host(lab: Lab, user: str) -> str:
    """The ``host:interface`` of the XMPP server with a client port for ``user``'s domain."""
    domain = user.partition("@")[2].split("/")[0]
    for host in lab.topology.hosts:
        if host.domain == domain or any(domain in iface.fqdns for iface in host.interfaces):
            for listener in host.listeners:
                if listener.proto == "xmpp-c2s":
                    return host.interface(listener.interface).ref
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
    client = ChatClient(
        jid,
        secret,
        lab.pki.trust_bundle,
        source=local_address(lab, ref),
        sock_factory=_namespaced(lab, ref),
    )
    try:
        await client.login(lab.address(ref), port_of(lab, ref, "xmpp-c2s"), timeout)
        yield client
    finally:
        client.disconnect()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.disconnected, 2)
