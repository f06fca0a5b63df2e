"""Fmax and resources of one decode-engine scalar / vector unit, placed out of context on
an ECP5-85 (yowasp Yosys ``synth_ecp5`` + nextpnr-ecp5, :func:`rtl_gen.report.synthesize`).

``python -m bench.decode_scalar_units UNIT|all [--json OUT] [--workdir DIR] [--tag TAG]``

``all`` places every unit in one design, each in a clock domain of its own, so that one
nextpnr run gives each unit's Fmax (per clock): the post-placement estimate (``--no-route``,
~15 minutes here), or the routed one with ``--route``; a single UNIT is placed and routed
alone and also gives its LUT4 / FF / DSP counts and critical path.

UNIT is one of :data:`UNITS` (``hw/decode/funcs.py`` and ``hw/decode/vector.py``), built
with ``decode_tiny``'s parameters. The unit sits between a register on every input and a
register on every output (the harness, :class:`Registered`), so the reported Fmax is that of
the unit's own paths plus one register-to-unit and unit-to-register hop, as in the engine,
and not of the out-of-context I/O. Results are merged into
``bench/results/decode_scalar_units.json`` (per unit: ``fmax_mhz``, ``lut4``, ``ff``,
``dsp``, ``bram``, the critical path's start and end cells).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from amaranth.hdl import ClockDomain, DomainRenamer, Elaboratable, Module, Signal, Value
from amaranth.lib import wiring
from amaranth.back import verilog

RESULTS = Path(__file__).resolve().parent / "results" / "decode_scalar_units.json"


def _tiny():
    from rtl_gen.config import load_config
    from rtl_gen.generate import engine_limits
    from ref_model.fixedpoint import rom_tables
    cfg = load_config("decode_tiny")
    return engine_limits(cfg), cfg.decode.decode_numerics(), rom_tables()


def make_unit(name: str):
    """The unit ``name`` with decode_tiny's parameters (as :class:`hw.decode.engine.DecodeEngine`
    and its units build it)."""
    from hw.decode import funcs, vector
    L, N, T = _tiny()
    F = N.act_frac
    return {
        "rsqrt": lambda: funcs.RsqrtUnit(T["rsqrt"]),
        "reciprocal": lambda: funcs.ReciprocalUnit(T["reciprocal"]),
        "exp_neg": lambda: funcs.ExpNegUnit(T["exp2"], T["log2e_q30"][0]),
        "sincos": lambda: funcs.SinCosUnit(T["sin"]),
        "sigmoid": lambda: funcs.SigmoidUnit(T["sigmoid"]),
        "mant_scale_act": lambda: funcs.MantScaleUnit(N.act_scale_bits),
        "mant_scale_kv": lambda: funcs.MantScaleUnit(N.kv_scale_bits),
        "rmsnorm": lambda: vector.RmsNormUnit(frac=F, gain_frac=N.norm_gain_frac, ss_shift=N.ss_shift,
                                              rsqrt_table=T["rsqrt"]),
        "rope": lambda: vector.RopeUnit(max_head_dim=L.head_dim, sin_table=T["sin"]),
        "elementwise": lambda: vector.ElementwiseUnit(frac=F, sigmoid_table=T["sigmoid"]),
        "argmax": lambda: vector.ArgmaxUnit(index_bits=17),
    }[name]()


UNITS = ("rsqrt", "reciprocal", "exp_neg", "sincos", "sigmoid", "mant_scale_act", "mant_scale_kv",
         "rmsnorm", "rope", "elementwise", "argmax")


class Registered(wiring.Component):
    """``unit`` with a register on each of its input and output ports (same signature)."""

    def __init__(self, unit: wiring.Component):
        self.unit = unit
        super().__init__(unit.signature)

    def elaborate(self, platform):
        m = Module()
        m.submodules.unit = self.unit
        for path, member, outer in self.signature.flatten(self):
            inner = self.unit
            for p in path:
                inner = getattr(inner, p) if isinstance(p, str) else inner[p]
            reg = Signal(member.shape, name="r_" + "_".join(map(str, path)))
            if member.flow == wiring.In:
                m.d.sync += reg.eq(outer)
                m.d.comb += inner.eq(reg)
            else:
                m.d.sync += reg.eq(inner)
                m.d.comb += outer.eq(reg)
        return m


class AllUnits(Elaboratable):
    """Every unit of ``names``, each :class:`Registered` and in a clock domain of its own
    (port ``clk_<name>``), so that one nextpnr run reports each unit's Fmax as its clock's."""

    def __init__(self, names):
        self.units = {n: Registered(make_unit(n)) for n in names}
        self.domains = {n: ClockDomain(n, reset_less=False) for n in names}

    def ports(self):
        out = []
        for n, u in self.units.items():
            out += [self.domains[n].clk, self.domains[n].rst]
            out += [Value.cast(v) for _, _, v in u.signature.flatten(u)]
        return out

    def elaborate(self, platform):
        m = Module()
        for n, u in self.units.items():
            m.domains += self.domains[n]
            m.submodules[n] = DomainRenamer(n)(u)
        return m


def measure_all(names, workdir: Path | None = None, seed: int = 1, route: bool = False) -> dict:
    """One synthesis and placement of every unit in ``names``: ``{name: {"fmax_mhz": F}}``
    plus the design's totals under ``"_total"``. Without ``route``, F is nextpnr's
    post-placement estimate per clock (routing this design takes ~30 minutes on a shared
    2-core machine); with it, the routed Fmax."""
    from rtl_gen import toolchain
    from rtl_gen.report import synthesize
    top = AllUnits(names)
    text = verilog.convert(top, name="top", ports=top.ports(), emit_src=False)
    with tempfile.TemporaryDirectory(prefix="scalar-all-") as d:
        wd = Path(workdir) / "all" if workdir else Path(d)
        wd.mkdir(parents=True, exist_ok=True)
        src = wd / "units.v"
        src.write_text(text)
        t0 = time.time()
        rep = synthesize(src, "top", device="LFE5U-85F", clock_mhz=100.0, workdir=wd, seed=seed, place=route)
        clocks = {}
        if route:
            clocks = {k: c["achieved_mhz"] for k, c in rep["pnr"]["clocks"].items()}
        else:
            subprocess.run([toolchain.nextpnr_ecp5(), "--85k", "--package", "CABGA381", "--freq", "100",
                            "--json", "synth.json", "--out-of-context", "--no-route", "--seed", str(seed),
                            "--timing-allow-fail", "-l", "nextpnr.log", "-q"], cwd=wd, check=True)
            for line in (wd / "nextpnr.log").read_text(errors="replace").splitlines():
                hit = re.search(r"Max frequency for clock\s+'([^']+)':\s+([0-9.]+) MHz", line)
                if hit:
                    clocks[hit.group(1)] = float(hit.group(2))   # the last estimate wins
        res = {n: {"fmax_mhz": clocks.get(f"{n}_clk"), "routed": route} for n in names}
        res["_total"] = {"dsp": rep["synth"].get("dsp"), "lut4_synth": rep["synth"].get("lut4"),
                         "seconds": round(time.time() - t0, 1)}
        return res


def measure(name: str, workdir: Path | None = None, seed: int = 1) -> dict:
    from rtl_gen.report import synthesize
    top = Registered(make_unit(name))
    text = verilog.convert(top, name="top", emit_src=False)
    with tempfile.TemporaryDirectory(prefix=f"scalar-{name}-") as d:
        wd = Path(workdir) / name if workdir else Path(d)
        wd.mkdir(parents=True, exist_ok=True)
        src = wd / "unit.v"
        src.write_text(text)
        t0 = time.time()
        rep = synthesize(src, "top", device="LFE5U-85F", clock_mhz=100.0, workdir=wd, seed=seed)
        pnr, syn = rep["pnr"], rep["synth"]
        crit = None
        log = (wd / "nextpnr.log").read_text(errors="replace") if (wd / "nextpnr.log").exists() else ""
        if "Critical path report" in log:
            crit = log[log.index("Critical path report"):].split("\n\n")[0].splitlines()[-25:]
        return {"unit": name, "fmax_mhz": pnr["fmax_mhz"], "lut4": pnr["lut4"], "ff": pnr["ff"],
                "dsp": syn.get("dsp"), "bram": syn.get("bram"), "seconds": round(time.time() - t0, 1),
                "critical_path": crit}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.decode_scalar_units", description=__doc__.splitlines()[0])
    ap.add_argument("unit", choices=UNITS + ("all",))
    ap.add_argument("--json", type=Path, default=RESULTS)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--route", action="store_true", help="all: route and report the routed Fmax (slow)")
    ap.add_argument("--tag", default="current", help="key under which results are stored (e.g. before/after)")
    args = ap.parse_args(argv)
    old = json.loads(args.json.read_text()) if args.json.exists() else {}
    if args.unit == "all":
        res = measure_all(UNITS, args.workdir, args.seed, route=args.route)
        print(json.dumps(res, indent=1), flush=True)
        old.setdefault(args.tag, {}).update(res)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(old, indent=1, sort_keys=True) + "\n")
        return 0
    for name in (args.unit,):
        res = measure(name, args.workdir, args.seed)
        crit = res.pop("critical_path")
        print(json.dumps(res), flush=True)
        if crit:
            print("\n".join(crit[-12:]), flush=True)
        old.setdefault(args.tag, {})[name] = res
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(old, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
