"""LUT core units in the Amaranth simulator, the measured table memories, config checks."""

from pathlib import Path

import pytest
import torch
from amaranth.sim import Simulator

from hw.cores.lut import LutCore, TablePrecompute
from ref_model.errors import ConfigError
from ref_model.formats import IntFormat
from ref_model.lut import table_entries
from rtl_gen.config import config_from_dict
from rtl_gen.generate import generate_verilog
from rtl_gen.memories import design_memories
from sim.verilator import lint


def lut_cfg(**core):
    return config_from_dict({"name": "lut-unit", "core": {"kind": "lut", "rows": 1, "cols": 4, **core}})


@pytest.mark.parametrize("g,sym,abits", [(2, True, 8), (3, False, 8), (4, True, 16), (4, False, 4)])
def test_table_precompute_matches_reference(g, sym, abits):
    """Every entry, in Gray-code order, for random and extreme activations."""
    ent_bits = (g << (abits - 1)).bit_length() + 1
    dut = TablePrecompute(g=g, act_bits=abits, symmetric=sym, entry_bits=ent_bits)
    fmt = IntFormat(abits)
    gen = torch.Generator().manual_seed(g)
    groups = [fmt.random((g,), gen) for _ in range(20)] + [torch.full((g,), fmt.min), torch.full((g,), fmt.max),
                                                            torch.tensor([fmt.min, fmt.max] * g)[:g]]

    async def bench(ctx):
        for acts in groups:
            ref = table_entries(acts, sym)
            for j in range(g):
                ctx.set(dut.acts[j], int(acts[j]))
            seen = set()
            for t in range(dut.entries):
                ctx.set(dut.t, t)
                idx, val = ctx.get(dut.index), ctx.get(dut.entry)
                assert val == int(ref[idx]), (acts.tolist(), t, idx, val, int(ref[idx]))
                seen.add(idx)
                await ctx.tick()
            assert seen == set(range(dut.entries))
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("g", [2, 3, 4])
def test_symmetrization_halves_the_table_memories(g):
    """Measured from the elaborated design: the table RAMs' words and bits halve."""
    def tables(sym):
        mems = [mm for mm in design_memories(LutCore(lut_cfg(g=g, symmetric=sym, k_groups=2, group_size=8 * g)))
                if mm["name"].startswith("table_")]
        assert len(mems) == 2 and all(mm["read_ports"] == 4 for mm in mems)
        return sum(mm["depth"] for mm in mems), sum(mm["bits"] for mm in mems)
    (d1, b1), (d0, b0) = tables(True), tables(False)
    assert (2 * d1, 2 * b1) == (d0, b0)
    assert d1 == 2 * 2 * (1 << (g - 1))       # 2 tables x double buffer x 2**(g-1) entries


@pytest.mark.parametrize("core,words", [
    (dict(group_size=12), ["group_size=12", "multiples of 8"]),
    (dict(g=5), ["core.g=5", "less than or equal to 4"]),
    (dict(act={"bits": 8, "signed": False}), ["act.signed=false"]),
    (dict(weight_bits=5), ["core.weight_bits=5"]),
])
def test_bad_lut_config_is_one_clear_line(core, words):
    with pytest.raises(ConfigError) as e:
        lut_cfg(**core)
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


def test_lut_verilog_lints_clean(tmp_path):
    cfg = lut_cfg(rows=2, cols=3, g=3, k_groups=2, group_size=12, symmetric=False, weight_bits=3)
    manifest = generate_verilog(cfg, tmp_path)
    assert manifest["derived"]["table_entries"] == 8 and manifest["derived"]["k_tile"] == 6
    assert {p["name"] for p in manifest["ports"]} >= {"cmd__payload", "counters", "axi_r__araddr"}
    assert lint(Path(manifest["verilog"]), manifest["top"]) == []
