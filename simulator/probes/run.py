"""Run the matrix: resolve rows, pick endpoints, build probe specs, run them through an executor.

Executors say where a probe runs (:func:`plan_probes` picks one for a runner):

* :class:`LocalExecutor` runs it in this process. With ``addresses="loopback"`` (the local
  runner) it leaves from the source interface's loopback address; with ``addresses="lab"`` from
  its lab address (what ``edgesim probe --inside`` does inside a namespace or container).
* :class:`RunnerExecutor` runs ``<runner.edgesim_argv(host)> probe --row ID --format json
  --inside ...`` inside the source host (netns: ``ip netns exec es-<host> python3 -m
  simulator``; compose: ``docker compose exec -T <host> python3 -m simulator``) and parses the
  JSON.

A :class:`Target` (``--target FILE``) maps the same rows onto a real deployment.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from simulator.errors import ConfigError
from simulator.firewall.observe import traced
from simulator.lab.runners.base import Runner
from simulator.lab.topology import Topology, read_toml
from simulator.matrix.model import (
    Endpoint,
    Expectation,
    Matrix,
    MatrixRow,
    ResolvedRow,
    load_matrix,
    resolve_all,
)
from simulator.pki import CertPaths, LabPki, ensure_pki, service_settings
from simulator.probes.base import (
    Outcome,
    ProbeResult,
    Verdict,
    apply_expectation,
)
from simulator.probes.device import DeviceWatch
from simulator.probes.firewall import job_flows, judge
from simulator.probes.registry import PRESENTS_CERTIFICATE, PROBES
from simulator.probes.spec import ProbeSpec, TurnCredentials
from simulator.settings import load_settings

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 2.0
DEFAULT_CONCURRENCY = 32
SUBPROCESS_GRACE = 20.0
"""Seconds a netns/compose probe may take beyond its own timeout (interpreter start-up)."""

#: Listener protocol of the TURN server a relay row's probe talks to.
_RELAY_SERVER_PROTO = {"turn-relay-udp": "stun-udp", "relay-tcp-egress": "turn-tcp"}


# ------------------------------------------------------------------ jobs


@dataclass(frozen=True)
class ProbeJob:
    row: MatrixRow
    source: Endpoint | None
    destination: Endpoint | None
    spec: ProbeSpec | None
    skip_reason: str = ""

    def result(self, outcome: Outcome, runner: str) -> ProbeResult:
        outcome = apply_expectation(self.row, outcome)
        return ProbeResult(
            row_id=self.row.id,
            probe=self.row.probe,
            expect=self.row.expect.value,
            verdict=outcome.verdict,
            reason=outcome.reason,
            source=_describe_source(self),
            destination=_describe_destination(self),
            details=outcome.details,
            timings=outcome.timings,
            tls_problem=outcome.tls_problem,
            runner=runner,
        )


def _describe_source(job: ProbeJob) -> str:
    if job.source is None:
        return job.spec.bind or "" if job.spec else ""
    address = job.spec.bind if job.spec and job.spec.bind else job.source.address
    return f"{job.source.ref} {address}"


def _describe_destination(job: ProbeJob) -> str:
    if job.spec is None:
        return job.destination.ref if job.destination else ""
    if job.spec.peer is not None:
        peer = f"{job.spec.peer[0]}:{job.spec.peer[1]}"
        dest = job.destination.ref if job.destination else ""
        return f"{dest} {peer} via relay {job.spec.address}:{job.spec.port}".strip()
    ref = f"{job.destination.ref} " if job.destination else ""
    return f"{ref}{job.spec.address}:{job.spec.ports}/{job.spec.transport}"


def _pick_source(resolved: ResolvedRow, topology: Topology) -> Endpoint:
    """The first source; for probes that present a certificate, the first source that has one."""
    if resolved.row.probe in PRESENTS_CERTIFICATE:
        for ep in resolved.sources:
            if topology.interface(ep.ref).ca is not None:
                return ep
    return resolved.sources[0]


def _listener_port(
    topology: Topology, ep: Endpoint, protos: Sequence[str], transport: str
) -> int | None:
    host = topology.host(ep.host)
    for proto in protos:
        for lst in host.listeners:
            if lst.interface == ep.interface and lst.proto == proto and transport in lst.transports:
                return lst.port
    for proto in protos:  # another interface of the same host
        for lst in host.listeners:
            if lst.proto == proto and transport in lst.transports:
                return lst.port
    return None


@dataclass(frozen=True)
class ProbeSettings:
    """``[services.probes]``: the TURN account the probes use (docs/probes.md)."""

    turn_username: str | None = None
    """A user of the A/V Edge; without one, the first of ``[services.av-edge] users``."""
    turn_password: str | None = None
    """Its password; without one, the lab's generated password of that A/V Edge user."""
    turn_realm: str | None = None
    """The realm to answer the 401 with; without one, the realm the server names."""


