"""Loading a user's rule file into a firewall, and naming the kernel's rules by file and line.

A firewall is reached through an argv prefix that runs a command in its network namespace
(``ip netns exec es-fw-external``, ``docker compose exec -T fw-external``): a
:class:`FirewallNode`. :func:`load_rules` puts a rule file there as its owner wrote it:

* nftables: ``nft -c`` checks the file first; a file nft refuses raises :class:`RulesRefused`
  with nft's own message (file, line, column) and nothing changes. Then one ``nft -f``
  transaction deletes the tables loaded before and loads the file, so the firewall never holds
  both rule sets, nor none. Relative ``include``s are searched in the directories of the
  including files (``nft -I``).
* ``iptables-save`` files: ``iptables-restore --test`` first, then the previous tables go (while
  a drop-everything forward chain holds the gap closed) and ``iptables-restore`` loads the file
  on the nft backend, so the kernel holds nftables rules the trace can name.

Tables whose name starts with ``edgesim-`` belong to edgesim (trace sessions) and are left alone.

:func:`build_index` then maps each kernel rule handle to a :class:`RuleRef`: the file and line it
was written on, the text as written and its comment (the rendered rules' comment is the matrix
row they were rendered for). The map comes from the order of rules per chain, which the kernel
lists and the file tells (:mod:`simulator.firewall.source`); a chain where the two disagree (the
file was edited after loading, say) keeps the kernel's text and gets no line, never a wrong one.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulator.errors import EdgesimError, LabError
from simulator.firewall.source import VERDICTS, RuleSource, SourceRule, read_source
from simulator.records import Record

OURS = "edgesim-"
"""Name prefix of the tables edgesim adds to a firewall (never part of a user's rules)."""
HOLD_TABLE = "edgesim-hold"
COMMAND_TIMEOUT = 20.0


class RulesRefused(EdgesimError):
    """nft or iptables-restore refused a rule file; the previous rules stay loaded."""

    exit_code = 1


@dataclass(frozen=True)
class FirewallNode:
    """A firewall edgesim can run commands in."""

    id: str
    argv: tuple[str, ...]
    """Prefix that runs a command in the firewall's network namespace."""

    def run(
        self, args: Sequence[str], *, stdin: str | None = None, timeout: float = COMMAND_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        cmd = [*self.argv, *args]
        try:
            return subprocess.run(
                cmd, input=stdin, capture_output=True, text=True, timeout=timeout, check=False
            )
        except FileNotFoundError:
            raise LabError(f"{self.id}: `{cmd[0]}` is not installed") from None
        except subprocess.TimeoutExpired:
            raise LabError(
                f"{self.id}: `{' '.join(args)}` did not finish in {timeout:g} s"
            ) from None

    def nft(self, args: Sequence[str], *, stdin: str | None = None) -> str:
        """``nft ARGS`` in the firewall; a failure is a :class:`LabError` with nft's message."""
        done = self.run(["nft", *args], stdin=stdin)
        if done.returncode != 0:
            message = " ".join(done.stderr.split()) or f"exit {done.returncode}"
            raise LabError(f"{self.id}: nft {' '.join(args[:3])}: {message}")
        return done.stdout


# ------------------------------------------------------------------ the kernel's view


@dataclass(frozen=True)
class KernelRule:
    handle: int
    comment: str | None
    verdicts: frozenset[str]


@dataclass(frozen=True)
class KernelChain:
    family: str
    table: str
    name: str
    hook: str | None
    """``prerouting``, ``forward`` ... for a base chain; None for a chain reached by jump."""
    policy: str | None
    rules: tuple[KernelRule, ...]


def _verdicts_in(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key in VERDICTS:
                found.add(key)
            elif key == "xt" and isinstance(value, dict) and value.get("type") == "target":
                # iptables-nft keeps some targets as xtables extensions (REJECT)
                name = str(value.get("name", "")).lower()
                if name in VERDICTS:
                    found.add(name)
            found |= _verdicts_in(value)
    elif isinstance(node, list):
        for item in node:
            found |= _verdicts_in(item)
    return found


def parse_listing(text: str) -> dict[tuple[str, str, str], KernelChain]:
    """``nft -a -j list ruleset`` -> every chain with its rules in kernel order."""
    items = json.loads(text).get("nftables", [])
    chains: dict[tuple[str, str, str], dict[str, Any]] = {}
    rules: dict[tuple[str, str, str], list[KernelRule]] = {}
    for item in items:
        if "chain" in item:
            c = item["chain"]
            chains[(c["family"], c["table"], c["name"])] = c
        elif "rule" in item:
            r = item["rule"]
            key = (r["family"], r["table"], r["chain"])
            rules.setdefault(key, []).append(
                KernelRule(int(r["handle"]), r.get("comment"), frozenset(_verdicts_in(r["expr"])))
            )
    return {
        key: KernelChain(
            *key,
            hook=c.get("hook"),
            policy=c.get("policy"),
            rules=tuple(rules.get(key, ())),
        )
        for key, c in chains.items()
    }


def tables(node: FirewallNode) -> list[tuple[str, str]]:
    items = json.loads(node.nft(["-j", "list", "tables"]) or "{}").get("nftables", [])
    return [(t["table"]["family"], t["table"]["name"]) for t in items if "table" in t]


def is_ours(table: str) -> bool:
    return table.startswith(OURS)


# ------------------------------------------------------------------ the index


@dataclass(frozen=True)
class RuleRef(Record):
    """A rule of a firewall, as its owner wrote it (JSON: :mod:`simulator.records`)."""

    firewall: str
    family: str
    table: str
    chain: str
    handle: int
    text: str
    """As written in the file; else as the kernel lists it."""
    file: str | None = None
    line: int | None = None
    comment: str | None = None

    @property
    def where(self) -> str:
        """``external.nft:34`` or, without a line, ``inet edgesim forward #12``."""
        if self.file and self.line:
            return f"{Path(self.file).name}:{self.line}"
        return f"{self.family} {self.table} {self.chain} #{self.handle}"


@dataclass
class RuleIndex:
    """Kernel rule handles of one firewall -> where the rules are written."""

    firewall: str
    source: RuleSource | None
    chains: dict[tuple[str, str, str], KernelChain]
    rules: dict[tuple[str, str, int], RuleRef] = field(default_factory=dict)
    """(family, table, handle) -> the rule."""
    unmapped: list[str] = field(default_factory=list)
    """Why some chains' rules have no line (one sentence each)."""
    policies: dict[tuple[str, str, str], RuleRef] = field(default_factory=dict)
    """(family, table, chain) -> where its policy is written."""

    def rule(self, family: str, table: str, chain: str, handle: int, listed: str = "") -> RuleRef:
        """The rule with ``handle``; one the file does not explain keeps the kernel's text."""
        ref = self.rules.get((family, table, handle))
        if ref is not None:
            return ref
        return RuleRef(self.firewall, family, table, chain, handle, listed or f"handle {handle}")

    def hook_of(self, family: str, table: str, chain: str) -> str | None:
        c = self.chains.get((family, table, chain))
        return c.hook if c else None

    def policy_of(self, family: str, table: str, chain: str) -> str | None:
        c = self.chains.get((family, table, chain))
        return c.policy if c else None


def _same_rule(written: SourceRule, kernel: KernelRule) -> bool:
    if written.verdicts is not None and written.verdicts != kernel.verdicts:
        return False
    return not (written.comment and kernel.comment and written.comment != kernel.comment)


def build_index(
    firewall: str, source: RuleSource | None, chains: dict[tuple[str, str, str], KernelChain]
) -> RuleIndex:
    """Map every kernel rule of the file's chains to its line (see the module docstring)."""
    index = RuleIndex(firewall, source, chains)
    if source is None:
        return index
    for key, policy in source.policies.items():
        base = chains.get(key)
        if base is not None and base.policy and policy.verdicts == frozenset({base.policy}):
            index.policies[key] = RuleRef(
                firewall, *key, 0, policy.text, str(policy.file), policy.line
            )
    for key, written in source.chains.items():
        family, table, chain = key
        label = f"{family} {table} {chain}"
        kernel = chains.get(key)
        if kernel is None:
            if written:
                index.unmapped.append(f"{label}: not in the kernel (was the file loaded?)")
            continue
        if key in source.unordered:
            index.unmapped.append(f"{label}: the file positions rules explicitly")
            continue
        if len(written) != len(kernel.rules) or not all(
            _same_rule(w, k) for w, k in zip(written, kernel.rules, strict=True)
        ):
            index.unmapped.append(
                f"{label}: the kernel's {len(kernel.rules)} rules do not match the file's "
                f"{len(written)} (edited since it was loaded?)"
            )
            continue
        for w, k in zip(written, kernel.rules, strict=True):
            index.rules[(family, table, k.handle)] = RuleRef(
                firewall, family, table, chain, k.handle, w.text, str(w.file), w.line, w.comment
            )
    return index


def current_index(node: FirewallNode, path: Path | str | None) -> RuleIndex:
    """The index of what ``node`` holds now, lines taken from ``path`` (the file it loaded)."""
    chains = parse_listing(node.nft(["-a", "-j", "list", "ruleset"]))
    source = read_source(path) if path is not None else None
    return build_index(node.id, source, chains)


# ------------------------------------------------------------------ loading


_NFT_LOCATION = re.compile(r"^(?P<file>[^\s:][^:]*):(?P<line>\d+):(?P<cols>[\d-]+): (?P<msg>.*)$")
_IPT_LINE = re.compile(r"(?:Error occurred at line: |at line:? )(?P<line>\d+)")


def _nft_message(stderr: str, fallback: str) -> str:
    """nft's errors, one ``file:line:cols: Error: ...`` each (without our wrapper's lines)."""
    errors = [
        line.strip()
        for line in stderr.splitlines()
        if _NFT_LOCATION.match(line.strip()) and not line.startswith(("/dev/stdin", "-:"))
    ]
    if not errors:
        errors = [" ".join(stderr.split())] if stderr.strip() else [fallback]
    return "; ".join(dict.fromkeys(errors))


def _iptables_message(stderr: str, path: Path) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    line_no = next((m.group("line") for m in map(_IPT_LINE.search, lines) if m), None)
    detail = [
        re.sub(r"^iptables-restore( v[\d.]+ \(nf_tables\))?: ", "", line)
        for line in lines
        if not _IPT_LINE.search(line) and not line.startswith("Try `")
    ]
    where = f"{path}:{line_no}" if line_no else str(path)
    return f"{where}: iptables-restore: {'; '.join(detail) or 'refused the file'}"


def _quote_path(path: Path) -> str:
    text = str(path)
    if '"' in text or "\n" in text:
        raise RulesRefused(f"{path}: a rule file name with a double quote cannot be included")
    return f'"{text}"'


def load_rules(node: FirewallNode, path: Path | str) -> RuleIndex:
    """Check, then load ``path`` into ``node`` in place of its previous rules; the index."""
    source = read_source(path)
    previous = [(f, t) for f, t in tables(node) if not is_ours(t)]
    if source.format == "iptables":
        _load_iptables(node, source, previous)
    else:
        _load_nft(node, source, previous)
    return build_index(node.id, source, parse_listing(node.nft(["-a", "-j", "list", "ruleset"])))


def _load_nft(node: FirewallNode, source: RuleSource, previous: Iterable[tuple[str, str]]) -> None:
    script = "".join(f"delete table {family} {name}\n" for family, name in previous)
    script += f"include {_quote_path(source.path)}\n"
    includes = [arg for d in source.include_dirs for arg in ("-I", str(d))]
    for check in (True, False):
        args = ["nft", *(["-c"] if check else []), *includes, "-f", "-"]
        done = node.run(args, stdin=script)
        if done.returncode != 0:
            message = _nft_message(done.stderr, f"nft exited {done.returncode}")
            raise RulesRefused(f"{node.id}: nft refused the rules (nothing changed): {message}")


def _load_iptables(
    node: FirewallNode, source: RuleSource, previous: Iterable[tuple[str, str]]
) -> None:
    text = source.path.read_text("utf-8")
    done = node.run(["iptables-restore", "-w", "5", "--test"], stdin=text)
    if done.returncode != 0:
        message = _iptables_message(done.stderr, source.path)
        raise RulesRefused(f"{node.id}: the rules were refused (nothing changed): {message}")
    # Close the gap: forwarding stops while the previous tables go and the file is restored.
    hold = (
        f"table inet {HOLD_TABLE} {{\n chain forward {{\n"
        "  type filter hook forward priority -1000; policy drop;\n }\n}\n"
    )
    hold += "".join(f"delete table {family} {name}\n" for family, name in previous)
    node.nft(["-f", "-"], stdin=hold)
    done = node.run(["iptables-restore", "-w", "5"], stdin=text)
    if done.returncode != 0:
        message = _iptables_message(done.stderr, source.path)
        raise RulesRefused(
            f"{node.id}: iptables-restore failed after its check; the firewall forwards nothing "
            f"until rules load: {message}"
        )
    node.nft(["delete", "table", "inet", HOLD_TABLE])
