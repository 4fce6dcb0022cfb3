"""Only the adapters of the XMPP package touch asyncio, ssl or socket (STYLE.md section 1)."""

from __future__ import annotations

import ast
from pathlib import Path

import simulator.xmpp

ADAPTERS = {"aio.py", "service.py", "gateway.py", "harness.py"}
IO_MODULES = {"asyncio", "ssl", "socket"}


def test_sans_io_cores_import_no_io() -> None:
    package = Path(simulator.xmpp.__file__).parent
    offenders = []
    for path in sorted(package.rglob("*.py")):
        if path.name in ADAPTERS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module.split(".")[0]]
            offenders += [f"{path.name}: {n}" for n in names if n in IO_MODULES]
    assert offenders == []