def turn_credentials(topology: Topology, pki: LabPki) -> TurnCredentials | None:
    """The TURN account the probes use: ``[services.probes] turn_username`` (with
    ``turn_password``, or the lab's generated password of that user of the A/V Edge), else the
    first of ``[services.av-edge] users``."""
    probes = load_settings(
        ProbeSettings, topology.settings.get("probes", {}), topology.path, "services.probes"
    )
    realm = probes.turn_realm
    users = service_settings(topology, "av-edge", pki.directory).get("users")
    users = users if isinstance(users, dict) else {}
    name = probes.turn_username
    if name is not None:
        password = probes.turn_password if probes.turn_password is not None else users.get(name)
        if isinstance(password, str):
            return TurnCredentials(name, password, realm)
    if users:
        name, password = next(iter(users.items()))
        return TurnCredentials(str(name), str(password), realm)
    return None


def _dns_name(topology: Topology, source: Endpoint) -> str | None:
    own = topology.host(source.host).domain
    names = [s.name for s in topology.srv]
    foreign = [n for n in names if own is None or not n.endswith("." + own)]
    choices = foreign or names
    return choices[0] if choices else None


@dataclass
class JobBuilder:
    """Turns resolved rows into probe jobs for one runner's addressing."""

    topology: Topology
    pki: LabPki
    addresses: str = "loopback"
    """``loopback`` (local runner) or ``lab`` (inside a namespace / container)."""
    timeout: float = DEFAULT_TIMEOUT
    source_ref: str | None = None
    """Force the source endpoint (``host:interface``), as the outer runner picked it."""

    def address(self, ep: Endpoint) -> str:
        return ep.loopback if self.addresses == "loopback" else ep.address

    def build(self, resolved: ResolvedRow) -> ProbeJob:
        row = resolved.row
        if not resolved.resolved:
            reason = "; ".join(resolved.problems) or "no source or destination in this topology"
            return ProbeJob(row, None, None, None, reason)
        source = _pick_source(resolved, self.topology)
        if self.source_ref:
            source = next((s for s in resolved.sources if s.ref == self.source_ref), None) or source
        dest = resolved.destinations[0]
        src_iface = self.topology.interface(source.ref)
        client_cert: CertPaths | None = None
        if row.probe in PRESENTS_CERTIFICATE and src_iface.ca is not None:
            client_cert = self.pki.interface_cert(src_iface)
        common: dict[str, Any] = {
            "kind": row.probe,
            "bind": self.address(source),
            "trust": (self.pki.trust_bundle,),
            "lab_cas": self.pki.all_cas(),
            "client_cert": client_cert,
            "timeout": self.timeout,
            "transport": row.transport,
            "source_domain": self.topology.host(source.host).domain,
            "turn": turn_credentials(self.topology, self.pki),
            # rows whose protocol names MSTURN are probed as a Lync client speaks ([MS-TURN])
            "extra": {"dialect": "ms-turn"} if "MSTURN" in row.protocol.upper() else {},
        }
        if row.port_side == "source":
            # Relay rows: the source is the relay; ask its TURN server to relay to the destination.
            server_port = _listener_port(
                self.topology,
                source,
                [_RELAY_SERVER_PROTO.get(row.probe, "stun-udp")],
                "udp" if row.probe == "turn-relay-udp" else "tcp",
            )
            peer_port = _listener_port(self.topology, dest, ["media", "stun-udp"], row.transport)
            if server_port is None:
                return ProbeJob(
                    row, source, dest, None, f"{source.ref} has no TURN listener for {row.probe}"
                )
            if peer_port is None:
                return ProbeJob(
                    row, source, dest, None, f"{dest.ref} has no {row.transport} media port"
                )
            spec = ProbeSpec(
                address=self.address(source),
                port=server_port,
                fqdn=source.fqdn,
                domain=self.topology.host(source.host).domain,
                peer=(self.address(dest), peer_port),
                **common,
            )
            return ProbeJob(row, source, dest, spec)
        # The matrix names real ports; the lab may listen on moved ones (Topology.lab_port).
        low, high = self.topology.lab_port(row.port_low), self.topology.lab_port(row.port_high)
        spec = ProbeSpec(
            address=self.address(dest),
            port=low,
            port_high=high if high != low else None,
            fqdn=dest.fqdn,
            domain=self.topology.host(dest.host).domain,
            dns_name=_dns_name(self.topology, source) if row.probe == "dns" else None,
            **common,
        )
        return ProbeJob(row, source, dest, spec)


