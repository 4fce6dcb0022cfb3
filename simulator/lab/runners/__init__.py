"""Lab runners: each renders the one topology into running hosts (see :mod:`.base`).

The registry finds runners by name: every module of this package (not ``base``, not starting
with ``_``) is imported on first use, and registers its class with :func:`register_runner`.
Adding a runner is one new module here; the command line lists and uses it from the registry::

    @register_runner
    class SwarmRunner:
        name = "swarm"
        ...

    get_runner("swarm", LabConfig(topology)).exec_argv("edge")
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING, Any, TypeVar

from simulator.errors import UsageError

if TYPE_CHECKING:
    from simulator.lab.runners.base import Addressing, LabConfig, Runner

_REGISTRY: dict[str, type[Runner]] = {}
_discovered = False

R = TypeVar("R", bound="type[Runner]")


def register_runner(cls: R) -> R:
    """Class decorator: make a runner available by its ``name``."""
    _REGISTRY[cls.name] = cls
    return cls


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    for module in pkgutil.iter_modules(__path__):
        if module.name != "base" and not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")


def runner_names(**capabilities: Any) -> list[str]:
    """Registered runner names (in ``--help`` order) whose attributes match ``capabilities``,
    e.g. ``runner_names(persistent=True)``."""
    _discover()
    chosen = [
        cls
        for cls in _REGISTRY.values()
        if all(getattr(cls, key) == value for key, value in capabilities.items())
    ]
    return [cls.name for cls in sorted(chosen, key=lambda c: (c.order, c.name))]


def runner_class(name: str) -> type[Runner]:
    _discover()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(runner_names())
        raise UsageError(f"no runner '{name}' (runners: {known})") from None


def get_runner(name: str, config: LabConfig) -> Runner:
    """The runner ``name`` for the lab ``config`` describes."""
    return runner_class(name)(config)


def addressing_of(runner: str) -> Addressing:
    """Which addresses the lab of runner ``runner`` uses (``loopback`` or ``lab``)."""
    return runner_class(runner).addressing


__all__ = ["addressing_of", "get_runner", "register_runner", "runner_class", "runner_names"]
