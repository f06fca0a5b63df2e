"""Per-unit Fmax of the decode engine on an ECP5 (yowasp Yosys ``synth_ecp5`` + nextpnr-ecp5).

``python -m bench.decode_units UNIT [--config decode_tiny] [--json OUT] [--workdir DIR]``

Elaborates ONE unit of the decode engine with the parameters the engine gives it for the
config (``decode_tiny`` by default), converts it to Verilog and runs
:func:`rtl_gen.report.synthesize` out of context on the config's device (LFE5U-85F),
at the config's clock. Prints Fmax, LUT4 / FF / DSP / BRAM and nextpnr's critical path
report (the cell/net chain of the slowest path, from ``nextpnr.log``); appends the result
under ``UNIT`` to ``bench/results/decode_units.json`` (or ``--json OUT``). A unit takes a
few minutes (``engine``, the whole engine: about an hour on 2 cores); ``--workdir`` keeps the logs.

Units: ``matvec``, ``quant`` (the matvec's ActQuantizer), ``attention``, ``kv``,
``norm``, ``rope``, ``elem``, ``argmax``, ``reader`` (a BurstReader), ``unpacker`` (the
matvec's code UnitUnpacker), ``engine``. Out of context the unit's ports are not timed,
so a path through a port (e.g. a ready chain across units) only shows in ``engine``.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import tempfile
import time
from pathlib import Path

from rtl_gen.config import load_config

RESULTS = Path(__file__).resolve().parent / "results" / "decode_units.json"
UNITS = ("matvec", "quant", "attention", "kv", "norm", "rope", "elem", "argmax", "reader", "unpacker", "engine")


def build_unit(name: str, cfg):
    """The unit ``name`` as :class:`hw.decode.engine.DecodeEngine` builds it for ``cfg``."""
    from hw.decode import attention, engine, kv, matvec, vector
    from hw.mem.gearbox import UnitUnpacker
    from hw.mem.reader import BurstReader
    from ref_model.fixedpoint import rom_tables
    from rtl_gen.generate import elaborate_decode, engine_limits

    if name == "engine":
        return elaborate_decode(cfg)
    L, N, T = engine_limits(cfg), cfg.decode.decode_numerics(), rom_tables()
    mem = cfg.memory
    rdp = dict(addr_bits=mem.addr_bits, data_bits=mem.data_bits, max_burst=mem.max_burst,
               outstanding=mem.outstanding)
    F = N.act_frac
    if name in ("matvec", "quant"):
        mv = matvec.MatvecUnit(max_dim=max(L.dim, L.ffn), act_bits=N.act_bits, norm_act_bits=N.norm_act_bits,
                               act_block=N.act_block, act_scale_bits=N.act_scale_bits, acc_bits=N.acc_bits,
                               acc_frac=N.acc_frac, frac=F,
                               prefetch=engine.matvec_prefetch(L, max_burst=mem.max_burst,
                                                               outstanding=mem.outstanding),
                               lut_lanes=L.matvec_lut_lanes, **rdp)
        return mv if name == "matvec" else mv.quant
    if name == "attention":
        return attention.AttentionUnit(max_heads=L.heads, max_head_dim=L.head_dim, max_ctx=L.ctx, frac=F,
                                       exp_table=T["exp2"], log2e_q30=T["log2e_q30"][0],
                                       rcp_table=T["reciprocal"], lanes=L.lanes, par_heads=L.heads // L.kv_heads,
                                       max_kv_heads=L.kv_heads)
    if name == "kv":
        return kv.KVUnit(max_kv_dim=L.kv_heads * L.head_dim, scale_bits=N.kv_scale_bits, lanes=L.lanes,
                         max_kv_heads=L.kv_heads, **rdp)
    if name == "norm":
        return vector.RmsNormUnit(frac=F, gain_frac=N.norm_gain_frac, ss_shift=N.ss_shift, rsqrt_table=T["rsqrt"])
    if name == "rope":
        return vector.RopeUnit(max_head_dim=L.head_dim, sin_table=T["sin"])
    if name == "elem":
        return vector.ElementwiseUnit(frac=F, sigmoid_table=T["sigmoid"])
    if name == "argmax":
        return vector.ArgmaxUnit(index_bits=17)
    if name == "reader":
        return BurstReader(**rdp)
    if name == "unpacker":
        return UnitUnpacker(data_bits=mem.data_bits, unit_bits=(64, 128, 256))
    raise SystemExit(f"unknown unit {name!r}; units: {', '.join(UNITS)}")


def critical_path(log_text: str) -> str:
    """nextpnr's "Critical path report" sections (cell/net chain) out of its log."""
    out, keep = [], False
    for line in log_text.splitlines():
        line = re.sub(r"^Info:\s?", "", line)
        if line.startswith("Critical path report for"):
            keep = True
        elif keep and (line.startswith("Max frequency") or line.startswith("Slack histogram")):
            keep = False
        if keep:
            out.append(line)
    return "\n".join(out)