# ------------------------------------------------------------------ target (a real deployment)


@dataclass(frozen=True)
class TargetEndpoint:
    address: str
    fqdn: str | None = None
    domain: str | None = None


@dataclass
class Target:
    """A real deployment described in TOML, mapped onto the matrix rows (see docs/probes.md)."""

    path: Path
    name: str
    endpoints: dict[str, TargetEndpoint]
    """``host:interface`` of the topology -> the real address and names."""
    trust: tuple[Path, ...] = ()
    client_cert: CertPaths | None = None
    bind: str | None = None
    zones: tuple[str, ...] = ()
    """Zones this machine sits in; rows from other source zones are skipped (empty: all)."""
    turn: TurnCredentials | None = None
    timeout: float | None = None

    def endpoint(self, ep: Endpoint | None) -> TargetEndpoint | None:
        if ep is None:
            return None
        return self.endpoints.get(ep.ref) or self.endpoints.get(ep.host)

    def apply(self, job: ProbeJob) -> ProbeJob:
        if job.spec is None:
            return job
        if self.zones and job.source is not None and job.source.zone not in self.zones:
            return replace(
                job,
                spec=None,
                skip_reason=f"source zone '{job.source.zone}': this machine is not there",
            )
        spec = job.spec
        if spec.peer is not None:
            relay, peer = self.endpoint(job.source), self.endpoint(job.destination)
            if relay is None or peer is None:
                missing = job.source if relay is None else job.destination
                return replace(
                    job,
                    spec=None,
                    skip_reason=f"{missing.ref if missing else '?'} is not in the target file",
                )
            spec = replace(
                spec,
                address=relay.address,
                fqdn=relay.fqdn or spec.fqdn,
                peer=(peer.address, spec.peer[1]),
            )
        else:
            dest = self.endpoint(job.destination)
            if dest is None:
                ref = job.destination.ref if job.destination else "?"
                return replace(job, spec=None, skip_reason=f"{ref} is not in the target file")
            spec = replace(
                spec,
                address=dest.address,
                fqdn=dest.fqdn or spec.fqdn,
                domain=dest.domain or spec.domain,
            )
        src = self.endpoint(job.source)
        spec = replace(
            spec,
            bind=self.bind,
            trust=self.trust or spec.trust,
            lab_cas=(),
            client_cert=self.client_cert if spec.kind in PRESENTS_CERTIFICATE else None,
            source_domain=(src.domain if src and src.domain else spec.source_domain),
            turn=self.turn or spec.turn,
            timeout=self.timeout or spec.timeout,
        )
        return replace(job, spec=spec)


