"""The embedded lab: every service of the topology in one asyncio process.

Each interface is given its own loopback address (127.b.c.d for a.b.c.d), so hosts keep distinct
addresses and the same ports as in the other runners; there is no firewall between zones.

:class:`LocalLab` starts, checks and stops services in this process: the whole topology for the
``local`` runner (:class:`LocalRunner`), or one host inside a netns namespace or a compose
container (``edgesim lab serve``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import sys
import time
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType

from simulator.aioloop import open_stream
from simulator.errors import LabError, UsageError
from simulator.firewall.rules import FirewallNode
from simulator.lab.capture import (
    KEYLOG_ENV,
    CapturePoint,
    CaptureResult,
    KeySource,
    packet_capture,
)
from simulator.lab.registry import PLANNED
from simulator.lab.runners import register_runner
from simulator.lab.runners.base import (
    LabConfig,
    LabStatus,
    ListenerCheck,
    LoadResult,
    NodeState,
    NodeStatus,
    Runner,
    ServiceState,
    Vantage,
    no_firewall,
)
from simulator.lab.services import (
    BoundListener,
    Service,
    ServiceContext,
    load_service,
)
from simulator.lab.system import pid_alive
from simulator.lab.topology import PORT_OFFSET, PRIVILEGED_BELOW, Host, Topology
from simulator.pki import LabPki, ensure_pki, service_settings
from simulator.records import Record, record

log = logging.getLogger(__name__)

CHECK_TIMEOUT = 3.0


@dataclass
class ServiceStatus:
    host: str
    service: str
    state: str
    """``running``, ``not available`` (its module is not there yet) or ``failed``."""
    detail: str = ""
    listeners: list[BoundListener] = field(default_factory=list)
    instance: Service | None = None

    def as_state(self) -> ServiceState:
        """What other processes see of this service (ready files, status)."""
        listeners = [b.info() for b in self.listeners]
        return ServiceState(self.host, self.service, self.state, self.detail, listeners)


def _bind_error(exc: OSError, host: str, service: str) -> LabError:
    hint = ""
    if exc.errno == errno.EACCES:
        hint = " (ports below 1024 need root, or sysctl net.ipv4.ip_unprivileged_port_start=0)"
    elif exc.errno == errno.EADDRINUSE:
        hint = " (address already in use: is another lab running? `edgesim lab status`)"
    elif exc.errno == errno.EADDRNOTAVAIL:
        hint = " (address not available on this machine)"
    return LabError(f"{host}: cannot start {service}: {exc.strerror or exc}{hint}")


class LocalLab:
    """Start, check and stop the topology's services in this process.

    ``runner`` is the runner whose addresses the services use: ``local`` (loopback) for the
    embedded lab, the netns or compose runner for one host inside its node.
    """

    def __init__(
        self,
        topology: Topology,
        pki_dir: Path | str,
        *,
        settings: dict[str, dict[str, object]] | None = None,
        hosts: list[str] | None = None,
        runner: str = "local",
    ) -> None:
        self.runner = runner
        self.topology = topology
        self.pki = LabPki(pki_dir)
        self.settings = settings or {}
        self.only_hosts = hosts
        self.statuses: list[ServiceStatus] = []

    async def __aenter__(self) -> LocalLab:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self, *, pki_checked: bool = False) -> list[ServiceStatus]:
        """Start every service of the hosts; ``pki_checked``: the caller ran
        :func:`~simulator.pki.ensure_pki` on this directory already."""
        if not pki_checked:
            ensure_pki(self.topology, self.pki.directory)
        for host in self.topology.hosts:
            if self.only_hosts is not None and host.id not in self.only_hosts:
                continue
            neighbours: dict[str, Service] = {}
            for name in host.services:
                factory = load_service(name)
                if factory is None:
                    planned = PLANNED.get(name, "a later issue")
                    self.statuses.append(
                        ServiceStatus(host.id, name, "not available", f"arrives with {planned}")
                    )
                    continue
                settings = {
                    **service_settings(self.topology, name, self.pki.directory),
                    **self.settings.get(name, {}),
                }
                ctx = ServiceContext(
                    self.topology, host, name, self.pki, self.runner, settings, neighbours
                )
                try:
                    service = factory(ctx)
                except BaseException:
                    await self.stop()  # a bad setting: the services already up go down too
                    raise
                try:
                    bound = await service.start()
                except OSError as exc:
                    await service.stop()
                    await self.stop()
                    raise _bind_error(exc, host.id, name) from None
                except BaseException:
                    await service.stop()
                    await self.stop()
                    raise
                log.info("%s: %s listening on %s", host.id, name, ", ".join(map(str, bound)))
                self.statuses.append(ServiceStatus(host.id, name, "running", "", bound, service))
                neighbours[name] = service
        return self.statuses

    async def check(self) -> list[ListenerCheck]:
        """Verify every bound listener answers (at protocol level where the service can)."""
        jobs = [
            check_listener(status.host, status.service, status.instance, bound)
            for status in self.statuses
            if status.state == "running"
            for bound in status.listeners
        ]
        return list(await asyncio.gather(*jobs))

    async def stop(self) -> None:
        while self.statuses:
            status = self.statuses.pop()
            if status.instance is not None:
                try:
                    await status.instance.stop()
                except Exception:
                    log.exception("%s: %s did not stop cleanly", status.host, status.service)


async def check_listener(
    host: str, service: str, instance: Service | None, bound: BoundListener
) -> ListenerCheck:
    """Ask one listener whether it answers: the service's own ``check(bound)`` (protocol level)
    where it has one, else a TCP connect; ``instance`` need not be the running one."""
    check = getattr(instance, "check", None)
    try:
        if check is not None:
            reason = await asyncio.wait_for(check(bound), CHECK_TIMEOUT)
        elif bound.transport == "tcp":
            _reader, writer = await open_stream(bound.address, bound.port, timeout=CHECK_TIMEOUT)
            writer.close()
            reason = None
        else:
            reason = "UDP listener without a protocol check"
    except TimeoutError:
        reason = f"no answer within {CHECK_TIMEOUT:.0f} s"
    except OSError as exc:
        reason = exc.strerror or str(exc)
    detail = "answers" if reason is None else reason
    return ListenerCheck(host, service, bound.info(), reason is None, detail)


# ------------------------------------------------------------------ privileged ports

PORTS_ENV = "EDGESIM_PORTS"
"""``auto`` (default): move the privileged ports only when this process cannot bind them;
``real``: never move them; ``moved``: always (tests, or to keep 443 free for something else)."""
_CAP_NET_BIND_SERVICE = 10


def can_bind(port: int) -> bool:
    """Whether this process may bind ``port``: unprivileged, root, ``CAP_NET_BIND_SERVICE``, or
    ``net.ipv4.ip_unprivileged_port_start`` at or below it (in this network namespace)."""
    if port >= PRIVILEGED_BELOW or os.geteuid() == 0:
        return True
    try:
        start = int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
    except (OSError, ValueError):
        start = PRIVILEGED_BELOW
    if port >= start:
        return True
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return False
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> _CAP_NET_BIND_SERVICE & 1)
    return False


def port_offset_for(topology: Topology) -> int:
    """The offset the embedded lab moves ``topology``'s privileged ports by (0: none)."""
    mode = os.environ.get(PORTS_ENV, "auto")
    if mode not in ("auto", "real", "moved"):
        raise UsageError(f"{PORTS_ENV}={mode}: use auto, real or moved")
    if mode == "auto":
        ports = topology.privileged_ports()
        return PORT_OFFSET if ports and not can_bind(ports[0]) else 0
    return PORT_OFFSET if mode == "moved" else 0


