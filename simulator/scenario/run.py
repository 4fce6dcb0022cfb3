"""Find scenario scripts, run them against a lab, and report."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulator.errors import EdgesimError
from simulator.lab.runners import runner_class
from simulator.lab.runners.base import Runner
from simulator.lab.services import PLANNED, load_service
from simulator.lab.topology import Topology
from simulator.pki import LabPki
from simulator.scenario.api import Lab, Scenario, ScenarioFailure, ScenarioSkipped
from simulator.scenario.ladder import Ladder, build_ladder
from simulator.trace import HostMap, TraceEvent, TraceRecorder

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
        }


@dataclass(frozen=True)
class BrokenScript:
    path: Path
    reason: str


def discover(directory: Path) -> tuple[list[Scenario], list[BrokenScript]]:
    """Every :class:`Scenario` defined in ``directory/*.py``, in file order; broken files apart."""
    if not directory.is_dir():
        raise EdgesimError(f"scenario directory {directory} does not exist (use --dir)")
    found: list[Scenario] = []
    broken: list[BrokenScript] = []
    for path in sorted(directory.glob("*.py")):
        if path.name.startswith("_"):
            continue
        module_name = f"edgesim_scenario_{path.stem.replace('-', '_')}"
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
    names = [s.name for s in found]
    for name in names:
        if names.count(name) > 1:
            raise EdgesimError(f"two scenarios are named '{name}' in {directory}")
    return found, broken


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
    missing = missing_services(item)
    if missing:
        why = ", ".join(f"{m} ({PLANNED.get(m, 'not registered')})" for m in missing)
        return ScenarioResult(item, "skipped", f"needs services not available yet: {why}")
    if item.firewall and not runner_class(runner).has_firewalls:
        return ScenarioResult(
            item, "skipped", "needs a lab with firewalls (--runner netns or compose)"
        )
    lab = Lab(topology, runner, pki, namespaces=dict(namespaces or {}))
    started = time.monotonic()
    with TraceRecorder() as rec:
        try:
            async with asyncio.timeout(item.timeout):
                await item.func(lab)
            status, reason = "passed", ""
        except ScenarioFailure as exc:
            status, reason = "failed", str(exc)
        except ScenarioSkipped as exc:
            status, reason = "skipped", str(exc)
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
) -> list[ScenarioResult]:
    """Run scenarios one after the other (they share the lab's users and listeners).

    ``trace_file``: the file the lab's own processes append their trace to
    (``EDGESIM_TRACE_FILE``); the servers' side of each message joins each result.
    """
    results = []
    for item in scenarios:
        started = time.time()
        result = await run_one(item, topology, runner, pki, namespaces=namespaces)
        if trace_file is not None:
            merge_trace_file(result, trace_file, started, time.time())
        results.append(result)
    return results


async def run_on(
    runner: Runner, scenarios: list[Scenario], *, trace_file: Path | None = None
) -> list[ScenarioResult]:
    """``edgesim scenario run``: the scenarios against ``runner``'s lab.

    A lab that outlives its command (netns, compose) must be up; one that lives in a process
    (the embedded lab) is started for the run and stopped after it.
    """
    if not runner.persistent:
        await runner.up()
    try:
        runner.require_up()
        vantage = await runner.vantage()
        return await run_all(
            scenarios, runner.config.topology, vantage.runner, vantage.pki,
            namespaces=vantage.namespaces, trace_file=trace_file,
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


DEFAULT_DIR = Path("scenarios")


async def run_scenarios_cli(topology: Topology, runner: Runner, console: Any) -> int:
    """``edgesim run``'s scenario step: every scenario in ./scenarios against the running
    embedded lab."""
    from simulator.scenario.report import print_results

    if not DEFAULT_DIR.is_dir():
        console.print(f"no {DEFAULT_DIR}/ directory here: no scenarios to run")
        return 0
    scenarios, broken = discover(DEFAULT_DIR)
    for b in broken:
        console.print(f"[red]broken scenario script[/] {b.path}: {b.reason}", markup=True)
    vantage = await runner.vantage()
    results = await run_all(scenarios, topology, vantage.runner, vantage.pki)
    print_results(console, results, topology, vantage.runner, ladder=False)
    return sum(not r.ok for r in results) + len(broken)