def load_target(path: Path | str) -> Target:
    """Load a target file; every problem is a ConfigError naming the file and the entry."""
    path = Path(path)
    data = read_toml(path, "target")
    base = path.parent

    def file(value: Any, entry: str, key: str) -> Path:
        if not isinstance(value, str):
            raise ConfigError(path, entry, f"'{key}' must be a file name")
        p = Path(value)
        p = p if p.is_absolute() else base / p
        if not p.is_file():
            raise ConfigError(path, entry, f"'{key}': {p} does not exist")
        return p

    target = data.get("target", {})
    if not isinstance(target, dict):
        raise ConfigError(path, "target", "'target' must be a table")
    unknown = sorted(
        set(target)
        - {
            "name",
            "ca_bundle",
            "client_cert",
            "client_key",
            "source_address",
            "zones",
            "turn_username",
            "turn_password",
            "timeout",
        }
    )
    if unknown:
        raise ConfigError(path, "target", f"unknown key '{unknown[0]}'")
    trust = (file(target["ca_bundle"], "target", "ca_bundle"),) if "ca_bundle" in target else ()
    client: CertPaths | None = None
    if "client_cert" in target:
        cert = file(target["client_cert"], "target", "client_cert")
        key = file(target["client_key"], "target", "client_key") if "client_key" in target else cert
        client = CertPaths(cert, key, cert)
    turn = None
    if "turn_username" in target:
        turn = TurnCredentials(str(target["turn_username"]), str(target.get("turn_password", "")))
    endpoints: dict[str, TargetEndpoint] = {}
    table = data.get("endpoints", {})
    if not isinstance(table, dict) or not table:
        raise ConfigError(
            path, "endpoints", 'describe at least one endpoint: [endpoints."edge:access"]'
        )
    for ref, entry in table.items():
        where = f"endpoints[{ref}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("address"), str):
            raise ConfigError(path, where, "an endpoint needs 'address'")
        bad = sorted(set(entry) - {"address", "fqdn", "domain"})
        if bad:
            raise ConfigError(path, where, f"unknown key '{bad[0]}'")
        endpoints[ref] = TargetEndpoint(entry["address"], entry.get("fqdn"), entry.get("domain"))
    timeout = target.get("timeout")
    return Target(
        path=path,
        name=str(target.get("name", path.stem)),
        endpoints=endpoints,
        trust=trust,
        client_cert=client,
        bind=target.get("source_address"),
        zones=tuple(target.get("zones", ())),
        turn=turn,
        timeout=float(timeout) if isinstance(timeout, (int, float)) else None,
    )


# ------------------------------------------------------------------ executors


class Executor(Protocol):
    name: str

    async def run(self, job: ProbeJob) -> ProbeResult: ...


def skipped(job: ProbeJob, runner: str) -> ProbeResult:
    return ProbeResult(
        job.row.id,
        job.row.probe,
        job.row.expect.value,
        Verdict.SKIPPED,
        job.skip_reason or "not probed",
        _describe_source(job),
        _describe_destination(job),
        runner=runner,
    )


@dataclass
class LocalExecutor:
    """Runs probes in this process (the source address is bound by the probe itself)."""

    name: str = "local"

    async def run(self, job: ProbeJob) -> ProbeResult:
        if job.spec is None:
            return skipped(job, self.name)
        probe = PROBES[job.spec.kind]
        try:
            # The probe honours its own deadline; this only guards against a bug that would not.
            outcome = await asyncio.wait_for(probe(job.spec), job.spec.timeout + 2.0)
        except TimeoutError:
            outcome = Outcome(
                Verdict.ERROR, f"the probe overran its {job.spec.timeout:g} s deadline"
            )
        except Exception as exc:
            log.exception("probe %s crashed", job.row.id)
            outcome = Outcome(Verdict.ERROR, f"probe crashed: {type(exc).__name__}: {exc}")
        return job.result(outcome, self.name)


