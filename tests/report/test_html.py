"""report.html: content, escaping, robustness and size in Python; rendering in headless Chromium."""

from __future__ import annotations

import base64
import copy
import hashlib
import re
from collections.abc import Callable
from html.parser import HTMLParser
from typing import Any

import pytest
from browser import console_problems, dump_dom, evaluate, screenshot
from PIL import Image

from onnxq.report import html as report_html
from onnxq.report import render_html, write_html
from onnxq.report.svg import MAX_POINT_MARKERS

_VOID = {"meta", "br", "input", "img", "link", "hr", "col", "source", "wbr", "area", "base"}


class _Element:
    def __init__(self, tag: str, attrs: dict[str, str], parent: _Element | None) -> None:
        self.tag = tag
        self.attrs = attrs
        self.parent = parent
        self.children: list[_Element] = []
        self.text = ""

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def iter(self) -> list[_Element]:
        out = [self]
        for child in self.children:
            out.extend(child.iter())
        return out

    def find(self, tag: str, *classes: str, **attrs: str) -> list[_Element]:
        """Descendants (and self) with this tag, all these classes and attribute values."""
        return [
            e
            for e in self.iter()
            if e.tag == tag
            and set(classes) <= e.classes
            and all(e.attrs.get(k) == v for k, v in attrs.items())
        ]

    def all_text(self) -> str:
        return self.text + "".join(c.all_text() for c in self.children)


