"""What every command shares: the console, the topology option, and error handling."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from simulator.errors import EdgesimError
from simulator.lab.runners import get_runner, runner_class, runner_names
from simulator.lab.runners.base import LabConfig, Runner, default_lab_name
from simulator.lab.topology import Topology, load_topology
from simulator.paths import default_certs_dir

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


PCAP_OPTION = click.option(
    "--pcap",
    "pcap_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    metavar="DIR",
    help="Capture the lab's packets into DIR (pcapng, with the TLS secrets embedded: Wireshark "
    "shows SIP and XMPP decrypted); tcpdump in each host (root), on loopback for the "
    "embedded lab.",
)
WIDTH_OPTION = click.option(
    "--width",
    type=click.IntRange(40, 1000),
    default=None,
    metavar="COLUMNS",
    help="Lay the output out for this many columns (default: the terminal's, or $COLUMNS).",
)


def format_option(help: str | None = "Output on stdout.") -> Callable[[F], F]:
    """``--format table|json`` (into ``fmt``), table by default."""
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(["table", "json"]),
        default="table",
        show_default=True,
        help=help,
    )


def file_option(flag: str, dest: str, help: str) -> Callable[[F], F]:
    """An option naming a FILE (not a directory), ``None`` when not given."""
    return click.option(
        flag, dest, type=click.Path(dir_okay=False, path_type=Path), metavar="FILE", help=help
    )


def timeout_option(low: float, high: float, default: float, help: str) -> Callable[[F], F]:
    """``--timeout S``: seconds, a float from ``low`` to ``high``."""
    return click.option(
        "--timeout",
        type=click.FloatRange(low, high),
        default=default,
        show_default=True,
        metavar="S",
        help=help,
    )


def set_width(width: int | None) -> None:
    """``--width``: both consoles render for ``width`` columns."""
    if width is not None:
        console.width = width
        err_console.width = width


CERTS_DEFAULT_HELP = (
    "$EDGESIM_CERTS_DIR, else certs/ in a checkout, else ~/.local/share/edgesim/certs"
)


def certs_option(
    help: str = "Lab PKI directory (created or completed as needed).",
) -> Callable[[F], F]:
    """``--certs DIR``: in a checkout its ``certs/``, else the user's data directory (XDG)."""
    return click.option(
        "--certs",
        "certs_dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=default_certs_dir,
        show_default=CERTS_DEFAULT_HELP,
        help=help,
    )


CERTS_OPTION = certs_option()
NAME_OPTION = click.option(
    "--name",
    "lab_name",
    default=default_lab_name,
    show_default="edgesim, or $EDGESIM_LAB",
    metavar="NAME",
    help="Which lab (1-8 letters or digits): labs of different names run side by side "
    "(netns: namespaces es<NAME>-*, state in /run/edgesim/NAME).",
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
    certs_dir: Path | None = None,
    lab_name: str | None = None,
    state_dir: Path | None = None,
    rules: dict[str, Path] | None = None,
    compose_file: Path | None = None,
    join: bool = True,
    inspect_tls: bool = False,
) -> Runner:
    """The runner ``runner`` for the lab the options describe (``join``: see
    :attr:`LabConfig.join`)."""
    config = LabConfig(
        obj.topology,
        certs_dir=certs_dir or default_certs_dir(),
        name=lab_name or default_lab_name(),
        state_dir=state_dir,
        rules=dict(rules or {}),
        compose_file=compose_file,
        join=join,
        inspect_tls=inspect_tls,
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


def progress_bar(what: str, total: int | None = None) -> Progress:
    """A progress bar for a wait, on stderr, transient, and silent when stderr is not a
    terminal; without ``total`` it pulses, with the time elapsed. Use it as a context manager
    (see :func:`progress`), or ``start()`` / ``stop()``."""
    bar = Progress(
        SpinnerColumn(),
        TextColumn(escape(what)),
        BarColumn(),
        MofNCompleteColumn() if total is not None else TextColumn(""),
        TimeElapsedColumn(),
        TextColumn("[dim]{task.description}"),
        console=err_console,
        transient=True,
        disable=not err_console.is_terminal,
    )
    bar.add_task("", total=total)
    return bar


@contextmanager
def progress(what: str, total: int | None = None) -> Iterator[Callable[[str], None]]:
    """:func:`progress_bar` around a block; yields ``advance(label)``: one step done."""
    with progress_bar(what, total) as bar:
        task = bar.task_ids[0]
        yield lambda label: bar.update(task, advance=1, description=escape(label))


def print_notices(runner: Runner) -> None:
    """The runner's notices (moved ports, a lab joined), one line each, on stderr."""
    for line in runner.notices():
        err_console.print(f"[yellow]note:[/] {escape(line)}")
