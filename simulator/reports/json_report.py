"""``--format json``: the run and one entry per row (the netns/compose runners parse this)."""

from __future__ import annotations

import json
from typing import Any

from simulator.probes.run import ProbeRun


def to_dict(run: ProbeRun) -> dict[str, Any]:
    rows = {r.id: r for r in run.matrix.rows}
    results = []
    for result in run.results:
        entry = result.to_dict()
        if result.row_id in rows:
            entry["row_info"] = rows[result.row_id].to_dict()
        results.append(entry)
    return {
        "topology": run.topology.name,
        "runner": run.runner,
        "target": run.target,
        "started": run.started,
        "duration": round(run.duration, 4),
        "counts": run.counts,
        "failures": [r.row_id for r in run.failures],
        "ok": not run.failures,
        "notes": run.notes,
        "results": results,
    }


def to_json(run: ProbeRun) -> str:
    return json.dumps(to_dict(run), indent=2, default=str)
