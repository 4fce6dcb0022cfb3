"""``--html FILE``: one self-contained page (no external assets): the matrix coloured per
verdict, the topology drawn as inline SVG with every probed flow on it, and the details of
every row that did not meet its expectation."""

from __future__ import annotations

import datetime as dt
import itertools
import json
from html import escape
from pathlib import Path

from simulator.firewall.rules import RuleRef
from simulator.firewall.trace import Decision, first_fates
from simulator.lab.topology import Topology
from simulator.probes.base import ProbeResult, Verdict
from simulator.probes.run import ProbeRun
from simulator.reports.table import summary

COLOURS: dict[Verdict, str] = {
    Verdict.PASSED: "#1a7f37",
    Verdict.BLOCKED: "#0969da",
    Verdict.REFUSED: "#0969da",
    Verdict.TLS_FAILED: "#cf222e",
    Verdict.PROTOCOL_FAILED: "#bc4c00",
    Verdict.OPEN_UNEXPECTED: "#8250df",
    Verdict.ERROR: "#6e7781",
    Verdict.SKIPPED: "#afb8c1",
}

CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;
  color:#1f2328;background:#fff}
h1{font-size:22px;margin:0 0 4px}
h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d0d7de}
.summary{padding:8px 12px;border-radius:6px;display:inline-block;margin:8px 0}
.ok{background:#dafbe1;color:#1a7f37} .bad{background:#ffebe9;color:#cf222e}
table{border-collapse:collapse;width:100%;margin:6px 0 16px}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa} td.v{color:#fff;font-weight:600;white-space:nowrap}
tr.fail td.id{border-left:4px solid #cf222e}
.legend span{display:inline-block;margin-right:12px}
.legend i{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:4px;
  vertical-align:middle}
details{border:1px solid #d0d7de;border-radius:6px;padding:6px 10px;margin:6px 0}
summary{cursor:pointer;font-weight:600} pre{background:#f6f8fa;padding:8px;overflow:auto}
svg text{font:12px system-ui,sans-serif} .muted{color:#656d76}
.fw{font-size:12px;white-space:nowrap} .fw a{color:inherit}
pre.rules{padding:0;line-height:1.35} pre.rules span{display:block;padding:0 8px}
pre.rules .n{display:inline-block;width:4em;color:#8c959f;user-select:none}
pre.rules .accepted{background:#dafbe1} pre.rules .stopped{background:#ffebe9}
pre.rules .rows{color:#656d76;font-family:system-ui,sans-serif;font-size:12px}
pre.rules span:target{outline:2px solid #0969da}
"""


def _ref(text: str) -> str | None:
    head = text.split(" ", 1)[0]
    return head if ":" in head else None


def topology_svg(topology: Topology, results: list[ProbeResult]) -> str:
    """Zones as columns, interfaces as boxes, firewalls between zones, flows as coloured arrows."""
    col_w, gap, node_w, node_h, top = 230, 70, 190, 40, 60
    zones = list(topology.zones)
    x_of = {z.id: 20 + i * (col_w + gap) for i, z in enumerate(zones)}
    pos: dict[str, tuple[float, float]] = {}
    per_zone: dict[str, int] = {z.id: 0 for z in zones}
    nodes: list[str] = []
    for host in topology.hosts:
        for iface in host.interfaces:
            n = per_zone[iface.zone]
            per_zone[iface.zone] += 1
            x = x_of[iface.zone] + (col_w - node_w) / 2
            y = top + 20 + n * (node_h + 22)
            pos[iface.ref] = (x, y)
            nodes.append(
                f'<g><rect x="{x}" y="{y}" width="{node_w}" height="{node_h}" rx="6" fill="#fff" '
                f'stroke="#57606a"/><text x="{x + 8}" y="{y + 16}" font-weight="600">'
                f'{escape(iface.ref)}</text><text x="{x + 8}" y="{y + 32}" fill="#656d76">'
                f"{escape(str(iface.address))} {escape(iface.fqdn or '')}</text>"
                f"<title>{escape(host.description or host.id)}</title></g>"
            )
    height = top + 40 + max(per_zone.values(), default=1) * (node_h + 22)
    width = 40 + len(zones) * (col_w + gap) - gap
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" '
        f'role="img" aria-label="lab topology with probed flows">'
    ]
    parts.append("<defs>")
    for verdict, colour in COLOURS.items():
        parts.append(
            f'<marker id="arrow-{verdict.value}" viewBox="0 0 10 10" refX="9" refY="5" '
            f'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
            f'<path d="M0,0 L10,5 L0,10 z" fill="{colour}"/></marker>'
        )
    parts.append("</defs>")
    for zone in zones:
        x = x_of[zone.id]
        parts.append(
            f'<rect x="{x}" y="{top - 40}" width="{col_w}" height="{height - top + 30}" rx="8" '
            f'fill="{"#f6f8fa" if not zone.public else "#fff8c5"}" stroke="#d0d7de"/>'
            f'<text x="{x + 10}" y="{top - 20}" font-weight="700">{escape(zone.id)}</text>'
            f'<text x="{x + 10}" y="{top - 5}" fill="#656d76">{escape(str(zone.subnet))}</text>'
        )
    index = {z.id: i for i, z in enumerate(zones)}
    for fw in topology.firewalls:
        ids = sorted(index[z] for z in fw.zones if z in index)
        if len(ids) >= 2 and ids[1] == ids[0] + 1:
            x = x_of[zones[ids[0]].id] + col_w + gap / 2
            parts.append(
                f'<g><rect x="{x - 7}" y="{top - 40}" width="14" height="{height - top + 30}" '
                f'fill="#cf222e" opacity="0.8"/>'
                f'<text x="{x}" y="{height - 4}" text-anchor="middle" '
                f'font-weight="600">{escape(fw.id)}</text><title>{escape(fw.description)}</title></g>'
            )
    # A host's interfaces in several zones are one machine: dashed links.
    for host in topology.hosts:
        refs = [i.ref for i in host.interfaces]
        for a, b in itertools.pairwise(refs):
            (ax, ay), (bx, by) = pos[a], pos[b]
            if ax != bx:
                parts.append(
                    f'<line x1="{ax + node_w}" y1="{ay + node_h / 2}" '
                    f'x2="{bx}" y2="{by + node_h / 2}" '
                    f'stroke="#8c959f" stroke-dasharray="4 3"/>'
                )
    parts.extend(nodes)
    seen: dict[tuple[str, str], int] = {}
    for result in results:
        src, dst = _ref(result.source), _ref(result.destination)
        if src not in pos or dst not in pos:
            continue
        assert src is not None and dst is not None
        k = seen.get((src, dst), 0)
        seen[(src, dst)] = k + 1
        (sx, sy), (dx, dy) = pos[src], pos[dst]
        sy, dy = sy + node_h / 2 + (k % 3 - 1) * 6, dy + node_h / 2 + (k % 3 - 1) * 6
        if sx < dx:  # left to right: right edge -> left edge
            sx, dx = sx + node_w, dx
            mx, my = (sx + dx) / 2, (sy + dy) / 2 - (20 + 14 * k)
        elif sx > dx:
            dx = dx + node_w
            mx, my = (sx + dx) / 2, (sy + dy) / 2 + (20 + 14 * k)
        else:  # same zone: loop out on the right
            sx = dx = sx + node_w
            mx, my = sx + 50 + 14 * k, (sy + dy) / 2
        colour = COLOURS[result.verdict]
        dash = "" if result.met else ' stroke-dasharray="6 3"'
        parts.append(
            f'<path d="M{sx:.0f},{sy:.0f} Q{mx:.0f},{my:.0f} {dx:.0f},{dy:.0f}" fill="none" '
            f'stroke="{colour}" stroke-width="{2 if result.met else 3}"{dash} opacity="0.85" '
            f'marker-end="url(#arrow-{result.verdict.value})"><title>{escape(result.row_id)}: '
            f"{escape(result.verdict.title)}: {escape(result.reason)}</title></path>"
        )
    parts.append("</svg>")
    return "".join(parts)


# ----------------------------------------------------------------- firewall decisions


def _refs(result: ProbeResult) -> list[tuple[Decision, RuleRef]]:
    """The deciding places (a rule, or a policy line) of a result's first packets."""
    out = []
    for direction in ("request", "reply"):
        for d in first_fates(result.firewall, direction):
            ref = d.rule or d.policy_at
            if ref is not None and ref.file and ref.line:
                out.append((d, ref))
    return out


def rule_files(results: list[ProbeResult]) -> dict[str, int]:
    """Every rule file a decision names, numbered in order of first mention."""
    files: dict[str, int] = {}
    for result in results:
        for _, ref in _refs(result):
            files.setdefault(str(ref.file), len(files))
    return files


def _anchor(files: dict[str, int], ref: RuleRef) -> str:
    return f"f{files[str(ref.file)]}-L{ref.line}"


def firewall_cell(result: ProbeResult, files: dict[str, int]) -> str:
    """Per firewall and direction, the first packet's fate, linked to the deciding line."""
    lines = []
    for direction in ("request", "reply"):
        for d in first_fates(result.firewall, direction):
            ref = d.rule or d.policy_at
            where = escape(d.where)
            if ref is not None and ref.file and ref.line and str(ref.file) in files:
                where = f'<a href="#{_anchor(files, ref)}">{where}</a>'
            mark = "✓" if d.crossed else "✗"
            lines.append(f"{mark} {escape(d.firewall)} {direction} {escape(d.action)}: {where}")
    return "<br>".join(lines) or '<span class="muted">-</span>'


def rules_section(results: list[ProbeResult], files: dict[str, int]) -> list[str]:
    """Each rule file with its deciding lines highlighted, each listing the rows it decided."""
    hits: dict[tuple[str, int], list[tuple[str, bool]]] = {}
    firewalls: dict[str, set[str]] = {}
    for result in results:
        for d, ref in _refs(result):
            assert ref.line is not None
            hits.setdefault((str(ref.file), ref.line), []).append((result.row_id, d.crossed))
            firewalls.setdefault(str(ref.file), set()).add(d.firewall)
    out = ["<h2>Firewall rules</h2>"]
    if not files:
        out.append("<p>No firewall decision was traced in this run.</p>")
    for path, n in files.items():
        out.append(
            f"<h3>{escape(', '.join(sorted(firewalls.get(path, ()))))}: "
            f'<span class="muted">{escape(path)}</span></h3>'
        )
        try:
            text = Path(path).read_text("utf-8", errors="replace").splitlines()
        except OSError as exc:
            out.append(f'<p class="muted">not readable here: {escape(exc.strerror or "")}</p>')
            continue
        body = []
        for number, line in enumerate(text, start=1):
            rows = hits.get((path, number), [])
            cls = ""
            if rows:
                cls = ' class="accepted"' if all(ok for _, ok in rows) else ' class="stopped"'
            links = ", ".join(
                f'<a href="#row-{escape(r)}">{escape(r)}</a>'
                for r in dict.fromkeys(r for r, _ in rows)
            )
            body.append(
                f'<span id="f{n}-L{number}"{cls}><span class="n">{number}</span>{escape(line)}'
                + (f'  <span class="rows">&larr; {links}</span>' if links else "")
                + "</span>"
            )
        out.append(f'<pre class="rules">{"".join(body)}</pre>')
    return out


def facts(result: ProbeResult) -> str:
    data = {"details": result.details, "timings": result.timings}
    return json.dumps(data, indent=2, default=str)


def to_html(run: ProbeRun) -> str:
    by_row = {r.row_id: r for r in run.results}
    files = rule_files(run.results)
    ok = not run.failures
    when = dt.datetime.fromtimestamp(run.started, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    out = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        f"<title>edgesim probe report: {escape(run.topology.name)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>edgesim probe report: {escape(run.topology.name)}</h1>",
        f'<div class="muted">runner {escape(run.runner)}'
        + (f", target {escape(run.target)}" if run.target else "")
        + f", {escape(when)}</div>",
        f'<div class="summary {"ok" if ok else "bad"}">{escape(summary(run))}</div>',
        *(f'<p class="muted">{escape(note)}</p>' for note in run.notes),
        '<div class="legend">'
        + "".join(
            f'<span><i style="background:{c}"></i>{escape(v.title)}</span>'
            for v, c in COLOURS.items()
        )
        + "</div>",
        "<h2>Port matrix</h2>",
    ]
    for seed_id, rows in run.matrix.by_seed().items():
        present = [r for r in rows if r.id in by_row]
        if not present:
            continue
        seed = run.matrix.seeds[seed_id]
        out.append(
            f'<h3>{escape(seed.title)} <span class="muted">({escape(seed.document)})</span></h3>'
        )
        out.append(
            "<table><tr><th>row</th><th>flow</th><th>from</th><th>to</th><th>expect</th>"
            "<th>verdict</th><th>reason</th><th>firewall</th></tr>"
        )
        for row in present:
            r = by_row[row.id]
            cls = "" if r.met or r.verdict is Verdict.SKIPPED else ' class="fail"'
            out.append(
                f'<tr{cls} id="row-{escape(row.id)}"><td class="id">{escape(row.id)}</td>'
                f"<td>{escape(row.label)}</td><td>{escape(r.source)}</td><td>{escape(r.destination)}</td>"
                f"<td>{escape(row.expect.value)}</td>"
                f'<td class="v" style="background:{COLOURS[r.verdict]}">{"✓" if r.met else "✗"} '
                f"{escape(r.verdict.title)}</td><td>{escape(r.reason)}</td>"
                f'<td class="fw">{firewall_cell(r, files)}</td></tr>'
            )
        out.append("</table>")
    out.append("<h2>Topology and flows</h2>")
    out.append(
        '<p class="muted">Solid arrows met their expectation, dashed ones did not; '
        "hover for the row.</p>"
    )
    out.append(topology_svg(run.topology, run.results))
    failures = run.failures
    out.append(f"<h2>Failures ({len(failures)})</h2>")
    if not failures:
        out.append("<p>Every probed row met its expectation.</p>")
    rows_by_id = {r.id: r for r in run.matrix.rows}
    for r in failures:
        info = rows_by_id.get(r.row_id)
        out.append(
            f"<details open><summary>{escape(r.row_id)}: expected {escape(r.expect)}, got "
            f"{escape(r.verdict.title)}</summary><p>{escape(r.reason)}</p>"
            f"<p>{escape(info.label if info else '')} {escape(info.notes if info else '')}</p>"
            f"<p>from <b>{escape(r.source)}</b> to <b>{escape(r.destination)}</b> "
            f"({escape(r.probe)})</p>"
            + "".join(f"<p>{escape(d.describe())}</p>" for d in r.firewall)
            + f"<pre>{escape(facts(r))}</pre></details>"
        )
    out += rules_section(run.results, files)
    out.append("</body></html>\n")
    return "\n".join(out)
