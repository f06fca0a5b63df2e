"""``lutforge bench lut``: the LUT core against multiplier arrays at equal peak throughput.

One run measures, for W1 / W2 / W4 / ternary weights x int8 and int16 activations:

* **Area** of every compared design from Yosys, whole cores (memory port, buffers,
  tiling controller included, the same infrastructure in every core): ``synth_ecp5``
  with DSPs and ``-nodsp`` for ECP5-85 (LUT4, CCU2C carry cells, DPR16X4 distributed RAM,
  FFs, DSPs, block RAMs), and ``synth_xilinx -family xcup`` with and without DSPs
  (LUT6, CARRY8, LUTRAM, FFs, DSP48E2). With ``--place``: Fmax from nextpnr-ecp5 (DSP
  mapping, out of context).
* **Area per effective MAC**: ``LUT4 + 2 x CCU2C + 2 x DPR16X4`` (the LUT4 slots a design
  occupies; a CCU2C carry cell and a DPR16X4 RAM each fill two) per peak MAC/cycle, and
  on xcup ``LUT6 + LUTRAM LUTs + CARRY8``; throughput per LUT = MAC/cycle per 1k of them.
* **Table memory** with and without symmetrization, measured from the design: words and
  bits of the elaborated table memories, DPR16X4 cells after synthesis.
* **Utilization** of the LUT core on SmolLM2-135M layer shapes under Verilator: useful
  products / (peak MAC/cycle x cycles), every C word checked against the reference.

**Equal peak throughput rule** (recorded in the JSON): every design is sized so that its
peak MACs per cycle (``peak``: 64, or 16 with ``--quick``) match at the compared
precision: a systolic R x C array makes R*C products per cycle (int8 weights, the
dequantized low-bit codes); a LUT core makes ``rows * cols * k_tile / max(wbits,
table entries)`` (``LutCoreConfig.peak_macs_per_cycle``).

The compared designs are data (:data:`DESIGNS`: kind + config); a core kind that is not
in this build (e.g. ``bitserial`` before it is merged) is listed in the JSON as skipped.
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from ref_model.errors import LutforgeError, SimulationError
from ref_model.formats import IntFormat, f16_encode
from ref_model.lut import lut_gemm
from rtl_gen.config import config_from_dict, core_kinds

#: The precisions compared: (label, weight bits, ternary).
PRECISIONS = [("W1", 1, False), ("W2", 2, False), ("W4", 4, False), ("ternary", 2, True)]
ACTS = (8, 16)

MEMORY = {"data_bits": 128, "max_burst": 32, "sim": {"latency": 20}}


def _lut(rows, cols, k_groups, act, **extra):
    core = {"kind": "lut", "rows": rows, "cols": cols, "k_groups": k_groups, "g": 2, "symmetric": True,
            "act": {"bits": act, "signed": True}, "weight_bits": 4, "group_size": 64, "frac": 8,
            "acc_bits": 32 if act == 8 else 40, "rescale_units": 1}
    core.update(extra)
    return core


def designs(peak: int) -> list[dict]:
    """The compared designs at ``peak`` MAC/cycle: kind, config core section, and the
    precisions each serves at that peak (``serves``: list of PRECISIONS labels)."""
    side = {16: 4, 64: 8}[peak]
    rows, cols = (1, 8) if peak == 16 else (2, 16)
    out = []
    for act in ACTS:
        acc = 32 if act == 8 else 40
        out.append({"label": f"systolic {side}x{side} A{act}W8", "kind": "systolic", "act": act,
                    "serves": [p[0] for p in PRECISIONS],
                    "core": {"kind": "systolic", "rows": side, "cols": side, "act": {"bits": act, "signed": True},
                             "weight": {"bits": 8, "signed": True}, "acc_bits": acc, "dsp_budget": "auto"}})
        # g = 2: two-entry symmetric tables are built in 2 cycles, so W1/W2/ternary run at
        # one chunk per 2 cycles and W4 at one per 4 (k_groups doubled to keep the peak).
        out.append({"label": f"lut {rows}x{cols}x2 g2 A{act}", "kind": "lut", "act": act,
                    "serves": ["W1", "W2", "ternary"], "core": _lut(rows, cols, 2, act)})
        out.append({"label": f"lut {rows}x{cols}x4 g2 A{act}", "kind": "lut", "act": act,
                    "serves": ["W4"], "core": _lut(rows, cols, 4, act)})
        # (b) the bit-serial array: one plane per cycle, so the array that matches the peak
        # grows with the weight planes (W1/ternary 1 plane, W2 2, W4 4).
        scale = {16: 1, 64: 2}[peak]
        for (r, c), serves in (((4 * scale, 4 * scale), ["W1", "ternary"]), ((4 * scale, 8 * scale), ["W2"]),
                               ((8 * scale, 8 * scale), ["W4"])):
            out.append({"label": f"bitserial {r}x{c} A{act}", "kind": "bitserial", "act": act, "serves": serves,
                        "core": {"kind": "bitserial", "rows": r, "cols": c, "act": {"bits": act, "signed": True},
                                 "max_planes": 4, "group_sizes": [64], "out_frac": 8, "acc_bits": 40}})
    return out


#: Table-memory comparison: the same LUT core with and without symmetrization (g = 4:
#: 8 vs 16 entries, double-buffered 16 vs 32 words, i.e. 1 vs 2 DPR16X4 per 4 bits).
SYMMETRY_CORE = {"kind": "lut", "rows": 1, "cols": 8, "k_groups": 2, "g": 4, "weight_bits": 4, "group_size": 32}

#: SmolLM2-135M layer shapes (dim 576, FFN 1536, 3 KV heads of 64): decode is a matvec.
LLM_SHAPES = [("attn q/o matvec", 1, 576, 576), ("attn k/v matvec", 1, 576, 192),
              ("ffn up/gate matvec", 1, 576, 1536), ("ffn down matvec", 1, 1536, 576),
              ("ffn up, 8 tokens", 8, 576, 1536)]
QUICK_SHAPES = [("attn q/o matvec", 1, 576, 576)]


def _cfg(name: str, core: dict):
    return config_from_dict({"name": name, "core": core, "memory": MEMORY, "clock": {"mhz": 100}})


def peak_macs(cfg, wbits: int, ternary: bool = False) -> float:
    """Peak products per cycle of any core kind at ``wbits``-bit weights: the kind's own
    ``peak_macs_per_cycle`` where it has one, rows x cols (one product per PE and cycle)
    for the systolic array."""
    fn = getattr(cfg.core, "peak_macs_per_cycle", None)
    if fn is not None:
        return float(fn(wbits, ternary=ternary))
    if cfg.core.kind != "systolic":
        raise LutforgeError(f"core.kind {cfg.core.kind!r} has no peak_macs_per_cycle(wbits); the bench needs one "
                            f"to size designs to equal peak throughput")
    return float(cfg.core.rows * cfg.core.cols)


def _flows(place: bool):
    return [("ecp5_nodsp", dict(dsp=False, place=False)), ("ecp5_dsp", dict(dsp=True, place=place)),
            ("xcup_nodsp", dict(dsp=False))]


#: LUT6 equivalents of each Xilinx distributed-RAM primitive (UG574: RAM32M / RAM64M use
#: the four LUTs of a SLICEM quarter group, the 16/8-wide ones all eight, 1-bit dual-port two).
XILINX_LUTRAM_LUTS = {"RAM32M": 4, "RAM64M": 4, "RAM32M16": 8, "RAM64M8": 8, "RAM16X1D": 2, "RAM32X1D": 2,
                      "RAM64X1D": 2, "RAM128X1D": 4, "RAM16X1S": 1, "RAM32X1S": 1, "RAM64X1S": 1,
                      "RAM128X1S": 2, "RAM256X1S": 4, "RAM32X2S": 1, "RAM64X2S": 2}


def area(flow: str, synth: dict) -> int:
    """The area measure of a flow: ECP5 LUT4 slots (LUT4 + 2 CCU2C + 2 DPR16X4); xcup
    LUT6 + LUTRAM LUTs + CARRY8."""
    if flow.startswith("ecp5"):
        return synth["lut4_slots"]
    ram = sum(XILINX_LUTRAM_LUTS.get(k, 0) * v for k, v in synth["cells"].items())
    return synth["lut"] + ram + synth["carry"]


def _synth_design(cfg, flow: str, opts: dict, workdir: Path) -> dict:
    from rtl_gen.generate import generate_verilog
    from rtl_gen.report import synthesize, synthesize_xilinx
    man = generate_verilog(cfg, workdir / "verilog")
    t0 = time.perf_counter()
    if flow.startswith("ecp5"):
        rep = synthesize(man["verilog"], man["top"], device=cfg.target.device, package=cfg.target.package,
                         clock_mhz=cfg.clock.mhz, dsp=opts["dsp"], place=opts["place"], workdir=workdir / flow,
                         speed=cfg.target.speed,
                         available=cfg.device_resources, fit_check=False)
        out = {"synth": {k: v for k, v in rep["synth"].items()},
               "fmax_mhz": (rep["pnr"] or {}).get("fmax_mhz"), "placed_lut4": (rep["pnr"] or {}).get("lut4")}
    else:
        rep = synthesize_xilinx(man["verilog"], man["top"], family="xcup", dsp=opts["dsp"], workdir=workdir / flow)
        out = {"synth": rep["synth"]}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    out["area"] = area(flow, out["synth"])
    return out


def _saved(results_from: list[dict], cfg_hash: str, flow: str, place: bool) -> dict | None:
    """A flow result of the same config (by hash) in earlier bench results, if any."""
    for old in results_from:
        sym = old.get("symmetry") or {}
        for d in old.get("designs", []) + [sym.get("symmetric") or {}, sym.get("full") or {}]:
            got = d.get("flows", {}).get(flow)
            if (d.get("config_hash") == cfg_hash and got and "error" not in got
                    and (not place or got.get("fmax_mhz") or flow != "ecp5_dsp")):
                return got
    return None


def _random_gemm(cfg, m, k, n, wbits, ternary, gen):
    from host_runtime.lut_layout import LutGemm
    G = cfg.core.group_size
    groups = -(-k // G)
    qmax = 2 if ternary else (1 << wbits) - 1
    z = torch.ones((groups, n), dtype=torch.int64) if ternary else torch.randint(0, qmax + 1, (groups, n), generator=gen)
    return LutGemm(cfg.act_format.random((m, k), gen), torch.randint(0, qmax + 1, (k, n), generator=gen),
                   f16_encode(torch.randn((groups, n), generator=gen) * 0.02), z, wbits, ternary)


def utilization(cfg, shapes, seed: int = 1) -> list[dict]:
    """Simulate ``shapes`` at W2 / W4 / ternary on ``cfg``; check C; utilization from counters."""
    from sim.gemm_runner import run_gemms
    gen = torch.Generator().manual_seed(seed)
    cases = [(label, prec, _random_gemm(cfg, m, k, n, wb, tern, gen))
             for label, m, k, n in shapes for prec, wb, tern in PRECISIONS if wb <= cfg.core.weight_bits]
    with tempfile.TemporaryDirectory(prefix="lutforge_lutbench_") as tmp:
        runs = run_gemms(cfg, [x for _, _, x in cases], workdir=Path(tmp))
    rows = []
    core = cfg.core
    for (label, prec, x), run in zip(cases, runs):
        ref = lut_gemm(x.a, x.q, x.scales, x.zeros, act=cfg.act_format, acc=IntFormat(core.acc_bits), g=core.g,
                       k_tile=core.k_tile, group_size=core.group_size, frac=core.frac, wbits=x.wbits,
                       ternary=x.ternary, symmetric=core.symmetric)
        if not torch.equal(run.c, ref):
            raise SimulationError(f"bench lut {cfg.name} {label} {prec}: C differs from the reference (seed {seed})")
        m, k, n = x.shape
        cyc = max(run.counters["cycles"], 1)
        pk = peak_macs(cfg, x.wbits)
        rows.append({"shape": label, "precision": prec, "m": m, "k": k, "n": n, "cycles": run.counters["cycles"],
                     "busy": run.counters["busy"], "useful_macs": m * k * n,
                     "peak_macs_per_cycle": pk, "utilization": m * k * n / (pk * cyc),
                     "steady_state_model": core.sustained_macs_per_cycle(x.wbits) / pk,
                     "read_bytes": run.counters["read_bytes"],
                     "read_port_utilization": run.counters["read_bytes"] / (cfg.bytes_per_beat * cyc)})
    return rows


def symmetry(workdir: Path, results_from: list[dict]) -> dict:
    """Table memory of the same core with and without symmetrization, from the design."""
    from hw.cores.lut import LutCore
    from rtl_gen.memories import design_memories
    out = {"core": SYMMETRY_CORE}
    for sym in (True, False):
        cfg = _cfg(f"lut-sym-{int(sym)}", dict(SYMMETRY_CORE, symmetric=sym))
        tables = [mm for mm in design_memories(LutCore(cfg)) if mm["name"].startswith("table_")]
        saved = _saved(results_from, cfg.hash(), "ecp5_nodsp", False) if results_from else None
        syn = saved or _synth_design(cfg, "ecp5_nodsp", {"dsp": False, "place": False}, workdir / f"sym{int(sym)}")
        out["symmetric" if sym else "full"] = {
            "config_hash": cfg.hash(), "table_entries": cfg.core.table_entries, "table_memories": len(tables),
            "table_words": sum(mm["depth"] for mm in tables), "table_bits": sum(mm["bits"] for mm in tables),
            "read_ports": sum(mm["read_ports"] for mm in tables),
            "dpr16x4": syn["synth"]["dpram16x4"], "lut4_slots": syn["synth"]["lut4_slots"], "flows": {"ecp5_nodsp": syn}}
    s, f = out["symmetric"], out["full"]
    out["ratio_words"] = s["table_words"] / f["table_words"]
    out["ratio_dpr16x4"] = s["dpr16x4"] / f["dpr16x4"]
    return out


def run(args, json_path: Path) -> int:
    """``lutforge bench lut [--quick] [--no-report] [--place] [--report-from JSON]``."""
    quick = bool(getattr(args, "quick", False))
    results_from = []
    for p in getattr(args, "report_from", None) or []:
        try:
            results_from.append(json.loads(Path(p).read_text()))
        except (OSError, ValueError) as e:
            raise LutforgeError(f"--report-from {p}: cannot read a bench result ({e})") from None
    return run_suite(quick=quick, json_path=json_path, with_report=not getattr(args, "no_report", False),
                     place=bool(getattr(args, "place", False)), results_from=results_from)


def run_suite(*, quick: bool, json_path: Path, with_report: bool, place: bool = False,
              results_from: list[dict] = ()) -> int:
    peak = 16 if quick else 64
    results = {"suite": "lut", "quick": quick, "host": platform.node(), "python": platform.python_version(),
               "peak_macs_per_cycle": peak,
               "equal_throughput_rule": ("every design sized to the same peak MAC/cycle at the compared precision: "
                                         "systolic rows*cols (int8 weights = dequantized codes); LUT "
                                         "rows*cols*k_tile/max(wbits, table_entries)"),
               "area_measure": {"ecp5": "LUT4 + 2*CCU2C + 2*DPR16X4 (LUT4 slots)",
                                "xcup": "LUT6 + LUTs of LUTRAM primitives + CARRY8"},
               "scope": "whole cores (AXI4 port, buffers, tiling controller, counters) as generated",
               "designs": [], "comparisons": []}
    kinds = set(core_kinds())
    with tempfile.TemporaryDirectory(prefix="lutforge_lutbench_syn_") as tmp:
        tmp = Path(tmp)
        for d in designs(peak):
            entry = {k: v for k, v in d.items()}
            if d["kind"] not in kinds or d["core"] is None:
                entry["skipped"] = (f"core.kind {d['kind']!r} is not in this build" if d["kind"] not in kinds
                                    else "no config sized to this peak yet (docs/lut.md, 'Adding the bit-serial array')")
                results["designs"].append(entry)
                print(f"{d['label']:<28} skipped: {entry['skipped']}")
                continue
            cfg = _cfg("bench-" + "".join(ch if ch.isalnum() else "-" for ch in d["label"]), d["core"])
            entry["config_hash"] = cfg.hash()
            entry["peak"] = {p: peak_macs(cfg, wb, tern) for p, wb, tern in PRECISIONS if p in d["serves"]}
            entry["flows"] = {}
            if with_report:
                for flow, opts in _flows(place):
                    got = _saved(results_from, cfg.hash(), flow, place and flow == "ecp5_dsp")
                    if got is None:
                        try:
                            got = _synth_design(cfg, flow, opts, tmp / f"{len(results['designs'])}")
                        except LutforgeError as e:   # recorded; the other flows still run
                            entry["flows"][flow] = {"error": str(e)}
                            print(f"{d['label']:<28} {flow:<11} failed: {e}")
                            continue
                    entry["flows"][flow] = got
                    s = got["synth"]
                    print(f"{d['label']:<28} {flow:<11} area {got['area']:>7}  " +
                          (f"LUT4 {s['lut4']} CCU2C {s['ccu2c']} DPR {s['dpram16x4']} FF {s['ff']} DSP {s['dsp']} "
                           f"BRAM {s['bram']}" if flow.startswith("ecp5") else
                           f"LUT {s['lut']} CARRY {s['carry']} LUTRAM {s['lutram']} FF {s['ff']} DSP {s['dsp']}") +
                          (f" Fmax {got.get('fmax_mhz')} MHz" if got.get("fmax_mhz") else "") + f"  ({got['seconds']} s)")
            results["designs"].append(entry)
            _write(json_path, results)   # partial results: a rerun reuses them with --report-from
        if with_report:
            _compare(results)
            results["symmetry"] = symmetry(tmp, results_from)
            sy = results["symmetry"]
            print(f"symmetrization (g=4): table words {sy['symmetric']['table_words']} vs {sy['full']['table_words']}, "
                  f"bits {sy['symmetric']['table_bits']} vs {sy['full']['table_bits']}, DPR16X4 "
                  f"{sy['symmetric']['dpr16x4']} vs {sy['full']['dpr16x4']}")
    lut_a8 = next(d for d in designs(peak) if d["kind"] == "lut" and d["act"] == 8)
    ucfg = _cfg("lut-util", dict(lut_a8["core"], weight_bits=4))
    results["utilization"] = {"config": ucfg.core.model_dump(), "gemms": utilization(ucfg, QUICK_SHAPES if quick else LLM_SHAPES)}
    for g in results["utilization"]["gemms"]:
        print(f"util {g['shape']:<20} {g['precision']:<8} {g['m']}x{g['k']}x{g['n']}: cycles {g['cycles']:>8} "
              f"utilization {g['utilization']:6.1%} (model {g['steady_state_model']:6.1%}) read port "
              f"{g['read_port_utilization']:6.1%}")
    _write(json_path, results)
    if with_report:
        plot = json_path.with_suffix(".png")
        _plot(results, plot)
        print(f"wrote {json_path} and {plot}")
    else:
        print(f"wrote {json_path}")
    return 0


def _write(json_path: Path, results: dict) -> None:
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=2) + "\n")


#: Acceptance targets: LUT area per effective MAC / multiplier array's, ECP5 -nodsp.
TARGETS = {("W2", 8): 0.8, ("W2", 16): 0.5}


def _compare(results: dict) -> None:
    """Area per effective MAC of each LUT design vs the systolic array of the same
    activation width, per precision and flow."""
    by = results["designs"]
    for act in ACTS:
        base = next(d for d in by if d["kind"] == "systolic" and d["act"] == act)
        for prec, wb, _ in PRECISIONS:
            for d in by:
                if d["kind"] == "systolic" or d.get("skipped") or prec not in d["serves"] or d["act"] != act:
                    continue
                row = {"precision": f"{prec}A{act}", "design": d["label"], "baseline": base["label"],
                       "kind": d["kind"], "peak_macs_per_cycle": d["peak"][prec]}
                for flow in d["flows"]:
                    if "area" not in d["flows"][flow] or "area" not in base["flows"].get(flow, {}):
                        continue
                    a_l = d["flows"][flow]["area"] / d["peak"][prec]
                    a_b = base["flows"][flow]["area"] / base["peak"][prec]
                    row[flow] = {"area_per_mac": round(a_l, 2), "baseline_area_per_mac": round(a_b, 2),
                                 "ratio": round(a_l / a_b, 3),
                                 "macs_per_cycle_per_1k": round(1000 / a_l, 2),
                                 "baseline_macs_per_cycle_per_1k": round(1000 / a_b, 2)}
                target = TARGETS.get((prec, act)) if d["kind"] == "lut" else None   # the issue's targets are the LUT core's
                if target is not None:
                    row["target_ratio"] = target
                    row["target_met"] = {f: row[f]["ratio"] <= target for f in ("ecp5_nodsp", "xcup_nodsp") if f in row}
                results["comparisons"].append(row)
                print(f"{row['precision']:<12} {d['label']:<22} vs {base['label']:<22} " + "  ".join(
                    f"{f}: {row[f]['ratio']:.3f}" for f in d["flows"] if f in row))


def _plot(results: dict, path: Path) -> None:
    """Area per peak MAC/cycle per precision: systolic baseline, LUT core, bit-serial
    array; ECP5 ``-nodsp`` (solid) and xcup ``-nodsp`` (light)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    comps = [c for c in results["comparisons"] if "ecp5_nodsp" in c]
    if not comps:
        return
    precs = list(dict.fromkeys(c["precision"] for c in comps))
    kinds = [k for k in ("lut", "bitserial") if any(c["kind"] == k for c in comps)]
    fig, ax = plt.subplots(figsize=(11, 4.5))
    series = [("systolic", None, "#999")] + [(k, k, {"lut": "#37a", "bitserial": "#3a7"}[k]) for k in kinds]
    w = 0.8 / (2 * len(series))
    for si, (name, kind, color) in enumerate(series):
        for fi, flow in enumerate(("ecp5_nodsp", "xcup_nodsp")):
            vals = []
            for p in precs:
                c = next((c for c in comps if c["precision"] == p and (kind is None or c["kind"] == kind)), None)
                key = "baseline_area_per_mac" if kind is None else "area_per_mac"
                vals.append(c[flow][key] if c and flow in c else 0)
            off = (2 * si + fi) * w - 0.4 + w / 2
            ax.bar([v + off for v in range(len(precs))], vals, w, color=color, alpha=1.0 if fi == 0 else 0.45,
                   label=f"{name}, {flow}")
    ax.set_xticks(list(range(len(precs))), precs, fontsize=8)
    ax.set_ylabel("LUT area per peak MAC/cycle")
    ax.set_title(f"Equal peak ({results['peak_macs_per_cycle']} MAC/cycle), whole cores: "
                 f"systolic vs LUT core vs bit-serial array", fontsize=10)
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
