"""SIPE, a real Lync-dialect client (pidgin-sipe), driven headless through BitlBee.

BitlBee (Debian ``bitlbee-libpurple``) is an IRC gateway over libpurple; with ``pidgin-sipe``
installed it offers the ``sipe`` protocol. :class:`SipeClient` starts a private BitlBee on the
loopback of the vantage host (the remote user's network namespace in the netns lab) and speaks
IRC to it: ``account add sipe USER PASSWORD`` with ``authentication ntlm`` and ``transport tls``,
no server, so SIPE finds the Access Edge by DNS SRV (``_sip._tls.<domain>``) as a Lync client
at home does. Messages arrive as IRC PRIVMSGs from the buddy's nick.

The client sees the lab as its host would: BitlBee runs in a private mount namespace
(``unshare --mount``, entered with ``nsenter --net`` into the host's network namespace) in which ``/etc/resolv.conf`` names the lab DNS of the host's zone,
``/etc/hosts`` has only localhost, and ``/etc/ssl/certs`` holds only the lab CA that issued the
Edge's certificate, because libpurple checks the server certificate against that directory and
honours no environment variable for it. Nothing outside the namespace is touched. Root is
needed (mount namespaces; network namespaces in the netns lab).

Quirk ``sipe-libxml2-sax1``: on Debian 12's libxml2 SIPE 1.25's XML parser reads every document
as empty (it passes SAX1 callbacks marked as a SAX2 handler), so it would see no contact list and
no presence. The client compiles ``sipe_xmlfix.c`` (a 40-line wrapper of
``xmlSAXUserParseMemory``) with the system C compiler and preloads it into BitlBee.

``EDGESIM_SIPE_DEBUG=FILE`` writes BitlBee's, libpurple's and SIPE's debug log (every SIP
message SIPE sends and receives) to FILE.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from simulator.lab.nsocket import netns_path, socket_in
from simulator.scenario.api import Lab, ScenarioFailure

SIPE_PLUGIN = Path("/usr/lib/purple-2/libsipe.so")
XML_FIX = Path(__file__).with_name("sipe_xmlfix.c")
IRC_PORT = 6667
LOGIN_TIMEOUT = 20.0


def missing() -> str | None:
    """Why SIPE cannot run here, or None."""
    if shutil.which("bitlbee") is None:
        return "BitlBee is not installed (Debian bitlbee-libpurple; scripts/setup.sh --test)"
    if not SIPE_PLUGIN.exists():
        return "SIPE is not installed (Debian pidgin-sipe; scripts/setup.sh --test)"
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    if shutil.which("cc") is None:
        return "no C compiler (cc) to build the libxml2 shim SIPE needs (Debian gcc libc6-dev)"
    if os.geteuid() != 0:
        return "SIPE runs in a private mount namespace of the lab host: needs root"
    return None


@dataclass(frozen=True)
class Chat:
    """A message SIPE displayed: who sent it (their SIP URI) and the text."""

    sender: str
    text: str


class SipeClient:
    """One SIPE account signed in through BitlBee; use :func:`sipe_user`."""

    def __init__(self, lab: Lab, host: str) -> None:
        self.lab = lab
        self.host = host
        self.address = lab.address(host)
        self.dir = Path(tempfile.mkdtemp(prefix="edgesim-sipe-"))
        self.proc: asyncio.subprocess.Process | None = None
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.control: asyncio.Queue[str] = asyncio.Queue()
        """Lines root says in &bitlbee (answers, login progress, errors)."""
        self.chats: asyncio.Queue[Chat] = asyncio.Queue()
        self.nicks: dict[str, str] = {}
        """SIP URI -> the nick BitlBee gave the buddy."""
        self.presence: dict[str, str] = {}
        """SIP URI -> ``available``, ``away`` or ``offline``, as BitlBee shows the buddy in
        &bitlbee (joined and voiced, joined, gone)."""
        self.presence_changed = asyncio.Event()
        self._reader_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ setup
    def _write_files(self) -> None:
        zone = self.lab.topology.zone(self.lab.interface(self.host).zone)
        dns = self.lab.address(zone.dns) if zone.dns else None
        etc = self.dir / "etc"
        (etc / "certs").mkdir(parents=True)
        (etc / "resolv.conf").write_text(f"nameserver {dns}\n" if dns else "")
        (etc / "hosts").write_text("127.0.0.1 localhost\n")
        edge = self.lab.interface("edge:access")
        shutil.copy(self.lab.pki.ca_cert(edge.ca or "public"), etc / "certs" / "lab-ca.pem")
        (self.dir / "config").mkdir()
        (self.dir / "bitlbee.conf").write_text(
            "[settings]\nRunMode = ForkDaemon\n"
            f"DaemonInterface = {self.address}\nDaemonPort = {IRC_PORT}\n"
            f"ConfigDir = {self.dir / 'config'}\nAuthMode = Open\n"
        )

    async def _build_xml_fix(self) -> Path:
        """Compile the libxml2 shim (quirk ``sipe-libxml2-sax1``) into the client's directory."""
        out = self.dir / "sipe_xmlfix.so"
        proc = await asyncio.create_subprocess_exec(
            "cc", "-shared", "-fPIC", "-O2", "-o", str(out), str(XML_FIX), "-ldl",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await proc.communicate()
        if proc.returncode != 0:
            raise ScenarioFailure(
                f"cannot build the libxml2 shim for SIPE: {err.decode(errors='replace').strip()}"
            )
        return out

    def _argv(self) -> list[str]:
        etc = self.dir / "etc"
        script = (
            f"mount --bind {etc / 'resolv.conf'} /etc/resolv.conf && "
            f"mount --bind {etc / 'hosts'} /etc/hosts && "
            f"mount --bind {etc / 'certs'} /etc/ssl/certs && "
            f"exec bitlbee -c {self.dir / 'bitlbee.conf'} -F -n"
        )
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]
        namespace = self.lab.namespace(self.host)
        if namespace is not None:  # a netns name or a container's /proc/PID/ns/net
            argv = ["nsenter", f"--net={netns_path(namespace)}", *argv]
        return argv

    async def start(self) -> None:
        self._write_files()
        env = {**os.environ, "LD_PRELOAD": str(await self._build_xml_fix())}
        debug = os.environ.get("EDGESIM_SIPE_DEBUG")
        if debug:  # libpurple's own switches; SIPE logs only when they are on
            env.update(BITLBEE_DEBUG="1", PURPLE_VERBOSE_DEBUG="1", PURPLE_UNSAFE_DEBUG="1")
        stderr = open(debug, "ab") if debug else asyncio.subprocess.PIPE  # noqa: SIM115
        self.proc = await asyncio.create_subprocess_exec(
            *self._argv(),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=stderr,
            env=env,
        )
        if debug:
            stderr.close()  # type: ignore[union-attr]
        sock = await self._connect()
        self.reader, self.writer = await asyncio.open_connection(sock=sock)
        self._reader_task = asyncio.get_running_loop().create_task(self._read())
        self._send("NICK edgesim")
        self._send("USER edgesim 0 * :edgesim scenario")
        await self._expect(lambda line: "Welcome to the BitlBee gateway" in line, 10.0)

    async def _connect(self) -> socket.socket:
        namespace = self.lab.namespace(self.host)
        for _ in range(100):
            sock = socket_in(namespace, socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                await asyncio.get_running_loop().sock_connect(sock, (self.address, IRC_PORT))
                return sock
            except OSError:
                sock.close()
                if self.proc is not None and self.proc.returncode is not None:
                    break
                await asyncio.sleep(0.1)  # BitlBee binds its port a moment after it starts
        err = b""
        if self.proc is not None and self.proc.stderr is not None and self.proc.returncode:
            err = await self.proc.stderr.read()
        raise ScenarioFailure(f"BitlBee did not start: {err.decode(errors='replace').strip()}")

    # ------------------------------------------------------------------ IRC
    def _send(self, line: str) -> None:
        assert self.writer is not None
        self.writer.write(line.encode() + b"\r\n")

    def command(self, text: str) -> None:
        """A BitlBee command in the control channel (``account ...``, ``add ...``)."""
        self._send(f"PRIVMSG &bitlbee :{text}")

    async def _read(self) -> None:
        assert self.reader is not None
        while line := (await self.reader.readline()).decode(errors="replace").rstrip("\r\n"):
            if line.startswith("PING"):
                self._send("PONG" + line[4:])
                continue
            prefix, _, rest = line.partition(" ")
            command, _, args = rest.partition(" ")
            if command in ("JOIN", "PART", "QUIT", "MODE"):
                self._presence_line(prefix, command, args)
            if command != "PRIVMSG":
                self.control.put_nowait(line)
                continue
            target, _, text = args.partition(" :")
            nick, _, user_host = prefix.lstrip(":").partition("!")
            if target == "&bitlbee":
                self.control.put_nowait(text)
            else:  # nick!sip:user@domain: the handle is the buddy's SIP URI
                known = next((u for u, n in self.nicks.items() if n == nick), None)
                self.chats.put_nowait(Chat(known or user_host or nick, text))

    def _presence_line(self, prefix: str, command: str, args: str) -> None:
        """Buddies in &bitlbee: joined = online, voiced = available (devoiced: away), gone =
        offline (BitlBee's default channel modes)."""
        nick, _, user_host = prefix.lstrip(":").partition("!")
        if command == "MODE":
            channel, _, change = args.partition(" ")
            mode, _, target = change.partition(" ")
            handle = next((u for u, n in self.nicks.items() if n == target), None)
            if channel != "&bitlbee" or handle is None or mode not in ("+v", "-v"):
                return
            self.presence[handle] = "available" if mode == "+v" else "away"
        elif not user_host.startswith("sip:"):
            return  # BitlBee itself, or us
        else:
            handle = user_host.lower()
            self.nicks.setdefault(handle, nick)
            if command == "JOIN":
                self.presence.setdefault(handle, "away")
                if self.presence[handle] == "offline":
                    self.presence[handle] = "away"
            else:
                self.presence[handle] = "offline"
        self.presence_changed.set()

    async def wait_presence(self, uri: str, states: tuple[str, ...], timeout: float) -> str:
        """Wait until SIPE shows ``uri`` in one of ``states``; its state, or raise
        :class:`TimeoutError`."""
        uri = uri.lower()
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while self.presence.get(uri, "offline") not in states:
            self.presence_changed.clear()
            await asyncio.wait_for(self.presence_changed.wait(), max(0.01, end - loop.time()))
        return self.presence.get(uri, "offline")

    async def _expect(self, match: object, timeout: float) -> str:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            line = await asyncio.wait_for(self.control.get(), max(0.01, end - loop.time()))
            if callable(match) and match(line):
                return line

    # ------------------------------------------------------------------ account
    async def sign_in(self, user: str, password: str) -> None:
        """Add the SIPE account (NTLM, TLS, server found by DNS SRV) and wait until it is in."""
        self.command(f"account add sipe {user} {password}")
        self.command("account sipe set authentication ntlm")
        self.command("account sipe set transport tls")
        self.command("account sipe on")
        try:
            line = await self._expect(
                lambda t: "Logged in" in str(t) or "Error" in str(t) or "failed" in str(t),
                LOGIN_TIMEOUT,
            )
        except TimeoutError:
            raise ScenarioFailure(f"SIPE did not sign in within {LOGIN_TIMEOUT:.0f} s") from None
        if "Logged in" not in line:
            raise ScenarioFailure(f"SIPE could not sign in: {line}")

    async def send(self, uri: str, text: str) -> None:
        """Send ``text`` to ``uri`` (added to the local buddy list first)."""
        if uri not in self.nicks:
            nick = "b" + "".join(c for c in uri.split(":", 1)[-1] if c.isalnum())[:20]
            self.nicks[uri] = nick
            self.command(f"add sipe {uri} {nick}")
            await self._expect(lambda t: "contact list" in str(t) or "Adding" in str(t), 5.0)
        self._send(f"PRIVMSG {self.nicks[uri]} :{text}")
        assert self.writer is not None
        await self.writer.drain()

    async def next_chat(self, timeout: float) -> Chat | None:
        """The next message SIPE displayed, or None after ``timeout`` seconds."""
        try:
            return await asyncio.wait_for(self.chats.get(), timeout)
        except TimeoutError:
            return None

    async def close(self) -> None:
        if self.writer is not None:
            with contextlib.suppress(OSError):
                self.command("account sipe off")
                self._send("QUIT :done")
                await self.writer.drain()
            self.writer.close()
        if self._reader_task is not None:
            self._reader_task.cancel()
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@asynccontextmanager
async def sipe_user(
    lab: Lab, user: str, password: str, *, host: str = "remote-user"
) -> AsyncIterator[SipeClient]:
    """SIPE signed in as ``user`` from ``host`` (skips the scenario where SIPE cannot run)."""
    why = missing()
    if why is not None:
        lab.skip(why)
    client = SipeClient(lab, host)
    try:
        await client.start()
        await client.sign_in(user, password)
        yield client
    finally:
        await client.close()


__all__ = ["Chat", "SipeClient", "missing", "sipe_user"]
