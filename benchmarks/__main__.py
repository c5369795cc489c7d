"""``python -m benchmarks``: the side-by-side benchmark harness (see ``benchmarks/run.py``)."""

from benchmarks.run import main

raise SystemExit(main())
