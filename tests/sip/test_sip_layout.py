"""Only the adapters of the SIP package import asyncio, ssl or socket (sans-IO cores)."""

from __future__ import annotations

import ast
from pathlib import Path

import simulator.sip

ADAPTERS = {"aio.py", "service.py"}
IO_MODULES = {"asyncio", "ssl", "socket"}


def test_cores_do_not_import_io() -> None:
    root = Path(simulator.sip.__file__).parent
    offenders = []
    for path in root.glob("*.py"):
        if path.name in ADAPTERS:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module.split(".")[0]]
            if IO_MODULES & set(names):
                offenders.append(path.name)
    assert offenders == []