@dataclass
class RunnerExecutor:
    """Runs ``edgesim probe --inside`` inside the source host of a runner's lab (one process per
    source endpoint, see :meth:`run_batch`) and parses its JSON."""

    runner: Runner
    timeout: float = DEFAULT_TIMEOUT
    name: str = ""
    trace: bool = True
    """Trace the lab's firewalls while probing and judge the verdicts there
    (:mod:`simulator.probes.firewall`); False: the endpoints' word only."""
    notes: list[str] = field(default_factory=list)
    """What the report should say about this run (a firewall that could not be traced)."""

    def __post_init__(self) -> None:
        self.name = self.name or self.runner.name

    def probe_args(self, job: ProbeJob, rows: Sequence[str] = ()) -> list[str]:
        args = ["probe"]
        for row in rows or (job.row.id,):
            args += ["--row", row]
        args += ["--format", "json", "--inside", "--timeout", f"{self.timeout:g}"]
        if job.source is not None:
            args += ["--source", job.source.ref]
        return [*args, "--certs", self.runner.node_certs]

    def command(self, job: ProbeJob, rows: Sequence[str] = ()) -> list[str]:
        assert job.source is not None
        return [*self.runner.edgesim_argv(job.source.host), *self.probe_args(job, rows)]

    async def run_batch(
        self,
        jobs: Sequence[ProbeJob],
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        on_done: Callable[[ProbeResult], None] | None = None,
    ) -> list[ProbeResult]:
        """One process per source endpoint, probing all of its rows at once, every firewall
        of the lab traced meanwhile; each result judged at the firewall.

        Starting Python inside a namespace or a container costs far more than a probe; a
        process per row would spend the per-probe deadline on start-up when rows run in
        parallel on a small machine.
        """
        if not (self.trace and self.runner.has_firewalls):
            if self.runner.has_firewalls:
                self.notes.append("firewalls not traced: verdicts from the endpoints only")
            return await self._run_batch(jobs, concurrency=concurrency, on_done=on_done)
        flows = {id(job): job_flows(job.row, job.spec) for job in jobs}
        everything = [f for fs in flows.values() for f in fs]
        # Of TCP, the handshake decides (SYN out, SYN-ACK or RST back); tracing every data
        # segment of every TLS probe would cost the probes their CPU on a small machine.
        async with traced(self.runner, everything, handshake_only=True) as lab_trace:
            results = await self._run_batch(jobs, concurrency=concurrency, on_done=on_done)
        self.notes += lab_trace.problems
        return [
            judge(result, job.row, lab_trace.decisions(flows[id(job)]))
            for job, result in zip(jobs, results, strict=True)
        ]

    async def _run_batch(
        self,
        jobs: Sequence[ProbeJob],
        *,
        concurrency: int,
        on_done: Callable[[ProbeResult], None] | None,
    ) -> list[ProbeResult]:
        groups: dict[str, list[ProbeJob]] = {}
        for job in jobs:
            if job.spec is not None and job.source is not None:
                groups.setdefault(job.source.ref, []).append(job)
        gate = asyncio.Semaphore(max(1, concurrency))
        results: dict[int, ProbeResult] = {}

        async def one(group: list[ProbeJob]) -> None:
            async with gate:
                for job, result in zip(group, await self._run_group(group), strict=True):
                    results[id(job)] = result
                    if on_done is not None:
                        on_done(result)

        await asyncio.gather(*(one(g) for g in groups.values()))
        out = []
        for job in jobs:
            result = results.get(id(job)) or skipped(job, self.name)
            if id(job) not in results and on_done is not None:
                on_done(result)
            out.append(result)
        return out

    async def _run_group(self, group: list[ProbeJob]) -> list[ProbeResult]:
        cmd = self.command(group[0], [job.row.id for job in group])
        try:
            proc = await asyncio.create_subprocess_exec(
                *cmd,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self.runner.exec_env(),
            )
        except OSError as exc:
            outcome = Outcome(Verdict.ERROR, f"cannot run {cmd[0]}: {exc.strerror}")
            return [job.result(outcome, self.name) for job in group]
        try:
            out, err = await asyncio.wait_for(proc.communicate(), self.timeout + SUBPROCESS_GRACE)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            outcome = Outcome(Verdict.ERROR, f"{' '.join(cmd[:3])} did not finish")
            return [job.result(outcome, self.name) for job in group]
        return [parse_subprocess_output(job, out, err, self.name) for job in group]

    async def run(self, job: ProbeJob) -> ProbeResult:
        if job.spec is None or job.source is None:
            return skipped(job, self.name)
        (result,) = await self.run_batch([job])
        return result


def parse_subprocess_output(job: ProbeJob, out: bytes, err: bytes, runner: str) -> ProbeResult:
    """The result the inner ``edgesim probe --format json`` printed for ``job``'s row."""
    try:
        data = json.loads(out.decode("utf-8"))
        entries = data["results"] if isinstance(data, dict) else data
        for entry in entries:
            if entry.get("row") == job.row.id:
                return replace(ProbeResult.from_dict(entry), runner=runner)
        problem = f"no result for row {job.row.id} in the output"
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, AttributeError) as exc:
        problem = f"unreadable output ({exc})"
    last = (err.decode("utf-8", "replace").strip().splitlines() or [""])[-1]
    reason = f"the probe inside {job.source.host if job.source else '?'} failed: {last or problem}"
    return ProbeResult(
        job.row.id,
        job.row.probe,
        job.row.expect.value,
        Verdict.ERROR,
        reason,
        _describe_source(job),
        _describe_destination(job),
        runner=runner,
    )


