"""Benchmarks: they run the hardware in simulation and the report flow, and write JSON
results and a plot (``bench/results/``). Numbers, not pass/fail: tests check behaviour."""

from __future__ import annotations

from pathlib import Path

RESULTS_DIR = Path(__file__).parent / "results"


def run_bench(suite: str, *, quick: bool, json_path: str | None, extra) -> int:
    if suite == "systolic":
        from .systolic import run
        reports = [Path(p) for p in (getattr(extra, "report_from", None) or [])]
        return run(quick=quick, json_path=Path(json_path) if json_path else RESULTS_DIR / "systolic.json",
                   with_report=not getattr(extra, "no_report", False), reports=reports)
    if suite == "reference":
        from .reference import run
        return run(quick=quick, json_path=Path(json_path) if json_path else RESULTS_DIR / "reference.json",
                   threads=getattr(extra, "threads", 1) or 1)
    raise ValueError(f"unknown benchmark suite {suite!r}")
