"""The embedded lab: every service of the topology in one asyncio process.

Each interface is given its own loopback address (127.b.c.d for a.b.c.d), so hosts keep distinct
addresses and the same ports as in the other runners; there is no firewall between zones.

:class:`LocalLab` starts, checks and stops services in this process: the whole topology for the
``local`` runner (:class:`LocalRunner`), or one host inside a netns namespace or a compose
container (``edgesim lab serve``).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from simulator.errors import LabError
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
    PLANNED,
    BoundListener,
    Service,
    ServiceContext,
    load_service,
)
from simulator.lab.topology import Host, Topology
from simulator.pki import LabPki, ensure_pki, service_settings

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

    async def start(self) -> list[ServiceStatus]:
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
                service = factory(ctx)
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
            _reader, writer = await asyncio.wait_for(
                asyncio.open_connection(bound.address, bound.port), CHECK_TIMEOUT
            )
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


@register_runner
class LocalRunner(Runner):
    """The ``local`` runner: the embedded lab in this process, no firewall.

    It lives as long as the process that brought it up: ``edgesim lab up`` runs it until Ctrl-C,
    ``edgesim run`` and ``edgesim scenario run`` for their own duration.
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
        self.config = config
        self.lab = LocalLab(config.topology, config.certs_dir, hosts=hosts)
        self.started = False

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

    async def up(self) -> None:
        await self.lab.start()
        self.started = True

    async def down(self) -> list[str]:
        hosts = sorted({st.host for st in self.lab.statuses if st.state == "running"})
        await self.lab.stop()
        self.started = False
        return hosts

    def require_up(self) -> None:
        if not self.started:
            raise LabError(f"the embedded lab is not running in this process: {self.start_hint}")

    async def status(self) -> LabStatus:
        status = LabStatus(self.name, self.config.name, self.node_kind)
        by_host: dict[str, list[ServiceState]] = {}
        for st in self.lab.statuses:
            by_host.setdefault(st.host, []).append(st.as_state())
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
            status.nodes.append(
                NodeStatus(host.id, "host", "this process", state, addresses, services)
            )
        return status

    async def check(self) -> list[ListenerCheck]:
        return await self.lab.check()

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

    async def vantage(self) -> Vantage:
        self.require_up()
        return Vantage(self.name, self.pki)

    def prepare_host(self, host: Host) -> None:
        return None
