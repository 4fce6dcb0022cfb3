"""Markers that tell the truth: a test that needs root or Docker carries the ``root``/``docker``
marker, so ``pytest -m "not root and not docker"`` deselects exactly what cannot run unprivileged.

The root conftest installs :func:`pytest_collection_modifyitems`; collection fails naming every
test whose body, skip conditions or fixtures (transitively) show such a need without the marker.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import pytest

#: What in a test (its body, its skip conditions, the fixtures it uses, transitively) shows that
#: it needs root: it checks for root, or makes network namespaces, nftables rulesets, captures.
_NEEDS_ROOT = re.compile(
    r"geteuid\(\) != 0|skip_unless_netns|needs_capture_tools|requirements_problem"
    r"|skip\(.*\broot\b"
)
#: ... and that it needs the Docker engine.
_NEEDS_DOCKER = re.compile(r"docker_problem")
#: Fixtures from installed packages (pytest's tmp_path, ...) are not read.
_INSTALLED = {"site-packages", "dist-packages"}


def _evidence(item: pytest.Item) -> str:
    """The source that decides what ``item`` needs: the test function, its skip reasons, and the
    fixtures it requests, transitively, other than installed packages' (each one's source)."""
    parts: list[str] = []
    function = getattr(item, "function", None)
    if function is not None:
        parts.append(inspect.getsource(function))
    for mark in item.iter_markers("skipif"):
        parts.append(f"skip({mark.kwargs.get('reason', '')})")
    info: Any = getattr(item, "_fixtureinfo", None)
    for name in info.names_closure if info is not None else ():
        for definition in info.name2fixturedefs.get(name, ()):
            func = definition.func
            if not _INSTALLED & set(Path(inspect.getfile(func)).parts):
                parts.append(inspect.getsource(func))
    return "\n".join(parts)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Fail collection when a test that needs root or Docker lacks the ``root``/``docker``
    marker, so ``-m "not root and not docker"`` deselects exactly what cannot run unprivileged."""
    missing: list[str] = []
    for item in items:
        evidence = _evidence(item)
        for marker, sign in (("root", _NEEDS_ROOT), ("docker", _NEEDS_DOCKER)):
            if item.get_closest_marker(marker) is None and (found := sign.search(evidence)):
                missing.append(f"{item.nodeid}: needs the '{marker}' marker ({found.group(0)!r})")
    if missing:
        raise pytest.UsageError("tests without the marker they need:\n  " + "\n  ".join(missing))
