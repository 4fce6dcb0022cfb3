"""The defect corpus (corpus/defects.toml) and how a verdict is compared with it."""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from simulator.firewall.rules import RuleRef
from simulator.firewall.trace import Decision, first_fates

CORPUS = Path(__file__).resolve().parent / "corpus"


@dataclass(frozen=True)
class Clean:
    name: str
    rules: dict[str, Path]


@dataclass(frozen=True)
class Defect:
    file: Path
    firewall: str
    broken: dict[str, str]
    openings: frozenset[str] = frozenset()
    openings_by: str = ""
    id: str = field(default="")


def load_corpus() -> tuple[list[Clean], list[Defect]]:
    data = tomllib.loads((CORPUS / "defects.toml").read_text())
    clean = [
        Clean(c["name"], {fw: (CORPUS / p).resolve() for fw, p in c["rules"].items()})
        for c in data["clean"]
    ]
    defects = [
        Defect(
            (CORPUS / d["file"]).resolve(),
            d["firewall"],
            dict(d["broken"]),
            frozenset(d.get("openings", ())),
            d.get("openings_by", ""),
            Path(d["file"]).stem,
        )
        for d in data["defect"]
    ]
    return clean, defects


def summary(direction: str, action: str, rule: RuleRef | None, policy: bool) -> str:
    """``request dropped by policy`` or ``request accepted by rule: <comment or text>``."""
    if rule is not None:
        return f"{direction} {action} by rule: {rule.comment or rule.text}"
    return f"{direction} {action} by {'policy' if policy else 'nothing'}"


def line_of(path: Path, needle: str) -> int:
    """The line of ``path`` where the rule with this comment (or text) is written."""
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if f'"{needle}"' in line or line.strip() == needle:
            return number
    raise AssertionError(f"{needle!r} is not in {path}")


def check_rule(rule: RuleRef | None, expectation: str, path: Path) -> None:
    """A decision said to be by a rule names the file and the line the rule is written on."""
    if " by rule: " not in expectation:
        return
    assert rule is not None and rule.file is not None, expectation
    assert Path(rule.file) == path, (rule.file, path)
    assert rule.line == line_of(path, expectation.split(" by rule: ", 1)[1]), rule


def probe_fate(decisions: Sequence[Decision]) -> Decision | None:
    """What decided a probed row, as the corpus names it: the first packet a firewall stopped
    (request first, then reply), else the firewall that let the request through."""
    request, reply = first_fates(decisions, "request"), first_fates(decisions, "reply")
    for d in [*request, *reply]:
        if not d.crossed:
            return d
    return request[0] if request else None
