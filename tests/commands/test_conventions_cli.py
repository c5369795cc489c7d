"""What every command shares: ``--json``, progress bars on a terminal only, ``--debug``.

And the report a real ``onnxq quantize`` run writes, opened in headless Chromium.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios

from tests.commands.conftest import one_error_line, run_onnxq
from tests.report.browser import console_problems, dump_dom


def _on_a_terminal(args, cwd):
    """Run ``python -m onnxq ARGS`` with stderr on a pseudo-terminal; return what it showed."""
    leader, follower = pty.openpty()
    # a terminal 100 columns wide (a new pty has size 0 x 0, where tqdm draws nothing)
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "onnxq", *map(str, args)],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=follower,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    assert proc.wait(timeout=300) == 0
    return b"".join(chunks).decode(errors="replace")


def test_progress_bars_only_on_a_terminal_and_never_with_quiet(small_cnn, small_calib, tmp_path):
    calib, _ = small_calib
    args = ["quantize", small_cnn, "-o", tmp_path / "out", "--calib", calib]
    shown = _on_a_terminal(args, tmp_path)
    assert "calibrating" in shown and "evaluating" in shown and "batch/s" in shown
    assert "calibrating" not in _on_a_terminal([*args, "--quiet"], tmp_path)
    piped = run_onnxq(*args, cwd=tmp_path)  # stderr is a pipe: notes, no bars
    assert piped.returncode == 0 and "calibrating" not in piped.stderr
    assert "onnxq: info: calibrated on 8 samples" in piped.stderr
    quiet_log = run_onnxq(*args, "--log-level", "warning", cwd=tmp_path)
    assert "onnxq: info" not in quiet_log.stderr


def test_debug_shows_the_traceback(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_text("x")
    one_error_line(run_onnxq("inspect", bad, cwd=tmp_path))
    debug = run_onnxq("inspect", bad, "--debug", cwd=tmp_path)
    assert debug.returncode == 2 and "Traceback" in debug.stderr
    assert debug.stderr.rstrip().splitlines()[-1].startswith("onnxq: error: ")


def test_every_command_speaks_json(small_cnn, small_calib, tmp_path):
    calib, _ = small_calib
    out = tmp_path / "q"

    def js(*args):
        result = run_onnxq(*args, "--json", cwd=tmp_path)
        assert result.returncode == 0, (args, result.stderr)
        return json.loads(result.stdout)

    assert js("quantize", small_cnn, "-o", out, "--calib", calib)["status"] == "pass"
    assert (
        js("check", out / "in_qdq.onnx", "--calib", calib, "--min-output-sqnr", "0")["consistency"][
            "errors"
        ]
        == 0
    )
    assert js("inspect", small_cnn)["op_histogram"]["Conv"] == 2
    assert [c["name"] for c in js("configs")][:2] == ["default", "htp_v66"]
    assert js("config", "show", "htp_v73")["defaults"]["hw_version"] == "V73"
    assert js("config", "check", "htp_v73")["valid"] is True
    shown = js("encodings", "show", out / "in.encodings")
    # activations x, r1, y and the Clip's two bounds; params w1, w2
    assert (shown["version"], shown["activations"], shown["params"]) == ("1.0.0", 5, 2)
    converted = js("encodings", "convert", out / "in.encodings", tmp_path / "v2.encodings",
                   "--to", "2.0.0", "--model", out / "in.onnx")  # fmt: skip
    assert converted == {
        "output": str(tmp_path / "v2.encodings"),
        "version": "2.0.0",
        "encodings": 7,
        "from": "1.0.0",
    }
    assert js("prepare", small_cnn, "-o", tmp_path / "p.onnx", "--fold-bn")["output"] == str(
        tmp_path / "p.onnx"
    )
    assert js("demo", "-o", tmp_path / "demo")["round_trip_ok"] is True


def test_a_real_report_renders_without_console_errors(small_cnn, small_calib, tmp_path):
    calib, _ = small_calib
    out = tmp_path / "out"
    result = run_onnxq("quantize", small_cnn, "-o", out, "--calib", calib, "--cle", "-q",
                       cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    page = out / "report.html"
    assert console_problems(page) == []
    dom = dump_dom(page)
    report = json.loads((out / "report.json").read_text())
    assert f"{report['outputs'][0]['sqnr_db']:.2f}" in dom and "PASS" in dom
    assert "after CLE" in dom
