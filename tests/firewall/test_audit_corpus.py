"""`edgesim firewall audit` finds every mistake of the defect corpus exactly: the broken rows
and no others, each with the deciding rule (file and line) or the chain's policy, and the
openings no row explains. Clean rule files (rendered, hand-written nftables, iptables-save)
audit clean. Needs root: the audit builds network namespaces (run with tpytest --lab)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from click import Group
from click.testing import CliRunner

from simulator.cli._common import Obj
from simulator.cli.firewall import firewall
from simulator.firewall.audit import AuditReport, audit
from simulator.firewall.diff import diff
from simulator.firewall.sandbox import requirements_problem
from simulator.lab.topology import Topology
from tests.firewall.corpus_helpers import CORPUS, Clean, Defect, check_rule, load_corpus, summary

pytestmark = pytest.mark.root

CLEAN, DEFECTS = load_corpus()


@pytest.fixture(autouse=True)
def _needs_root() -> None:
    problem = requirements_problem()
    if problem:
        pytest.skip(problem)


def run(topology: Topology, rules: dict[str, Path]) -> AuditReport:
    return asyncio.run(audit(topology, rules))


@pytest.mark.parametrize("clean", CLEAN, ids=lambda c: c.name)
def test_clean_rules_audit_clean(topology: Topology, clean: Clean) -> None:
    report = run(topology, clean.rules)
    failing = {r.row.id: [d.describe() for d in r.deciding] for r in report.failing}
    assert failing == {}
    assert [
        f"{o.flow.source} -> {o.flow.destination} {o.flow.label}" for o in report.openings
    ] == []
    assert report.problems == []
    # Every row that crosses a firewall was judged there, by a rule that has its line.
    for row in report.rows:
        assert row.got in ("allowed", "blocked"), row.row.id
        for decision in row.deciding:
            if decision.rule is not None:
                assert decision.rule.line is not None, decision


@pytest.mark.parametrize("defect", DEFECTS, ids=lambda d: d.id)
def test_defect_is_found_exactly(topology: Topology, defect: Defect) -> None:
    report = run(topology, {defect.firewall: defect.file})
    assert {r.row.id for r in report.failing} == set(defect.broken)
    for row in report.failing:
        expected = defect.broken[row.row.id]
        assert row.deciding, row.row.id
        for d in row.deciding:
            assert d.firewall == defect.firewall
            assert summary(d.direction, d.action, d.rule, d.policy) == expected, d.describe()
            check_rule(d.rule, expected, defect.file)
    openings = {
        f"{o.flow.source} -> {o.flow.destination} {o.flow.label.split()[0]}"
        for o in report.openings
    }
    assert openings == defect.openings
    for o in report.openings:
        (d,) = o.result.deciding
        assert summary(d.direction, d.action, d.rule, d.policy) == defect.openings_by
        check_rule(d.rule, defect.openings_by, defect.file)


def test_a_refused_file_changes_nothing_and_says_where(topology: Topology, tmp_path: Path) -> None:
    bad = tmp_path / "typo.nft"
    bad.write_text(
        "table inet edge {\n\tchain forward {\n\t\ttype filter hook forward priority 0;\n"
        "\t\ttcp dport 5061 acept\n\t}\n}\n"
    )
    group = Group(commands={"firewall": firewall})
    result = CliRunner().invoke(
        group,
        ["firewall", "audit", "--rules", f"fw-external={bad}"],
        obj=Obj(topology_path=None, _topology=topology),
    )
    assert result.exit_code == 1
    assert f"{bad}:4:" in str(result.exception) or f"{bad}:4:" in result.output


def test_cli_audit_json_names_the_rule(topology: Topology) -> None:
    defect = next(d for d in DEFECTS if d.id == "d06-plain-sip-open")
    group = Group(commands={"firewall": firewall})
    result = CliRunner().invoke(
        group,
        ["firewall", "audit", "--rules", f"fw-external={defect.file}", "--format", "json"],
        obj=Obj(topology_path=None, _topology=topology),
    )
    assert result.exit_code == 1, result.output
    data = json.loads(result.output)
    assert data["failing"] == ["neg-inet-sip-5060"]
    (row,) = [r for r in data["rows"] if r["row"] == "neg-inet-sip-5060"]
    (decision,) = row["deciding"]
    assert decision["action"] == "accepted" and decision["firewall"] == "fw-external"
    assert decision["rule"]["file"] == str(defect.file)
    assert decision["rule"]["comment"] == "SIP trunk (ITSP)"


def test_diff_names_both_sides(topology: Topology) -> None:
    defect = next(d for d in DEFECTS if d.id == "d01-no-outbound-federation")
    report = asyncio.run(diff(topology, {defect.firewall: defect.file}))
    extra = [f.to_dict() for d in report.rows if d.row.id not in defect.broken for f in d.flows]
    assert {d.row.id for d in report.rows} == set(defect.broken), (
        extra,
        report.rendered.problems,
        report.yours.problems,
    )
    for d in report.rows:
        assert (d.rendered, d.yours) == ("allowed", "blocked")
        # The rendered rules name the row they were rendered for (pic-out-5061's flow is
        # the same as one of sipfed-out-5061's, whose rule comes first).
        assert {x.rule.comment for x in d.rendered_by if x.rule} <= {d.row.id, "sipfed-out-5061"}
        assert all(x.rule is not None for x in d.rendered_by)
        assert [summary(x.direction, x.action, x.rule, x.policy) for x in d.yours_by] == [
            "request dropped by policy"
        ]
    assert report.openings == []
    same = asyncio.run(diff(topology, {"fw-external": CORPUS / "external-clean.nft"}))
    assert same.same, [r.row.id for r in same.rows]