# ------------------------------------------------------------------ running


@dataclass
class ProbeRun:
    """Everything the reports render."""

    topology: Topology
    matrix: Matrix
    results: list[ProbeResult]
    runner: str
    started: float
    duration: float
    target: str | None = None
    notes: list[str] = field(default_factory=list)
    """What the reports should say about the run as a whole (firewalls not traced ...)."""

    @property
    def failures(self) -> list[ProbeResult]:
        return [r for r in self.results if not r.met and r.verdict is not Verdict.SKIPPED]

    @property
    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self.results:
            counts[r.verdict.value] = counts.get(r.verdict.value, 0) + 1
        return counts


def build_jobs(
    topology: Topology,
    builder: JobBuilder,
    *,
    matrix: Matrix | None = None,
    rows: Sequence[str] = (),
    target: Target | None = None,
    adjust: Callable[[ProbeJob], ProbeJob] | None = None,
) -> list[ProbeJob]:
    matrix = matrix or load_matrix()
    resolved = resolve_all(matrix, topology)
    if rows:
        known = {r.row.id for r in resolved}
        unknown = [r for r in rows if r not in known]
        if unknown:
            raise ConfigError(matrix.path, f"rows[{unknown[0]}]", "no such row in the matrix")
        resolved = [r for r in resolved if r.row.id in rows]
    jobs = [builder.build(r) for r in resolved]
    if target is not None:
        jobs = [target.apply(j) for j in jobs]
    if adjust is not None:
        jobs = [adjust(j) for j in jobs]
    return jobs


async def run_jobs(
    jobs: Sequence[ProbeJob],
    executor: Executor,
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    on_done: Callable[[ProbeResult], None] | None = None,
) -> list[ProbeResult]:
    """Run every job, at most ``concurrency`` at a time; results in the jobs' order."""
    batch = getattr(executor, "run_batch", None)
    if batch is not None:
        results: list[ProbeResult] = await batch(jobs, concurrency=concurrency, on_done=on_done)
        return results
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(job: ProbeJob) -> ProbeResult:
        async with gate:
            result = await executor.run(job)
        if on_done is not None:
            on_done(result)
        return result

    return list(await asyncio.gather(*(one(j) for j in jobs)))


async def probe_matrix(
    topology: Topology,
    executor: Executor,
    builder: JobBuilder,
    *,
    matrix: Matrix | None = None,
    rows: Sequence[str] = (),
    target: Target | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    on_start: Callable[[int], None] | None = None,
    on_done: Callable[[ProbeResult], None] | None = None,
    adjust: Callable[[ProbeJob], ProbeJob] | None = None,
) -> ProbeRun:
    matrix = matrix or load_matrix()
    jobs = build_jobs(topology, builder, matrix=matrix, rows=rows, target=target, adjust=adjust)
    if on_start is not None:
        on_start(len(jobs))
    started, t0 = time.time(), time.perf_counter()
    results = await run_jobs(jobs, executor, concurrency=concurrency, on_done=on_done)
    return ProbeRun(
        topology,
        matrix,
        results,
        executor.name,
        started,
        time.perf_counter() - t0,
        target.name if target else None,
        list(getattr(executor, "notes", [])),
    )


