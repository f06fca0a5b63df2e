"""The simulation harness: a generated core with the RTL AXI4 memory model beside it.

``SimHarness(cfg)`` is what Verilator builds for cosim and benchmarks: the core's
memory ports go to ``sim/rtl/lutforge_axi_mem.sv`` (latency, bandwidth and refresh from
``cfg.memory.sim``), and the top exposes only the command stream, status, counters and
the memory's backdoor (load/dump through files, so no Python runs per beat or cycle).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

from amaranth.hdl import ClockSignal, Instance, Module, ResetSignal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out, connect

from hw.cores.systolic import CounterLayout, StatusLayout
from rtl_gen.generate import elaborate_core

RTL_DIR = Path(__file__).parent / "rtl"
MEMORY_MODEL = RTL_DIR / "lutforge_axi_mem.sv"
#: simulation models of the ECP5 primitives that Verilog elaborated for an ECP5 instantiates
ECP5_MODELS = RTL_DIR / "ecp5_mult18x18d.sv"
HARNESS_TOP = "lutforge_sim_top"


def _ratio(beats_per_cycle: float) -> tuple[int, int]:
    f = Fraction(beats_per_cycle).limit_denominator(64)
    return f.numerator, f.denominator


def memory_model(m: Module, r, w, *, sim, addr_bits: int, data_bits: int, id_bits: int, backdoor) -> None:
    """Instantiate ``lutforge_axi_mem`` on read port ``r`` and write port ``w``
    (``sim``: the config's memory.sim settings; ``backdoor``: load, dump, first, words).
    Every harness (tensor cores, decode engine, simulated board) uses this one."""
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


class SimHarness(wiring.Component):
    """The core of ``cfg`` (any kind) beside the memory model; its command stream, status
    and counters are the harness's ports."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.core = elaborate_core(cfg)
        super().__init__({
            "cmd": In(stream.Signature(self.core.cmd.payload.shape())),
            "busy": Out(1), "done": Out(1),
            "status": Out(StatusLayout()), "counters": Out(CounterLayout()),
            "backdoor_load": In(1), "backdoor_dump": In(1),
            "dump_first": In(32), "dump_words": In(32),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        m.submodules.core = core = self.core
        connect(m, wiring.flipped(self.cmd), core.cmd)
        m.d.comb += [self.busy.eq(core.busy), self.done.eq(core.done),
                     self.status.eq(core.status), self.counters.eq(core.counters)]
        memory_model(m, core.axi_r, core.axi_w, sim=cfg.memory.sim, addr_bits=cfg.memory.addr_bits,
                     data_bits=cfg.memory.data_bits, id_bits=len(core.axi_r.arid),
                     backdoor=(self.backdoor_load, self.backdoor_dump, self.dump_first, self.dump_words))
        return m
