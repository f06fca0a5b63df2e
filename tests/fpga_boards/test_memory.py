"""Board memory pieces in the Amaranth simulator: the block-RAM AXI4 slave, the AXI4 and
Wishbone clock-domain crossings (two unrelated clocks)."""

import torch
from amaranth.hdl import DomainRenamer, Module, Signal
from amaranth.sim import Simulator

from fpga_boards.bram import AxiBram
from fpga_boards.cdc import AxiAsyncBridge, WishboneAsyncBridge
from fpga_boards.gemm_engine import gemm_engine
from fpga_boards.gemm_host import gemm_program
from host_runtime.gemm_layout import GemmLayout
from ref_model.gemm import systolic_gemm
from rtl_gen.config import load_config


def test_gemm_through_bridge_into_bram():
    """GemmEngine at 100 MHz, block RAM at 71 MHz behind the AXI4 bridge: C bit-exact."""
    cfg = load_config(None, ["core.rows=2", "core.cols=2", "memory.data_bits=64"])
    gen = torch.Generator().manual_seed(11)
    cases = [(cfg.act_format.random((3, 4), gen), cfg.weight_format.random((4, 3), gen))]
    prog = gemm_program(cfg, cases)
    image = bytearray(prog.end)
    for addr, data in prog.regions:
        image[addr:addr + len(data)] = data
    m = Module()
    m.submodules.eng = eng = gemm_engine(cfg)
    r, w = eng.axi_r.signature, eng.axi_w.signature
    m.submodules.bridge = br = AxiAsyncBridge(addr_bits=r.addr_bits, data_bits=r.data_bits,
                                              read_id_bits=r.id_bits, write_id_bits=w.id_bits)
    bram = AxiBram(size_bytes=1 << 15, addr_bits=r.addr_bits, data_bits=r.data_bits, id_bits=r.id_bits,
                   init=bytes(image))
    m.submodules.bram = DomainRenamer({"sync": "mem"})(bram)
    from amaranth.lib.wiring import connect
    connect(m, eng.axi_r, br.s_r)
    connect(m, eng.axi_w, br.s_w)
    # the bram's write port has the write id width: the bridge's is the engine's
    m.d.comb += [bram.axi_w.awid.eq(0)]
    for name in ("araddr", "arlen", "arsize", "arburst", "arid", "arvalid", "rready"):
        m.d.comb += getattr(bram.axi_r, name).eq(getattr(br.m_r, name))
    for name in ("arready", "rdata", "rresp", "rlast", "rid", "rvalid"):
        m.d.comb += getattr(br.m_r, name).eq(getattr(bram.axi_r, name))
    for name in ("awaddr", "awlen", "awsize", "awburst", "awvalid", "wdata", "wstrb", "wlast", "wvalid", "bready"):
        m.d.comb += getattr(bram.axi_w, name).eq(getattr(br.m_w, name))
    for name in ("awready", "wready", "bresp", "bvalid"):
        m.d.comb += getattr(br.m_w, name).eq(getattr(bram.axi_w, name))
    from amaranth.hdl import ClockDomain
    m.domains.mem = ClockDomain("mem")
    sim = Simulator(m)
    sim.add_clock(10e-9)
    sim.add_clock(14e-9, domain="mem")
    out = {}

    async def host(ctx):
        ctx.set(eng.program_addr, prog.program_addr)
        ctx.set(eng.n_instr, prog.n_instr)
        ctx.set(eng.start, 1)
        await ctx.tick()
        ctx.set(eng.start, 0)
        await ctx.tick().until(~eng.busy)
        out["error"], out["done"] = ctx.get(eng.error), ctx.get(eng.next_token)
        bpb = 8
        img = prog.images[0]
        words = [ctx.get(bram.mem.data[i]) for i in range(img.c_addr // bpb, (img.c_addr + img.c_size) // bpb)]
        out["c"] = b"".join(x.to_bytes(bpb, "little") for x in words)
    sim.add_testbench(host)
    sim.run_until(2e-4)
    assert out["error"] == 0 and out["done"] == 1
    a, wt = cases[0]
    got = GemmLayout(cfg).unpack_c(prog.images[0], out["c"])
    assert torch.equal(got, systolic_gemm(a, wt, cfg.act_format, cfg.weight_format, cfg.acc_format))


def test_wishbone_bridge_read_write():
    """Register writes and reads across domains; a slave error comes back as err."""
    from amaranth.hdl import ClockDomain
    m = Module()
    m.submodules.br = br = WishboneAsyncBridge(addr_bits=30, data_bits=32)
    m.domains.mem = ClockDomain("mem")
    regs = Signal(32 * 4)
    s = br.m
    with m.If(s.cyc & s.stb & ~s.ack & ~s.err):
        with m.If(s.adr >= 4):
            m.d.mem += s.err.eq(1)
        with m.Else():
            m.d.mem += s.ack.eq(1)
            with m.If(s.we):
                m.d.mem += regs.word_select(s.adr[:2], 32).eq(s.dat_w)
            m.d.mem += s.dat_r.eq(regs.word_select(s.adr[:2], 32))
    with m.Else():
        m.d.mem += [s.ack.eq(0), s.err.eq(0)]
    sim = Simulator(m)
    sim.add_clock(10e-9)
    sim.add_clock(23e-9, domain="mem")
    got = []

    async def cycle(ctx, adr, we, dat=0):
        ctx.set(br.s.adr, adr)
        ctx.set(br.s.we, we)
        ctx.set(br.s.dat_w, dat)
        ctx.set(br.s.sel, 0xF)
        ctx.set(br.s.cyc, 1)
        ctx.set(br.s.stb, 1)
        ack, err, dat_r = await ctx.tick().sample(br.s.ack, br.s.err, br.s.dat_r).until(br.s.ack | br.s.err)
        ctx.set(br.s.cyc, 0)
        ctx.set(br.s.stb, 0)
        return ack, err, dat_r

    async def host(ctx):
        await cycle(ctx, 1, 1, 0xDEADBEEF)
        await cycle(ctx, 2, 1, 0x12345678)
        got.append(await cycle(ctx, 1, 0))
        got.append(await cycle(ctx, 2, 0))
        got.append(await cycle(ctx, 7, 0))
    sim.add_testbench(host)
    sim.run_until(1e-5)
    assert got == [(1, 0, 0xDEADBEEF), (1, 0, 0x12345678), (0, 1, got[2][2])]
