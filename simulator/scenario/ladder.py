"""Ladder (sequence) diagrams of a trace: hosts as columns, firewalls between zones.

A message is drawn from its source host to its destination host; a ``dropped`` message (no
answer: a firewall filtered it) stops at the firewall between the two zones with an ``X``; a
``refused`` one stops there with ``R``. When the lab's firewalls were traced, it stops at the
firewall that stopped it, labelled with the rule (file and line) or the policy that decided. When both ends of a message recorded it, the sender's
record is drawn and the receiver's is folded into it.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

from simulator.lab.topology import Topology
from simulator.trace import HostMap, TraceEvent

DEDUP_WINDOW = 2.0


@dataclass(frozen=True)
class Column:
    id: str
    zone: str
    kind: str
    """``host``, ``firewall`` or ``other`` (an address outside the lab)."""


@dataclass(frozen=True)
class Arrow:
    offset: float
    """Seconds since the first event."""
    src: int
    dst: int
    """Column indexes; for a dropped message ``dst`` is the firewall column."""
    label: str
    event: str
    protocol: str
    detail: str
    blocked: str = ""
    """For a message a traced firewall stopped: ``fw-external: external.nft:64``."""


@dataclass(frozen=True)
class Ladder:
    title: str
    columns: tuple[Column, ...]
    arrows: tuple[Arrow, ...]


def _dedupe(events: list[TraceEvent]) -> list[TraceEvent]:
    sent = [e for e in events if e.event != "received"]
    kept: list[TraceEvent] = list(sent)
    for e in events:
        if e.event != "received":
            continue
        twin = any(
            s.protocol == e.protocol
            and s.summary == e.summary
            and s.src == e.src
            and s.dst == e.dst
            and -DEDUP_WINDOW <= e.time - s.time <= DEDUP_WINDOW
            for s in sent
        )
        if not twin:
            kept.append(e)
    return sorted(kept, key=lambda e: e.time)


def build_ladder(
    title: str, events: list[TraceEvent], topology: Topology, hosts: HostMap
) -> Ladder:
    events = _dedupe(events)
    zone_order = [z.id for z in topology.zones]
    seen: dict[str, str] = {}
    for e in events:
        if e.event == "note":
            continue
        for address in (e.src, e.dst):
            seen.setdefault(hosts.host(address), hosts.zone(address))

    def zone_rank(zone: str) -> int:
        return zone_order.index(zone) if zone in zone_order else len(zone_order)

    ordered = sorted(seen.items(), key=lambda kv: zone_rank(kv[1]))
    columns: list[Column] = []
    previous_zone: str | None = None
    for host, zone in ordered:
        if previous_zone is not None and zone != previous_zone:
            # every firewall between the previous zone and this one, in zone order
            for index in range(zone_rank(previous_zone), zone_rank(zone)):
                if index + 1 >= len(zone_order):
                    break
                fw = topology.firewall_between(zone_order[index], zone_order[index + 1])
                if fw is not None and all(c.id != fw.id for c in columns):
                    columns.append(Column(fw.id, "", "firewall"))
        columns.append(Column(host, zone, "host" if zone else "other"))
        previous_zone = zone or previous_zone
    index_of = {c.id: i for i, c in enumerate(columns)}

    arrows: list[Arrow] = []
    start = events[0].time if events else 0.0
    for e in events:
        if e.event == "note":
            arrows.append(Arrow(e.time - start, -1, -1, e.summary, "note", "", ""))
            continue
        src, dst = index_of[hosts.host(e.src)], index_of[hosts.host(e.dst)]
        blocked = ""
        if e.event in ("dropped", "refused"):
            if e.blocked_at in index_of:
                # The firewall's trace said where it died and by which rule.
                dst = index_of[e.blocked_at]
                blocked = f"{e.blocked_at}: {e.blocked_by}"
            else:
                step = 1 if dst > src else -1
                for i in range(src + step, dst, step):
                    if columns[i].kind == "firewall":
                        dst = i
                        break
        arrows.append(
            Arrow(e.time - start, src, dst, e.summary, e.event, e.protocol, e.detail, blocked)
        )
    return Ladder(title, tuple(columns), tuple(arrows))


# ----------------------------------------------------------------------------- text

COL = 20
PREFIX = 9
"""The time column (``+0.123`` and a space)."""


def _centre(i: int) -> int:
    return i * COL + COL // 2


def render_text(ladder: Ladder, width: int | None = None) -> str:
    """A fixed-width ladder for the terminal; ``width`` (the terminal's) folds a ladder wider
    than that into pages of adjacent columns, one under the other. A message to a host on
    another page is drawn to the page's edge and names that host; host names are never cut."""
    n = len(ladder.columns)
    if width is None or PREFIX + n * COL <= width or n <= 1:
        return "\n".join(_page(ladder, list(range(n)), COL, ladder.title))
    longest = max(len(f"[{c.id}]") for c in ladder.columns)
    col = max(longest + 2, min(COL, (width - PREFIX) // n))
    per_page = max(2, (width - PREFIX) // col)
    chunks = [list(range(i, min(i + per_page, n))) for i in range(0, n, per_page)]
    lines: list[str] = []
    for number, chunk in enumerate(chunks, 1):
        title = f"{ladder.title} (page {number} of {len(chunks)})"
        lines += [*([""] if lines else []), *_page(ladder, chunk, col, title, width)]
    return "\n".join(lines)


def _page(
    ladder: Ladder, indices: list[int], col: int, title: str, limit: int | None = None
) -> list[str]:
    slot = {column: k for k, column in enumerate(indices)}
    width = len(indices) * col
    first = indices[0]

    def centre(k: int) -> int:
        return k * col + col // 2

    lines = [title]
    header = zones = ""
    for i in indices:
        c = ladder.columns[i]
        header += (f"[{c.id}]" if c.kind == "firewall" else c.id).center(col)
        zones += (c.zone[: col - 2] if c.kind != "firewall" else "").center(col)
    lines.append(" " * PREFIX + header.rstrip())
    lines.append(" " * PREFIX + zones.rstrip())

    def lifelines() -> list[str]:
        row = [" "] * width
        for k, i in enumerate(indices):
            row[centre(k)] = "#" if ladder.columns[i].kind == "firewall" else "|"
        return row

    for a in ladder.arrows:
        if a.event == "note":
            note = f"{a.offset:+8.3f} == {a.label} "
            lines.append(note.ljust(PREFIX + width, "=") if limit is None else note.rstrip())
            continue
        on_src, on_dst = a.src in slot, a.dst in slot
        if not on_src and not on_dst:
            continue  # drawn on the page(s) of its ends
        x_src = centre(slot[a.src]) if on_src else (0 if a.src < first else width - 1)
        x_dst = centre(slot[a.dst]) if on_dst else (0 if a.dst < first else width - 1)
        lo, hi = sorted((x_src, x_dst))
        label = f" ({a.label}) " if a.src == a.dst else f" {a.label} "
        if not on_dst:
            label = f" {a.label} -> {ladder.columns[a.dst].id} "
        elif not on_src:
            label = f" {a.label} <- {ladder.columns[a.src].id} "
        label_row = lifelines()
        begin = max(0, min(lo + 2, width - len(label)))
        for k, ch in enumerate(label[: max(0, width - begin)]):
            label_row[begin + k] = ch
        arrow_row = lifelines()
        on_line = {x_src: on_src, x_dst: on_dst}  # an end off the page is the page's edge
        for x in range(lo + 1 if on_line[lo] else lo, hi if on_line[hi] else hi + 1):
            arrow_row[x] = "-" if a.event != "dropped" else "."
        if a.src != a.dst:
            if a.event in ("dropped", "refused") and on_dst:
                arrow_row[x_dst] = "X" if a.event == "dropped" else "R"
            elif x_dst > x_src:
                arrow_row[x_dst - 1 if on_dst else x_dst] = ">"
            else:
                arrow_row[x_dst + 1 if on_dst else x_dst] = "<"
        lines.append(" " * PREFIX + "".join(label_row).rstrip())
        lines.append(f"{a.offset:+8.3f} " + "".join(arrow_row).rstrip())
        if a.blocked and on_dst:
            # Under the X: which firewall stopped it, and by what.
            note_row = lifelines()
            note = f"^ {a.blocked}"
            begin = max(0, min(x_dst, width - len(note)))
            for k, ch in enumerate(note[: max(0, width - begin)]):
                note_row[begin + k] = ch
            lines.append(" " * PREFIX + "".join(note_row).rstrip())
    lines.append(" " * PREFIX + "".join(lifelines()).rstrip())
    return lines


# ----------------------------------------------------------------------------- HTML / SVG

SVG_COL = 170
SVG_ROW = 34
SVG_TOP = 70

_COLOURS = {"sip": "#1f6feb", "xmpp": "#8250df", "stun": "#bf8700", "turn": "#bf8700",
            "media": "#1a7f37", "dns": "#57606a", "tcp": "#57606a"}  # fmt: skip


def render_svg(ladder: Ladder) -> str:
    """The ladder as a self-contained SVG element."""
    cols = len(ladder.columns)
    width = max(cols * SVG_COL, 300) + 80
    height = SVG_TOP + (len(ladder.arrows) + 1) * SVG_ROW + 20
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'class="ladder" role="img" aria-label="{html.escape(ladder.title)}">',
        '<defs><marker id="ah" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'fill="context-stroke"/></marker></defs>',
    ]

    def x(i: int) -> int:
        return 80 + i * SVG_COL + SVG_COL // 2

    for i, c in enumerate(ladder.columns):
        if c.kind == "firewall":
            out.append(
                f'<rect x="{x(i) - 6}" y="{SVG_TOP - 10}" width="12" height="{height - SVG_TOP}" '
                'fill="#fbe3e4" stroke="#cf222e" stroke-dasharray="4 3"/>'
            )
            out.append(
                f'<text x="{x(i)}" y="24" text-anchor="middle" class="fw">'
                f"{html.escape(c.id)}</text>"
            )
        else:
            out.append(
                f'<line x1="{x(i)}" y1="{SVG_TOP - 10}" x2="{x(i)}" y2="{height - 10}" '
                'stroke="#8c959f"/>'
            )
            out.append(
                f'<text x="{x(i)}" y="24" text-anchor="middle" class="host">{html.escape(c.id)}</text>'
            )
            out.append(
                f'<text x="{x(i)}" y="42" text-anchor="middle" class="zone">{html.escape(c.zone)}</text>'
            )
    for n, a in enumerate(ladder.arrows):
        y = SVG_TOP + (n + 1) * SVG_ROW
        colour = _COLOURS.get(a.protocol, "#24292f")
        tip = html.escape(a.detail or a.label)
        if a.event == "note":
            out.append(
                f'<rect x="70" y="{y - 14}" width="{width - 80}" height="20" fill="#f6f8fa"/>'
                f'<text x="80" y="{y}" class="step">{html.escape(a.label)}</text>'
            )
            continue
        out.append(f'<g class="msg {a.event}"><title>{tip}</title>')
        out.append(f'<text x="8" y="{y + 4}" class="t">{a.offset:+.3f}s</text>')
        x1, x2 = x(a.src), x(a.dst)
        if a.src == a.dst:
            out.append(
                f'<path d="M{x1},{y - 8} h40 v16 h-40" fill="none" stroke="{colour}" marker-end="url(#ah)"/>'
            )
            out.append(f'<text x="{x1 + 46}" y="{y + 4}" class="lbl">{html.escape(a.label)}</text>')
        else:
            dash = ' stroke-dasharray="6 4"' if a.event in ("dropped", "refused") else ""
            marker = "" if a.event in ("dropped", "refused") else ' marker-end="url(#ah)"'
            out.append(
                f'<line x1="{x1}" y1="{y}" x2="{x2}" y2="{y}" stroke="{colour}" stroke-width="1.6"{dash}{marker}/>'
            )
            if a.event in ("dropped", "refused"):
                out.append(
                    f'<text x="{x2}" y="{y + 5}" text-anchor="middle" class="drop">'
                    f"{'&#x2715;' if a.event == 'dropped' else 'R'}</text>"
                )
                if a.blocked:
                    out.append(
                        f'<text x="{x2}" y="{y + 17}" text-anchor="middle" class="rule">'
                        f"{html.escape(a.blocked)}</text>"
                    )
            out.append(
                f'<text x="{(x1 + x2) / 2}" y="{y - 5}" text-anchor="middle" class="lbl">'
                f"{html.escape(a.label)}</text>"
            )
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out)


LADDER_CSS = """
svg.ladder { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12px; }
svg.ladder .host { font-weight: bold; font-size: 13px; }
svg.ladder .zone { fill: #57606a; font-size: 11px; }
svg.ladder .fw { fill: #cf222e; font-weight: bold; }
svg.ladder .step { font-family: system-ui, sans-serif; font-style: italic; fill: #24292f; }
svg.ladder .t { fill: #57606a; font-size: 11px; }
svg.ladder .drop { fill: #cf222e; font-size: 16px; font-weight: bold; }
svg.ladder .rule { fill: #cf222e; font-size: 10px; }
svg.ladder .lbl { paint-order: stroke; stroke: #ffffff; stroke-width: 4px; }
svg.ladder g.msg:hover .lbl { font-weight: bold; }
"""