def source_commit() -> str | None:
    """The checkout's commit (short hash; ``+dirty`` when ``hw/`` has uncommitted changes),
    so a result names the gateware it measured; None outside a git checkout."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "hw"], cwd=root, capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def measure(name: str, cfg_name: str = "decode_tiny", workdir: Path | None = None, speed: int | None = None) -> dict:
    """Place and route one unit (or the whole ``engine``) of ``cfg_name``'s decode engine
    on the config's part, at its speed grade unless ``speed`` is given."""
    from rtl_gen.generate import ecp5_platform, emit_verilog
    from rtl_gen.report import synthesize
    cfg = load_config(cfg_name)
    top = f"unit_{name}"
    with tempfile.TemporaryDirectory() as tmp:
        wd = Path(workdir) if workdir is not None else Path(tmp)
        wd.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        v = wd / f"{top}.v"
        # elaborated for the part, as lutforge report does (MULT18X18D with their registers)
        v.write_text(emit_verilog(build_unit(name, cfg), top, platform=ecp5_platform(cfg)))
        t_elab = time.time() - t0
        speed = cfg.target.speed if speed is None else speed
        rep = synthesize(v, top, device=cfg.target.device, package=cfg.target.package, clock_mhz=cfg.clock.mhz,
                         speed=speed,
                         workdir=wd / "synth", fit_check=False)
        log = (wd / "synth" / "nextpnr.log").read_text()
    pnr = rep["pnr"]
    return {"unit": name, "config": cfg_name, "device": rep["device"], "speed": speed, "clock_mhz": rep["clock_mhz"],
            "fmax_mhz": pnr["fmax_mhz"], "lut4": pnr["lut4"], "ff": pnr["ff"], "dsp": pnr["dsp"],
            "bram": pnr["bram"], "seconds": {"elaborate": round(t_elab, 1), **rep["seconds"]},
            "critical_path": critical_path(log), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "commit": source_commit()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("unit", choices=UNITS)
    ap.add_argument("--config", default="decode_tiny")
    ap.add_argument("--json", type=Path, default=RESULTS, help=f"results file (default {RESULTS})")
    ap.add_argument("--workdir", type=Path, default=None, help="keep Verilog and tool logs here")
    ap.add_argument("--speed", type=int, choices=(6, 7, 8), default=None,
                    help="nextpnr speed grade (default: the config's target.speed)")
    ap.add_argument("--tag", default=None, help="store under UNIT@TAG (e.g. 'before') instead of UNIT")
    a = ap.parse_args(argv)
    r = measure(a.unit, a.config, a.workdir, a.speed)
    print(f"{a.unit}: {r['fmax_mhz']} MHz (target {r['clock_mhz']:g}), LUT4 {r['lut4']}, FF {r['ff']}, "
          f"DSP {r['dsp']}, BRAM {r['bram']}, seconds {r['seconds']}")
    print(r["critical_path"])
    results = json.loads(a.json.read_text()) if a.json.exists() else {}
    results[f"{a.unit}@{a.tag}" if a.tag else a.unit] = r
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
