"""The scenario API: the decorator scripts use and the :class:`Lab` they drive."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulator.dns.resolver import LabResolver
from simulator.firewall.rules import is_ours
from simulator.lab.nsocket import netns_path, socket_in
from simulator.lab.runners import runner_class
from simulator.lab.services import address_of, resolver_for
from simulator.lab.topology import Interface, Topology
from simulator.pki import LabPki, service_settings
from simulator.trace import record

NFT_TIMEOUT = 10.0


class ScenarioFailure(Exception):
    """A scenario's expectation was not met; ``str()`` is the message for the user."""


class ScenarioSkipped(Exception):
    """The scenario cannot run here (a real peer or root is missing, or it would change the
    rules of the user's own firewall); ``str()`` says why."""


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    rows: tuple[str, ...]
    """Matrix rows (ids) the scenario exercises."""
    func: Callable[[Lab], Awaitable[None]]
    needs: tuple[str, ...] = ()
    """Services that must be available (registry names); otherwise the scenario is skipped."""
    firewall: bool = False
    """True when the scenario only means something with a firewall (netns or compose runner)."""
    timeout: float = 30.0
    path: Path | None = None


def scenario(
    *,
    name: str,
    description: str,
    rows: list[str] | tuple[str, ...] = (),
    needs: list[str] | tuple[str, ...] = (),
    firewall: bool = False,
    timeout: float = 30.0,
) -> Callable[[Callable[[Lab], Awaitable[None]]], Scenario]:
    """Declare a scenario: what it exercises and the async function that drives it."""

    def wrap(func: Callable[[Lab], Awaitable[None]]) -> Scenario:
        return Scenario(name, description, tuple(rows), func, tuple(needs), firewall, timeout)

    return wrap


