"""``lutforge bench systolic``: GEMMs on the systolic core in Verilator, with counters.

Per (config, shape): cycles, MAC utilization (useful MACs / (PEs x cycles)), array busy
fraction, bytes moved and read-port utilization (bytes / (port bytes per cycle x cycles)),
cocotb simulation speed, and for one long GEMM per config the raw Verilator speed of the
same model without cocotb. Every C is checked against ``ref_model`` (a mismatch is an
error, not a number). With the report flow: LUT4/FF/DSP/BRAM and Fmax on the config's
ECP5 part (``rtl_gen.report``).
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from ref_model.errors import LutforgeError, SimulationError
from ref_model.gemm import systolic_gemm
from rtl_gen.config import load_config
from sim.gemm_runner import run_gemms, run_raw

# SmolLM2-135M layer shapes (dim 576, FFN 1536): decode is a matvec (M = 1); a 64-token
# prefill is a GEMM with M = 64.
LLM_SHAPES = [
    ("attn q/o matvec", 1, 576, 576),
    ("ffn up matvec", 1, 576, 1536),
    ("ffn down matvec", 1, 1536, 576),
    ("ffn up, 64 tokens", 64, 576, 1536),
]
FULL = [
    ("systolic_16x16_int8", [], [("square 512", 512, 512, 512)] + LLM_SHAPES),
    ("systolic_16x16_int8", ["core.dataflow=weight_stationary", "core.m_tile=512"],
     [("square 512", 512, 512, 512)] + LLM_SHAPES),
    ("systolic_8x8_int8", [], [("square 256", 256, 256, 256), ("ffn up, 64 tokens", 64, 576, 1536)]),
]
QUICK = [
    ("systolic_8x8_int8", [], [("square 128", 128, 128, 128), ("attn q/o matvec", 1, 576, 576)]),
]


def _saved_report(cfg, reports: list[Path]) -> dict | None:
    """A saved report of exactly this config (matched by config hash), if one was given."""
    for path in reports:
        try:
            rep = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            raise LutforgeError(f"--report-from {path}: cannot read a report ({e})") from None
        if rep.get("config_hash") == cfg.hash():
            return rep
    return None


def _bench_config(name, overrides, shapes, *, seed: int, raw: bool, with_report: bool,
                  reports: list[Path] = ()) -> dict:
    cfg = load_config(name, overrides)
    gen = torch.Generator().manual_seed(seed)
    cases = [(label, cfg.act_format.random((m, k), gen), cfg.weight_format.random((k, n), gen))
             for label, m, k, n in shapes]
    t0 = time.perf_counter()
    runs = run_gemms(cfg, [(a, w) for _, a, w in cases])
    rows = []
    for (label, a, w), run in zip(cases, runs):
        ref = systolic_gemm(a, w, cfg.act_format, cfg.weight_format, cfg.acc_format)
        if not torch.equal(run.c, ref):
            raise SimulationError(f"bench {cfg.name} {label}: C differs from the reference (seed {seed})")
        met = run.metrics(cfg)
        rows.append({"shape": label, "m": a.shape[0], "k": a.shape[1], "n": w.shape[1], **met})
    entry = {"config": cfg.name, "overrides": overrides, "config_hash": cfg.hash(),
             "array": f"{cfg.core.rows}x{cfg.core.cols}", "dataflow": cfg.core.dataflow,
             "port_bits": cfg.memory.data_bits, "pes": cfg.pes, "gemms": rows,
             "sim_seconds": time.perf_counter() - t0}
    if raw:
        # The longest GEMM again on a plain Verilator build: the raw-speed reference.
        longest = max(range(len(rows)), key=lambda i: rows[i]["cycles"])
        _, a, w = cases[longest]
        with tempfile.TemporaryDirectory(prefix="lutforge_raw_") as tmp:
            r = run_raw(cfg, a, w, workdir=Path(tmp))
        if not torch.equal(r["c"], systolic_gemm(a, w, cfg.act_format, cfg.weight_format, cfg.acc_format)):
            raise SimulationError(f"bench {cfg.name}: raw run differs from the reference")
        cocotb_cps = rows[longest]["sim_cycles_per_second"]
        entry["speed"] = {"shape": rows[longest]["shape"], "cycles": r["cycles"],
                          "raw_cycles_per_second": r["cycles"] / r["seconds"],
                          "cocotb_cycles_per_second": cocotb_cps,
                          "cocotb_over_raw": cocotb_cps / (r["cycles"] / r["seconds"])}
    saved = _saved_report(cfg, reports)
    if saved is not None:
        entry["report"] = saved
    elif with_report:
        from rtl_gen.report import run_report
        entry["report"] = run_report(cfg)
    return entry


def _plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(10, 4.5))
    labels, values = [], []
    for e in results["configs"]:
        for g in e["gemms"]:
            labels.append(f"{e['array']} {e['dataflow'].split('_')[0]}\n{g['shape']}")
            values.append(100 * g["mac_utilization"])
    ax.bar(range(len(values)), values, color="#3a7")
    ax.set_xticks(range(len(values)), labels, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("MAC utilization, %")
    ax.set_ylim(0, 100)
    ax.set_title("Systolic core: useful MACs / (PEs x cycles), Verilator")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args, json_path: Path) -> int:
    """``lutforge bench systolic [--quick] [--no-report] [--report-from JSON ...]``."""
    return run_suite(quick=args.quick, json_path=json_path, with_report=not args.no_report,
                     reports=[Path(p) for p in (args.report_from or [])])


def run_suite(*, quick: bool, json_path: Path, with_report: bool, reports: list[Path] = ()) -> int:
    plan = QUICK if quick else FULL
    results = {"suite": "systolic", "quick": quick, "host": platform.node(), "python": platform.python_version(),
               "configs": []}
    seen = set()
    for name, overrides, shapes in plan:
        first_of_config = name not in seen
        seen.add(name)
        entry = _bench_config(name, overrides, shapes, seed=1, raw=True,
                              with_report=with_report and first_of_config and not overrides, reports=reports)
        results["configs"].append(entry)
        for g in entry["gemms"]:
            print(f"{entry['array']:>6} {entry['dataflow']:<18} {g['shape']:<20} {g['m']:>4}x{g['k']:<5}x{g['n']:<5} "
                  f"cycles {g['cycles']:>9}  MAC util {g['mac_utilization']:6.1%}  busy {g['array_busy']:6.1%}  "
                  f"read port {g['read_port_utilization']:6.1%}  {g['sim_cycles_per_second']:>9,.0f} cyc/s")
        if "speed" in entry:
            s = entry["speed"]
            print(f"       speed on '{s['shape']}': raw Verilator {s['raw_cycles_per_second']:,.0f} cyc/s, "
                  f"cocotb {s['cocotb_cycles_per_second']:,.0f} cyc/s ({s['cocotb_over_raw']:.0%} of raw)")
        if "report" in entry:
            rep = entry["report"]
            print(f"       {rep['device']}: LUT4 {rep['pnr'].get('lut4')} FF {rep['pnr'].get('ff')} "
                  f"DSP {rep['pnr'].get('dsp')} BRAM {rep['pnr'].get('bram')} Fmax {rep['pnr'].get('fmax_mhz')} MHz")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    plot = json_path.with_suffix(".png")
    _plot(results, plot)
    print(f"wrote {json_path} and {plot}")
    return 0