def moved_ports_notice(topology: Topology) -> str | None:
    """The one line that says the lab's privileged ports were moved, or None."""
    if not topology.port_offset:
        return None
    pairs = ", ".join(f"{p}->{topology.lab_port(p)}" for p in topology.privileged_ports())
    return f"ports moved +{topology.port_offset} ({pairs}): binding below {PRIVILEGED_BELOW} needs root"


# ------------------------------------------------------------------ a lab in another process


def _netns_id() -> int:
    try:
        return os.stat("/proc/self/ns/net").st_ino
    except OSError:
        return 0


@dataclass(frozen=True)
class RunningLab(Record):
    """An embedded lab running in some process of this machine, on this network namespace, as
    its state file (:func:`running_lab_file`) describes it."""

    pid: int = field(metadata=record(then=("netns",)))
    topology: str
    """The resolved path of its topology file."""
    certs_dir: Path
    port_offset: int
    started: float = field(metadata=record(then=("tls_keys",)))
    services: tuple[ServiceState, ...] = field(default=(), metadata=record(keep=("host",)))
    tls_keys: str = ""
    """The key log its TLS contexts write (captures embed it)."""
    netns: int = field(default_factory=_netns_id)
    """The network namespace it runs in (its loopback addresses are only reachable there)."""


def running_lab_file(config: LabConfig) -> Path:
    """Where the embedded lab named ``config.name`` announces itself: one file per network
    namespace, since a lab on another namespace's loopback cannot be reached from here."""
    return config.state / f"local-{_netns_id()}.json"


