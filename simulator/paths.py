"""Where edgesim keeps its files: in a checkout, beside the source; installed, in the user's
XDG directories (never the current directory of wherever the user happens to stand).

* the lab PKI (``certs``): ``$EDGESIM_CERTS_DIR`` when set, else ``<checkout>/certs`` when the
  current directory is inside an edgesim checkout (as the README documents), else
  ``$XDG_DATA_HOME/edgesim/certs`` (``~/.local/share/edgesim/certs``);
* run-time state (which embedded lab runs where, netns labs' pids and ready files):
  ``$EDGESIM_STATE_DIR``, else ``/run/edgesim`` for root, else ``$XDG_RUNTIME_DIR/edgesim``, else
  ``$XDG_STATE_HOME/edgesim`` (``~/.local/state/edgesim``);
* the scenarios shipped with edgesim: ``simulator/scenarios`` inside the package (in a checkout,
  a link to ``scenarios/`` at its root).

Only environment and file-system look-ups: nothing here creates a directory.
"""

from __future__ import annotations

import os
from pathlib import Path

APP = "edgesim"


def _xdg(variable: str, default: str) -> Path:
    value = os.environ.get(variable)
    if value and Path(value).is_absolute():
        return Path(value)
    return Path.home() / default


def data_dir() -> Path:
    """``$XDG_DATA_HOME/edgesim`` (``~/.local/share/edgesim``)."""
    return _xdg("XDG_DATA_HOME", ".local/share") / APP


def runtime_dir() -> Path:
    """Where running labs leave their state (see the module docstring)."""
    explicit = os.environ.get("EDGESIM_STATE_DIR")
    if explicit:
        return Path(explicit)
    if os.geteuid() == 0:
        return Path("/run") / APP
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        return Path(runtime) / APP
    return _xdg("XDG_STATE_HOME", ".local/state") / APP


def checkout_root(start: Path | None = None) -> Path | None:
    """The edgesim checkout ``start`` (default: the current directory) is in, if any: the
    nearest directory holding edgesim's ``pyproject.toml`` and ``simulator/``."""
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        project = candidate / "pyproject.toml"
        if (candidate / "simulator").is_dir() and project.is_file():
            try:
                if 'name = "edgesim"' in project.read_text("utf-8"):
                    return candidate
            except (OSError, UnicodeDecodeError):
                return None
    return None


def default_certs_dir() -> Path:
    """The lab PKI directory when ``--certs`` is not given: ``$EDGESIM_CERTS_DIR``, else
    ``certs`` in a checkout (relative when standing at its root), else :func:`data_dir`
    ``/certs``."""
    if explicit := os.environ.get("EDGESIM_CERTS_DIR"):
        return Path(explicit)
    root = checkout_root()
    if root is None:
        return data_dir() / "certs"
    if root == Path.cwd().resolve():
        return Path("certs")
    return root / "certs"


def shipped_scenarios_dir() -> Path:
    """The scenarios that come with edgesim (installed with the package)."""
    return Path(__file__).resolve().parent / "scenarios"
