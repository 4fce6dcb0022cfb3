"""User-facing errors.

Anything a user can cause (a bad topology file, a missing certificate, a port already in use)
raises :class:`EdgesimError` with one line that names the file and entry at fault; the CLI prints
that line and exits with :attr:`EdgesimError.exit_code`, never a traceback.
"""

from __future__ import annotations

from pathlib import Path


class EdgesimError(Exception):
    """An error the user can act on. ``str()`` is one line."""

    exit_code = 1


class ConfigError(EdgesimError):
    """A configuration file (topology, matrix, target) is invalid."""

    exit_code = 2

    def __init__(self, path: Path | str, entry: str, message: str) -> None:
        self.path = str(path)
        self.entry = entry
        self.message = message
        super().__init__(f"{self.path}: {entry}: {message}" if entry else f"{self.path}: {message}")


class LabError(EdgesimError):
    """The lab could not be started, checked or stopped."""

    exit_code = 1


class UsageError(EdgesimError):
    """A bad argument only the library can judge (an unknown row, runner or lab name)."""

    exit_code = 2
