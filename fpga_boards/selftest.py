"""The self-test engine: a board's host link, memory and LEDs without an accelerator.

``lutforge build-bitstream --design selftest`` puts :class:`SelftestEngine` behind the host
link instead of the config's engine: the bitstream is small and quick to build, and checks
a new board's UART, memory (block RAM, or the DRAM after ``lutforge dram-init --memtest``)
and the RUN / STATUS / CSR path before a real design goes on it.

Engine interface (that of :mod:`hw.host.hosted`): RUN makes it busy for ``n_instr``
cycles, then ``next_token`` = ``token + 1`` (the host sees its argument come back through
the CSRs); ``counters.cycles`` counts the busy cycles; it never touches memory (its AXI4
masters stay idle) and never flags an error.
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from hw.mem.axi4 import AXI4ReadSignature, AXI4WriteSignature


class SelftestCounters(data.StructLayout):
    def __init__(self):
        super().__init__({"cycles": 48})


class SelftestEngine(wiring.Component):
    def __init__(self, *, addr_bits: int, data_bits: int):
        super().__init__({
            "start": In(1), "program_addr": In(addr_bits), "n_instr": In(16), "token": In(32), "pos": In(32),
            "busy": Out(1), "error": Out(1), "next_token": Out(32), "counters": Out(SelftestCounters()),
            "axi_r": Out(AXI4ReadSignature(addr_bits=addr_bits, data_bits=data_bits)),
            "axi_w": Out(AXI4WriteSignature(addr_bits=addr_bits, data_bits=data_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        left = Signal(16)
        m.d.comb += self.busy.eq(left != 0)
        with m.If(self.start & ~self.busy):
            m.d.sync += [left.eq(self.n_instr), self.next_token.eq(self.token + 1), self.counters.cycles.eq(0)]
        with m.Elif(self.busy):
            m.d.sync += [left.eq(left - 1), self.counters.cycles.eq(self.counters.cycles + 1)]
        return m
