"""Find scenario scripts, run them against a lab, and report."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.util
import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from simulator.errors import EdgesimError, UsageError
from simulator.firewall.observe import LabTrace, row_flows, traced
from simulator.lab.capture import CaptureResult
from simulator.lab.hostmap import HostMap
from simulator.lab.registry import PLANNED
from simulator.lab.runners import runner_class
from simulator.lab.runners.base import Runner
from simulator.lab.services import load_service
from simulator.lab.topology import Topology
from simulator.matrix.model import load_matrix
from simulator.paths import shipped_scenarios_dir
from simulator.pki import LabPki
from simulator.scenario.api import Lab, Scenario, ScenarioFailure, ScenarioSkipped
from simulator.scenario.ladder import Ladder, build_ladder
from simulator.trace import TraceEvent, TraceRecorder

log = logging.getLogger(__name__)


@dataclass
class ScenarioResult:
    scenario: Scenario
    status: str
    """``passed``, ``failed``, ``skipped`` or ``error`` (the script itself broke)."""
    reason: str = ""
    step: str | None = None
    duration: float = 0.0
    events: list[TraceEvent] = field(default_factory=list)
    capture: CaptureResult | None = None
    """The pcapng of this scenario's packets (``--pcap DIR``), TLS secrets embedded."""

    @property
    def ok(self) -> bool:
        return self.status in ("passed", "skipped")

    def ladder(self, topology: Topology, runner: str) -> Ladder:
        return build_ladder(self.scenario.name, self.events, topology, HostMap(topology, runner))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.scenario.name,
            "description": self.scenario.description,
            "rows": list(self.scenario.rows),
            "status": self.status,
            "step": self.step,
            "reason": self.reason,
            "duration": round(self.duration, 3),
            "events": [e.to_dict() for e in self.events],
            "capture": str(self.capture.path) if self.capture else None,
            "capture_problems": self.capture.problems if self.capture else [],
        }


@dataclass(frozen=True)
class BrokenScript:
    path: Path
    reason: str


def scenario_dirs(extra: Sequence[Path] = ()) -> list[Path]:
    """The shipped scenarios' directory, then ``extra`` (the user's own, ``--dir``), each once."""
    dirs: list[Path] = []
    for directory in (shipped_scenarios_dir(), *extra):
        if all(directory.resolve() != d.resolve() for d in dirs):
            dirs.append(directory)
    return dirs


def discover(*directories: Path) -> tuple[list[Scenario], list[BrokenScript]]:
    """Every :class:`Scenario` defined in ``DIR/*.py`` of each directory, in order; broken
    files apart. Two scenarios of one name are an error naming both files."""
    found: list[Scenario] = []
    broken: list[BrokenScript] = []
    for directory in directories:
        if not directory.is_dir():
            raise UsageError(f"scenario directory {directory} does not exist")
        _discover_in(directory, found, broken)
    seen: dict[str, Scenario] = {}
    for item in found:
        other = seen.setdefault(item.name, item)
        if other is not item:
            raise UsageError(f"two scenarios are named '{item.name}': {other.path} and {item.path}")
    return found, broken


def _discover_in(directory: Path, found: list[Scenario], broken: list[BrokenScript]) -> None:
    for path in sorted(directory.glob("*.py")):
        if path.name.startswith("_"):
            continue
        where = hashlib.sha1(str(path.parent.resolve()).encode()).hexdigest()[:8]
        module_name = f"edgesim_scenario_{where}_{path.stem.replace('-', '_')}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            broken.append(BrokenScript(path, "not a Python module"))
            continue
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # a user script: report, do not crash
            broken.append(BrokenScript(path, f"{type(exc).__name__}: {exc}"))
            continue
        scenarios = [v for v in vars(module).values() if isinstance(v, Scenario)]
        if not scenarios:
            broken.append(BrokenScript(path, "defines no @scenario"))
        for item in scenarios:
            found.append(
                Scenario(
                    item.name,
                    item.description,
                    item.rows,
                    item.func,
                    item.needs,
                    item.firewall,
                    item.timeout,
                    path,
                )
            )


def select(scenarios: list[Scenario], names: tuple[str, ...]) -> list[Scenario]:
    if not names:
        return scenarios
    known = {s.name: s for s in scenarios}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise EdgesimError(
            f"no scenario named '{unknown[0]}' (known: {', '.join(known) or 'none'})"
        )
    return [known[n] for n in names]


def missing_services(item: Scenario) -> list[str]:
    return [name for name in item.needs if load_service(name) is None]


def skip_reason(item: Scenario, runner: str) -> str | None:
    """Why ``item`` cannot run on the lab of runner ``runner`` (its name), or None."""
    missing = missing_services(item)
    if missing:
        why = ", ".join(f"{m} ({PLANNED.get(m, 'not registered')})" for m in missing)
        return f"needs services not available yet: {why}"
    if item.firewall and not runner_class(runner).has_firewalls:
        return "needs a lab with firewalls (--runner netns or compose)"
    return None