@dataclass
class Lab:
    """What a scenario drives: the lab's topology, addresses, PKI, and its steps."""

    topology: Topology
    runner: str
    pki: LabPki
    steps: list[str] = field(default_factory=list)
    namespaces: dict[str, str] = field(default_factory=dict)
    """Host or firewall id -> its network namespace (the runner's
    :attr:`~simulator.lab.runners.base.Vantage.namespaces`: ``es-<id>`` in the netns lab, the
    container's /proc/PID/ns/net in the compose lab); empty: every host is in this one."""

    @property
    def current_step(self) -> str | None:
        return self.steps[-1] if self.steps else None

    @contextmanager
    def step(self, text: str) -> Iterator[None]:
        """Name what the scenario is doing; a failure inside is reported with this step."""
        self.steps.append(text)
        record("note", "", "", text, event="note")
        yield

    def expect(self, condition: object, message: str) -> None:
        """Fail the scenario with ``message`` unless ``condition`` holds."""
        if not condition:
            raise ScenarioFailure(message)

    def skip(self, reason: str) -> None:
        """Stop the scenario as skipped, with ``reason`` (e.g. "SIPE is not installed")."""
        raise ScenarioSkipped(reason)

    def interface(self, ref: str) -> Interface:
        """``host:interface``, or ``host`` for a host's first interface."""
        if ":" in ref:
            return self.topology.interface(ref)
        return self.topology.host(ref).interfaces[0]

    def address(self, ref: str) -> str:
        """The address of ``host[:interface]`` in this runner."""
        return address_of(self.interface(ref), self.runner)

    def resolver(self, ref: str) -> LabResolver:
        """A DNS resolver asking the lab DNS of ``host[:interface]``'s zone, from that address
        (from the host's namespace with the netns runner)."""
        resolver = resolver_for(self.topology, self.interface(ref), self.runner)
        if self.namespace(ref) is None:
            return resolver
        from simulator.scenario.nsdns import NamespaceResolver

        return NamespaceResolver(
            resolver.server,
            lambda: self.udp_socket(ref),
            timeout=resolver.timeout,
            source=resolver.source,
        )

    def settings(self, service: str) -> dict[str, Any]:
        """The topology's ``[services.<service>]`` table (users, port ranges ...), with the
        lab's generated passwords and secrets filled in (:mod:`simulator.pki.secrets`)."""
        return service_settings(self.topology, service, self.pki.directory)

    def note(self, text: str) -> None:
        """Record a line for the ladder and the report (e.g. which media path was used)."""
        record("note", "", "", text, event="note")

    # ------------------------------------------------------------ sockets from a lab host
    @property
    def has_firewalls(self) -> bool:
        """True when traffic between zones crosses the lab's firewalls (netns, compose)."""
        return runner_class(self.runner).has_firewalls

    def namespace(self, ref: str) -> str | None:
        """The network namespace clients of ``host[:interface]`` live in (None: this one)."""
        return self._namespace_of(self.interface(ref).host)

    def _namespace_of(self, node: str) -> str | None:
        if node in self.namespaces:
            return self.namespaces[node]
        if runner_class(self.runner).in_process:
            return None
        raise ScenarioFailure(f"'{node}' has no network namespace in the {self.runner} lab")

    def _socket(self, ref: str, kind: int, port: int) -> socket.socket:
        sock = socket_in(self.namespace(ref), socket.AF_INET, kind)
        try:
            if kind == socket.SOCK_STREAM:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.address(ref), port))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    def udp_socket(self, ref: str, port: int = 0) -> socket.socket:
        """A non-blocking UDP socket bound to ``host[:interface]``'s address, in its namespace
        with the netns runner (so its datagrams cross the lab's firewalls), else a plain one."""
        return self._socket(ref, socket.SOCK_DGRAM, port)

    def tcp_socket(self, ref: str, port: int = 0) -> socket.socket:
        """A non-blocking TCP socket bound to ``host[:interface]``'s address (see udp_socket)."""
        return self._socket(ref, socket.SOCK_STREAM, port)

    async def connect_tcp(
        self, ref: str, destination: tuple[str, int], timeout: float = 5.0
    ) -> socket.socket:
        """A TCP connection from ``host[:interface]`` to ``destination``; raises TimeoutError
        (a firewall dropped the SYN) or ConnectionRefusedError."""
        sock = self.tcp_socket(ref)
        try:
            await asyncio.wait_for(
                asyncio.get_running_loop().sock_connect(sock, destination), timeout
            )
        except BaseException:
            sock.close()
            raise
        return sock

    # ------------------------------------------------------------ firewalls
    async def _nft(self, firewall: str, args: list[str], stdin: bytes | None = None) -> str:
        if not self.has_firewalls:
            raise ScenarioFailure(
                f"changing {firewall}'s rules needs a lab with firewalls (this lab: {self.runner})"
            )
        if all(fw.id != firewall for fw in self.topology.firewalls):
            raise ScenarioFailure(f"no firewall '{firewall}' in the topology")
        if self.topology.firewall(firewall).external:
            raise ScenarioSkipped(
                f"{firewall} is your own device (external = true): the scenario would change "
                "its rules, which edgesim never does"
            )
        namespace = self._namespace_of(firewall)
        assert namespace is not None
        proc = await asyncio.create_subprocess_exec(
            "nsenter", f"--net={netns_path(namespace)}", "nft", *args,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            out, err = await asyncio.wait_for(proc.communicate(stdin), NFT_TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise ScenarioFailure(
                f"nft in {firewall} did not answer within {NFT_TIMEOUT:.0f} s"
            ) from None
        if proc.returncode != 0:
            raise ScenarioFailure(
                f"nft {' '.join(args)} in {firewall} failed: {err.decode().strip()}"
            )
        return out.decode()

    async def _user_tables(self, firewall: str) -> list[tuple[str, str]]:
        """The tables ``firewall`` holds that are not edgesim's own (trace sessions')."""
        listing = json.loads(await self._nft(firewall, ["-j", "list", "tables"]) or "{}")
        tables = [item["table"] for item in listing.get("nftables", []) if "table" in item]
        return [(t["family"], t["name"]) for t in tables if not is_ours(t["name"])]

    async def firewall_rules(self, firewall: str) -> str:
        """The rules ``firewall`` enforces now, as nft lists them: every table loaded into it
        (the user's own names and families, or the rendered ``inet edgesim``), without the
        tables edgesim adds to trace it."""
        tables = await self._user_tables(firewall)
        listed = [await self._nft(firewall, ["list", "table", f, n]) for f, n in tables]
        return "".join(listed)

    async def load_firewall_rules(self, firewall: str, rules: str) -> None:
        """Replace the tables ``firewall`` holds (all but edgesim's trace tables) with ``rules``
        (an nft script, e.g. :meth:`firewall_rules` edited), in one transaction: the firewall
        never holds both, nor none. A table the script deletes itself is not deleted twice."""
        tables = await self._user_tables(firewall)
        script = "".join(
            f"delete table {family} {name}\n"
            for family, name in tables
            if f"delete table {family} {name}" not in rules
        )
        await self._nft(firewall, ["-f", "-"], (script + rules).encode())

    @asynccontextmanager
    async def firewall_changed(self, firewall: str, rules: str) -> AsyncIterator[str]:
        """Load ``rules`` into ``firewall`` for the block, then restore what was loaded before
        (even when the block fails). Yields the rules that were loaded before."""
        before = await self.firewall_rules(firewall)
        record("note", "", "", f"{firewall}: rules changed for this scenario", event="note")
        await self.load_firewall_rules(firewall, rules)
        try:
            yield before
        finally:
            await self.load_firewall_rules(firewall, before)
            record("note", "", "", f"{firewall}: rules restored", event="note")