class _Tree(HTMLParser):
    """A small DOM of an HTML document (enough for counting chart elements)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = _Element("#document", {}, None)
        self.current = self.root

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = _Element(tag, {k: v or "" for k, v in attrs}, self.current)
        self.current.children.append(element)
        if tag not in _VOID:
            self.current = element

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.current.children.append(_Element(tag, {k: v or "" for k, v in attrs}, self.current))

    def handle_endtag(self, tag: str) -> None:
        node: _Element | None = self.current
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.current = node.parent

    def handle_data(self, data: str) -> None:
        self.current.text += data


def parse(html: str) -> _Element:
    tree = _Tree()
    tree.feed(html)
    tree.close()
    return tree.root


# --------------------------------------------------------------------------- pure Python


@pytest.fixture
def report(make_report: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    return make_report(300)


def test_verdict_random_data_banner_failures_and_warnings_come_first(report):
    page = render_html(report)
    order = [
        page.index('id="verdict"'),
        page.index('id="random-data"'),
        page.index('id="failures"'),
        page.index('id="warnings"'),
        page.index('id="outputs"'),
        page.index('id="sqnr-chart"'),
    ]
    assert order == sorted(order)
    assert ">FAIL<" in page
    assert "Calibrated on random data" in page
    assert "no --data given: calibrating on random inputs" in page  # data.warnings shown too


def test_numbers_on_the_page_are_the_reports(report):
    page = render_html(report)
    for output in report["outputs"]:
        assert f">{output['sqnr_db']:.2f}<" in page
        assert f">{output['max_abs_error']:.4g}<" in page
    ranked = sorted(
        (la for la in report["layers"] if la["sqnr_db"] is not None), key=lambda la: la["sqnr_db"]
    )
    worst = parse(page).find("section", id="worst")[0]
    rows = worst.find("tbody")[0].find("tr")
    shown = [float(row.find("td")[4].all_text()) for row in rows]  # the SQNR column
    assert shown == [round(la["sqnr_db"], 2) for la in ranked[:20]]
    for row in report["htp"]["outputs"]:
        assert f">{row['sqnr_db']:.2f}<" in page
    htp = parse(page).find("section", id="htp")[0]
    units = htp.find("table")[-1].find("tbody")[0].find("tr")
    cells = [[td.all_text() for td in row.find("td")] for row in units]
    assert cells[0] == ["head.hardswish", "Conv+HardSwish", "97", "28", "96", "95"]
    assert cells[1][2:5] == ["41", "40", "1"]
    for seconds in report["timings_s"].values():
        assert f">{seconds:.2f} s<" in page
    assert f">{sum(report['timings_s'].values()):.2f} s<" in page
    assert ">410<" in page and ">150<" in page  # quantizer totals
    assert "7 / 300" in page  # flagged layers tile
    assert "[1, 3, 224, 224]" in page


def test_user_supplied_names_are_escaped(report, nasty):
    page = render_html(report)
    assert nasty not in page
    assert "a&lt;b&gt;&amp;&quot;c&quot;" in page
    assert "<b>" not in page and "<v2>" not in page
    assert "/models/resnet_&lt;v2&gt;.onnx" in page
    tree = parse(page)
    assert not tree.find("b") and not tree.find("v2")
    assert nasty in tree.all_text()


def test_the_page_is_offline(report):
    page = render_html(report)
    assert not re.search(r"https?://", page)
    assert "<link" not in page and "@import" not in page and "url(" not in page
    assert not re.search(r"\ssrc=", page)


def test_the_content_security_policy_allows_exactly_the_pages_script(report):
    page = render_html(report)
    scripts = re.findall(r"<script>(.*?)</script>", page, flags=re.S)
    assert len(scripts) == 1
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
    policy = parse(page).find("meta", **{"http-equiv": "Content-Security-Policy"})[0]
    directives = {d.split()[0]: d.split()[1:] for d in policy.attrs["content"].split("; ")}
    assert directives["script-src"] == [f"'sha256-{digest}'"]
    assert directives["default-src"] == ["'none'"]


@pytest.mark.parametrize(
    "key",
    [
        "model",
        "settings",
        "data",
        "quantizers",
        "outputs",
        "layers",
        "threshold_layer_db",
        "worst_layers",
        "weight_ranges",
        "htp",
        "failures",
        "warnings",
        "timings_s",
        "files",
        "status",
        "command",
    ],
)
def test_a_missing_or_none_section_is_left_out(report, key):
    for value in (None, "missing"):
        partial = copy.deepcopy(report)
        if value == "missing":
            del partial[key]
        else:
            partial[key] = None
        page = render_html(partial)
        assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    sid = {"layers": "sqnr-chart", "worst_layers": "histograms", "weight_ranges": "weights"}
    if key in sid:
        assert f'id="{sid[key]}"' not in page


def test_sparse_and_odd_values_do_not_crash():
    page = render_html(
        {
            "status": "pass",
            "outputs": [{"name": "y"}, {"sqnr_db": "inf", "passed": True}],
            "layers": [{}, {"sqnr_db": "inf"}, {"sqnr_db": float("nan")}, {"sqnr_db": 12.5}],
            "worst_layers": [{"histogram": None}, {"histogram": {"edges": [0, 1], "counts": []}}],
            "weight_ranges": [
                {"before": {"min": [], "max": []}},
                {"weight": "w", "before": {"min": [-1.0, -2.0], "max": [1.0, 2.0]}, "after": None},
            ],
            "htp": {},
            "quantizers": {"by_op_type": {"Conv": None}},
            "model": {"inputs": [{"name": "x", "shape": ["batch", None, 3]}]},
            "timings_s": {"prepare": None},
            "files": {"encodings": None},
            "data": {"warnings": None},
        }
    )
    assert ">PASS<" in page
    assert "not equalized" in page
    assert "[batch, ?, 3]" in page
    assert render_html({}).count("<section") == 1  # the verdict only
    assert "NO VERDICT" in render_html({})


def test_2000_layers_stay_small_with_a_marker_per_layer(make_report):
    report = make_report(2000)
    page = render_html(report)
    assert len(page.encode()) < 1_000_000
    chart = parse(page).find("svg", id="sqnr-chart")[0]
    assert len(chart.find("circle", "pt")) - 3 == 2000  # 3 more in the legend


def test_beyond_the_marker_cap_the_points_become_one_path(make_report):
    report = make_report(MAX_POINT_MARKERS * 3)
    page = render_html(report)
    assert len(page.encode()) < 1_000_000
    chart = parse(page).find("svg", id="sqnr-chart")[0]
    flagged = sum(1 for la in report["layers"] if la["flagged"])
    assert len(chart.find("circle", "flag")) - 1 == flagged
    assert len(chart.find("path", "dots")) == 1


def test_write_html_is_atomic(report, tmp_path, monkeypatch):
    target = tmp_path / "report.html"
    assert write_html(report, target) == target
    assert target.read_text(encoding="utf-8") == render_html(report)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]

    def broken(_: Any) -> str:
        raise RuntimeError("boom")

    monkeypatch.setattr(report_html, "render_html", broken)
    with pytest.raises(RuntimeError):
        write_html(report, target)
    assert target.read_text(encoding="utf-8") == render_html(report)  # the old page survives
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


# --------------------------------------------------------------------------- headless Chromium


def test_the_page_logs_no_console_error_or_warning(report_page):
    path, _ = report_page
    assert console_problems(path) == []


def test_the_console_detector_reports_an_injected_error(report_page, tmp_path):
    plain = tmp_path / "plain.html"
    plain.write_text("<!DOCTYPE html><p>x</p><script>undefinedFunction()</script>")
    problems = console_problems(plain)
    assert any("undefinedFunction" in p and "uncaught" in p for p in problems), problems

    warned = tmp_path / "warned.html"
    warned.write_text("<!DOCTYPE html><script>console.warn('careful')</script>")
    assert any("careful" in p for p in console_problems(warned))

    # in the report page the CSP blocks the injected script, which is reported too
    injected = tmp_path / "injected.html"
    html = report_page[0].read_text(encoding="utf-8")
    injected.write_text(html.replace("</body>", "<script>undefinedFunction()</script></body>"))
    problems = console_problems(injected)
    assert any("Content Security Policy" in p for p in problems), problems


def test_the_dom_holds_the_charts_verdict_and_escaped_names(report_page, nasty):
    path, report = report_page
    dom = parse(dump_dom(path))
    verdict = dom.find("section", id="verdict")[0]
    assert "FAIL" in verdict.all_text()
    assert dom.find("div", "banner", "random")

    chart = dom.find("svg", id="sqnr-chart")[0]
    layers = report["layers"]
    legend = 1  # the legend has one circle of each kind
    assert len(chart.find("circle", "pt")) == len(layers) + 3 * legend
    flagged = sum(1 for la in layers if la["flagged"])
    assert len(chart.find("circle", "flag")) == flagged + legend
    assert len(chart.find("circle", "inf")) == sum(la["sqnr_db"] is None for la in layers) + 1
    assert len(chart.find("path", "threshold")) == 2  # the line and its legend entry
    assert chart.find("polyline", "trace")
    titles = [t.all_text() for t in chart.find("title")]
    assert any(t.startswith(f"#7 {nasty} ·") for t in titles)

    hists = dom.find("svg", "hist")
    assert len(hists) == len(report["worst_layers"]) == 5
    for svg, worst in zip(hists, report["worst_layers"], strict=True):
        nonzero = sum(1 for c in worst["histogram"]["counts"] if c > 0)
        for scale in ("lin", "log"):
            assert len(svg.find("g", "bars", scale)[0].find("rect", "bar")) == nonzero
        assert len(svg.find("path", "enc")) == 2
        assert len(svg.find("rect", "clipped")) == 2

    for state in ("before", "after"):
        panels = dom.find("svg", "wrange", state)
        counts = [len(p.find("rect", "bar")) for p in panels]
        assert counts == [len(w[state]["min"]) for w in report["weight_ranges"]] == [16, 32, 64]

    htp = dom.find("section", id="htp")[0]
    assert nasty in htp.all_text() and "GridSample" in htp.all_text()
    assert not dom.find("b"), "an escaped name became an element"


def test_the_pages_script_sorts_tables_and_switches_the_histogram_scale(report_page):
    path, _ = report_page
    script = """(() => {
      const table = document.querySelector("#worst table");
      const head = Array.from(table.querySelectorAll("thead th"));
      const sqnr = head.find((th) => th.textContent.startsWith("SQNR"));
      const column = head.indexOf(sqnr);
      const values = () => Array.from(table.tBodies[0].rows, (r) => Number(r.cells[column]
        .getAttribute("data-v")));
      sqnr.click(); sqnr.click();  // ascending, then descending
      const descending = values();
      const visible = (sel) => getComputedStyle(document.querySelector(sel)).display !== "none";
      const before = [visible("#hists .bars.log"), visible("#hists .bars.lin")];
      document.getElementById("hist-scale").click();
      const after = [visible("#hists .bars.log"), visible("#hists .bars.lin")];
      return {descending, sort: sqnr.getAttribute("aria-sort"), before, after};
    })()"""
    result = evaluate(path, script)
    assert result["sort"] == "descending"
    assert result["descending"] == sorted(result["descending"], reverse=True)
    assert len(result["descending"]) == 20
    assert result["before"] == [True, False] and result["after"] == [False, True]


def test_the_screenshot_is_not_blank(report_page, tmp_path):
    path, _ = report_page
    png = screenshot(path, tmp_path / "report.png", width=1280, height=2200)
    with Image.open(png) as image:
        rgb = image.convert("RGB")
        assert rgb.size == (1280, 2200)
        colours = rgb.getcolors(maxcolors=1 << 22)
    assert colours is not None and len(colours) > 500
    # the red random-data banner is on screen
    assert any(abs(r - 207) < 6 and abs(g - 34) < 6 and abs(b - 46) < 6 for _, (r, g, b) in colours)


def test_weight_range_spread_ignores_dead_channels():
    from onnxq.report.html import _spread  # noqa: PLC0415

    # channel ranges 1, 2, 4 and a dead one (0.002): widest 4 over median 1.5
    assert _spread([0, -1, -2, -0.001], [1, 1, 2, 0.001]) == pytest.approx(4 / 1.5)
    assert _spread([0, 0], [0, 0]) is None
    page = render_html(
        {"weight_ranges": [{"weight": "w", "layer": "conv", "before": {"min": [0, -1, -2,
         -0.001], "max": [1, 1, 2, 0.001]}, "after": None}]}
    )  # fmt: skip
    assert "channel range spread 2.67×" in page
