"""Simulation harness of the decode engine: the engine with the RTL AXI4 memory model.

``DecodeHarness`` is what Verilator builds for the engine's cosim and benchmarks (and,
with a host link, the simulated board): the engine's read and write ports go to
``sim/rtl/lutforge_axi_mem.sv`` (latency, bandwidth, refresh and back-pressure from the
memory settings), and the top exposes the run controls, counters and the memory's
backdoor, so images load and results dump through files, not per-cycle Python.
"""

from __future__ import annotations

from fractions import Fraction

from amaranth.hdl import ClockSignal, Instance, Module, ResetSignal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hw.decode.engine import DecodeEngine, EngineCounters

DECODE_TOP = "lutforge_decode_top"


def _ratio(beats_per_cycle: float) -> tuple[int, int]:
    f = Fraction(beats_per_cycle).limit_denominator(64)
    return f.numerator, f.denominator


def memory_model(m: Module, r, w, *, sim, addr_bits: int, data_bits: int, id_bits: int, backdoor) -> None:
    """Instantiate ``lutforge_axi_mem`` on read port ``r`` and write port ``w``
    (``sim``: the config's memory.sim settings; ``backdoor``: load, dump, first, words)."""
    rd_num, rd_den = _ratio(sim.read_beats_per_cycle)
    wr_num, wr_den = _ratio(sim.write_beats_per_cycle)
    load, dump, first, words = backdoor
    m.submodules.memory = Instance(
        "lutforge_axi_mem",
        p_ADDR_BITS=addr_bits, p_DATA_BITS=data_bits, p_ID_BITS=id_bits,
        p_WORDS=sim.size_bytes // (data_bits // 8), p_LATENCY=sim.latency,
        p_RD_NUM=rd_num, p_RD_DEN=rd_den, p_WR_NUM=wr_num, p_WR_DEN=wr_den,
        p_REFRESH_PERIOD=sim.refresh_period, p_REFRESH_CYCLES=sim.refresh_cycles,
        p_STALL_PERCENT=sim.stall_percent, p_STALL_SEED=sim.stall_seed,
        i_clk=ClockSignal(), i_rst=ResetSignal(),
        i_araddr=r.araddr, i_arlen=r.arlen, i_arsize=r.arsize, i_arburst=r.arburst, i_arid=r.arid,
        i_arvalid=r.arvalid, o_arready=r.arready,
        o_rdata=r.rdata, o_rresp=r.rresp, o_rlast=r.rlast, o_rid=r.rid, o_rvalid=r.rvalid, i_rready=r.rready,
        i_awaddr=w.awaddr, i_awlen=w.awlen, i_awsize=w.awsize, i_awburst=w.awburst, i_awid=w.awid,
        i_awvalid=w.awvalid, o_awready=w.awready,
        i_wdata=w.wdata, i_wstrb=w.wstrb, i_wlast=w.wlast, i_wvalid=w.wvalid, o_wready=w.wready,
        o_bresp=w.bresp, o_bid=w.bid, o_bvalid=w.bvalid, i_bready=w.bready,
        i_backdoor_load=load, i_backdoor_dump=dump, i_dump_first=first, i_dump_words=words,
    )


class DecodeHarness(wiring.Component):
    def __init__(self, limits, numerics, tables, *, sim, addr_bits: int = 32, data_bits: int = 128,
                 max_burst: int = 16, outstanding: int = 4):
        self.engine = DecodeEngine(limits, numerics, tables, addr_bits=addr_bits, data_bits=data_bits,
                                   max_burst=max_burst, outstanding=outstanding)
        self.sim, self.addr_bits, self.data_bits = sim, addr_bits, data_bits
        super().__init__({
            "start": In(1), "program_addr": In(addr_bits), "n_instr": In(16), "token": In(17), "pos": In(14),
            "busy": Out(1), "next_token": Out(17), "error": Out(1), "counters": Out(EngineCounters()),
            "backdoor_load": In(1), "backdoor_dump": In(1), "dump_first": In(32), "dump_words": In(32),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.engine = e = self.engine
        for name in ("start", "program_addr", "n_instr", "token", "pos"):
            m.d.comb += getattr(e, name).eq(getattr(self, name))
        for name in ("busy", "next_token", "error", "counters"):
            m.d.comb += getattr(self, name).eq(getattr(e, name))
        memory_model(m, e.axi_r, e.axi_w, sim=self.sim, addr_bits=self.addr_bits, data_bits=self.data_bits,
                     id_bits=len(e.axi_r.arid),
                     backdoor=(self.backdoor_load, self.backdoor_dump, self.dump_first, self.dump_words))
        return m
