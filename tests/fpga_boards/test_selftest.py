"""The self-test engine (RUN/STATUS/CSR path without an accelerator) and its board top."""

from amaranth.sim import Simulator

from fpga_boards.selftest import SelftestEngine
from fpga_boards.top import board_top
from rtl_gen.config import load_config


def test_selftest_engine_echoes_token():
    dut = SelftestEngine(addr_bits=32, data_bits=64)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    got = {}

    async def bench(ctx):
        ctx.set(dut.n_instr, 5)
        ctx.set(dut.token, 41)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        n = 0
        while ctx.get(dut.busy):
            await ctx.tick()
            n += 1
        got.update(n=n, tok=ctx.get(dut.next_token), cyc=ctx.get(dut.counters.cycles), err=ctx.get(dut.error))
    sim.add_testbench(bench)
    sim.run()
    assert got == {"n": 5, "tok": 42, "cyc": 5, "err": 0}


def test_selftest_top():
    cfg = load_config("decode_tiny")        # any config: its memory port and hash only
    top = board_top("ulx3s-85", cfg, clock_mhz=25, memory="bram", bram_bytes=8192, design="selftest")
    assert top.describe()["design"] == "selftest"
    from fpga_boards.boards import get_board
    plan = get_board("ulx3s-85").make_platform().prepare(top, name="lutforge_top")
    assert "EHXPLLL" in plan.files["lutforge_top.il"]
