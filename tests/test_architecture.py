"""The layers of docs/architecture.md, held by walking the imports of the whole package with
``ast`` (what the code says, not what happens to be imported at run time):

1. errors and values; 2. protocol cores; 3. adapters and ``tls``; 4. services and clients;
5. the lab (topology, matrix, PKI, firewalls, runners, and the modules that build services from
the topology); 6. probes and scenarios; 7. reports; 8. the CLI.

A module imports only from its own layer and the layers below; every core, followed through
everything it imports, reaches no asyncio, socket, ssl, time or lab layer; no two modules import
each other, directly or around a loop.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "simulator"

#: Module (or package, for everything in it) -> layer; the longest matching name decides.
LAYERS: dict[str, int] = {
    # 1. errors and values: no I/O
    "simulator": 1,
    "simulator.errors": 1,
    "simulator.certificate": 1,
    "simulator.limits": 1,
    "simulator.paths": 1,
    "simulator.settings": 1,
    # 2. protocol cores: bytes, events, now
    "simulator.sip": 2,
    "simulator.xmpp": 2,
    "simulator.media": 2,
    "simulator.dns": 2,
    "simulator.middlebox": 2,
    # 3. adapters: sockets, TLS contexts, timers, the trace sink
    "simulator.tls": 3,
    "simulator.trace": 3,
    "simulator.sip.aio": 3,
    "simulator.xmpp.aio": 3,
    "simulator.media.aio": 3,
    "simulator.media.tracing": 3,
    "simulator.dns.aio": 3,
    "simulator.dns.resolver": 3,
    "simulator.middlebox.aio": 3,
    # 4. services and clients (the Edge's listeners, the emulators, one client per protocol)
    "simulator.sip.emulators": 4,
    "simulator.xmpp.client": 4,
    # 5. the lab, and the modules that build services from the topology (ServiceContext)
    "simulator.lab": 5,
    "simulator.matrix": 5,
    "simulator.pki": 5,
    "simulator.firewall": 5,
    "simulator.sip.service": 5,
    "simulator.sip.emulators.mras": 5,
    "simulator.sip.emulators.xmpp_bridge": 5,
    "simulator.xmpp.service": 5,
    "simulator.xmpp.gateway": 5,
    "simulator.xmpp.prosody": 5,
    "simulator.xmpp.ejabberd": 5,
    "simulator.xmpp.peer_setup": 5,
    "simulator.media.service": 5,
    "simulator.media.peer": 5,
    "simulator.media.avauth": 5,
    "simulator.dns.service": 5,
    # 6. probes and scenarios (and the lab harness the tests and benchmarks drive)
    "simulator.probes": 6,
    "simulator.scenario": 6,
    "simulator.scenarios": 6,
    "simulator.load": 6,
    "simulator.xmpp.harness": 6,
    # 7. reports
    "simulator.reports": 7,
    # 8. the CLI
    "simulator.cli": 8,
    "simulator.__main__": 8,
}
CORE = 2
#: What no core may reach, however indirectly.
IO_MODULES = {"asyncio", "socket", "ssl", "selectors", "subprocess", "threading", "time"}


def _name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: dict[str, Path] = {_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> int:
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        if (key := ".".join(parts[:end])) in LAYERS:
            return LAYERS[key]
    raise KeyError(module)


def _runtime(nodes: list[ast.stmt]) -> Iterator[ast.AST]:
    """Every node, function bodies included, except ``if TYPE_CHECKING:`` blocks."""
    for node in nodes:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from _runtime(node.orelse)
            continue
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.stmt):
                yield from _runtime([child])
            else:
                yield from ast.walk(child)


@cache
def imports(module: str) -> frozenset[str]:
    """What ``module`` imports: simulator modules by full name, others by top-level name."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in _runtime(ast.parse(path.read_text(), filename=str(path)).body):
        if isinstance(node, ast.Import):
            found |= {a.name if a.name in MODULES else a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            subs = {f"{base}.{a.name}" for a in node.names} & MODULES.keys()
            found |= subs or {base if base in MODULES else base.split(".")[0]}
    return frozenset(found)


def reach(module: str) -> dict[str, str]:
    """Everything ``module`` imports, followed through the package: name -> the module that
    imports it (``module`` itself among them when it sits on a cycle)."""
    seen: dict[str, str] = {}
    todo = [module]
    while todo:
        current = todo.pop()
        for name in imports(current):
            if name not in seen:
                seen[name] = current
                if name in MODULES and name != module:
                    todo.append(name)
    return seen


def path_to(module: str, target: str, via: dict[str, str]) -> str:
    """How ``module`` reaches ``target``: ``target <- ... <- module``."""
    chain = [target, via[target]]
    while chain[-1] != module:
        chain.append(via[chain[-1]])
    return " <- ".join(chain)


CORES = [m for m in MODULES if layer(m) == CORE]


def test_every_module_has_a_layer_and_there_are_cores() -> None:
    for module in MODULES:
        layer(module)
    assert {"simulator.sip.proxy", "simulator.xmpp.s2s", "simulator.media.turn"} <= set(CORES)


@pytest.mark.parametrize("core", CORES)
def test_a_core_reaches_no_io_no_clock_and_no_lab(core: str) -> None:
    via = reach(core)
    bad = [
        path_to(core, name, via)
        for name in sorted(via)
        if name != core and (name in IO_MODULES or (name in MODULES and layer(name) > CORE))
    ]
    assert bad == [], f"{core} reaches I/O or a higher layer: {bad}"


def test_every_import_goes_down_the_layers() -> None:
    upward = [
        f"{module} (layer {layer(module)}) imports {name} (layer {layer(name)})"
        for module in MODULES
        for name in imports(module)
        if name in MODULES and layer(name) > layer(module)
    ]
    assert upward == []


def test_no_import_cycles() -> None:
    cycles = sorted(path_to(m, m, via) for m in MODULES if m in (via := reach(m)))
    assert cycles == []


def test_the_guard_sees_a_lazy_import_inside_a_function(tmp_path: Path) -> None:
    source = "def f():\n    import asyncio\n    from simulator.lab import topology\n"
    names = set()
    for node in _runtime(ast.parse(source).body):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add(node.module or "")
    assert names == {"asyncio", "simulator.lab"}
