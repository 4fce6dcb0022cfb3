"""``edgesim firewall diff``: where a user's rules and the rendered ones decide differently.

Both rule sets are audited at once, each in a sandbox of its own (:func:`~simulator.firewall.
audit.audit`): the rendered side gets the rules ``edgesim firewall render`` writes for every
firewall, the user's side the given files (the topology's files for the other firewalls). The
two audits send the same flows; a row differs when one of its flows met a different fate (let
through, request or reply dropped) on the two sides, and each side's deciding rule is named. An
opening (a flow no row explains) differs when one side lets it through.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simulator.firewall.audit import DEFAULT_TIMEOUT, AuditReport, FlowResult, audit, row_heading
from simulator.firewall.render import render_all
from simulator.firewall.trace import Decision, distinct
from simulator.lab.topology import Topology
from simulator.matrix.model import Matrix, MatrixRow, load_matrix
from simulator.records import Record


def _key(result: FlowResult) -> tuple[object, ...]:
    f = result.flow
    return (f.row, f.source, f.destination, f.transport, f.dport, f.sport)


@dataclass
class FlowDifference(Record):
    rendered: FlowResult
    yours: FlowResult


@dataclass
class RowDifference:
    row: MatrixRow
    rendered: str
    """What the rendered rules did with the row: ``allowed``, ``blocked`` ..."""
    yours: str
    flows: list[FlowDifference]

    @property
    def rendered_by(self) -> list[Decision]:
        return distinct(d for f in self.flows for d in f.rendered.deciding)

    @property
    def yours_by(self) -> list[Decision]:
        return distinct(d for f in self.flows for d in f.yours.deciding)

    def to_dict(self) -> dict[str, Any]:
        return {
            **row_heading(self.row),
            "rendered": self.rendered,
            "yours": self.yours,
            "rendered_by": [d.to_dict() for d in self.rendered_by],
            "yours_by": [d.to_dict() for d in self.yours_by],
            "flows": [f.to_dict() for f in self.flows],
        }


@dataclass
class DiffReport:
    rendered: AuditReport
    yours: AuditReport
    rows: list[RowDifference]
    openings: list[FlowDifference]
    """Flows no row explains that one side lets through and the other does not."""
    duration: float

    @property
    def same(self) -> bool:
        return not self.rows and not self.openings

    def to_dict(self) -> dict[str, Any]:
        return {
            "rules": {fw: str(p) for fw, p in self.yours.rules.items()},
            "rendered_rules": {fw: Path(p).name for fw, p in self.rendered.rules.items()},
            "same": self.same,
            "duration": round(self.duration, 3),
            "rows": [r.to_dict() for r in self.rows],
            "openings": [o.to_dict() for o in self.openings],
        }


def compare(
    rendered: AuditReport, yours: AuditReport
) -> tuple[list[RowDifference], list[FlowDifference]]:
    """The rows and openings whose flows met different fates in the two audits."""
    theirs = {_key(f): f for r in yours.rows for f in r.flows}
    rows: list[RowDifference] = []
    by_id = {r.row.id: r for r in yours.rows}
    for row in rendered.rows:
        other = by_id.get(row.row.id)
        if other is None:
            continue
        flows = [
            FlowDifference(f, theirs[_key(f)])
            for f in row.flows
            if _key(f) in theirs and theirs[_key(f)].status != f.status
        ]
        if flows or other.got != row.got:
            rows.append(RowDifference(row.row, row.got, other.got, flows))
    probed = {_key(f): f for f in yours.probed}
    openings = [
        FlowDifference(f, probed[_key(f)])
        for f in rendered.probed
        if _key(f) in probed and f.request_through != probed[_key(f)].request_through
    ]
    return rows, openings


async def diff(
    topology: Topology,
    rules: dict[str, Path],
    *,
    matrix: Matrix | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> DiffReport:
    """Audit the rendered rules and ``rules`` side by side (see the module docstring)."""
    matrix = matrix or load_matrix()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgesim-diff-") as scratch:
        rendered_files: dict[str, Path] = {}
        files = render_all(topology, Path(scratch), matrix)
        for fw in topology.firewalls:
            path = Path(scratch) / Path(fw.rules).name
            path.write_text(files[path])
            rendered_files[fw.id] = path
        ours, yours = await asyncio.gather(
            audit(topology, rendered_files, matrix=matrix, timeout=timeout, tag="r"),
            audit(topology, rules, matrix=matrix, timeout=timeout, tag="u"),
        )
    rows, openings = compare(ours, yours)
    return DiffReport(ours, yours, rows, openings, time.perf_counter() - started)
