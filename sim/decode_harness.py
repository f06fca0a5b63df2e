"""Simulation harness of the decode engine: the engine with the RTL AXI4 memory model.

``DecodeHarness`` is what Verilator builds for the engine's cosim and benchmarks (and,
with a host link, the simulated board): the engine's read and write ports go to
``sim/rtl/lutforge_axi_mem.sv`` (latency, bandwidth, refresh and back-pressure from the
memory settings), and the top exposes the run controls, counters and the memory's
backdoor, so images load and results dump through files, not per-cycle Python.
"""

from __future__ import annotations

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hw.decode.engine import DecodeEngine, EngineCounters

from .harness import memory_model

DECODE_TOP = "lutforge_decode_top"


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
