"""``lutforge bench boards``: resources and Fmax of every board top, against a stored baseline.

Each entry of :data:`MATRIX` is one bitstream build (:func:`fpga_boards.build.build_bitstream`:
synthesis, place and route, timing check; the bitstream itself is kept under
``build/bench-boards/``): a board, a config (a core family's shipped config, or the decode
engine's), the design clock and the memory. The result (``bench/results/boards.json``)
lists per entry the placed LUT4 / FF / DSP (MULT18X18D) / BRAM (DP16KD) counts, the
achieved Fmax per clock domain and the build's seconds, and compares them with
``bench/baselines/boards.json``:

* a resource count that differs from the baseline by more than ``RESOURCE_TOLERANCE``
  (5 %), or
* an Fmax that differs by more than ``FMAX_TOLERANCE`` (10 %; place and route is
  seed-sensitive, so Fmax gets the wider band)

is reported (``changes`` in the JSON, one line each on stdout); the command exits 1 when
a resource grew or an Fmax dropped beyond tolerance (a regression), 0 otherwise.
``--update-baseline`` writes the measured numbers as the new baseline. A build that fails
(does not fit, misses timing) is recorded with its error line and counts as a regression
when the baseline has it passing.

``--quick`` builds only the first entry (ULX3S, systolic core). Builds take minutes each
(one at a time: nextpnr is single-threaded here). ``--report-from MANIFEST`` (repeatable)
uses a saved ``lutforge build-bitstream`` manifest for the matrix entry with the same board,
memory, design clock and config hash instead of building it (entries with no manifest are
built unless ``--no-report`` skips them).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ref_model.errors import LutforgeError

BASELINE = Path(__file__).parent / "baselines" / "boards.json"
RESOURCE_TOLERANCE = 0.05
FMAX_TOLERANCE = 0.10
RESOURCES = ("lut4", "ff", "dsp", "bram")

#: (board, config, overrides, design clock MHz, memory)
MATRIX = [
    # the hardware of the shipped ulx3s_systolic_8x8 (which only adds a name, clock and target)
    ("ulx3s-85", "systolic_8x8_int8", ["memory.data_bits=128"], 50.0, "bram"),
    ("ecpix5-85", "systolic_8x8_int8", ["memory.data_bits=128"], 50.0, "dram"),
    ("butterstick", "systolic_8x8_int8", ["memory.data_bits=128"], 50.0, "bram"),
    ("orangecrab-85", "systolic_8x8_int8", ["memory.data_bits=128"], 48.0, "bram"),
    ("ulx3s-85", "bitserial_8x8", ["memory.data_bits=128"], 50.0, "bram"),
    ("ulx3s-85", "lut_w2a8", ["memory.data_bits=128"], 50.0, "bram"),
    ("ecpix5-85", "ecpix5_decode_tiny", [], 15.0, "dram"),
    # the ECPIX-5 tensor-core config on OrangeCrab's DDR3 (its 48 MHz oscillator's clock)
    ("orangecrab-85", "ecpix5_systolic_8x8", [], 48.0, "dram"),
]


def entry_key(board: str, config: str, overrides, memory: str) -> str:
    return "/".join([board, config, memory] + list(overrides))


def _clock_key(name: str, c: dict, design_mhz: float) -> str:
    domain = c.get("domain") or ("design" if abs(c["target_mhz"] - design_mhz) < 0.01 * design_mhz else None)
    return domain if domain in ("design", "dram") else name


def summarize(man: dict) -> dict:
    """The numbers of a build manifest the bench keeps."""
    return {"resources": {k: man["resources"][k]["used"] for k in RESOURCES},
            "available": {k: man["resources"][k]["available"] for k in RESOURCES},
            # the design's and the DRAM controller's clocks, keyed by what they drive (nextpnr's
            # net names follow the netlist; the oscillator's and the controller's init clock
            # have near-empty paths whose Fmax is noise)
            "clocks": {k: c["achieved_mhz"] for n, c in man["clocks"].items()
                       if (k := _clock_key(n, c, man["clock_mhz"])) in ("design", "dram")},
            "target_mhz": man["clock_mhz"], "design": man["design"], "config_hash": man["config_hash"],
            "seconds": man["seconds"], "ok": True}


def compare(results: dict, baseline: dict, *, res_tol: float = RESOURCE_TOLERANCE,
            fmax_tol: float = FMAX_TOLERANCE) -> list[dict]:
    """Changes of ``results`` against ``baseline`` beyond tolerance (both: key -> summary).

    Each change: ``key``, ``what`` (a resource, ``fmax CLOCK`` or ``build``), ``baseline``,
    ``measured``, ``change`` (relative), ``regression`` (worse: more resources, lower Fmax,
    a build that now fails)."""
    changes = []
    for key, now in results.items():
        base = baseline.get(key)
        if base is None:
            continue
        if not now.get("ok"):
            if base.get("ok"):
                changes.append({"key": key, "what": "build", "baseline": "ok", "measured": now.get("error"),
                                "change": None, "regression": True})
            continue
        if not base.get("ok"):
            changes.append({"key": key, "what": "build", "baseline": base.get("error"), "measured": "ok",
                            "change": None, "regression": False})
            continue
        for r in RESOURCES:
            b, n = base["resources"][r], now["resources"][r]
            rel = (n - b) / b if b else (0.0 if n == b else float("inf"))
            if abs(rel) > res_tol:
                changes.append({"key": key, "what": r, "baseline": b, "measured": n, "change": rel,
                                "regression": n > b})
        for clock, b in base["clocks"].items():
            n = now["clocks"].get(clock)
            if n is None:
                continue
            rel = (n - b) / b if b else 0.0
            if abs(rel) > fmax_tol:
                changes.append({"key": key, "what": f"fmax {clock}", "baseline": b, "measured": n, "change": rel,
                                "regression": n < b})
    return changes


def format_change(c: dict) -> str:
    tag = "REGRESSION" if c["regression"] else "change"
    if c["change"] is None:
        return f"{tag} {c['key']}: build {c['baseline']} -> {c['measured']}"
    return (f"{tag} {c['key']}: {c['what']} {c['baseline']} -> {c['measured']} ({c['change']:+.1%}, "
            f"tolerance {FMAX_TOLERANCE if c['what'].startswith('fmax') else RESOURCE_TOLERANCE:.0%})")


def run(args, json_path: Path) -> int:
    from fpga_boards.build import build_bitstream
    from rtl_gen.config import load_config

    matrix = MATRIX[:1] if getattr(args, "quick", False) else MATRIX
    saved = [json.loads(Path(p).read_text()) for p in (getattr(args, "report_from", None) or [])]
    results = {}
    t0 = time.perf_counter()
    for board, config, overrides, clock, memory in matrix:
        key = entry_key(board, config, overrides, memory)
        print(f"[bench boards] {key} @ {clock:g} MHz", flush=True)
        try:
            cfg = load_config(config, overrides)
            man = next((s for s in saved if (s["board"], s["memory"]["kind"], s["config_hash"]) ==
                        (board, memory, cfg.hash()) and abs(s["clock_mhz"] - clock) < 1e-3), None)
            if man is not None:
                results[key] = summarize(man)
                results[key]["from"] = "saved manifest"
                print("  from a saved manifest")
                continue
            if getattr(args, "no_report", False):
                print("  skipped (--no-report, no saved manifest)")
                continue
            man = build_bitstream(board, cfg, Path("build/bench-boards") / key.replace("/", "_").replace("=", "-"),
                                  clock_mhz=clock, memory=memory, log=lambda line: None)
            results[key] = summarize(man)
            r = results[key]["resources"]
            print(f"  LUT4 {r['lut4']:,}  FF {r['ff']:,}  DSP {r['dsp']}  BRAM {r['bram']}  Fmax " +
                  ", ".join(f"{n} {f:.1f} MHz" for n, f in results[key]["clocks"].items()), flush=True)
        except LutforgeError as e:
            results[key] = {"ok": False, "error": str(e)}
            print(f"  failed: {e}", flush=True)
    baseline = json.loads(BASELINE.read_text()) if BASELINE.is_file() else {}
    changes = compare(results, baseline.get("entries", {}))
    for c in changes:
        print(format_change(c))
    if not changes:
        print(f"no change beyond tolerance against {BASELINE.name}" if baseline else "no baseline stored")
    out = {"suite": "boards", "tolerance": {"resources": RESOURCE_TOLERANCE, "fmax": FMAX_TOLERANCE},
           "entries": results, "changes": changes, "baseline": str(BASELINE.name) if baseline else None,
           "seconds": round(time.perf_counter() - t0, 1)}
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {json_path}")
    if getattr(args, "update_baseline", False):
        merged = {**baseline.get("entries", {}), **results}
        BASELINE.parent.mkdir(parents=True, exist_ok=True)
        BASELINE.write_text(json.dumps({"entries": merged}, indent=2) + "\n")
        print(f"wrote {BASELINE}")
    return 1 if any(c["regression"] for c in changes) else 0
