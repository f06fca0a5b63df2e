"""``lutforge bench bitserial``: the bit-serial core (BitMoD class) measured.

1. Quantization error on real SmolLM2-135M weights (blk.0 attention and FFN matrices,
   dequantized from the shipped Q4_1 checkpoint and re-quantized per data-type set and
   group size): relative RMS error ||W - Wq|| / ||W||, and how often each type is chosen.
2. Cycles vs weight planes: one fixed GEMM on ``bitserial_8x8`` at 1, 2, 3, 4 and 8
   magnitude planes in Verilator (every C checked against ``ref_model``), with the ratio to
   (planes / 8) x the 8-plane cycles, array busy and MAC-equivalent utilization.
3. Equal peak throughput: the same GEMM on the systolic int8 4x4 array (16 MACs/cycle,
   as the 8x8 bit-serial array at 4 planes) and effective MACs per cycle per LUT4.
4. Area (Yosys ``synth_ecp5``, with and without DSPs, synthesis counts) of the bit-serial
   core, the systolic W4A8 8x8 and int8 4x4 cores, and of single lanes (one bit-serial PE
   column of 8 lanes, the dequantization unit of one column, one bit-parallel W4A8 and
   int8 PE); Fmax from nextpnr for the small cores.
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from host_runtime.bitserial_layout import BitSerialWeights
from ref_model.bitserial import bitserial_gemm
from ref_model.errors import LutforgeError, SimulationError, ToolchainError
from ref_model.formats import TYPE_SETS, f16_encode, quantize_groups, relative_rms_error, weight_type
from ref_model.gemm import systolic_gemm
from rtl_gen.config import load_config
from sim.gemm_runner import run_gemms

LAYERS = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"]
ERROR_SETS = ["int4", "int4a", "int4+fp4", "int3", "int3a", "int3+fp3", "int2a", "ternary", "int8"]
PLANES = [1, 2, 3, 4, 8]


def quant_errors(groups=(32, 64, 128), layers=LAYERS) -> dict:
    """Relative RMS error per data-type set and group size over blk.0's matrices."""
    from ref_model.models.gguf_model import load_gguf, smollm2_path
    model = load_gguf(smollm2_path(), with_tokenizer=False)
    mats = {name: model.weight(f"blk.0.{name}.weight").t().contiguous() for name in layers}  # (K=in, N=out)
    out = {"source": f"{smollm2_path().name} blk.0 ({', '.join(layers)}), dequantized from Q4_1", "sets": {}}
    for set_name in ERROR_SETS:
        types = TYPE_SETS[set_name]
        per_g = {}
        for g in groups:
            num = den = 0.0
            counts: dict[str, int] = {}
            per_layer = {}
            for name, w in mats.items():
                q = quantize_groups(w, g, types)
                err = relative_rms_error(w, q.dequantize())
                per_layer[name] = err
                num += err ** 2 * float((w.double() ** 2).sum())
                den += float((w.double() ** 2).sum())
                for t, c in q.type_counts().items():
                    counts[t] = counts.get(t, 0) + c
            per_g[str(g)] = {"rel_rms": (num / den) ** 0.5, "layers": per_layer, "type_counts": counts}
        planes = max(weight_type(t).planes for t in types)
        out["sets"][set_name] = {"types": list(types), "planes": planes, "groups": per_g}
    return out