async def run_one(
    item: Scenario,
    topology: Topology,
    runner: str,
    pki: LabPki,
    *,
    namespaces: Mapping[str, str] | None = None,
) -> ScenarioResult:
    """Run one scenario against the lab of runner ``runner`` (its name), whose services use
    ``pki``; clients enter ``namespaces`` (see :class:`~simulator.lab.runners.base.Vantage`)."""
    why = skip_reason(item, runner)
    if why is not None:
        return ScenarioResult(item, "skipped", why)
    lab = Lab(topology, runner, pki, namespaces=dict(namespaces or {}))
    started = time.monotonic()
    with TraceRecorder() as rec:
        try:
            async with asyncio.timeout(item.timeout):
                await item.func(lab)
            status, reason = "passed", ""
        except ScenarioSkipped as exc:
            status, reason = "skipped", str(exc)
        except ScenarioFailure as exc:
            status, reason = "failed", str(exc)
        except AssertionError as exc:
            status, reason = "failed", str(exc) or "an assertion failed"
        except TimeoutError:
            status, reason = "failed", f"timed out after {item.timeout:.0f} s"
        except Exception as exc:  # a user script: report, do not crash
            log.exception("scenario %s raised", item.name)
            status, reason = "error", f"the script raised {type(exc).__name__}: {exc}"
    return ScenarioResult(
        item,
        status,
        reason,
        lab.current_step if status != "passed" else None,
        time.monotonic() - started,
        rec.events,
    )


async def run_all(
    scenarios: list[Scenario],
    topology: Topology,
    runner: str,
    pki: LabPki,
    *,
    namespaces: Mapping[str, str] | None = None,
    trace_file: Path | None = None,
    firewalls: Runner | None = None,
    capture: Callable[[Path], AbstractAsyncContextManager[CaptureResult]] | None = None,
    pcap_dir: Path | None = None,
    on_done: Callable[[ScenarioResult], None] | None = None,
) -> list[ScenarioResult]:
    """Run scenarios one after the other (they share the lab's users and listeners).

    ``trace_file``: the file the lab's own processes append their trace to
    (``EDGESIM_TRACE_FILE``); the servers' side of each message joins each result.
    ``firewalls``: the lab whose firewalls to trace while each scenario runs (the flows of its
    matrix rows); a message that got no answer then says which firewall stopped it, by which
    rule.
    ``capture`` with ``pcap_dir``: each scenario that runs is captured to
    ``pcap_dir/<name>.pcapng`` (the runner's :meth:`~simulator.lab.runners.base.Runner.capture`).
    """
    results = []
    for item in scenarios:
        started = time.time()
        out = None
        if capture is not None and pcap_dir is not None and skip_reason(item, runner) is None:
            out = pcap_dir / f"{item.name}.pcapng"
        async with _traced(firewalls, item, topology) as lab_trace:
            if out is not None and capture is not None:
                async with capture(out) as captured:
                    result = await run_one(item, topology, runner, pki, namespaces=namespaces)
                result.capture = captured
            else:
                result = await run_one(item, topology, runner, pki, namespaces=namespaces)
        if trace_file is not None:
            merge_trace_file(result, trace_file, started, time.time())
        result.events = [blocked_where(e, lab_trace) for e in result.events]
        results.append(result)
        if on_done is not None:
            on_done(result)
    return results


def _traced(
    runner: Runner | None, item: Scenario, topology: Topology
) -> contextlib.AbstractAsyncContextManager[LabTrace]:
    if runner is None or not runner.has_firewalls:
        return contextlib.nullcontext(LabTrace())
    matrix = load_matrix()
    known = {row.id for row in matrix.rows}
    flows = [f for row in item.rows if row in known for f in row_flows(matrix.row(row), topology)]
    return traced(runner, flows)


def blocked_where(event: TraceEvent, lab_trace: LabTrace) -> TraceEvent:
    """A message that got no answer, with the firewall and the rule that stopped it (when a
    traced firewall did)."""
    if event.event not in ("dropped", "refused") or not lab_trace.available:
        return event
    src, dst = event.src.rpartition(":"), event.dst.rpartition(":")
    dst_ip, dport = (dst[0], int(dst[2])) if dst[0] and dst[2].isdigit() else (event.dst, None)
    src_ip = src[0] if src[0] and src[2].isdigit() else event.src
    stopped = lab_trace.stopped(src_ip, dst_ip, dport)
    if stopped is None:
        return event
    return replace(event, blocked_at=stopped.firewall, blocked_by=stopped.where)


async def run_on(
    runner: Runner,
    scenarios: list[Scenario],
    *,
    trace_file: Path | None = None,
    pcap_dir: Path | None = None,
    on_done: Callable[[ScenarioResult], None] | None = None,
) -> list[ScenarioResult]:
    """``edgesim scenario run``: the scenarios against ``runner``'s lab.

    A lab that outlives its command (netns, compose) must be up; one that lives in a process
    (the embedded lab) is started for the run and stopped after it (or joined, when another
    process runs it). ``pcap_dir``: one capture per scenario there.
    """
    if not runner.persistent:
        await runner.up()
    try:
        runner.require_up()
        vantage = await runner.vantage()
        return await run_all(
            scenarios, runner.config.topology, vantage.runner, vantage.pki,
            namespaces=vantage.namespaces, trace_file=trace_file, firewalls=runner,
            capture=runner.capture if pcap_dir is not None else None, pcap_dir=pcap_dir,
            on_done=on_done,
        )  # fmt: skip
    finally:
        if not runner.persistent:
            await runner.down()


def merge_trace_file(result: ScenarioResult, path: Path, start: float, end: float) -> None:
    """Add what the lab's own processes recorded in ``path`` between ``start`` and ``end``
    (the servers' side of each message) to ``result``; events already there are kept once."""
    rec = TraceRecorder()
    rec.extend_from_files([path], since=start)
    known = set(result.events)
    extra = [e for e in rec.events if e.time <= end and e not in known]
    result.events = sorted([*result.events, *extra], key=lambda e: e.time)