def plan_probes(
    runner: Runner,
    certs_dir: Path,
    *,
    inside: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    source_ref: str | None = None,
    target: Target | None = None,
    trace: bool = True,
) -> tuple[JobBuilder, Executor]:
    """How ``edgesim probe`` probes ``runner``'s lab: the job builder and the executor.

    ``inside``: this process runs inside one of the lab's nodes (what :class:`RunnerExecutor`
    starts there): the lab's own addresses, from here. A ``target`` is probed from here. A lab
    that outlives its command must be up (one-line error otherwise). ``trace``: judge the
    verdicts at the lab's firewalls (runners with firewalls).
    """
    topology = runner.config.topology
    pki = LabPki(certs_dir)
    needs_pki = target is None or not target.trust
    if needs_pki and ((runner.shares_pki and not inside) or not pki.trust_bundle.is_file()):
        # Written once here: the probes inside the nodes run concurrently and only read it
        # (ensure_pki rewrites its manifest on every call).
        ensure_pki(topology, certs_dir)
    addresses = "lab" if inside else runner.addressing
    builder = JobBuilder(topology, pki, addresses, timeout=timeout, source_ref=source_ref)
    executor: Executor
    if target is not None:
        executor = LocalExecutor(name="target")
    elif inside:
        executor = LocalExecutor(name="here")
    elif runner.in_process:
        executor = LocalExecutor(name=runner.name)
    else:
        runner.require_up()
        executor = RunnerExecutor(runner, timeout, trace=trace)
        if set(runner.our_firewalls()) != {fw.id for fw in topology.firewalls}:
            # The user's own firewall: judged from the endpoints and captures beside it.
            executor = DeviceWatch(executor, runner)
    return builder, executor


def nothing_answered(run: ProbeRun, runner: Runner) -> str | None:
    """A hint when every open row was refused on a lab that may simply not be running."""
    if run.target is not None or runner.persistent:
        return None
    probed = [r for r in run.results if r.expect == "open" and r.verdict is not Verdict.SKIPPED]
    if probed and all(r.verdict is Verdict.REFUSED for r in probed):
        return f"nothing answered: is the lab running? {runner.start_hint}"
    return None


NO_FIREWALL = (
    "the embedded lab has no firewall: what must stay blocked is checked with "
    "--runner netns or compose"
)


def _serving(topology: Topology, ep: Endpoint, transport: str, low: int, high: int) -> str | None:
    """The service owning the listener of ``ep`` that covers ``transport`` ports low-high."""
    lst = topology.host(ep.host).listener_on(ep.interface, transport, low, high)
    return lst.service if lst is not None else None


async def adjust_for(runner: Runner) -> Callable[[ProbeJob], ProbeJob] | None:
    """What a lab without firewalls cannot judge is skipped with the reason
    (:func:`embedded_lab_adjust`); None for a lab with firewalls."""
    if runner.has_firewalls:
        return None
    return embedded_lab_adjust(runner.config.topology, (await runner.status()).services)


def embedded_lab_adjust(
    topology: Topology, statuses: Sequence[Any]
) -> Callable[[ProbeJob], ProbeJob]:
    """Skip, with the reason, what the embedded lab cannot judge.

    Negative rows need a firewall; a row whose destination (or relay) service is not running
    in this lab cannot pass for reasons that have nothing to do with the network.
    """
    from simulator.lab.registry import PLANNED

    state = {(st.host, st.service): st.state for st in statuses}

    def why_not(host: str, service: str | None) -> str | None:
        if service is None or state.get((host, service), "running") == "running":
            return None
        planned = PLANNED.get(service)
        return f"{host}'s {service} is not available yet" + (f" ({planned})" if planned else "")

    def adjust(job: ProbeJob) -> ProbeJob:
        if job.spec is None:
            return job
        if job.row.expect is Expectation.BLOCKED:
            return replace(job, spec=None, skip_reason=NO_FIREWALL)
        needed: list[tuple[str, str | None]] = []
        if job.destination is not None:
            if job.row.port_side == "destination":
                low, high = job.row.port_low, job.row.port_high
            else:
                low = high = job.spec.peer[1] if job.spec.peer else job.spec.port
            service = _serving(topology, job.destination, job.row.transport, low, high)
            needed.append((job.destination.host, service))
        if job.row.probe in _RELAY_SERVER_PROTO and job.source is not None:
            host = topology.host(job.source.host)
            relay = host.listener_for(job.source.interface, _RELAY_SERVER_PROTO[job.row.probe])
            needed.append((job.source.host, relay.service if relay is not None else None))
        for host_id, service in needed:
            reason = why_not(host_id, service)
            if reason is not None:
                return replace(job, spec=None, skip_reason=reason)
        return job

    return adjust
