"""report.html's weight-rounding section: every layer of each method with its numbers."""

from __future__ import annotations

import copy
import math

from test_html import parse

from onnxq.report import render_html


def test_the_section_lists_each_method_with_the_reports_numbers(make_report):
    report = copy.deepcopy(make_report(20))
    report["ptq"] = {
        "adaround": {
            "layers": [
                {"node": "conv1", "error_nearest": 2.0, "error_adaround": 0.5, "flipped": 0.1},
                {"node": "fc", "error_nearest": 1.0, "error_adaround": 1.0, "flipped": 0.0},
            ],
            "seconds": 3.5,
        },
        "bias_correction": {
            "method": "empirical",
            "layers": [{"node": "fc", "bias": "fc.bias", "max_shift": 0.25, "rms_shift": 0.1}],
        },
    }
    dom = parse(render_html(report))
    section = dom.find("section", id="ptq")[0]
    tables = section.find("tbody")
    assert len(tables) == 2  # no SeqMSE table: it did not run
    rows = tables[0].find("tr")
    assert [r.find("code")[0].all_text() for r in rows] == ["conv1", "fc"]
    gain = float(rows[0].find("td")[3].attrs["data-v"])
    assert math.isclose(gain, 10 * math.log10(4))
    assert "fc.bias" in tables[1].all_text()
    assert "AdaRound: 2 layers in 3.5 s" in section.all_text()
    del report["ptq"]
    assert not parse(render_html(report)).find("section", id="ptq")


def test_an_undone_bias_correction_says_so_with_its_scores(make_report):
    report = copy.deepcopy(make_report(20))
    report["ptq"] = {
        "bias_correction": {
            "method": "empirical",
            "layers": [{"node": "fc", "bias": "fc.bias", "max_shift": 0.25, "rms_shift": 0.1}],
            "reverted": True,
            "sqnr_before": 42.38,
            "sqnr_after": 29.12,
        }
    }
    text = parse(render_html(report)).find("section", id="ptq")[0].all_text()
    assert "bias correction undone" in text and "42.38" in text and "29.12" in text
