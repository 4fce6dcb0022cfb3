"""Where each rule of a rule file is written: file, line, text as written, comment.

A rule file is read as its owner wrote it, in one of two formats:

* nftables (``nft -f``): tables and chains with any names, ``ip``/``inet``/... families, rules in
  ``table { chain { ... } }`` blocks or as ``add rule`` / ``insert rule`` commands, ``define``,
  and ``include`` (searched in the directories of the files that include them, as
  :func:`include_dirs` tells ``nft -I``);
* ``iptables-save`` output (``*filter``, ``:FORWARD DROP [0:0]``, ``-A FORWARD ...``, ``COMMIT``),
  which ``iptables-restore`` on the nft backend loads into the kernel as nftables rules.

This module does not decide what a rule matches (the kernel does, and the trace says what it
decided); it only finds rule statements, in the order the kernel will hold them per chain, so
that a kernel rule handle can be named by its file and line. Only the block structure of nft's
grammar is followed (braces, strings, ``#`` comments, ``;`` and newlines, ``\\`` continuations).
A chain whose order cannot be told from the file (``add rule ... position``, ``replace rule``,
``delete rule``) is listed in :attr:`RuleSource.unordered`; its rules keep their text but get
no line.
"""

from __future__ import annotations

import glob
import itertools
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from simulator.errors import EdgesimError

FAMILIES = ("ip", "ip6", "inet", "arp", "bridge", "netdev")
VERDICTS = frozenset({"accept", "drop", "reject", "jump", "goto", "return", "queue"})
_OBJECTS = {"set", "map", "flowtable", "counter", "quota", "limit", "ct", "synproxy", "secmark"}
_CHAIN_PROPERTIES = {"type", "policy", "comment", "devices", "flags"}
MAX_INCLUDE_DEPTH = 16

#: iptables targets -> the nftables verdict the kernel holds for them.
_IPTABLES_VERDICTS = {"ACCEPT": "accept", "DROP": "drop", "REJECT": "reject", "RETURN": "return"}


class RuleFileError(EdgesimError):
    """A rule file cannot be read (missing, unreadable, an include that is not there)."""

    exit_code = 2


@dataclass(frozen=True)
class SourceRule:
    """One rule statement as written."""

    file: Path
    line: int
    """First line of the statement (1-based)."""
    text: str
    """The statement as written, continuation lines joined by single spaces."""
    family: str
    table: str
    chain: str
    comment: str | None = None
    """The rule's own comment (nft ``comment "..."``, iptables ``-m comment --comment``)."""
    verdicts: frozenset[str] | None = None
    """The verdicts the statement can give (``accept``, ``drop``, ``jump`` ...); None when the
    file does not say (an iptables target such as LOG)."""
    insert: bool = False
    """Placed at the head of its chain (``insert rule``, ``-I``) instead of appended."""

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class RuleSource:
    """A rule file and the rules it leaves in the kernel, per chain in chain order."""

    path: Path
    format: str
    """``nft`` or ``iptables``."""
    files: tuple[Path, ...]
    """The file and every file it includes."""
    chains: dict[tuple[str, str, str], tuple[SourceRule, ...]]
    """(family, table, chain) -> its rules in the order the kernel holds them."""
    tables: tuple[tuple[str, str], ...]
    """(family, table) the file creates or fills."""
    unordered: frozenset[tuple[str, str, str]] = frozenset()
    """Chains whose kernel order the file does not tell (their rules get no line)."""
    policies: dict[tuple[str, str, str], SourceRule] = field(default_factory=dict)
    """(family, table, chain) -> where its policy is written (``policy drop;``,
    ``:FORWARD DROP [0:0]``); :attr:`SourceRule.verdicts` holds the policy."""

    @property
    def include_dirs(self) -> tuple[Path, ...]:
        """Directories for ``nft -I``: the file's own, then each included file's, in order."""
        dirs: list[Path] = []
        for f in self.files:
            if f.parent not in dirs:
                dirs.append(f.parent)
        return tuple(dirs)

    def rules(self) -> Iterator[SourceRule]:
        for rules in self.chains.values():
            yield from rules


