"""The one interface every lab runner implements, and the values it speaks in.

A runner renders the topology into running hosts and firewalls and tells the rest of edgesim how
to reach them. Everything outside ``lab/runners/`` asks a runner (or the registry, by name) what it
can do, never compares runner names::

    runner = get_runner("netns", LabConfig(topology, name="ci1"))
    await runner.up()
    argv = runner.exec_argv("fw-external")        # ["ip", "netns", "exec", "esci1-fw-external"]
    (await runner.status()).nodes

Capabilities are class attributes (:attr:`Runner.has_firewalls`, :attr:`Runner.persistent`,
:attr:`Runner.in_process`, :attr:`Runner.addressing`); operations are methods. A runner that
cannot do something (the embedded lab has no firewall to load rules into) raises
:class:`~simulator.errors.LabError` with a one-line reason.

Several netns labs share a machine by name (:class:`LabName`): the name prefixes the lab's
namespaces and picks its state directory.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

from simulator.errors import LabError, UsageError
from simulator.firewall.rules import FirewallNode
from simulator.lab.capture import CaptureResult
from simulator.lab.topology import Firewall, Host, Topology
from simulator.paths import runtime_dir
from simulator.pki import LabPki
from simulator.records import Record, record

Addressing = Literal["loopback", "lab"]
"""``loopback``: each interface on its own 127.b.c.d (the embedded lab); ``lab``: the topology's
own addresses (inside namespaces or containers)."""

DEFAULT_LAB = "edgesim"
_LAB_NAME = re.compile(r"[a-z0-9]{1,8}")


# ------------------------------------------------------------------ lab names


@dataclass(frozen=True)
class LabName:
    """A lab's name and the machine-wide names derived from it.

    The default lab (``edgesim``) keeps the short prefix ``es-`` (``es-edge``); another lab's
    namespaces are ``es<name>-<node>`` (``esci1-edge``). Names are 1-8 lower-case letters or
    digits, so no prefix is the start of another's: ``lab down`` of one lab never matches
    another's namespaces. ``es_`` starts the firewall audit's sandboxes
    (:mod:`simulator.firewall.sandbox`), a name no lab can have.
    """

    name: str = DEFAULT_LAB

    def __post_init__(self) -> None:
        if self.name != DEFAULT_LAB and not _LAB_NAME.fullmatch(self.name):
            raise UsageError(
                f"lab name '{self.name}': use 1-8 lower-case letters or digits (e.g. ci1)"
            )

    @property
    def is_default(self) -> bool:
        return self.name == DEFAULT_LAB

    @property
    def prefix(self) -> str:
        """What every namespace of this lab starts with."""
        return "es-" if self.is_default else f"es{self.name}-"

    def namespace(self, node: str) -> str:
        """The network namespace of a host or firewall (or ``sw``, the zones' bridges)."""
        return f"{self.prefix}{node}"

    def owns(self, namespace: str) -> bool:
        return namespace.startswith(self.prefix)

    def state_dir(self) -> Path:
        """One directory per lab name under :func:`simulator.paths.runtime_dir`
        (``$EDGESIM_STATE_DIR``, else /run/edgesim for root, else the user's runtime directory)."""
        return runtime_dir() / self.name

    def cli_args(self) -> str:
        """`` --name NAME`` for messages that tell the user a command, empty for the default."""
        return "" if self.is_default else f" --name {self.name}"


def default_lab_name() -> str:
    """``$EDGESIM_LAB``, else ``edgesim``."""
    return os.environ.get("EDGESIM_LAB") or DEFAULT_LAB


# ------------------------------------------------------------------ configuration


@dataclass(frozen=True)
class LabConfig:
    """What every runner is built from."""

    topology: Topology
    certs_dir: Path = Path("certs")
    """The lab PKI (created or completed as needed) where nodes share this machine's files."""
    name: str = DEFAULT_LAB
    """The lab's name (:class:`LabName`): several netns labs run side by side by name."""
    state_dir: Path | None = None
    """Pids, logs, ready files; None: :meth:`LabName.state_dir`."""
    rules: Mapping[str, Path] = field(default_factory=dict)
    """Firewall id -> rule file to load instead of the topology's."""
    compose_file: Path | None = None
    """The compose runner's file (None: docker-compose.yml in the current directory)."""
    join: bool = True
    """A lab that lives in a process (the embedded lab): use one of this name that another
    process of this user already runs on this network (``edgesim lab up`` in another shell)
    instead of starting a second one; False (``lab up``): such a lab is an error."""
    inspect_tls: bool = False
    """Put a TLS-inspecting middlebox on the external firewall's TCP 443 path
    (:mod:`simulator.lab.inspection`); runners that cannot refuse it."""

    def __post_init__(self) -> None:
        LabName(self.name)  # a bad name is a usage error before anything runs

    @property
    def lab(self) -> LabName:
        return LabName(self.name)

    @property
    def state(self) -> Path:
        return self.state_dir if self.state_dir is not None else self.lab.state_dir()


# ------------------------------------------------------------------ values


@dataclass(frozen=True)
class ListenerInfo(Record):
    """A socket a service listens on, as it travels between processes (ready files, checks)."""

    label: str
    """``198.51.100.10:5061/tcp`` (a range listener shows its range)."""
    interface: str
    proto: str
    port_low: int
    transport: str
    address: str
    port: int

    def __str__(self) -> str:
        return self.label


@dataclass
class ServiceState(Record):
    """One service of one host: ``running``, ``not available`` (not written yet) or ``failed``."""

    host: str = field(metadata=record(omit=True))
    """Not in a ready file, which names its host once: ``from_dict(data, host=...)``."""
    service: str
    state: str
    detail: str = ""
    listeners: list[ListenerInfo] = field(default_factory=list)


def ready_payload(host: str, pid: int, services: list[ServiceState]) -> dict[str, Any]:
    """What a node's ``lab serve`` writes to its ready file once every service listens."""
    return {"host": host, "pid": pid, "services": [s.to_dict() for s in services]}


def services_of_ready(host: str, payload: Mapping[str, Any]) -> list[ServiceState]:
    """The services a ready file (see :func:`ready_payload`) lists."""
    return [ServiceState.from_dict(item, host=host) for item in payload.get("services", [])]


NodeState = Literal["running", "routing", "up", "exited", "not running", "absent"]


@dataclass
class NodeStatus:
    """A host or firewall of a lab, as the runner sees it now."""

    node: str
    kind: Literal["host", "firewall"]
    where: str
    """The namespace, the container's state, or ``this process``."""
    state: NodeState
    """``running`` (its services), ``routing`` (a firewall), ``up`` (a host without services),
    ``exited`` / ``not running`` (its services stopped), ``absent``."""
    addresses: list[str] = field(default_factory=list)
    services: list[ServiceState] = field(default_factory=list)
    pid: int | None = None


@dataclass
class LabStatus:
    runner: str
    lab: str
    node_kind: str
    """What :attr:`NodeStatus.where` is: ``namespace``, ``container`` or ``process``."""
    nodes: list[NodeStatus] = field(default_factory=list)

    @property
    def services(self) -> list[ServiceState]:
        return [svc for node in self.nodes for svc in node.services]


@dataclass(frozen=True)
class ListenerCheck(Record):
    """Whether a listener answered (at protocol level where its service can say)."""

    host: str
    service: str
    listener: ListenerInfo
    ok: bool
    detail: str
    """``answers``, or why not."""


@dataclass(frozen=True)
class LoadResult:
    """A rule file a firewall now enforces."""

    firewall: str
    path: Path
    detail: str = ""
    """What the user should know: rules whose line cannot be told (see
    :func:`simulator.firewall.rules.build_index`)."""


@dataclass(frozen=True)
class Vantage:
    """How scenario clients reach the lab's hosts from this process."""

    runner: str
    pki: LabPki
    """The PKI the lab's services use (the compose lab's is copied out of its containers)."""
    namespaces: Mapping[str, str] = field(default_factory=dict)
    """Host or firewall id -> its network namespace (a name under /run/netns or a path such as
    /proc/PID/ns/net); empty: every host's address is in this process's namespace."""


# ------------------------------------------------------------------ the interface


class Runner(Protocol):
    """A way to run the lab: one module under ``simulator/lab/runners/`` per runner.

    A module registers its class with :func:`simulator.lab.runners.register_runner`; the command
    line lists and uses every registered runner by its capabilities.
    """

    name: ClassVar[str]
    """``local``, ``netns``, ``compose``: what ``--runner`` takes."""
    summary: ClassVar[str]
    """One line for ``--help``."""
    order: ClassVar[int]
    """Where ``--help`` lists it."""
    has_firewalls: ClassVar[bool]
    """Traffic between zones crosses firewalls this runner loads rules into."""
    persistent: ClassVar[bool]
    """The lab outlives the command that started it (``lab down`` stops it); else it lives in
    the process that brought it up."""
    in_process: ClassVar[bool]
    """Every host's address is usable from this process (probes run here, no namespace)."""
    shares_pki: ClassVar[bool]
    """The nodes use :attr:`LabConfig.certs_dir` of this machine (else their own, e.g. the
    image's)."""
    addressing: ClassVar[Addressing]
    node_kind: ClassVar[str]
    """What a node is, for the status table: ``process``, ``namespace``, ``container``."""
    inspects_tls: ClassVar[bool] = False
    """``lab up --inspect-tls`` puts a TLS-inspecting middlebox on the external firewall's TCP
    443 path (:attr:`LabConfig.inspect_tls`)."""

    config: LabConfig

    def __init__(self, config: LabConfig) -> None: ...

    @property
    def start_hint(self) -> str:
        """The command that brings this lab up (for "is the lab up?" messages)."""
        ...

    @property
    def python(self) -> str:
        """The Python interpreter inside a node (one with ``simulator`` importable)."""
        ...

    @property
    def node_certs(self) -> str:
        """The lab PKI directory as a node sees it (``--certs`` of commands run inside)."""
        ...

    def problem(self) -> str | None:
        """Why this runner cannot run on this machine (not root, a tool missing), or None."""
        ...

    def notices(self) -> list[str]:
        """Lines the user should read before the results (the embedded lab moved its
        privileged ports, or uses a lab another process runs); none by default."""
        return []

    async def up(self) -> None:
        """Build the lab and start every host's services; returns once all listen."""
        ...

    async def down(self) -> list[str]:
        """Stop the lab and remove what it made (idempotent); the names of what was removed."""
        ...

    def require_up(self) -> None:
        """Raise a one-line :class:`LabError` (with :attr:`start_hint`) unless the lab is up."""
        ...

    async def status(self) -> LabStatus: ...

    async def check(self) -> list[ListenerCheck]:
        """Ask every running listener, from its own host, whether it answers."""
        ...

    def exec_argv(self, node: str) -> list[str]:
        """The argv prefix that runs a command in a host's or firewall's network namespace
        (netns: ``ip netns exec es-edge``; compose: ``docker compose exec -T edge``; local: [])."""
        ...

    def exec_env(self) -> dict[str, str] | None:
        """The environment for :meth:`exec_argv` commands (None: this process's)."""
        ...

    def edgesim_argv(self, node: str) -> list[str]:
        """The argv prefix that runs the ``edgesim`` command line inside a node, with the
        topology that node's services use (add ``--certs`` :attr:`node_certs` to commands)."""
        ...

    def rules_path(self, firewall: str) -> Path:
        """The rule file ``firewall`` has loaded (or will load on ``up``)."""
        ...

    def load_rules(self, firewall: str, path: Path | None = None) -> LoadResult:
        """Load ``path`` (None: the topology's file) into ``firewall``; replaces its rules.
        A file nft or iptables-restore refuses raises
        :class:`~simulator.firewall.rules.RulesRefused` and changes nothing."""
        ...

    def firewall_node(self, firewall: str) -> FirewallNode:
        """Where commands run in ``firewall``'s network namespace with this machine's tools and
        files: loading rules as written (includes next to the file) and tracing the kernel's
        decisions (:mod:`simulator.firewall.observe`)."""
        ...

    def our_firewalls(self) -> tuple[str, ...]:
        """The firewalls this runner runs: it loads their rules and can enter, trace and
        capture them. The topology's other firewalls (``external = true``) are the user's own
        devices: what they decide is only seen at the endpoints (and in captures beside them).
        A runner without firewalls returns ()."""
        ...

    async def vantage(self) -> Vantage:
        """Where scenario clients live: the lab's PKI and each node's namespace."""
        ...

    def prepare_host(self, host: Host) -> None:
        """Inside a node, before its services start (compose: addresses and routes)."""
        ...

    def capture(self, out: Path) -> AbstractAsyncContextManager[CaptureResult]:
        """Capture what the lab's hosts send while the block runs, into ``out`` (pcapng, the
        TLS secrets of the lab's processes and of this one embedded): tcpdump in each host's
        node, or on loopback for the embedded lab (:mod:`simulator.lab.capture`)."""
        raise LabError(f"the {self.name} runner cannot capture packets")


def no_firewall(runner: Runner) -> LabError:
    """The error of a firewall operation on a runner without firewalls."""
    return LabError(
        f"the {runner.name} lab has no firewall: use a runner with firewalls "
        "(--runner netns or compose)"
    )


def lab_firewall(topology: Topology, firewall: str) -> Firewall:
    """A firewall the lab runs (not the user's own device), or a one-line :class:`LabError`."""
    try:
        fw = topology.firewall(firewall)
    except KeyError:
        raise LabError(f"no firewall '{firewall}' in the topology") from None
    if fw.external:
        raise LabError(
            f"{firewall} is your own device (external = true): edgesim loads no rules into it"
        )
    return fw


def edgesim_argv(runner: Runner, node: str, topology: str | None) -> list[str]:
    """``<exec_argv> <python> -m simulator [--topology TOPOLOGY]``."""
    top = ["--topology", topology] if topology else []
    return [*runner.exec_argv(node), runner.python, "-m", "simulator", *top]
