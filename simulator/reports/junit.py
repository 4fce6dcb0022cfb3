"""``--junit FILE``: JUnit XML, one test suite per seed table, one test case per row."""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET

from simulator.firewall.trace import first_fates
from simulator.probes.base import Verdict
from simulator.probes.run import ProbeRun


def to_junit(run: ProbeRun) -> str:
    by_row = {r.row_id: r for r in run.results}
    suites = ET.Element(
        "testsuites",
        name=f"edgesim probe ({run.topology.name})",
        tests=str(len(run.results)),
        failures=str(len(run.failures)),
        time=f"{run.duration:.3f}",
    )
    stamp = dt.datetime.fromtimestamp(run.started, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    for seed_id, rows in run.matrix.by_seed().items():
        results = [by_row[r.id] for r in rows if r.id in by_row]
        if not results:
            continue
        failed = [r for r in results if not r.met and r.verdict is not Verdict.SKIPPED]
        skipped = [r for r in results if r.verdict is Verdict.SKIPPED]
        suite = ET.SubElement(
            suites,
            "testsuite",
            name=run.matrix.seeds[seed_id].title,
            tests=str(len(results)),
            failures=str(len(failed)),
            skipped=str(len(skipped)),
            errors="0",
            timestamp=stamp,
            time=f"{sum(sum(r.timings.values()) for r in results):.3f}",
        )
        for row in rows:
            result = by_row.get(row.id)
            if result is None:
                continue
            case = ET.SubElement(
                suite,
                "testcase",
                classname=f"edgesim.matrix.{seed_id}",
                name=f"{row.id} {row.label}",
                time=f"{sum(result.timings.values()):.3f}",
            )
            if result.verdict is Verdict.SKIPPED:
                ET.SubElement(case, "skipped", message=result.reason)
            elif not result.met:
                failure = ET.SubElement(
                    case,
                    "failure",
                    type=result.verdict.value,
                    message=(
                        f"expected {row.expect.value}, got {result.verdict.title}: {result.reason}"
                    ),
                )
                failure.text = (
                    f"row {row.id}: {row.label}\nfrom {result.source}\nto {result.destination}\n"
                    f"verdict {result.verdict.value}: {result.reason}\n"
                    + "".join(f"{d.describe()}\n" for d in result.firewall)
                )
            out = ET.SubElement(case, "system-out")
            out.text = (
                f"{result.verdict.value}: {result.reason}\n{result.source} -> {result.destination}"
                + "".join(f"\n{d.describe()}" for d in result.firewall)
            )
            if result.firewall:
                props = ET.SubElement(case, "properties")
                for n, d in enumerate(first_fates(result.firewall, "request")):
                    where = d.rule.where if d.rule else d.by
                    ET.SubElement(
                        props,
                        "property",
                        name=f"firewall.{n}",
                        value=f"{d.firewall} {d.action}: {where}",
                    )
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"