def find_running_lab(config: LabConfig) -> RunningLab | None:
    """The embedded lab of this name running in another (or this) process here, if any; a
    file left by a process that died is removed."""
    path = running_lab_file(config)
    try:
        lab = RunningLab.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None
    if lab.netns != _netns_id():
        return None
    if not pid_alive(lab.pid):
        with contextlib.suppress(OSError):
            path.unlink()
        return None
    return lab


@register_runner
class LocalRunner(Runner):
    """The ``local`` runner: the embedded lab in this process, no firewall.

    It lives as long as the process that brought it up: ``edgesim lab up`` runs it until Ctrl-C,
    ``edgesim run`` and ``edgesim scenario run`` for their own duration. While it runs, a state
    file (:func:`running_lab_file`) lets other commands of this user use it (:attr:`joined`)
    instead of failing to bind the same addresses.

    When this process cannot bind ports below 1024, the lab runs :meth:`Topology.moved`
    (443 -> 8443, 53 -> 8053): ``config.topology`` is that moved topology, so every service,
    probe, scenario, DNS record and report that reads it uses the moved ports.
    """

    name = "local"
    summary = "one process, each host on its own loopback address (no firewall)"
    order = 0
    has_firewalls = False
    persistent = False
    shares_pki = True
    in_process = True
    addressing = "loopback"
    node_kind = "process"

    def __init__(self, config: LabConfig, *, hosts: list[str] | None = None) -> None:
        self.joined = find_running_lab(config) if config.join and hosts is None else None
        if self.joined is not None:
            wanted = str(config.topology.path.resolve())
            if self.joined.topology != wanted:
                raise LabError(
                    f"the embedded lab running in pid {self.joined.pid} uses the topology "
                    f"{self.joined.topology}: pass --topology {self.joined.topology}, or stop it"
                )
            config = replace(config, certs_dir=self.joined.certs_dir)
            offset = self.joined.port_offset
        else:
            offset = port_offset_for(config.topology)
        if offset:
            config = replace(config, topology=config.topology.moved(offset))
        self.config = config
        self.lab = LocalLab(config.topology, config.certs_dir, hosts=hosts)
        self.started = False
        self._state_file: Path | None = None
        self._keylog_set = False

    @property
    def pki(self) -> LabPki:
        return self.lab.pki

    @property
    def start_hint(self) -> str:
        return "`edgesim lab up` in another shell, or `edgesim run` (lab, probes and report)"

    @property
    def python(self) -> str:
        return sys.executable

    @property
    def node_certs(self) -> str:
        return str(self.config.certs_dir)

    def problem(self) -> str | None:
        return None

    def notices(self) -> list[str]:
        notes = []
        if self.joined is not None:
            notes.append(
                f"using the embedded lab already running in pid {self.joined.pid} "
                f"(PKI in {self.joined.certs_dir})"
            )
        moved = moved_ports_notice(self.config.topology)
        if moved is not None:
            notes.append(moved)
        return notes

    async def up(self) -> None:
        if self.joined is not None:
            if not pid_alive(self.joined.pid):
                raise LabError(f"the embedded lab in pid {self.joined.pid} has stopped")
            self.started = True
            return
        other = find_running_lab(self.config)
        if other is not None:
            raise LabError(
                f"the embedded lab is already running in pid {other.pid} "
                "(`edgesim lab up` in another shell): probe, scenario run and run use it; "
                "stop it with Ctrl-C there"
            )
        self._log_tls_secrets()
        try:
            await self.lab.start()
        except BaseException:
            self._stop_logging_tls_secrets()
            raise
        self.started = True
        self._announce()

    def _log_tls_secrets(self) -> None:
        """The lab's TLS contexts (and this process's clients) log their secrets beside the
        lab's state, so a capture (here or from another shell) can embed them."""
        if os.environ.get(KEYLOG_ENV):
            return
        path = self.config.state / f"tls-keys-{os.getpid()}.log"
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            path.touch(mode=0o600)
        except OSError as exc:
            log.warning("cannot keep TLS secrets in %s: %s", path, exc.strerror or exc)
            return
        os.environ[KEYLOG_ENV] = str(path)
        self._keylog_set = True

    def _stop_logging_tls_secrets(self) -> None:
        if self._keylog_set:
            with contextlib.suppress(OSError, KeyError):
                Path(os.environ.pop(KEYLOG_ENV)).unlink()
            self._keylog_set = False

    def _announce(self) -> None:
        """Write the state file other commands join this lab by (best effort)."""
        path = running_lab_file(self.config)
        lab = RunningLab(
            os.getpid(),
            str(self.config.topology.path.resolve()),
            self.config.certs_dir.resolve(),
            self.config.topology.port_offset,
            time.time(),
            tuple(st.as_state() for st in self.lab.statuses),
            os.environ.get(KEYLOG_ENV, ""),
        )
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(lab.to_dict(), indent=2))
            tmp.replace(path)
        except OSError as exc:
            log.warning("cannot write %s (other commands will not find this lab): %s", path, exc)
            return
        self._state_file = path

    async def down(self) -> list[str]:
        if self.joined is not None:
            self.started = False
            return []
        if self._state_file is not None:
            with contextlib.suppress(OSError):
                self._state_file.unlink()
            self._state_file = None
        hosts = sorted({st.host for st in self.lab.statuses if st.state == "running"})
        await self.lab.stop()
        self._stop_logging_tls_secrets()
        self.started = False
        return hosts

    def require_up(self) -> None:
        if not self.started:
            raise LabError(f"the embedded lab is not running in this process: {self.start_hint}")

    def _service_states(self) -> list[ServiceState]:
        if self.joined is not None:
            return list(self.joined.services)
        return [st.as_state() for st in self.lab.statuses]

    async def status(self) -> LabStatus:
        status = LabStatus(self.name, self.config.name, self.node_kind)
        by_host: dict[str, list[ServiceState]] = {}
        for st in self._service_states():
            by_host.setdefault(st.host, []).append(st)
        where = "this process" if self.joined is None else f"pid {self.joined.pid}"
        for host in self.config.topology.hosts:
            services = by_host.get(host.id, [])
            state: NodeState
            if not self.started or (self.lab.only_hosts and host.id not in self.lab.only_hosts):
                state = "absent"
            elif any(s.state == "running" for s in services):
                state = "running"
            else:
                state = "up"
            addresses = [f"{i.loopback()} ({i.id})" for i in host.interfaces]
            status.nodes.append(NodeStatus(host.id, "host", where, state, addresses, services))
        return status

    async def check(self) -> list[ListenerCheck]:
        if self.joined is None:
            return await self.lab.check()
        by_host: dict[str, list[ServiceState]] = {}
        for st in self.joined.services:
            by_host.setdefault(st.host, []).append(st)
        jobs = [
            check_services(self.config.topology, host, self.name, self.config.certs_dir, states)
            for host, states in by_host.items()
        ]
        return [c for checks in await asyncio.gather(*jobs) for c in checks]

    def exec_argv(self, node: str) -> list[str]:
        return []

    def exec_env(self) -> dict[str, str] | None:
        return None

    def edgesim_argv(self, node: str) -> list[str]:
        top = ["--topology", str(self.config.topology.path)]
        return [sys.executable, "-m", "simulator", *top]

    def rules_path(self, firewall: str) -> Path:
        raise no_firewall(self)

    def load_rules(self, firewall: str, path: Path | None = None) -> LoadResult:
        raise no_firewall(self)

    def our_firewalls(self) -> tuple[str, ...]:
        return ()

    def firewall_node(self, firewall: str) -> FirewallNode:
        raise no_firewall(self)

    async def vantage(self) -> Vantage:
        self.require_up()
        return Vantage(self.name, self.pki)

    def prepare_host(self, host: Host) -> None:
        return None

    def capture(self, out: Path) -> AbstractAsyncContextManager[CaptureResult]:
        """tcpdump on loopback, filtered to the lab's addresses (needs root or CAP_NET_RAW)."""
        addresses = sorted({str(i.loopback()) for i in self.config.topology.interfaces()})
        bpf = " or ".join(f"host {a}" for a in addresses)
        point = CapturePoint("lab", (), interface="lo", bpf=bpf)
        keys = self.joined.tls_keys if self.joined is not None else os.environ.get(KEYLOG_ENV)
        return packet_capture(out, [point], [KeySource((), keys)] if keys else [])


async def check_services(
    topology: Topology, host_id: str, runner: str, certs_dir: Path, services: list[ServiceState]
) -> list[ListenerCheck]:
    """Does each listener ``services`` (of ``host_id``, as a ready file lists them) answer?

    Each service's own protocol check runs from a fresh (not started) instance of the service,
    configured as the running one is.
    """
    host = topology.host(host_id)
    pki = LabPki(certs_dir)
    jobs = []
    for svc in services:
        factory = load_service(svc.service) if svc.state == "running" else None
        if factory is None:
            continue
        settings = service_settings(topology, svc.service, certs_dir)
        instance = factory(ServiceContext(topology, host, svc.service, pki, runner, settings))
        for item in svc.listeners:
            listener = next(
                lst
                for lst in host.listeners
                if lst.interface == item.interface
                and lst.proto == item.proto
                and lst.port_low == item.port_low
                and lst.service == svc.service
            )
            bound = BoundListener(listener, item.transport, item.address, item.port)
            jobs.append(check_listener(host_id, svc.service, instance, bound))
    return list(await asyncio.gather(*jobs))
