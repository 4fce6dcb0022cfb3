"""The embedded lab: every service of the topology in one asyncio process.

Each interface is given its own loopback address (127.b.c.d for a.b.c.d), so hosts keep distinct
addresses and the same ports as in the other runners; there is no firewall between zones.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from simulator.errors import LabError
from simulator.lab.services import (
    PLANNED,
    BoundListener,
    Service,
    ServiceContext,
    load_service,
)
from simulator.lab.topology import Topology
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


@dataclass(frozen=True)
class ListenerCheck:
    host: str
    service: str
    bound: BoundListener
    ok: bool
    detail: str


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
    """Start, check and stop the topology's services in this process."""

    runner = "local"

    def __init__(
        self,
        topology: Topology,
        pki_dir: Path | str,
        *,
        settings: dict[str, dict[str, object]] | None = None,
        hosts: list[str] | None = None,
    ) -> None:
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

    async def _check_one(self, status: ServiceStatus, bound: BoundListener) -> ListenerCheck:
        check = getattr(status.instance, "check", None)
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
        return ListenerCheck(status.host, status.service, bound, reason is None, detail)

    async def check(self) -> list[ListenerCheck]:
        """Verify every bound listener answers (at protocol level where the service can)."""
        jobs = [
            self._check_one(status, bound)
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
