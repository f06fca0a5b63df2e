"""Board tops elaborate for every board: amaranth's build plan (RTLIL, LPF) with the PLL,
the UART pins and the clock constraint; Yosys reads one. No place and route here (slow
builds: tests marked slow, and ``lutforge bench boards``)."""

import json
import re
import subprocess

import pytest

from fpga_boards.boards import BOARDS, get_board
from fpga_boards.top import board_top
from rtl_gen import toolchain
from rtl_gen.config import load_config

SMALL = ["core.rows=2", "core.cols=2", "memory.data_bits=64"]


def _plan(board, cfg, **kw):
    top = board_top(board, cfg, **kw)
    plan = get_board(board).make_platform().prepare(top, name="lutforge_top")
    return top, plan


@pytest.mark.parametrize("board", list(BOARDS))
def test_tensor_core_top_elaborates(board):
    cfg = load_config(None, SMALL)
    top, plan = _plan(board, cfg, clock_mhz=40, memory="bram", bram_bytes=16384)
    il, lpf = plan.files["lutforge_top.il"], plan.files["lutforge_top.lpf"]
    assert "EHXPLLL" in il
    assert re.search(r'FREQUENCY NET "[^"]*clk" 40000000', lpf)
    d = top.describe()
    assert d["design"] == "gemm" and d["clock_mhz"] == 40 and d["uart"]["baud"] == 1_000_000
    assert d["memory"] == {"kind": "bram", "bytes": 16384}
    assert lpf.count("LOCATE COMP") >= 3          # clock, UART rx, UART tx (and LEDs)
    if board == "butterstick":                    # SYZYGY banks powered for the UART pins
        assert "vccio_ctrl" in lpf and "host_uart" in lpf


def test_butterstick_vccio_sequence():
    """The bank-voltage DAC: 3.3 V is a ~9.5 % duty cycle; enable after the filter settled,
    power good 1 ms later (simulated at a 100 kHz clock to keep it short)."""
    from amaranth.sim import Simulator

    from fpga_boards.platforms import ButterStickVccio
    dut = ButterStickVccio(1e5)
    assert abs(dut.duty(3.3) - 0.0952) < 1e-3 and 0 < dut.duty(1.0) < 1
    sim = Simulator(dut)
    sim.add_clock(1e-5)
    seen = {}

    async def bench(ctx):
        n, high = 0, 0
        async for _, _, en, good, pdm in ctx.tick().sample(dut.en, dut.power_good, dut.pdm):
            n += 1
            high += pdm & 1
            if en and "en" not in seen:
                seen["en"] = n
            if good:
                seen["good"], seen["duty"] = n, high / n
                return
    sim.add_testbench(bench)
    sim.run()
    boot = int(4 / dut.FILTER_HZ * 1e5)
    assert abs(seen["en"] - boot) <= 2 and abs(seen["good"] - seen["en"] - 100) <= 2
    assert abs(seen["duty"] - dut.duty(3.3)) < 0.01


def test_yosys_reads_the_top(tmp_path):
    cfg = load_config(None, SMALL)
    _, plan = _plan("ulx3s-85", cfg, clock_mhz=25, memory="bram", bram_bytes=16384)
    (tmp_path / "top.il").write_text(plan.files["lutforge_top.il"])
    out = subprocess.run([toolchain.yosys(), "-q", "-p", "read_rtlil top.il; synth_ecp5 -top lutforge_top -run begin:coarse; "
                          "tee -q -o cells.json stat -json"], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    cells = json.loads((tmp_path / "cells.json").read_text())
    assert "\\lutforge_top" in cells["modules"], sorted(cells["modules"])[:5]


def test_unbuildable_clocks_are_clear():
    from ref_model.errors import LutforgeError
    cfg = load_config(None, SMALL)
    with pytest.raises(LutforgeError, match="cannot make 3.2 MHz"):
        board_top("ulx3s-85", cfg, clock_mhz=3.2)
    with pytest.raises(LutforgeError, match="UART: a 40 MHz clock cannot make 3e\\+06 baud"):
        board_top("ulx3s-85", cfg, clock_mhz=40, baud=3_000_000)


def test_dram_top_elaborates():
    """ECPIX-5 with its DDR3: LiteDRAM's Verilog in the plan, its pins in the LPF, the design's
    ports crossing into the controller's clock."""
    cfg = load_config(None, ["core.rows=2", "core.cols=2", "memory.data_bits=128"])
    top, plan = _plan("ecpix5-85", cfg, clock_mhz=25, memory="dram")
    assert "litedram_ecpix5.v" in plan.files
    lpf, il = plan.files["lutforge_top.lpf"], plan.files["lutforge_top.il"]
    assert 'LOCATE COMP "ddr3_0__dq__io[15]"' in lpf or "ddr3_0__dq" in lpf
    assert "axi_bridge" in il and "wb_bridge" in il
    d = top.describe()
    assert d["memory"]["kind"] == "dram" and d["memory"]["bytes"] == 512 << 20
    assert d["memory"]["dram"]["bus_bits"] == 16 and d["memory"]["dram"]["sys_clk_mhz"] == 75


def test_dram_clock_from_config():
    """memory.dram_mhz slows the controller of one design (the ECPIX-5 decode build): the
    manifest's DRAM clock and peak bandwidth follow it."""
    cfg = load_config(None, ["core.rows=2", "core.cols=2", "memory.data_bits=128", "memory.dram_mhz=50"])
    top = board_top("ecpix5-85", cfg, clock_mhz=25, memory="dram")
    d = top.describe()["memory"]["dram"]
    assert top.dram_mhz == 50 and d["sys_clk_mhz"] == 50 and d["peak_mb_per_s"] == 2 * 4 * 50
    assert load_config("ecpix5_decode_tiny").memory.dram_mhz == 50


def test_narrow_design_port_on_the_native_dram_port():
    """A design port narrower than LiteDRAM's native one goes through the narrow-burst
    adapter after the clock crossing; the controller keeps its native width (LiteDRAM's own
    converter hangs on bursts). A width that is no power-of-two fraction is refused."""
    from ref_model.errors import LutforgeError
    cfg = load_config(None, ["core.rows=2", "core.cols=2", "memory.data_bits=64"])
    top, plan = _plan("ecpix5-85", cfg, clock_mhz=25, memory="dram")
    assert top.dram_build.data_bits == 128 and top.dram.axi_r.signature.members["rdata"].shape == 128
    assert top.narrow is not None and (top.narrow.narrow_bits, top.narrow.wide_bits) == (64, 128)
    assert "narrow" in plan.files["lutforge_top.il"]
    cfg = load_config(None, ["core.rows=2", "core.cols=2", "memory.data_bits=256"])
    with pytest.raises(LutforgeError, match="LiteDRAM port is 128 bits: allowed: 128 or a power-of-two fraction"):
        board_top("ecpix5-85", cfg, clock_mhz=25, memory="dram")