def _random_weights(k, n, planes, group, gen):
    top = (1 << planes) - 1
    v = torch.randint(-top, top + 1, (k, n), generator=gen)
    s = f16_encode(torch.rand((-(-k // group), n), generator=gen) * 0.01 + 0.001)
    return BitSerialWeights(v, s, group, planes)


def cycles_vs_planes(m, k, n, group=128, seed=1) -> dict:
    cfg = load_config("bitserial_8x8")
    gen = torch.Generator().manual_seed(seed)
    a = cfg.act_format.random((m, k), gen)
    cases = [(a, _random_weights(k, n, p, group, gen)) for p in PLANES]
    runs = run_gemms(cfg, cases)
    rows = []
    for p, (a_, w), run in zip(PLANES, cases, runs):
        ref = bitserial_gemm(a_, w.values, w.scale_bits, group, cfg.core.out_frac, cfg.core.acc_bits)
        if not torch.equal(run.c, ref):
            raise SimulationError(f"bench bitserial planes={p}: C differs from the reference (seed {seed})")
        cyc = run.counters["cycles"]
        rows.append({"planes": p, "cycles": cyc, "busy": run.counters["busy"],
                     "array_busy": run.counters["busy"] / cyc,
                     # one-bit MAC slots used / offered: M*K*N*planes / (lanes * cycles)
                     "plane_utilization": m * k * n * p / (cfg.pes * cyc),
                     "macs_per_cycle": m * k * n / cyc, "peak_macs_per_cycle": cfg.pes / p,
                     "read_bytes": run.counters["read_bytes"], "write_bytes": run.counters["write_bytes"],
                     "sim_cycles_per_second": run.cycles_per_second})
    w8 = next(r["cycles"] for r in rows if r["planes"] == 8)
    for r in rows:
        r["ideal_cycles"] = r["planes"] / 8 * w8
        r["ratio_to_ideal"] = r["cycles"] / r["ideal_cycles"]
    return {"config": cfg.name, "config_hash": cfg.hash(), "m": m, "k": k, "n": n, "group": group, "rows": rows}


def systolic_equal_peak(m, k, n, seed=1) -> dict:
    """The same GEMM shape on the systolic int8 4x4 core (16 MACs/cycle)."""
    cfg = load_config("systolic_8x8_int8", ["core.rows=4", "core.cols=4", "core.k_max=1024"])
    gen = torch.Generator().manual_seed(seed)
    a, w = cfg.act_format.random((m, k), gen), cfg.weight_format.random((k, n), gen)
    run = run_gemms(cfg, [(a, w)])[0]
    if not torch.equal(run.c, systolic_gemm(a, w, cfg.act_format, cfg.weight_format, cfg.acc_format)):
        raise SimulationError("bench bitserial: systolic reference run differs")
    met = run.metrics(cfg)
    return {"config": "systolic 4x4 int8", "config_hash": cfg.hash(), "cycles": met["cycles"],
            "mac_utilization": met["mac_utilization"], "macs_per_cycle": m * k * n / met["cycles"],
            "peak_macs_per_cycle": cfg.pes}


# ------------------------------------------------------------------ area ----------
def _synth_component(component, name: str, *, dsp: bool, device: str) -> dict:
    from rtl_gen.generate import emit_verilog
    from rtl_gen.report import synthesize
    with tempfile.TemporaryDirectory(prefix="lutforge_bs_") as tmp:
        path = Path(tmp) / f"{name}.v"
        path.write_text(emit_verilog(component, name))
        rep = synthesize(path, name, device=device, dsp=dsp, place=False, fit_check=False)
    return rep["synth"]


def _dequant_block(core):
    """The core's dequantization unit behind flat ports (Yosys' ABC9 pass trips over the
    unit's own array ports when it is the top module)."""
    from amaranth.hdl import Module
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out
    from hw.pe.bitserial import BitSerialDequant

    C, PB, AB = core.cols, core.partial_bits, core.acc_bits

    class DequantBlock(wiring.Component):
        def __init__(self):
            super().__init__({"p": In(PB * C), "scale": In(16 * C), "v": In(1), "last": In(1),
                              "o": Out(AB * C), "ov": Out(1), "rdy": Out(1)})

        def elaborate(self, platform):
            m = Module()
            m.submodules.dq = dq = BitSerialDequant(cols=C, partial_bits=PB, acc_bits=AB, frac=core.out_frac,
                                                    digit_bits=core.dequant_digit_bits)
            m.d.comb += [dq.en.eq(1), dq.p_valid.eq(self.v), dq.p.as_value().eq(self.p),
                         dq.scale.as_value().eq(self.scale), dq.last.eq(self.last),
                         self.o.eq(dq.out.as_value()), self.ov.eq(dq.out_valid), self.rdy.eq(dq.ready)]
            return m

    return DequantBlock()


def _units():
    """Lanes: (label, lanes it holds, component factory taking ``dsp``)."""
    from amaranth.hdl import signed
    from hw.pe.bitserial import BitSerialPE
    from hw.pe.mac import OutputStationaryPE
    core = load_config("bitserial_8x8").core
    return [
        ("bit-serial PE column (8 lanes)", core.rows,
         lambda dsp: BitSerialPE(rows=core.rows, act_bits=8, tree_bits=core.tree_bits,
                                 horner_bits=core.tree_bits + core.max_planes, partial_bits=core.partial_bits)),
        ("dequant unit, 8 columns (64 lanes)", core.rows * core.cols, lambda dsp: _dequant_block(core)),
        ("bit-parallel W4A8 PE (1 lane)", 1,
         lambda dsp: OutputStationaryPE(act_shape=signed(8), weight_shape=signed(4), acc_bits=32, use_dsp=dsp)),
        ("bit-parallel int8 PE (1 lane)", 1,
         lambda dsp: OutputStationaryPE(act_shape=signed(8), weight_shape=signed(8), acc_bits=32, use_dsp=dsp)),
    ]


CORES = [
    ("bitserial 8x8", "bitserial_8x8", [], 64),
    ("systolic 8x8 W4A8", "systolic_8x8_int8", ["core.weight.bits=4"], 64),
    ("systolic 4x4 int8", "systolic_8x8_int8", ["core.rows=4", "core.cols=4", "core.k_max=1024"], 16),
]
PLACED = ["bitserial 8x8", "systolic 4x4 int8"]


def area(place: bool) -> dict:
    from rtl_gen.report import run_report, synthesize
    from rtl_gen.generate import generate_verilog
    out = {"units": [], "cores": []}
    device = "LFE5U-85F"
    for label, lanes, make in _units():
        for dsp in (True, False):
            t0 = time.perf_counter()
            s = _synth_component(make(dsp), "unit", dsp=dsp, device=device)
            out["units"].append({"unit": label, "lanes": lanes, "dsp_mapping": dsp, "lut4": s["lut4"],
                                 "lut4_slots": s["lut4_slots"], "ff": s["ff"], "dsp": s["dsp"],
                                 "lut4_per_lane": s["lut4"] / lanes, "lut4_slots_per_lane": s["lut4_slots"] / lanes,
                                 "seconds": time.perf_counter() - t0})
            print(f"  {label:<36} dsp={dsp!s:<5} LUT4 {s['lut4']:>6} (slots {s['lut4_slots']:>6}) FF {s['ff']:>5} "
                  f"DSP {s['dsp']:>3}  per lane: LUT4 {s['lut4'] / lanes:6.1f} slots {s['lut4_slots'] / lanes:6.1f}",
                  flush=True)
    for label, name, overrides, lanes in CORES:
        for dsp in (True, False):
            # Without DSPs: the systolic PEs in their LUT form (dsp_budget 0) and -nodsp; if
            # Yosys fails on that netlist, the DSP form of the PEs under -nodsp instead.
            variants = [list(overrides)]
            if not dsp and not name.startswith("bitserial"):
                variants.insert(0, list(overrides) + ["core.dsp_budget=0"])
            t0 = time.perf_counter()
            entry, errors = None, []
            for ov in variants:
                cfg = load_config(name, ov)
                entry = {"core": label, "config": name, "overrides": ov, "config_hash": cfg.hash(), "lanes": lanes,
                         "dsp_mapping": dsp}
                try:
                    if place and dsp and label in PLACED:
                        rep = run_report(cfg, dsp=dsp)
                        entry["pnr"] = rep["pnr"]
                        entry["synth"] = rep["synth"]
                    else:
                        with tempfile.TemporaryDirectory(prefix="lutforge_bs_") as tmp:
                            man = generate_verilog(cfg, Path(tmp))
                            entry["synth"] = synthesize(man["verilog"], man["top"], device=cfg.target.device,
                                                        dsp=dsp, place=False, fit_check=False)["synth"]
                    break
                except ToolchainError as e:
                    errors.append(f"{ov}: {e}")
                    print(f"  {label} dsp={dsp}: {e}", flush=True)
            if errors:
                entry["tool_errors"] = errors
            if "synth" not in entry:
                out["cores"].append(entry)
                continue
            entry["seconds"] = time.perf_counter() - t0
            s = entry["synth"]
            fmax = entry.get("pnr", {}).get("fmax_mhz") if entry.get("pnr") else None
            print(f"  {label:<20} dsp={dsp!s:<5} LUT4 {s['lut4']:>6} (slots {s['lut4_slots']:>6}) FF {s['ff']:>6} "
                  f"DSP {s['dsp']:>3} BRAM {s.get('bram')} Fmax {fmax}", flush=True)
            out["cores"].append(entry)
    return out


def _plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    cyc = results.get("cycles")
    if cyc:
        ps = [r["planes"] for r in cyc["rows"]]
        axes[0].plot(ps, [r["cycles"] for r in cyc["rows"]], "o-", label="measured")
        axes[0].plot(ps, [r["ideal_cycles"] for r in cyc["rows"]], "--", label="(planes/8) x W8")
        axes[0].set_xlabel("weight magnitude planes")
        axes[0].set_ylabel("cycles")
        axes[0].set_title(f"bitserial 8x8, GEMM {cyc['m']}x{cyc['k']}x{cyc['n']}")
        axes[0].legend()
    q = results.get("quant")
    if q:
        names = list(q["sets"])
        vals = [q["sets"][s]["groups"]["128"]["rel_rms"] for s in names]
        axes[1].bar(range(len(names)), vals, color="#37a")
        axes[1].set_xticks(range(len(names)), names, rotation=45, ha="right")
        axes[1].set_ylabel("relative RMS error, G=128")
        axes[1].set_yscale("log")
        axes[1].set_title("SmolLM2-135M blk.0 weights")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args, json_path: Path) -> int:
    """``lutforge bench bitserial [--quick] [--no-report]``."""
    quick = bool(getattr(args, "quick", False))
    results = {"suite": "bitserial", "quick": quick, "host": platform.node(), "python": platform.python_version()}
    m, k, n = (8, 256, 32) if quick else (32, 512, 64)
    t0 = time.perf_counter()
    try:
        results["quant"] = quant_errors(groups=(128,) if quick else (32, 64, 128),
                                        layers=LAYERS[:2] if quick else LAYERS)
    except LutforgeError as e:  # no model wheel: say so in the results, keep the rest
        results["quant"] = None
        results["quant_error"] = str(e)
        print(f"quantization error skipped: {e}")
    if results["quant"]:
        for s, e in results["quant"]["sets"].items():
            errs = "  ".join(f"G={g}: {v['rel_rms']:.4f}" for g, v in e["groups"].items())
            print(f"  {s:<10} planes {e['planes']}  rel RMS {errs}")
    results["cycles"] = cycles_vs_planes(m, k, n)
    for r in results["cycles"]["rows"]:
        print(f"  planes {r['planes']}: cycles {r['cycles']:>8}  ideal {r['ideal_cycles']:>9.0f}  "
              f"ratio {r['ratio_to_ideal']:.3f}  busy {r['array_busy']:.1%}  plane util {r['plane_utilization']:.1%}",
              flush=True)
    results["systolic_equal_peak"] = systolic_equal_peak(m, k, n)
    print(f"  systolic 4x4 int8: cycles {results['systolic_equal_peak']['cycles']}", flush=True)
    if not getattr(args, "no_report", False):
        results["area"] = area(place=not quick)
        lut = {(c["core"], c["dsp_mapping"]): c["synth"]["lut4"] for c in results["area"]["cores"] if "synth" in c}
        sysr = results["systolic_equal_peak"]
        eff = []
        for r in results["cycles"]["rows"]:
            for dsp in (True, False):
                if ("bitserial 8x8", dsp) not in lut:
                    continue
                eff.append({"core": f"bitserial 8x8 W{r['planes']}", "dsp_mapping": dsp,
                            "macs_per_cycle": r["macs_per_cycle"],
                            "macs_per_cycle_per_klut": 1000 * r["macs_per_cycle"] / lut[("bitserial 8x8", dsp)]})
        for dsp in (True, False):
            if ("systolic 4x4 int8", dsp) not in lut:
                continue
            eff.append({"core": "systolic 4x4 int8", "dsp_mapping": dsp, "macs_per_cycle": sysr["macs_per_cycle"],
                        "macs_per_cycle_per_klut": 1000 * sysr["macs_per_cycle"] / lut[("systolic 4x4 int8", dsp)]})
        results["throughput_per_lut"] = eff
    results["seconds"] = time.perf_counter() - t0
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    plot = json_path.with_suffix(".png")
    _plot(results, plot)
    print(f"wrote {json_path} and {plot}")
    return 0
