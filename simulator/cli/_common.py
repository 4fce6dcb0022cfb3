"""What every command shares: the console, the topology option, and error handling."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.markup import escape

from simulator.errors import EdgesimError
from simulator.lab.runners import get_runner, runner_class, runner_names
from simulator.lab.runners.base import LabConfig, Runner, default_lab_name
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


# ------------------------------------------------------------------ runners and labs

F = TypeVar("F", bound=Callable[..., Any])


class RunnerChoice(click.ParamType):  # type: ignore[type-arg]
    """A registered runner's name (optionally only runners with some capabilities, e.g.
    ``persistent=True``), plus ``extra`` values; the list comes from the registry when used."""

    name = "runner"

    def __init__(self, *, extra: Sequence[str] = (), **capabilities: Any) -> None:
        self.extra = tuple(extra)
        self.capabilities = capabilities

    @property
    def choices(self) -> list[str]:
        return [*runner_names(**self.capabilities), *self.extra]

    def get_metavar(self, param: click.Parameter, ctx: click.Context) -> str | None:
        return "[" + "|".join(self.choices) + "]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value in self.choices:
            return value
        self.fail(f"'{value}' is not one of {', '.join(self.choices)}.", param, ctx)


def runner_option(default: str, help: str, **capabilities: Any) -> Callable[[F], F]:
    return click.option(
        "--runner",
        type=RunnerChoice(**capabilities),
        default=default,
        show_default=True,
        help=help,
    )


def runners_help(**capabilities: Any) -> list[tuple[str, str]]:
    """(name, summary) of every registered runner, for help texts."""
    return [(name, runner_class(name).summary) for name in runner_names(**capabilities)]


class RunnersGroup(click.Group):
    """A group whose help lists the registered runners."""

    def format_help_text(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_help_text(ctx, formatter)
        with formatter.section("Runners"):
            formatter.write_dl(runners_help())


CERTS_OPTION = click.option(
    "--certs",
    "certs_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("certs"),
    show_default=True,
    help="Lab PKI directory (created or completed as needed).",
)
NAME_OPTION = click.option(
    "--name",
    "lab_name",
    default=default_lab_name,
    show_default="edgesim, or $EDGESIM_LAB",
    metavar="NAME",
    help="Which lab (1-8 letters or digits): netns labs of different names run side by side "
    "(namespaces es<NAME>-*, state in /run/edgesim/NAME).",
)
STATE_OPTION = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    show_default="/run/edgesim/NAME, or $EDGESIM_STATE_DIR/NAME",
    help="Where the netns runner keeps pids, logs, ready files and the loaded rule files.",
)


def make_runner(
    obj: Obj,
    runner: str,
    *,
    certs_dir: Path = Path("certs"),
    lab_name: str | None = None,
    state_dir: Path | None = None,
    rules: dict[str, Path] | None = None,
    compose_file: Path | None = None,
) -> Runner:
    """The runner ``runner`` for the lab the options describe."""
    config = LabConfig(
        obj.topology,
        certs_dir=certs_dir,
        name=lab_name or default_lab_name(),
        state_dir=state_dir,
        rules=dict(rules or {}),
        compose_file=compose_file,
    )
    return get_runner(runner, config)


# ------------------------------------------------------------------ firewall rule files


def parse_rules(topology: Topology, items: Sequence[str]) -> dict[str, Path]:
    """``--rules FIREWALL=FILE`` items -> {firewall: path}; a bad item is a usage error."""
    rules: dict[str, Path] = {}
    firewalls = [fw.id for fw in topology.firewalls]
    for item in items:
        fw_id, sep, path = item.partition("=")
        if not sep or not path:
            raise click.BadParameter(f"'{item}' is not FIREWALL=FILE", param_hint="--rules")
        if fw_id not in firewalls:
            known = ", ".join(firewalls) or "none"
            raise click.BadParameter(
                f"no firewall '{fw_id}' in the topology (it has {known})", param_hint="--rules"
            )
        if not Path(path).is_file():
            raise click.BadParameter(f"{path}: no such file", param_hint="--rules")
        rules[fw_id] = Path(path)
    return rules


RULES_OPTION = click.option(
    "--rules",
    "rule_items",
    multiple=True,
    metavar="FIREWALL=FILE",
    help="Your rule file for a firewall of the topology (repeatable): nftables as you write it "
    "(any table and chain names, ip or inet, includes next to the file) or iptables-save "
    "output. Firewalls without one get their topology file.",
)