def detect_format(text: str) -> str:
    """``iptables`` when the first statement is an ``iptables-save`` table header (``*filter``)."""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        return "iptables" if stripped.startswith("*") else "nft"
    return "nft"


def read_source(path: Path | str) -> RuleSource:
    """Read a rule file (and its includes) and find every rule statement in it."""
    path = Path(path).absolute()
    text = _read(path, None)
    if detect_format(text) == "iptables":
        return _IptablesReader(path).read(text)
    return _NftReader(path).read(text)


def _read(path: Path, included_from: str | None) -> str:
    try:
        return path.read_text("utf-8")
    except FileNotFoundError:
        where = f" (included from {included_from})" if included_from else ""
        raise RuleFileError(f"{path}: no such rule file{where}") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise RuleFileError(f"{path}: cannot read the rule file: {reason}") from None


# ------------------------------------------------------------------ nftables

_TOKEN = re.compile(
    r"""
    (?P<ws>[ \t\r\f]+)
  | (?P<cont>\\\r?\n)
  | (?P<nl>\n)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"[^"\n]*"?)
  | (?P<lbrace>\{)
  | (?P<rbrace>\})
  | (?P<semi>;)
  | (?P<word>[^\s{};"#\\]+|\\)
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str
    start: int
    end: int
    line: int


def _tokens(text: str) -> Iterator[_Tok]:
    line = 1
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup or "word"
        yield _Tok(kind, m.group(), m.start(), m.end(), line)
        line += m.group().count("\n")


@dataclass
class _Ctx:
    kind: str
    """``top``, ``table``, ``chain`` or ``object``."""
    family: str = "ip"
    table: str = ""
    chain: str = ""


@dataclass
class _NftReader:
    path: Path
    files: list[Path] = field(default_factory=list)
    stack: list[_Ctx] = field(default_factory=lambda: [_Ctx("top")])
    order: dict[tuple[str, str, str], list[SourceRule]] = field(default_factory=dict)
    tables: list[tuple[str, str]] = field(default_factory=list)
    unordered: set[tuple[str, str, str]] = field(default_factory=set)
    policies: dict[tuple[str, str, str], SourceRule] = field(default_factory=dict)

    def read(self, text: str) -> RuleSource:
        self._feed(self.path, text, 0)
        return RuleSource(
            self.path,
            "nft",
            tuple(self.files),
            {k: tuple(v) for k, v in self.order.items()},
            tuple(self.tables),
            frozenset(self.unordered),
            dict(self.policies),
        )

    # -------------------------------------------------------------- structure
    def _feed(self, path: Path, text: str, depth: int) -> None:
        if path not in self.files:
            self.files.append(path)
        stmt: list[_Tok] = []
        anon = 0
        for tok in _tokens(text):
            if tok.kind in ("ws", "cont", "comment"):
                continue
            if tok.kind == "lbrace":
                if anon == 0 and self._open_block(stmt):
                    stmt = []
                else:
                    anon += 1
                    stmt.append(tok)
                continue
            if tok.kind == "rbrace":
                if anon > 0:
                    anon -= 1
                    stmt.append(tok)
                    continue
                self._finish(path, text, stmt, depth)
                stmt = []
                if len(self.stack) > 1:
                    self.stack.pop()
                continue
            if tok.kind in ("nl", "semi"):
                if anon == 0:
                    self._finish(path, text, stmt, depth)
                    stmt = []
                continue
            stmt.append(tok)
        self._finish(path, text, stmt, depth)

    def _open_block(self, stmt: list[_Tok]) -> bool:
        """Push the block ``stmt {`` opens; False for an anonymous set or map."""
        ctx = self.stack[-1]
        words = [t.text for t in stmt if t.kind == "word"]
        if words and words[0] in ("add", "create"):
            words = words[1:]
        if not words:
            return False
        head = words[0]
        if ctx.kind == "top" and head == "table":
            family, name = _family_and(words[1:], 1)
            table = name[0] if name else ""
            self.stack.append(_Ctx("table", family, table))
            if (family, table) not in self.tables:
                self.tables.append((family, table))
            return True
        if ctx.kind == "top" and head == "chain":
            family, names = _family_and(words[1:], 2)
            if len(names) == 2:
                self.stack.append(_Ctx("chain", family, names[0], names[1]))
                return True
            return False
        if ctx.kind == "table" and head == "chain" and len(words) >= 2:
            self.stack.append(_Ctx("chain", ctx.family, ctx.table, words[1]))
            return True
        if ctx.kind in ("top", "table") and head in _OBJECTS:
            self.stack.append(_Ctx("object", ctx.family, ctx.table))
            return True
        return False

    def _finish(self, path: Path, text: str, stmt: list[_Tok], depth: int) -> None:
        if not stmt:
            return
        ctx = self.stack[-1]
        words = [t.text for t in stmt if t.kind == "word"]
        if not words:
            return
        if words[0] == "include":
            strings = [t.text.strip('"') for t in stmt if t.kind == "string"]
            if strings:
                self._include(path, stmt[0].line, strings[0], depth)
            return
        if ctx.kind == "chain":
            if words[0] == "policy" and len(words) > 1:
                key = (ctx.family, ctx.table, ctx.chain)
                written = " ".join(text[stmt[0].start : stmt[-1].end].split())
                self.policies[key] = SourceRule(
                    path, stmt[0].line, written, *key, verdicts=frozenset({words[1]})
                )
            elif words[0] not in _CHAIN_PROPERTIES:
                self._rule(path, text, stmt, ctx.family, ctx.table, ctx.chain, insert=False)
            return
        if ctx.kind != "top":
            return
        self._command(path, text, stmt, words)

    def _command(self, path: Path, text: str, stmt: list[_Tok], words: list[str]) -> None:
        verb = words[0]
        rest = words[1:]
        if verb in ("add", "insert", "replace", "create", "delete", "destroy", "flush"):
            obj = rest[0] if rest else ""
            rest = rest[1:]
        elif verb in ("rule", "table", "chain"):
            verb, obj = "add", verb
        else:
            return
        if obj == "ruleset" and verb == "flush":
            self.order.clear()
            return
        if obj == "table" and verb in ("delete", "destroy", "flush"):
            family, names = _family_and(rest, 1)
            for key in [k for k in self.order if k[:2] == (family, *names[:1])]:
                del self.order[key]
            return
        if obj == "table" and verb in ("add", "create"):
            family, names = _family_and(rest, 1)
            if names and (family, names[0]) not in self.tables:
                self.tables.append((family, names[0]))
            return
        if obj == "chain" and verb in ("delete", "destroy", "flush"):
            family, names = _family_and(rest, 2)
            if len(names) == 2:
                self.order.pop((family, names[0], names[1]), None)
            return
        if obj != "rule":
            return
        family, names = _family_and(rest, 2)
        if len(names) != 2:
            return
        key = (family, names[0], names[1])
        after = rest[rest.index(names[1]) + 1 :] if names[1] in rest else []
        if verb in ("replace", "delete", "destroy") or (
            after and after[0] in ("position", "handle", "index")
        ):
            self.unordered.add(key)
            return
        # The statement proper starts after `[add|insert] rule [family] table chain`.
        skip = (1 if words[0] == "rule" else 2) + (len(rest) > 2 and rest[0] in FAMILIES) + 2
        word_positions = [i for i, tok in enumerate(stmt) if tok.kind == "word"]
        start = word_positions[skip] if len(word_positions) > skip else len(stmt)
        self._rule(path, text, stmt[start:], *key, insert=verb == "insert")

    def _rule(
        self,
        path: Path,
        text: str,
        stmt: list[_Tok],
        family: str,
        table: str,
        chain: str,
        *,
        insert: bool,
    ) -> None:
        if not stmt:
            return
        raw = text[stmt[0].start : stmt[-1].end]
        written = " ".join(raw.replace("\\\r\n", " ").replace("\\\n", " ").split())
        comment = None
        for a, b in itertools.pairwise(stmt):
            if a.kind == "word" and a.text == "comment" and b.kind == "string":
                comment = b.text.strip('"')
        words = (t.text.strip(",:") for t in stmt if t.kind == "word")
        verdicts = frozenset(w for w in words if w in VERDICTS)
        rule = SourceRule(
            path, stmt[0].line, written, family, table, chain, comment, verdicts, insert
        )
        rules = self.order.setdefault((family, table, chain), [])
        if insert:
            rules.insert(0, rule)
        else:
            rules.append(rule)

    def _include(self, path: Path, line: int, name: str, depth: int) -> None:
        where = f"{path}:{line}"
        if depth >= MAX_INCLUDE_DEPTH:
            raise RuleFileError(f"{where}: includes nested deeper than {MAX_INCLUDE_DEPTH}")
        candidates: list[Path] = []
        if Path(name).is_absolute():
            candidates = [Path(name)]
        else:
            # nft searches its -I directories; edgesim passes the including files' directories.
            candidates = [d / name for d in [path.parent, *(f.parent for f in self.files)]]
        for candidate in candidates:
            if glob.has_magic(str(candidate)):
                matches = sorted(Path(p) for p in glob.glob(str(candidate)))
                for match in matches:
                    self._feed(match, _read(match, where), depth + 1)
                if matches:
                    return
                continue
            if candidate.is_file():
                self._feed(candidate, _read(candidate, where), depth + 1)
                return
        if glob.has_magic(name):
            return  # nft accepts a wildcard include that matches nothing
        raise RuleFileError(f'{where}: include "{name}": no such file')


def _family_and(words: list[str], count: int) -> tuple[str, list[str]]:
    """``[family] name...``: the family (default ``ip``) and the next ``count`` words."""
    if words and words[0] in FAMILIES and len(words) > count:
        return words[0], words[1 : 1 + count]
    return "ip", words[:count]


# ------------------------------------------------------------------ iptables-save


@dataclass
class _IptablesReader:
    path: Path

    def read(self, text: str) -> RuleSource:
        order: dict[tuple[str, str, str], list[SourceRule]] = {}
        tables: list[tuple[str, str]] = []
        table = ""
        declared: set[str] = set()
        policies: dict[tuple[str, str, str], SourceRule] = {}
        for number, line in enumerate(text.splitlines(), start=1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#") or stripped == "COMMIT":
                continue
            if stripped.startswith("*"):
                table = stripped[1:].strip()
                tables.append(("ip", table))
                declared = set()
                continue
            if stripped.startswith(":"):
                fields = stripped[1:].split()
                key = ("ip", table, fields[0] if fields else "")
                order.setdefault(key, [])
                declared.add(key[2])
                if len(fields) > 1 and fields[1] in ("ACCEPT", "DROP"):
                    policy = frozenset({fields[1].lower()})
                    policies[key] = SourceRule(self.path, number, stripped, *key, verdicts=policy)
                continue
            try:
                args = shlex.split(stripped)
            except ValueError:
                continue  # iptables-restore reports it with the line
            if len(args) < 2 or args[0] not in ("-A", "--append", "-I", "--insert"):
                continue
            insert = args[0] in ("-I", "--insert")
            key = ("ip", table, args[1])
            comment = _iptables_option(args, "--comment")
            verdicts = _iptables_verdicts(args, declared)
            rule = SourceRule(self.path, number, stripped, *key, comment, verdicts, insert)
            rules = order.setdefault(key, [])
            if insert:
                position = args[2] if len(args) > 2 and args[2].isdigit() else "1"
                rules.insert(max(0, int(position) - 1), rule)
            else:
                rules.append(rule)
        return RuleSource(
            self.path,
            "iptables",
            (self.path,),
            {k: tuple(v) for k, v in order.items()},
            tuple(tables),
            policies=policies,
        )


def _iptables_option(args: list[str], option: str) -> str | None:
    for a, b in itertools.pairwise(args):
        if a == option:
            return b
    return None


def _iptables_verdicts(args: list[str], chains: set[str]) -> frozenset[str] | None:
    """The verdict of ``-j``/``-g``; None for an extension target (LOG, MARK ...)."""
    target = _iptables_option(args, "-j") or _iptables_option(args, "--jump")
    goto = _iptables_option(args, "-g") or _iptables_option(args, "--goto")
    if goto:
        return frozenset({"goto"})
    if target is None:
        return frozenset()
    if target in _IPTABLES_VERDICTS:
        return frozenset({_IPTABLES_VERDICTS[target]})
    if target in chains:
        return frozenset({"jump"})
    return None
