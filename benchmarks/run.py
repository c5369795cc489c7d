"""The benchmark harness: zoo models × tools, side by side, one worker process per run.

``python -m benchmarks --models all --tools fp32,ort,aimet,onnxq [settings]`` builds the zoo
models if needed, runs every tool on the same calibration and evaluation data, one after the
other, each in a process of its own (peak memory per tool), and writes

- ``results/<tag>.json``: every record, with the machine and the versions;
- ``results/<tag>.md``: the comparison table;
- with ``--update-readme``, the summary table in ``benchmarks/README.md``.

Settings map onto each tool (see :class:`benchmarks.tools.Settings`). AIMET-ONNX runs when
importable — in this interpreter or in the one given by ``--aimet-python`` /
``$ONNXQ_AIMET_PYTHON`` (it needs torch, so it usually lives in a venv of its own); it is never
required.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks import zoo
from benchmarks.tools import TOOLS, Settings

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
README = HERE / "README.md"
START, END = "<!-- summary:start -->", "<!-- summary:end -->"


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for pkg in ("onnx", "onnxruntime", "numpy", "onnxq"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


def run_tool(tool: str, model: str, s: Settings, python: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "record.json"
        env = dict(
            os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
        )
        proc = subprocess.run(
            [python, "-m", "benchmarks.worker", tool, model, json.dumps(s.to_dict()), str(out)],
            # ORT's quant_pre_process and AIMET drop temp files into the cwd.
            cwd=tmp,
            env=env,
            capture_output=True,
            text=True,
        )
        if not out.is_file():
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
            return {
                "tool": tool,
                "model": model,
                "status": "failed",
                "error": f"worker exited {proc.returncode}: {tail}"[:500],
            }
        record = json.loads(out.read_text())
    if tool == "aimet" and python != sys.executable:
        record.setdefault("notes", []).append(f"run with {python}")
    return record


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def table(records: list[dict[str, Any]]) -> str:
    head = (
        "| model | tool | metric | SQNR dB (min over outputs) | agreement | prepare s | "
        "calibration s | export s | calib ÷ FP32 | sim ÷ FP32 | peak RSS MB | notes |"
    )
    rows = [head, "|" + "---|" * 12]
    for r in records:
        if r.get("status") != "ok":
            why = r.get("reason") or r.get("error") or ""
            rows.append(
                f"| {r['model']} | {r['tool']} | {r.get('status')} |  |  |  |  |  |  |"
                f"  | {_fmt(r.get('peak_rss_mb'), 0)} | {why.splitlines()[0][:140]} |"
            )
            continue
        m = dict(r["metrics"])
        primary = next(iter(m))
        agree = next((m[k] for k in m if "agreement" in k), None)
        t = r["times_s"]
        sqnr = "∞" if r["tool"] == "fp32" else _fmt(r.get("sqnr_db"))
        rows.append(
            f"| {r['model']} | {r['tool']} | {primary} {_fmt(m[primary], 3)} | {sqnr} | "
            f"{_fmt(agree, 3)} | {_fmt(t.get('prepare'))} | {_fmt(t.get('calibration'))} | "
            f"{_fmt(t.get('export'))} | {_fmt(r.get('calib_over_fp32'), 1)} | "
            f"{_fmt(r.get('sim_over_fp32'), 1)} | {_fmt(r.get('peak_rss_mb'), 0)} | "
            f"{'; '.join(r.get('notes', []))[:160]} |"
        )
    return "\n".join(rows) + "\n"


def title_of(result: dict[str, Any], tag: str) -> str:
    s, m = result["settings"], result["machine"]
    return (
        f"**`{tag}`** ({s['batch_size']}-sample batches, {s['threads']} threads) on "
        f"{m['cpu']} × {m['cores']}; onnxruntime {m['versions']['onnxruntime']}."
    )


def update_readme(results_dir: Path) -> None:
    """Rebuild the README's summary from every harness result in ``results_dir``."""
    parts = []
    for path in sorted(results_dir.glob("*.json")):
        result = json.loads(path.read_text())
        if "records" not in result:
            continue
        parts.append(f"{title_of(result, path.stem)}\n\n{table(result['records'])}")
    text = README.read_text()
    block = START + "\n" + "\n".join(parts) + END
    if START in text and END in text:
        before, rest = text.split(START, 1)
        text = before + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    README.write_text(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    p.add_argument("--models", default="all", help=f"comma list or 'all' ({', '.join(zoo.MODELS)})")
    p.add_argument("--tools", default="fp32,ort,aimet,onnxq", help=f"comma list of {list(TOOLS)}")
    p.add_argument("--config", default="htp_v73")
    p.add_argument("--param-bw", type=int, default=8)
    p.add_argument("--act-bw", type=int, default=8)
    p.add_argument("--per-tensor", action="store_true", help="ORT: per-tensor weights")
    p.add_argument("--calib-method", default="MinMax", choices=["MinMax", "Entropy", "Percentile"])
    p.add_argument("--scheme", default="tf_enhanced")
    p.add_argument("--no-prepare", action="store_true")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--aimet-python", default=os.environ.get("ONNXQ_AIMET_PYTHON", sys.executable))
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--update-readme", action="store_true")
    args = p.parse_args(argv)
    models = list(zoo.MODELS) if args.models == "all" else args.models.split(",")
    tools = args.tools.split(",")
    for t in tools:
        if t not in TOOLS:
            p.error(f"unknown tool {t!r}; choose from {', '.join(TOOLS)}")
    s = Settings(
        config=args.config,
        param_bw=args.param_bw,
        act_bw=args.act_bw,
        per_channel=not args.per_tensor,
        calib_method=args.calib_method,
        scheme=args.scheme,
        prepare=not args.no_prepare,
        batch_size=args.batch_size,
        threads=args.threads,
    )
    records = []
    for model in models:
        zoo.ensure(model)
        for tool in tools:
            python = args.aimet_python if tool == "aimet" else sys.executable
            rec = run_tool(tool, model, s, python)
            records.append(rec)
            status = rec.get("status")
            detail = (
                f"{rec.get('metrics')} sqnr={rec.get('sqnr_db')}"
                if status == "ok"
                else rec.get("reason") or rec.get("error")
            )
            print(f"{model:<10} {tool:<6} {status:<8} {detail}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    tag = s.tag() + ("" if args.models == "all" else "-" + "-".join(models))
    result = {"settings": s.to_dict(), "machine": machine(), "records": records}
    (args.out / f"{tag}.json").write_text(json.dumps(result, indent=2) + "\n")
    md = table(records)
    title = title_of(result, tag)
    (args.out / f"{tag}.md").write_text(f"{title}\n\n{md}")
    print(md)
    if args.update_readme:
        update_readme(args.out)
    return 0
