"""What every command shares: the console, the topology option, and error handling."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from simulator.errors import EdgesimError
from simulator.lab.topology import Topology, load_topology

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


@dataclass
class Obj:
    topology_path: str | None
    _topology: Topology | None = field(default=None, repr=False)

    @property
    def topology(self) -> Topology:
        if self._topology is None:
            self._topology = load_topology(self.topology_path)
        return self._topology


def fail(message: str, code: int = 1) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    sys.exit(code)


class EdgesimGroup(click.Group):
    """A group that turns :class:`EdgesimError` into one line on stderr and its exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EdgesimError as exc:
            fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            err_console.print("interrupted")
            sys.exit(130)
