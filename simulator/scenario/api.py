"""The scenario API: the decorator scripts use and the :class:`Lab` they drive."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from simulator.dns.resolver import LabResolver
from simulator.lab.services import address_of, resolver_for
from simulator.lab.topology import Interface, Topology
from simulator.pki import LabPki
from simulator.trace import record


class ScenarioFailure(Exception):
    """A scenario's expectation was not met; ``str()`` is the message for the user."""


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

    def interface(self, ref: str) -> Interface:
        """``host:interface``, or ``host`` for a host's first interface."""
        if ":" in ref:
            return self.topology.interface(ref)
        return self.topology.host(ref).interfaces[0]

    def address(self, ref: str) -> str:
        """The address of ``host[:interface]`` in this runner."""
        return address_of(self.interface(ref), self.runner)

    def resolver(self, ref: str) -> LabResolver:
        """A DNS resolver asking the lab DNS of ``host[:interface]``'s zone, from that address."""
        return resolver_for(self.topology, self.interface(ref), self.runner)
