"""Architecture guards: sans-IO cores stay free of I/O, and the wheel carries its data."""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "simulator"

#: The sans-IO core modules of each protocol package (STYLE.md): bytes in, events and bytes out.
#: Adapters (aio.py, service.py, emulators/, clients) may do I/O; these may not.
SANS_IO_CORES = {
    "dns": ["zone"],
    "sip": ["framing", "validate", "transaction", "proxy", "events", "errors"],
    "xmpp": ["stream", "s2s", "routing", "presence", "events", "errors"],
    "media": ["stun", "framing", "turn", "events", "errors", "mras"],
}
FORBIDDEN = {"asyncio", "ssl", "socket", "selectors", "time"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def _core_files() -> list[Path]:
    return [
        PACKAGE / package / f"{module}.py"
        for package, modules in SANS_IO_CORES.items()
        for module in modules
        if (PACKAGE / package / f"{module}.py").is_file()
    ]


def test_there_are_sans_io_cores_to_check():
    assert PACKAGE.joinpath("dns", "zone.py") in _core_files()


@pytest.mark.parametrize("path", _core_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_sans_io_core_does_no_io(path):
    bad = _imports(path) & FORBIDDEN
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}: move I/O into aio.py"


def test_no_print_outside_the_cli():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if "cli" in path.relative_to(PACKAGE).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


def test_the_wheel_carries_the_topology_the_matrix_scenarios_and_py_typed(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = tmp_path.glob("edgesim-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "simulator/lab/default.toml",
        "simulator/matrix/rows.toml",
        "simulator/py.typed",
        "simulator/cli/__init__.py",
    ):
        assert needed in names
    # The shipped scenarios, so that `edgesim scenario list` finds them from any directory.
    shipped = {f"simulator/scenarios/{p.name}" for p in (ROOT / "scenarios").glob("[!_]*.py")}
    assert len(shipped) >= 9 and shipped <= names
    entry_points = (
        zipfile.ZipFile(wheel)
        .read(next(n for n in names if n.endswith("entry_points.txt")))
        .decode()
    )
    assert "edgesim = simulator.cli:main" in entry_points
