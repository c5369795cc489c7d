"""``report.html``: one self-contained page for a person deciding whether to ship a model.

The page opens with the verdict, the failures and the warnings (a random-data calibration is a
red banner), then shows the charts (per-layer SQNR, the worst layers' histograms, per-channel
weight ranges around cross-layer equalization) and the tables. It loads nothing: CSS, SVG and
the few lines of JavaScript (table sorting, histogram scale) are inline, and a Content Security
Policy forbids any fetch. Every section is optional; values from the report are HTML-escaped.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

from onnxq.report import svg

__all__ = ["render_html", "write_html"]

_WORST_TABLE_ROWS = 20

_CSS = """
:root{--ink:#1f2328;--muted:#59636e;--line:#d1d9e0;--bg:#f6f8fa;--card:#fff;--accent:#0969da;
--ok:#1a7f37;--ok-bg:#dafbe1;--bad:#cf222e;--bad-bg:#ffebe9;--warn:#9a6700;--warn-bg:#fff8c5}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);font:14px/1.45 system-ui,-apple-system,
"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1120px;margin:0 auto;padding:0 20px 40px}
header.top{background:#24292f;color:#fff;padding:18px 0 14px}
header.top .in{max-width:1120px;margin:0 auto;padding:0 20px}
header.top h1{margin:0;font-size:20px;font-weight:600}
header.top .sub{color:#d0d7de;margin-top:4px;font-size:13px;word-break:break-all}
header.top code{color:#fff;background:rgba(255,255,255,.12)}
nav{position:sticky;top:0;z-index:2;background:rgba(246,248,250,.95);
border-bottom:1px solid var(--line);margin:0 -20px 16px;padding:8px 20px;font-size:13px}
nav a{color:var(--accent);text-decoration:none;margin-right:14px;white-space:nowrap}
nav a:hover{text-decoration:underline}
section{background:var(--card);border:1px solid var(--line);border-radius:8px;
padding:16px 20px;margin:0 0 16px}
h2{font-size:16px;margin:0 0 10px}
h3{font-size:14px;margin:0 0 6px;word-break:break-all}h3.gap{margin-top:14px}
p.note{color:var(--muted);margin:4px 0 10px}
code{font:12px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:var(--bg);
padding:1px 4px;border-radius:4px;word-break:break-all}
.verdict{display:flex;gap:18px;align-items:center;border-left:8px solid var(--muted)}
.verdict.pass{border-left-color:var(--ok)}.verdict.fail{border-left-color:var(--bad)}
.badge-big{font-size:26px;font-weight:700;letter-spacing:.04em;padding:6px 16px;
border-radius:6px;background:var(--bg);color:var(--muted)}
.pass .badge-big{background:var(--ok-bg);color:var(--ok)}
.fail .badge-big{background:var(--bad-bg);color:var(--bad)}
.verdict .what{font-size:15px}
.verdict .what .meta{color:var(--muted);font-size:12px;margin-top:2px}
.banner{border-radius:8px;padding:12px 16px;margin:0 0 16px;font-size:14px}
.banner.random{background:var(--bad);color:#fff;font-weight:600;font-size:15px}
.banner.random span{font-weight:400;display:block;font-size:13px;margin-top:2px}
.alerts{border-left:6px solid var(--warn);background:var(--warn-bg)}
.alerts.failures{border-left-color:var(--bad);background:var(--bad-bg)}
.alerts h2{margin-bottom:6px}.alerts ul{margin:0;padding-left:20px}
.alerts li{margin:2px 0;word-break:break-word}
.tiles{display:grid;grid-template-columns:repeat(auto-fit,minmax(170px,1fr));gap:10px;
margin:0 0 16px}
.tile{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:10px 14px}
.tile .k{color:var(--muted);font-size:12px}.tile .v{font-size:20px;font-weight:600}
.tile.bad .v{color:var(--bad)}.tile.ok .v{color:var(--ok)}.tile.warn .v{color:var(--warn)}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid var(--line);vertical-align:top}
th{background:var(--bg);font-weight:600;white-space:nowrap}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
table.sortable th{cursor:pointer;user-select:none}
table.sortable th:after{content:" \\2195";color:#aab2bb;font-size:11px}
table.sortable th[data-nosort]{cursor:default}table.sortable th[data-nosort]:after{content:none}
table.sortable th[aria-sort=ascending]:after{content:" \\25B2";color:var(--accent)}
table.sortable th[aria-sort=descending]:after{content:" \\25BC";color:var(--accent)}
table.kv th{width:220px}
tr.flagged td{background:#fff5f5}
.scroll{max-height:420px;overflow:auto;border:1px solid var(--line);border-radius:6px}
.scroll table{border:0}.scroll th{position:sticky;top:0}
.tag{display:inline-block;padding:0 7px;border-radius:10px;font-size:12px;font-weight:600}
.tag.ok{background:var(--ok-bg);color:var(--ok)}.tag.bad{background:var(--bad-bg);color:var(--bad)}
.tag.warn{background:var(--warn-bg);color:var(--warn)}
.meter{background:#80ccff;height:10px;border-radius:2px;min-width:1px}
.grid2{display:grid;grid-template-columns:repeat(auto-fill,minmax(480px,1fr));gap:14px}
.card{border:1px solid var(--line);border-radius:6px;padding:10px 12px}
.wcard+.wcard{margin-top:12px}
.card .facts{color:var(--muted);font-size:12px;margin-bottom:4px}
.pair{display:flex;flex-wrap:wrap;gap:8px}
button.toggle{font:inherit;font-size:12px;border:1px solid var(--line);background:var(--bg);
border-radius:6px;padding:3px 10px;cursor:pointer;margin-left:8px}
svg.chart{max-width:100%;height:auto;display:block}
.chart text{font:11px system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;fill:var(--muted)}
.chart .axis-title{fill:var(--ink)}.chart .panel-title{fill:var(--ink);font-weight:600}
.chart .legend{fill:var(--ink)}
.grid{stroke:#eaeef2;fill:none}.axis{stroke:#8c959f;fill:none}
.zero{stroke:#8c959f;stroke-dasharray:2 2;fill:none}
.trace{fill:none;stroke:#80ccff;stroke-width:1}
.pt{fill:var(--accent)}.pt.flag{fill:var(--bad)}
.pt.inf{fill:#fff;stroke:var(--accent);stroke-width:1.3}
.pt:hover{stroke:var(--ink);stroke-width:2}
.dots{fill:none;stroke:var(--accent);stroke-width:3;stroke-linecap:round}
.threshold{fill:none;stroke:var(--bad);stroke-width:1.3;stroke-dasharray:6 4}
.chart .threshold-label{fill:var(--bad)}
.hist .bar{fill:#54aeff}.clipped{fill:var(--bad);fill-opacity:.09}
.enc{stroke:var(--bad);stroke-width:1.5;stroke-dasharray:4 3;fill:none}
.chart .enc-label{fill:var(--bad)}
.hists:not(.linear) .bars.lin,.hists.linear .bars.log{display:none}
.wrange.before rect.bar{fill:#afb8c1}.wrange.after rect.bar{fill:var(--accent)}
.wrange.before path.bar{stroke:#afb8c1}.wrange.after path.bar{stroke:var(--accent)}
footer{color:var(--muted);font-size:12px;text-align:center;margin-top:8px}
@media print{nav{display:none}section{break-inside:avoid}}
"""

_JS = """(function(){"use strict";
function key(td){var v=td.getAttribute("data-v");if(v===null){v=td.textContent.trim();}
var n=Number(v);return isNaN(n)||v===""?[1,v.toLowerCase()]:[0,n];}
function cmp(a,b){if(a[0]!==b[0]){return a[0]-b[0];}return a[1]<b[1]?-1:a[1]>b[1]?1:0;}
document.querySelectorAll("table.sortable").forEach(function(table){
var heads=table.querySelectorAll("thead th");
heads.forEach(function(th,col){if(th.hasAttribute("data-nosort")){return;}
th.addEventListener("click",function(){
var asc=th.getAttribute("aria-sort")!=="ascending";
heads.forEach(function(h){h.removeAttribute("aria-sort");});
th.setAttribute("aria-sort",asc?"ascending":"descending");
var body=table.tBodies[0];var rows=Array.prototype.slice.call(body.rows);
rows.sort(function(r1,r2){var c=cmp(key(r1.cells[col]),key(r2.cells[col]));
return asc?c:-c;});rows.forEach(function(r){body.appendChild(r);});});});});
var button=document.getElementById("hist-scale");
if(button){button.addEventListener("click",function(){
var box=document.getElementById("hists");var lin=box.classList.toggle("linear");
button.textContent=lin?"show log scale":"show linear scale";});}
})();"""

_SCRIPT_HASH = base64.b64encode(hashlib.sha256(_JS.encode()).digest()).decode()
_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    f"script-src 'sha256-{_SCRIPT_HASH}'; base-uri 'none'; form-action 'none'"
)


# --------------------------------------------------------------------------- value helpers


def _e(value: Any) -> str:
    """HTML-escaped text of any value (quotes too, so it is safe in attributes)."""
    return escape(str(value), quote=True)


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _seq(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else []


def _num(value: Any) -> float | None:
    """A float from a number or a numeric string (``"inf"`` too); ``None`` if there is none."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _floats(value: Any) -> list[float]:
    out = [_num(v) for v in _seq(value)]
    return [v for v in out if v is not None and math.isfinite(v)]


def _sqnr(value: Any) -> float | None:
    """A finite SQNR, or ``None`` for infinite (identical) and unknown values."""
    v = _num(value)
    return v if v is not None and math.isfinite(v) else None


def fmt_db(value: Any) -> str:
    """An SQNR in dB as shown on the page: two decimals, ``∞`` for identical (None/inf)."""
    v = _num(value)
    if v is None or v == math.inf:
        return "∞"
    if math.isnan(v):
        return "n/a"
    return f"{v:.2f}"


def fmt_value(value: Any) -> str:
    """A report value as text: ints with separators, floats to four significant digits."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(fmt_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return json.dumps(value, default=str)
    return str(value)


def _sort_key(value: Any) -> str:
    """The ``data-v`` attribute the page's table sorting uses for a numeric cell."""
    v = _num(value)
    if v is None:
        return "Infinity" if value is None else ""
    return "Infinity" if v == math.inf else repr(v)


def _db_cell(value: Any) -> str:
    return f'<td class="n" data-v="{_sort_key(value)}">{_e(fmt_db(value))}</td>'


def _num_cell(value: Any) -> str:
    v = _num(value)
    key = "" if v is None else repr(v)
    return f'<td class="n" data-v="{key}">{_e(fmt_value(value))}</td>'


def _pass_tag(passed: Any) -> str:
    if passed is None:
        return '<span class="tag">—</span>'
    return '<span class="tag ok">pass</span>' if passed else '<span class="tag bad">fail</span>'


def _table(
    head: Sequence[str],
    rows: Iterable[str],
    *,
    sortable: bool = True,
    numeric: set[int] | None = None,
) -> str:
    numeric = numeric or set()
    ths = "".join(
        f"<th{' class=n' if i in numeric else ''}{'' if h else ' data-nosort'}>{_e(h)}</th>"
        for i, h in enumerate(head)
    )
    css = ' class="sortable"' if sortable else ""
    return f"<table{css}><thead><tr>{ths}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _kv_table(items: Iterable[tuple[str, str]]) -> str:
    """A two-column table; values are already HTML."""
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in items)
    return f'<table class="kv"><tbody>{rows}</tbody></table>'


def _section(sid: str, title: str, body: str, note: str = "") -> str:
    extra = f'<p class="note">{note}</p>' if note else ""
    return f'<section id="{sid}"><h2>{_e(title)}</h2>{extra}{body}</section>'


# --------------------------------------------------------------------------- top of the page


def _header(report: Mapping[str, Any]) -> str:
    command = report.get("command")
    title = f"onnxq {command} report" if isinstance(command, str) else "onnxq report"
    model = _map(report.get("model"))
    bits = [
        f"{_e(k)} {_e(report[k])}"
        for k in ("created", "onnxq_version", "schema")
        if report.get(k) is not None
    ]
    path = (
        f"<div class='sub'>model <code>{_e(model['path'])}</code></div>" if "path" in model else ""
    )
    meta = f"<div class='sub'>{' · '.join(bits)}</div>" if bits else ""
    return f'<header class="top"><div class="in"><h1>{_e(title)}</h1>{path}{meta}</div></header>'


def _verdict(report: Mapping[str, Any]) -> str:
    status = report.get("status")
    outputs = [_map(o) for o in _seq(report.get("outputs"))]
    failures = _seq(report.get("failures"))
    if status == "pass":
        css, badge, text = "pass", "PASS", "The quantized model meets every threshold of this run."
    elif status == "fail":
        css, badge = "fail", "FAIL"
        n = len(failures)
        text = "The quantized model does not meet its thresholds" + (
            f" ({n} failure{'s' if n != 1 else ''}, listed below)." if n else "."
        )
    else:
        css, badge, text = "unknown", "NO VERDICT", "The report carries no pass/fail status."
    meta = ""
    if outputs:
        passed = sum(1 for o in outputs if o.get("passed"))
        meta = f"{passed} of {len(outputs)} output{'s' if len(outputs) != 1 else ''} pass"
    return (
        f'<section id="verdict" class="verdict {css}"><div class="badge-big">{badge}</div>'
        f'<div class="what"><div>{_e(text)}</div><div class="meta">{_e(meta)}</div></div>'
        "</section>"
    )


def _random_banner(report: Mapping[str, Any]) -> str:
    data = _map(report.get("data"))
    if not (data.get("is_random") or data.get("kind") == "random"):
        return ""
    return (
        '<div class="banner random" id="random-data" role="alert">'
        "Calibrated on random data: the encodings do not reflect real inputs. "
        "Do not ship this model."
        "<span>Re-run the calibration with representative input samples.</span></div>"
    )


def _alerts(report: Mapping[str, Any]) -> str:
    failures = [str(f) for f in _seq(report.get("failures"))]
    warnings = [str(w) for w in _seq(report.get("warnings"))]
    for w in _seq(_map(report.get("data")).get("warnings")):
        if str(w) not in warnings:
            warnings.append(str(w))
    out = ""
    if failures:
        items = "".join(f"<li>{_e(f)}</li>" for f in failures)
        out += (
            f'<section id="failures" class="alerts failures"><h2>Failures ({len(failures)})</h2>'
            f"<ul>{items}</ul></section>"
        )
    if warnings:
        items = "".join(f"<li>{_e(w)}</li>" for w in warnings)
        out += (
            f'<section id="warnings" class="alerts"><h2>Warnings ({len(warnings)})</h2>'
            f"<ul>{items}</ul></section>"
        )
    return out


def _tile(key: str, value: str, css: str = "") -> str:
    return (
        f'<div class="tile {css}"><div class="k">{_e(key)}</div><div class="v">{value}</div></div>'
    )


def _tiles(report: Mapping[str, Any]) -> str:
    tiles = []
    outputs = [_map(o) for o in _seq(report.get("outputs"))]
    if outputs:
        passed = sum(1 for o in outputs if o.get("passed"))
        css = "ok" if passed == len(outputs) else "bad"
        tiles.append(_tile("outputs passing", f"{passed} / {len(outputs)}", css))
        values = [_num(o.get("sqnr_db")) for o in outputs]
        worst = min((v for v in values if v is not None), default=None)
        tiles.append(_tile("lowest output SQNR", f"{_e(fmt_db(worst))} dB"))
    layers = [_map(la) for la in _seq(report.get("layers"))]
    if layers:
        flagged = sum(1 for la in layers if la.get("flagged"))
        css = "bad" if flagged else "ok"
        tiles.append(_tile("layers below threshold", f"{flagged:,} / {len(layers):,}", css))
    htp = report.get("htp")
    if isinstance(htp, Mapping):
        rejected = len(_seq(htp.get("rejected")))
        if htp.get("accepted_whole") and not rejected:
            tiles.append(_tile("HTP", "whole graph", "ok"))
        else:
            tiles.append(_tile("HTP rejected nodes", f"{rejected:,}", "warn"))
    data = _map(report.get("data"))
    if data:
        if data.get("is_random") or data.get("kind") == "random":
            tiles.append(_tile("calibration data", "random", "bad"))
        elif data.get("num_samples") is not None:
            kind = f" ({_e(data['kind'])})" if data.get("kind") else ""
            tiles.append(
                _tile("calibration samples", f"{_e(fmt_value(data['num_samples']))}{kind}")
            )
    return f'<div class="tiles">{"".join(tiles)}</div>' if tiles else ""


# --------------------------------------------------------------------------- sections


def _outputs(report: Mapping[str, Any]) -> str:
    outputs = [_map(o) for o in _seq(report.get("outputs"))]
    if not outputs:
        return ""
    unrounded = list(_seq(report.get("unrounded")))
    rows = (
        f"<tr><td><code>{_e(o.get('name', ''))}</code></td>{_db_cell(o.get('sqnr_db'))}"
        + (_db_cell(o.get("qdq_sqnr_db")) if unrounded else "")
        + (_db_cell(o.get("threshold_db")) if o.get("threshold_db") is not None else "<td>—</td>")
        + f"{_num_cell(o.get('max_abs_error'))}<td>{_pass_tag(o.get('passed'))}</td></tr>"
        for o in outputs
    )
    head = ["output", "SQNR (dB)", "threshold (dB)", "max |error|", "result"]
    if unrounded:
        head.insert(2, "Q/DQ on CPU (dB)")
    table = _table(head, rows, numeric=set(range(1, len(head) - 1)))
    note = "Quantized against float outputs on the evaluation samples."
    if unrounded:
        note += (
            f" SQNR is the simulation's: the device does not round {len(unrounded)} tensor(s) "
            "inside the chains it fuses (the config's onnxq.unrounded_chains: Conv + "
            "HardSwish on HTP v73-v81), and neither does the simulation. The exported Q/DQ "
            "model keeps their pairs, which the device needs; a stock runtime rounds there, "
            "which gives the Q/DQ on CPU figure."
        )
    return _section("outputs", "Model outputs", table, note)


def _layer_label(index: int, layer: Mapping[str, Any]) -> str:
    value = layer.get("sqnr_db")
    shown = f"{fmt_db(value)} dB" + (" (identical)" if _sqnr(value) is None else "")
    label = f"#{index} {layer.get('tensor', '?')} · {layer.get('op_type', '?')} · {shown}"
    return label + (" · below threshold" if layer.get("flagged") else "")


def _layers(report: Mapping[str, Any]) -> str:
    layers = [_map(la) for la in _seq(report.get("layers"))]
    if not layers:
        return ""
    threshold = _sqnr(report.get("threshold_layer_db"))
    points = [
        svg.LayerPoint(_sqnr(la.get("sqnr_db")), bool(la.get("flagged")), _layer_label(i, la))
        for i, la in enumerate(layers)
    ]
    flagged = sum(1 for p in points if p.flagged)
    identical = sum(1 for p in points if p.sqnr_db is None)
    finite = sorted(p.sqnr_db for p in points if p.sqnr_db is not None)
    facts = [f"{len(layers):,} quantized layer outputs in topological order"]
    if threshold is not None:
        facts.append(f"{flagged:,} below the {threshold:g} dB threshold (red)")
    if finite:
        facts.append(f"median {finite[len(finite) // 2]:.2f} dB")
    if identical:
        facts.append(f"{identical:,} identical to float (∞, top band)")
    hover = "; hover a point for its tensor" if len(layers) <= svg.MAX_POINT_MARKERS else ""
    chart = svg.sqnr_chart(points, threshold)
    return _section("layers", "Per-layer SQNR", chart, _e(", ".join(facts)) + hover + ".")


def _range_text(lo: Any, hi: Any) -> str:
    if _num(lo) is None and _num(hi) is None:
        return "—"
    return f"[{fmt_value(_num(lo))}, {fmt_value(_num(hi))}]"


def _worst_table(report: Mapping[str, Any]) -> str:
    layers = [(i, _map(la)) for i, la in enumerate(_seq(report.get("layers")))]
    ranked = sorted(
        ((i, la) for i, la in layers if _sqnr(la.get("sqnr_db")) is not None),
        key=lambda item: _sqnr(item[1].get("sqnr_db")) or 0.0,
    )[:_WORST_TABLE_ROWS]
    if not ranked:
        return ""
    rows = []
    for rank, (index, la) in enumerate(ranked, 1):
        enc = _map(la.get("encoding"))
        flag = '<span class="tag bad">below</span>' if la.get("flagged") else ""
        bits = enc.get("bitwidth")
        sym = "" if "symmetric" not in enc else (" sym" if enc.get("symmetric") else " asym")
        rows.append(
            f"<tr{' class=flagged' if la.get('flagged') else ''}>"
            f'<td class="n">{rank}</td><td class="n">{index}</td>'
            f"<td><code>{_e(la.get('tensor', ''))}</code></td><td>{_e(la.get('op_type', ''))}</td>"
            f"{_db_cell(la.get('sqnr_db'))}"
            f"<td>{_e(_range_text(la.get('float_min'), la.get('float_max')))}</td>"
            f"<td>{_e(_range_text(enc.get('min'), enc.get('max')))}</td>"
            f"<td>{_e('' if bits is None else fmt_value(bits))}{_e(sym)}</td><td>{flag}</td></tr>"
        )
    table = _table(
        ["rank", "layer", "tensor", "op", "SQNR (dB)", "float range", "encoding", "bits", ""],
        rows,
        numeric={0, 1, 4},
    )
    title = f"Worst {len(ranked)} layers"
    return _section("worst", title, table, "Lowest SQNR first; identical layers (∞) left out.")


def _clipped_fraction(
    edges: Sequence[float], counts: Sequence[float], lo: float | None, hi: float | None
) -> float | None:
    """The share of histogram mass outside ``[lo, hi]`` (bins split linearly)."""
    total = sum(counts)
    if total <= 0 or (lo is None and hi is None):
        return None
    clipped = 0.0
    for i, c in enumerate(counts):
        a, b = edges[i], edges[i + 1]
        width = b - a
        share = 0.0
        if lo is not None and a < lo:
            share += 1.0 if width <= 0 else (min(b, lo) - a) / width
        if hi is not None and b > hi:
            share += 1.0 if width <= 0 else (b - max(a, hi)) / width
        clipped += c * min(share, 1.0)
    return clipped / total


def _histograms(report: Mapping[str, Any]) -> str:
    cards = []
    for layer in (_map(w) for w in _seq(report.get("worst_layers"))):
        hist = _map(layer.get("histogram"))
        edges, counts = _floats(hist.get("edges")), _floats(hist.get("counts"))
        n = min(len(counts), len(edges) - 1)
        if n <= 0:
            continue
        edges, counts = edges[: n + 1], counts[:n]
        lo, hi = _sqnr(layer.get("encoding_min")), _sqnr(layer.get("encoding_max"))
        tensor = str(layer.get("tensor", "?"))
        facts = [str(layer.get("op_type", "?")), f"SQNR {fmt_db(layer.get('sqnr_db'))} dB"]
        clipped = _clipped_fraction(edges, counts, lo, hi)
        if clipped is not None:
            facts.append(f"≈ {clipped * 100:.2f} % of values clipped")
        if lo is None and hi is None:
            facts.append("no encoding")
        chart = svg.histogram_chart(edges, counts, lo, hi, title=f"Histogram of {tensor}")
        cards.append(
            f'<div class="card"><h3><code>{_e(tensor)}</code></h3>'
            f'<div class="facts">{_e(" · ".join(facts))}</div>{chart}</div>'
        )
    if not cards:
        return ""
    note = (
        "Float values on the evaluation samples; dashed red lines are the encoding's min and max, "
        "the shaded tails are clipped."
        '<button type="button" class="toggle" id="hist-scale">show linear scale</button>'
    )
    body = f'<div class="grid2 hists" id="hists">{"".join(cards)}</div>'
    return _section("histograms", "Worst layers: value histograms", body, note)


def _spread(mins: Sequence[float], maxs: Sequence[float]) -> float | None:
    """Widest over median per-channel range (max - min).

    The median, not the narrowest: a dead channel (a BN's γ ≈ 0 folded in) has a range near 0
    and would make any ratio to the narrowest meaningless (efflite0's stem: 7.7e9).
    """
    ranges = sorted(b - a for a, b in zip(mins, maxs, strict=False) if b - a > 0)
    if not ranges:
        return None
    mid = len(ranges) // 2
    median = ranges[mid] if len(ranges) % 2 else (ranges[mid - 1] + ranges[mid]) / 2
    return ranges[-1] / median


def _weight_ranges(report: Mapping[str, Any]) -> str:
    cards = []
    for entry in (_map(w) for w in _seq(report.get("weight_ranges"))):
        before, after = _map(entry.get("before")), entry.get("after")
        b_min, b_max = _floats(before.get("min")), _floats(before.get("max"))
        if not b_min or not b_max:
            continue
        name = str(entry.get("weight", "?"))
        facts = [f"layer {entry.get('layer', '?')}", f"{min(len(b_min), len(b_max))} channels"]
        panels = [svg.range_bars_chart(b_min, b_max, css_class="before", title="before CLE")]
        spread_b = _spread(b_min, b_max)
        if isinstance(after, Mapping):
            a_min, a_max = _floats(after.get("min")), _floats(after.get("max"))
            panels.append(svg.range_bars_chart(a_min, a_max, css_class="after", title="after CLE"))
            spread_a = _spread(a_min, a_max)
            if spread_b is not None and spread_a is not None:
                facts.append(f"channel range spread {spread_b:.3g}× → {spread_a:.3g}×")
        else:
            facts.append("not equalized")
            if spread_b is not None:
                facts.append(f"channel range spread {spread_b:.3g}×")
        cards.append(
            f'<div class="card wcard"><h3><code>{_e(name)}</code></h3>'
            f'<div class="facts">{_e(" · ".join(facts))}</div>'
            f'<div class="pair">{"".join(panels)}</div></div>'
        )
    if not cards:
        return ""
    note = (
        "Per output channel: each bar spans the channel's [min, max]; before cross-layer "
        "equalization in grey, after in blue. Spread is the widest over the median channel "
        "range (closer to 1 quantizes better per tensor)."
    )
    return _section("weights", "Weight ranges per channel", "".join(cards), note)


def _htp(report: Mapping[str, Any]) -> str:
    htp = report.get("htp")
    if not isinstance(htp, Mapping):
        return ""
    rejected = [_map(r) for r in _seq(htp.get("rejected"))]
    outputs = [_map(o) for o in _seq(htp.get("outputs"))]
    arch = htp.get("arch")
    facts = []
    if arch is not None:
        facts.append(f"HTP architecture v{_e(arch)}")
    if htp.get("accepted_whole"):
        facts.append('<span class="tag ok">whole graph accepted</span>')
    elif "accepted_whole" in htp:
        n = len(rejected)
        facts.append(f'<span class="tag warn">{n} node{"s" if n != 1 else ""} rejected</span>')
    if htp.get("error"):
        facts.append('<span class="tag warn">the backend cannot run the model</span>')
    body = f"<p>{' · '.join(facts)}</p>" if facts else ""
    if htp.get("error"):
        body += f"<p><code>{_e(htp['error'])}</code></p>"
    if rejected:
        rows = (
            f"<tr><td><code>{_e(r.get('node', ''))}</code></td><td>{_e(r.get('op_type', ''))}"
            f"</td><td>{_e(r.get('reason', ''))}</td></tr>"
            for r in rejected
        )
        body += "<h3>Rejected nodes</h3>" + _table(
            ["node", "op", "reason"], rows, numeric=set(), sortable=False
        )
    if outputs:
        rows = (
            f"<tr><td><code>{_e(o.get('name', ''))}</code></td>{_num_cell(o.get('max_steps'))}"
            f"{_num_cell(o.get('p99_steps'))}{_db_cell(o.get('sqnr_db'))}"
            f"{_db_cell(o.get('sim_sqnr_db'))}</tr>"
            for o in outputs
        )
        body += "<h3 class='gap'>Output agreement with the simulation</h3>" + _table(
            ["output", "max steps", "p99 steps", "HTP SQNR (dB)", "simulation SQNR (dB)"],
            rows,
            numeric={1, 2, 3, 4},
        )
    units = [_map(u) for u in _seq(htp.get("units"))]
    if units:
        rows = (
            f"<tr><td><code>{_e(u.get('tensor', ''))}</code></td>"
            f"<td>{_e('+'.join(str(o) for o in _seq(u.get('ops'))))}</td>"
            f"{_num_cell(u.get('steps'))}{_num_cell(u.get('inherited_steps'))}"
            f"{_num_cell(u.get('isolated_steps'))}{_num_cell(u.get('isolated_fused_steps'))}</tr>"
            for u in units
        )
        body += (
            "<h3 class='gap'>Where the HTP departs from onnxruntime</h3><p>Each node unit's "
            "integers, in the whole graph and fed onnxruntime's integers (isolated); a layer "
            "fused with its activation also against its unrounded arithmetic. A unit off on "
            "its own computes something else on the device.</p>"
            + _table(
                ["tensor", "ops", "steps", "inherited", "isolated", "isolated, unrounded"],
                rows,
                numeric={2, 3, 4, 5},
            )
        )
    note = "The QDQ model run by the HTP backend emulator; steps are quantization steps apart."
    return _section("htp", "HTP backend check", body, note)


def _bar(value: float | None, top: float) -> str:
    width = 0.0 if value is None or top <= 0 else max(value, 0.0) / top * 100
    return f'<td style="width:30%"><div class="meter" style="width:{width:.1f}%"></div></td>'


def _sensitivity_key(row: Mapping[str, Any]) -> float:
    """Most sensitive first: the largest gain, else the lowest score enabled alone."""
    gain = _sqnr(row.get("gain"))
    if gain is not None:
        return -gain
    alone = _num(row.get("enabled_only"))
    return math.inf if alone is None else alone


def _sensitivity(report: Mapping[str, Any]) -> str:
    """Per-group sensitivity (:mod:`onnxq.analysis.sensitivity`): a table with gain bars."""
    sens = report.get("sensitivity")
    if not isinstance(sens, Mapping):
        return ""
    rows = [_map(r) for r in _seq(sens.get("groups"))]
    if not rows:
        return ""
    gains = [_sqnr(r.get("gain")) for r in rows]
    top = max((g for g in gains if g is not None), default=0.0)
    body_rows = (
        f"<tr><td><code>{_e(r.get('group', ''))}</code></td><td>{_e(r.get('op_type', ''))}</td>"
        f"{_db_cell(r.get('enabled_only'))}{_db_cell(r.get('disabled_only'))}"
        f"{_db_cell(r.get('gain'))}{_bar(_sqnr(r.get('gain')), top)}</tr>"
        for r in sorted(rows, key=_sensitivity_key)
    )
    facts = [
        f"{len(rows):,} quantizer groups scored by {sens.get('metric') or 'the metric'}",
        f"all quantized {fmt_db(sens.get('quantized_score'))}",
        f"float {fmt_db(sens.get('float_score'))}",
        f"{fmt_value(sens.get('variants'))} variants in {fmt_value(_num(sens.get('seconds')))} s",
    ]
    table = _table(
        ["group", "op", "only this group quantized", "all but this group", "gain", ""],
        body_rows,
        numeric={2, 3, 4},
    )
    note = (
        _e("; ".join(facts)) + ". Gain: what leaving the group float gives back (all but this "
        "group minus all quantized); the most sensitive groups come first."
    )
    body = f'<div class="scroll">{table}</div>'
    return _section("sensitivity", "Sensitivity per quantizer group", body, note)


def _mixed_precision(report: Mapping[str, Any]) -> str:
    """What :func:`onnxq.apply_mixed_precision` promoted, and the score after each step."""
    mp = report.get("mixed_precision")
    if not isinstance(mp, Mapping):
        return ""
    tag = (
        '<span class="tag ok">target reached</span>'
        if mp.get("reached")
        else '<span class="tag warn">target not reached</span>'
    )
    promoted = ", ".join(f"<code>{_e(g)}</code>" for g in _seq(mp.get("promoted")))
    budget = mp.get("budget")
    before, after = fmt_db(mp.get("score_before")), fmt_db(mp.get("score_after"))
    items = [
        ("result", f"{tag} {_e(mp.get('reason', ''))}"),
        ("precision", _e(fmt_value(mp.get("precision")))),
        ("target", _e(fmt_value(_num(mp.get("target"))))),
        ("budget", _e("no limit" if budget is None else fmt_value(budget))),
        ("score before → after", _e(f"{before} → {after}")),
        ("every candidate promoted", _e(fmt_db(mp.get("upper_bound")))),
        ("promoted groups", promoted or "none"),
    ]
    body = _kv_table(items)
    steps = [_map(st) for st in _seq(mp.get("steps"))]
    if steps:
        rows = (
            f"<tr><td>{i + 1}</td><td><code>{_e(st.get('group', ''))}</code></td>"
            f"{_db_cell(st.get('score'))}<td>{_pass_tag(st.get('kept'))}</td></tr>"
            for i, st in enumerate(steps)
        )
        body += "<h3 class='gap'>Candidates tried, in sensitivity order</h3>" + _table(
            ["step", "group", "score with it promoted", "kept"],
            rows,
            numeric={0, 2},
            sortable=False,
        )
    note = "Promotions are kept only when the score rises; the exported encodings hold them."
    return _section("mixed-precision", "Mixed precision", body, note)


def _gain_db(before: Any, after: Any) -> float | None:
    b, a = _num(before), _num(after)
    if b is None or a is None or b <= 0 or a <= 0:
        return None
    return 10 * math.log10(b / a)


def _ptq(report: Mapping[str, Any]) -> str:
    """SeqMSE, AdaRound and bias correction (:mod:`onnxq.ptq`): per layer, what they did."""
    ptq = report.get("ptq")
    if not isinstance(ptq, Mapping) or not ptq:
        return ""
    parts, notes = [], []
    methods = (
        ("seq_mse", "SeqMSE weight ranges", "error_minmax", "error_seq_mse", "mean_factor"),
        ("adaround", "AdaRound", "error_nearest", "error_adaround", "flipped"),
    )
    for key, title, before, after, extra in methods:
        res = _map(ptq.get(key))
        rows = [_map(r) for r in _seq(res.get("layers"))]
        if not rows:
            continue
        body_rows = (
            f"<tr><td><code>{_e(r.get('node', ''))}</code></td>{_num_cell(r.get(before))}"
            f"{_num_cell(r.get(after))}{_num_cell(_gain_db(r.get(before), r.get(after)))}"
            f"{_num_cell(r.get(extra))}</tr>"
            for r in rows
        )
        label = "mean range factor" if key == "seq_mse" else "share rounded the other way"
        parts.append(
            f"<h3 class='gap'>{_e(title)}</h3>"
            + _table(["layer", "output error before", "after", "dB better", label],
                     body_rows, numeric={1, 2, 3, 4})
        )  # fmt: skip
        notes.append(f"{title}: {len(rows)} layers in {fmt_value(_num(res.get('seconds')))} s")
    bc = _map(ptq.get("bias_correction"))
    rows = [_map(r) for r in _seq(bc.get("layers"))]
    if rows:
        body_rows = (
            f"<tr><td><code>{_e(r.get('node', ''))}</code></td><td><code>{_e(r.get('bias', ''))}"
            f"</code></td>{_num_cell(r.get('max_shift'))}{_num_cell(r.get('rms_shift'))}</tr>"
            for r in rows
        )
        parts.append(
            f"<h3 class='gap'>Bias correction ({_e(bc.get('method', ''))})</h3>"
            + _table(["layer", "bias", "largest shift", "RMS shift"], body_rows, numeric={2, 3})
        )
        if bc.get("reverted"):
            notes.append(
                f"bias correction undone: it lowered the output SQNR on the calibration data "
                f"from {fmt_value(_num(bc.get('sqnr_before')))} to "
                f"{fmt_value(_num(bc.get('sqnr_after')))} dB (the table shows what was tried)"
            )
        else:
            notes.append(f"bias correction: {len(rows)} layers")
    if not parts:
        return ""
    note = _e("; ".join(notes)) + (
        ". Output error: the layer's mean squared output error per row against the float "
        "model, on the calibration data, with the inputs the quantized model produces."
    )
    return _section("ptq", "Weight rounding and bias correction", "".join(parts), note)


def _consistency(report: Mapping[str, Any]) -> str:
    """``onnxq check``'s first gate: do the encodings fit the model and the config?"""
    c = report.get("consistency")
    if not isinstance(c, Mapping):
        return ""
    enc = _map(c.get("encodings"))
    errors, warnings = _num(c.get("errors")) or 0, _num(c.get("warnings")) or 0
    tag = (
        '<span class="tag ok">the encodings fit</span>'
        if not errors
        else f'<span class="tag warn">{int(errors)} error{"s" if errors != 1 else ""}</span>'
    )
    facts = [
        tag,
        f"{_e(fmt_value(enc.get('activations')))} activation and "
        f"{_e(fmt_value(enc.get('params')))} param encodings",
        f"{int(warnings)} warning{'s' if warnings != 1 else ''}",
    ]
    body = f"<p>{' · '.join(facts)}</p>"
    findings = [_map(f) for f in _seq(c.get("findings"))]
    if findings:
        rows = (
            f"<tr><td>{_e(f.get('severity', ''))}</td><td><code>{_e(f.get('tensor', ''))}"
            f"</code></td><td>{_e(f.get('message', ''))}</td></tr>"
            for f in findings[:200]
        )
        body += _table(["severity", "tensor", "finding"], rows)
    if report.get("skipped"):
        body += f"<p class='note'>Skipped: {_e(report['skipped'])}</p>"
    note = "Names, channel counts and axes, granularity, symmetry and bitwidths per the config."
    return _section("consistency", "Encodings against the model and config", body, note)


def _quantizers(report: Mapping[str, Any]) -> str:
    q = _map(report.get("quantizers"))
    if not q:
        return ""
    kinds = ("activations", "params", "per_channel", "constants")
    totals = [(k, q.get(k)) for k in kinds if k in q]
    labels = {
        "activations": "activation",
        "params": "parameter",
        "per_channel": "per-channel",
        "constants": "constant operand",
    }
    heads = {
        "activations": "activations",
        "params": "params",
        "per_channel": "per-channel",
        "constants": "constants",
    }
    body = ""
    if totals:
        body = (
            '<div class="tiles">'
            + "".join(_tile(f"{labels[k]} quantizers", _e(fmt_value(v))) for k, v in totals)
            + "</div>"
        )
    by_op = _map(q.get("by_op_type"))

    def total(item: tuple[str, Any]) -> float:
        counts = _map(item[1])
        return -sum(_num(counts.get(k)) or 0.0 for k in ("activations", "params"))

    columns = [k for k in kinds if any(k in _map(c) for c in by_op.values())]
    rows = (
        f"<tr><td>{_e(op)}</td>" + "".join(_num_cell(_map(c).get(k)) for k in columns) + "</tr>"
        for op, c in sorted(by_op.items(), key=total)
    )
    if by_op:
        body += _table(
            ["op type", *(heads[k] for k in columns)], rows, numeric=set(range(1, len(columns) + 1))
        )
    return _section("quantizers", "Quantizers", body)


def _shape_text(shape: Any) -> str:
    """A tensor shape as ``[1, 3, 224, 224]``; unknown dims (None) shown as ``?``."""
    if isinstance(shape, (list, tuple)):
        return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"
    return fmt_value(shape)


def _io_rows(items: Sequence[Any], kind: str) -> list[str]:
    return [
        f"<tr><td>{kind}</td><td><code>{_e(_map(t).get('name', ''))}</code></td>"
        f"<td>{_e(fmt_value(_map(t).get('dtype')))}</td>"
        f"<td>{_e(_shape_text(_map(t).get('shape')))}</td></tr>"
        for t in items
    ]


def _model(report: Mapping[str, Any]) -> str:
    model = _map(report.get("model"))
    if not model:
        return ""
    facts = []
    if "path" in model:
        facts.append(("path", f"<code>{_e(model['path'])}</code>"))
    if "nodes" in model:
        facts.append(("nodes", _e(fmt_value(model["nodes"]))))
    body = _kv_table(facts) if facts else ""
    io = _io_rows(_seq(model.get("inputs")), "input") + _io_rows(
        _seq(model.get("outputs")), "output"
    )
    if io:
        body += "<h3 class='gap'>Inputs and outputs</h3>" + _table(
            ["", "name", "dtype", "shape"], io, numeric=set(), sortable=False
        )
    hist = {str(k): _num(v) or 0.0 for k, v in _map(model.get("op_histogram")).items()}
    if hist:
        top = max(hist.values()) or 1.0
        rows = (
            f'<tr><td>{_e(op)}</td><td class="n" data-v="{c!r}">{int(c):,}</td>'
            f'<td style="width:50%"><div class="meter" style="width:{c / top * 100:.1f}%">'
            "</div></td></tr>"
            for op, c in sorted(hist.items(), key=lambda kv: -kv[1])
        )
        body += "<h3 class='gap'>Operators</h3>" + _table(
            ["op type", "count", ""], rows, numeric={1}
        )
    return _section("model", "Model", body)


def _data(report: Mapping[str, Any]) -> str:
    data = _map(report.get("data"))
    if not data:
        return ""
    labels = {
        "source": "source",
        "kind": "kind",
        "num_samples": "calibration samples",
        "num_eval_samples": "evaluation samples",
        "is_random": "random data",
    }
    items = []
    for key, label in labels.items():
        if key not in data:
            continue
        value = data[key]
        if key == "source" and value is not None:
            shown = f"<code>{_e(value)}</code>"
        elif key == "is_random" and value:
            shown = '<span class="tag bad">yes — not representative</span>'
        else:
            shown = _e(fmt_value(value))
        items.append((label, shown))
    return _section("data", "Calibration data", _kv_table(items)) if items else ""


def _settings(report: Mapping[str, Any]) -> str:
    settings = _map(report.get("settings"))
    if not settings:
        return ""
    items = [(str(k), _e(fmt_value(v))) for k, v in settings.items()]
    return _section("settings", "Settings", _kv_table(items))


def _timings(report: Mapping[str, Any]) -> str:
    timings = {str(k): _num(v) for k, v in _map(report.get("timings_s")).items()}
    timings = {k: v for k, v in timings.items() if v is not None and math.isfinite(v)}
    if not timings:
        return ""
    total = sum(timings.values())
    top = max(timings.values()) or 1.0
    rows = [
        f'<tr><td>{_e(k)}</td><td class="n" data-v="{v!r}">{v:.2f} s</td>'
        f'<td style="width:50%"><div class="meter" style="width:{max(v, 0) / top * 100:.1f}%">'
        "</div></td></tr>"
        for k, v in timings.items()
    ]
    rows.append(f'<tr><th>total</th><th class="n">{total:.2f} s</th><th></th></tr>')
    return _section(
        "timings", "Timings", _table(["step", "time", ""], rows, numeric={1}, sortable=False)
    )


def _files(report: Mapping[str, Any]) -> str:
    files = {str(k): v for k, v in _map(report.get("files")).items() if v is not None}
    if not files:
        return ""
    items = [(k.replace("_", " "), f"<code>{_e(v)}</code>") for k, v in files.items()]
    return _section("files", "Files", _kv_table(items))


_SECTIONS = (
    ("outputs", "Outputs", _outputs),
    ("layers", "Layers", _layers),
    ("worst", "Worst layers", _worst_table),
    ("histograms", "Histograms", _histograms),
    ("weights", "Weight ranges", _weight_ranges),
    ("ptq", "Weights", _ptq),
    ("sensitivity", "Sensitivity", _sensitivity),
    ("mixed-precision", "Mixed precision", _mixed_precision),
    ("consistency", "Encodings", _consistency),
    ("htp", "HTP", _htp),
    ("quantizers", "Quantizers", _quantizers),
    ("model", "Model", _model),
    ("data", "Data", _data),
    ("settings", "Settings", _settings),
    ("timings", "Timings", _timings),
    ("files", "Files", _files),
)


# --------------------------------------------------------------------------- page


def render_html(report: Mapping[str, Any]) -> str:
    """The report page as one self-contained HTML document.

    Parameters
    ----------
    report
        The report dict (schema ``onnxq.report/1``); every key may be absent or ``None``, in
        which case its section is left out.

    Returns
    -------
    str
        The HTML text. It references no external resource; names and paths are escaped.
    """
    report = _map(report)
    sections = [(sid, label, build(report)) for sid, label, build in _SECTIONS]
    present = [(sid, label, html) for sid, label, html in sections if html]
    nav = "".join(f'<a href="#{sid}">{_e(label)}</a>' for sid, label, _ in present)
    command = report.get("command")
    title = f"onnxq {command} report" if isinstance(command, str) else "onnxq report"
    model = _map(report.get("model"))
    if "path" in model:
        title += f" — {Path(str(model['path'])).name}"
    footer_bits = ["generated by onnxq"]
    if report.get("onnxq_version") is not None:
        footer_bits[0] += f" {report['onnxq_version']}"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_e(_CSP)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f"{_header(report)}<main>"
        f"<nav>{nav}</nav>"
        + _verdict(report)
        + _random_banner(report)
        + _alerts(report)
        + _tiles(report)
        + "".join(html for _, _, html in present)
        + f"<footer>{_e(' · '.join(footer_bits))}</footer></main>"
        f"<script>{_JS}</script></body></html>\n"
    )


def write_html(report: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Render ``report`` and write it to ``path`` atomically.

    The page is written to ``<path>.tmp`` in the same folder and then moved over ``path`` with
    :func:`os.replace`, so a reader never sees a half-written file.

    Parameters
    ----------
    report
        The report dict.
    path
        Where to write ``report.html``.

    Returns
    -------
    Path
        The written path.
    """
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    try:
        tmp.write_text(render_html(report), encoding="utf-8")
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target
