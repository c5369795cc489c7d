"""``python -m benchmarks.zoo build [NAME ...]``, ``... list`` and ``... export NAME DIR``."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from benchmarks import zoo
from benchmarks.zoo import store
from benchmarks.zoo.build import build_model


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.zoo")
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build models into the cache (all by default)")
    b.add_argument("names", nargs="*", metavar="NAME", help=", ".join(zoo.MODELS))
    sub.add_parser("list", help="show the models and their cached FP32 metrics")
    e = sub.add_parser("export", help="copy a model and its data into a folder (builds it)")
    e.add_argument("name", metavar="NAME", choices=zoo.MODELS, help=", ".join(zoo.MODELS))
    e.add_argument("folder", type=Path, help="folder to write model.onnx, calib.npz, ... into")
    args = p.parse_args()
    cache = store.cache_root()
    if args.command == "export":
        from benchmarks.zoo.export import export_model  # noqa: PLC0415

        zoo.ensure(args.name, cache)
        folder = export_model(args.name, args.folder)
        print(f"{args.name}: {', '.join(sorted(p.name for p in folder.iterdir()))} in {folder}")
        return 0
    if args.command == "build":
        unknown = [n for n in args.names if n not in zoo.MODELS]
        if unknown:
            p.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(zoo.MODELS)}")
        for name in args.names or zoo.MODELS:
            start = time.perf_counter()
            path = build_model(name, cache)
            meta = json.loads((path / "meta.json").read_text())
            print(f"{name}: {path} ({time.perf_counter() - start:.1f} s) fp32 {meta['fp32']}")
        return 0
    for name in zoo.MODELS:
        path = zoo.model_dir(name, cache)
        if (path / "meta.json").is_file():
            meta = json.loads((path / "meta.json").read_text())
            print(
                f"{name:<10} {meta['n_calib']:>4} calib {meta['n_eval']:>4} eval  "
                f"fp32 {meta['fp32']}"
            )
        else:
            print(f"{name:<10} not built (recipe {zoo.recipe_hash(name)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
