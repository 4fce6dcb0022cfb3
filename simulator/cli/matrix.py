"""``edgesim matrix``: the port matrix as a table or JSON."""

from __future__ import annotations

import json

import click
from rich.markup import escape
from rich.table import Table

from simulator.cli._common import Obj, console, format_option
from simulator.matrix import load_matrix, resolve_all
from simulator.matrix.model import resolved_to_dict, row_to_dict


@click.command()
@format_option("Output format.")
@click.option(
    "--resolve",
    is_flag=True,
    help="Resolve each row's source and destination to addresses of the topology.",
)
@click.option(
    "--seed",
    "seeds",
    multiple=True,
    metavar="SEED",
    help="Only rows of this seed table (repeatable).",
)
@click.pass_obj
def matrix(obj: Obj, fmt: str, resolve: bool, seeds: tuple[str, ...]) -> None:
    """Print the port matrix: every flow the Edge needs, and those that must stay blocked.

    One row per row of the Lync Server 2013 seed tables (SIP federation, public IM connectivity,
    XMPP), the internal rows they leave implicit, and negative rows. Sources and destinations
    are topology roles; --resolve turns them into the addresses of the topology in use.

    \b
    Examples:
      edgesim matrix
      edgesim matrix --resolve --seed public-im
      edgesim matrix --format json --resolve > matrix.json
    """
    mx = load_matrix()
    unknown = [s for s in seeds if s not in mx.seeds]
    if unknown:
        raise click.BadParameter(
            f"unknown seed '{unknown[0]}' (known: {', '.join(mx.seeds)})", param_hint="--seed"
        )
    rows = [r for r in mx.rows if not seeds or r.seed in seeds]
    resolved = {r.row.id: r for r in resolve_all(mx, obj.topology)} if resolve else {}

    if fmt == "json":
        out = []
        for row in rows:
            item = row_to_dict(row)
            item["seed_title"] = mx.seeds[row.seed].title
            if resolve:
                item.update(resolved_to_dict(resolved[row.id]))
            out.append(item)
        click.echo(json.dumps({"topology": str(obj.topology.path), "rows": out}, indent=2))
        return

    for seed_id, seed_rows in mx.by_seed().items():
        seed_rows = [r for r in seed_rows if r in rows]
        if not seed_rows:
            continue
        table = Table(
            title=f"{mx.seeds[seed_id].title} ({seed_id})", title_justify="left", expand=False
        )
        table.add_column("id", style="bold", overflow="fold")
        table.add_column("flow", overflow="fold")
        table.add_column("source", overflow="fold", min_width=12)
        table.add_column("destination", overflow="fold", min_width=12)
        table.add_column("expect", no_wrap=True)
        if not resolve:
            table.add_column("probe", overflow="fold")
        for row in seed_rows:
            src, dst = row.source, row.destination
            if resolve:
                rr = resolved[row.id]
                src = _endpoints(src, [f"{e.ref} {e.address}" for e in rr.sources])
                dst = _endpoints(dst, [f"{e.ref} {e.address}" for e in rr.destinations])
                if rr.problems:
                    dst += "\n[red]" + escape("; ".join(rr.problems)) + "[/]"
            ports = f"{row.label}" + (" (source ports)" if row.port_side == "source" else "")
            expect = "[green]open[/]" if row.expect.value == "open" else "[red]blocked[/]"
            cells = [row.id, ports, src, dst, expect] + ([] if resolve else [row.probe])
            table.add_row(*cells)
        console.print(table)
        console.print()


def _endpoints(selector: str, items: list[str]) -> str:
    if not items:
        return f"{selector}\n[red](none)[/]"
    return selector + "\n[dim]" + "\n".join(items) + "[/]"
