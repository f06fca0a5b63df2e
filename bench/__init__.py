"""Benchmarks: they run the hardware in simulation and the report flow, and write JSON
results and a plot (``bench/results/``). Numbers, not pass/fail: tests check behaviour.

Each suite is a module ``bench/SUITE.py`` with ``run(args, json_path) -> int``; ``args``
is the parsed ``lutforge bench`` command line (``quick``, ``no_report``, ``report_from``,
``threads``...)."""

from __future__ import annotations

import importlib
from pathlib import Path

RESULTS_DIR = Path(__file__).parent / "results"

#: ``lutforge bench SUITE`` -> module under bench/
SUITES = ("systolic", "bitserial", "reference", "decode", "lut", "host", "boards", "litedram")


def run_bench(suite: str, *, json_path: str | None, args) -> int:
    if suite not in SUITES:
        raise ValueError(f"unknown benchmark suite {suite!r}; allowed: {', '.join(SUITES)}")
    module = importlib.import_module(f"bench.{suite}")
    return module.run(args, Path(json_path) if json_path else RESULTS_DIR / f"{suite}.json")
