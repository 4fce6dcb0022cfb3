"""No print outside the CLI, and the wheel carries its data (the layers: test_architecture.py)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "simulator"


def test_no_print_outside_the_cli() -> None:
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if "cli" in path.relative_to(PACKAGE).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


def test_the_wheel_carries_the_topology_the_matrix_scenarios_and_py_typed(tmp_path: Path) -> None:
    # Built from a copy: setuptools writes build/ and *.egg-info beside the sources it builds.
    source = tmp_path / "source"
    for name in ("pyproject.toml", "README.md"):
        source.mkdir(exist_ok=True)
        shutil.copy(ROOT / name, source / name)
    for name in ("simulator", "scenarios"):
        shutil.copytree(ROOT / name, source / name, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(source)],
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
