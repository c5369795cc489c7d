"""report.html's sensitivity and mixed-precision sections: the report's numbers, in order."""

from __future__ import annotations

import copy

from browser import dump_dom
from test_html import parse

from onnxq.report import render_html


def test_the_sensitivity_table_lists_every_group_most_sensitive_first_with_gain_bars(report_page):
    path, report = report_page
    dom = parse(dump_dom(path))
    section = dom.find("section", id="sensitivity")[0]
    rows = section.find("tbody")[0].find("tr")
    groups = report["sensitivity"]["groups"]
    assert len(rows) == len(groups) == 40
    gains = [float(r.find("td")[4].attrs["data-v"]) for r in rows]
    assert gains == sorted((g["gain"] for g in groups), reverse=True)
    # the bar of the largest gain spans the column, a zero gain has none
    widths = [r.find("div", "meter")[0].attrs["style"] for r in rows]
    assert widths[0] == "width:100.0%" and widths[-1] == "width:0.0%"
    first = {g["group"]: g for g in groups}[rows[0].find("code")[0].all_text()]
    cells = [td.all_text() for td in rows[0].find("td")]
    assert cells[2:5] == [f"{first['enabled_only']:.2f}", f"{first['disabled_only']:.2f}",
                          f"{first['gain']:.2f}"]  # fmt: skip
    identical = [r for r in rows if r.find("td")[2].all_text() == "∞"]
    assert len(identical) == 1  # the group whose quantization changes nothing


def test_the_mixed_precision_section_shows_the_result_and_every_step(report_page, nasty):
    path, report = report_page
    dom = parse(dump_dom(path))
    section = dom.find("section", id="mixed-precision")[0]
    text = section.all_text()
    assert "target not reached" in text and "budget of 2 group(s) used" in text
    assert "17.40 → 21.75" in text and nasty in text
    steps = section.find("tbody")[-1].find("tr")
    assert [r.find("code")[0].all_text() for r in steps] == [
        s["group"] for s in report["mixed_precision"]["steps"]
    ]
    assert [r.find("span", "tag")[0].all_text() for r in steps] == ["pass", "fail", "pass"]
    nav = [a.attrs["href"] for a in dom.find("a")]
    assert "#sensitivity" in nav and "#mixed-precision" in nav


def test_without_analysis_the_sections_and_their_links_are_left_out(make_report):
    report = copy.deepcopy(make_report(20))
    report["sensitivity"] = None
    del report["mixed_precision"]
    page = render_html(report)
    assert 'id="sensitivity"' not in page and 'id="mixed-precision"' not in page
    assert "#sensitivity" not in page
