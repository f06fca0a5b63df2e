"""A tensor core behind the host link: GEMM commands as a program in memory.

The host link (:class:`hw.host.link.HostLink`) drives an engine through ``start``,
``program_addr`` and ``n_instr`` (the PROGRAM_ADDR / N_INSTR CSRs and RUN) and reads
``busy``, ``error``, ``next_token`` and ``counters`` back (ENGINE_STATUS, NEXT_TOKEN and
the counter CSRs). :class:`GemmEngine` gives a tensor core that same interface, so a board
top (and the protocol) treats it exactly like the decode engine:

* the *program* is ``n_instr`` GEMM descriptors at ``program_addr``, each
  :func:`descriptor_bytes` long: the core's command struct (``core.cmd.payload``:
  ``GemmCommand`` for the systolic core, ``BitSerialCommand``, ``LutCommand``) as
  little-endian bytes, zero-padded to whole memory beats (and to the 16-byte alignment
  of the protocol);
* RUN fetches the descriptors one by one (one AXI4 burst each) and runs each on the core;
  the engine is busy from RUN until the last GEMM's C is written;
* ``next_token`` counts the GEMMs finished since RUN; ``error`` is set (and the program
  stops) when the core reports a bad command or a memory error, or a descriptor read
  fails;
* counters (CSRs CYCLES, MATVEC_CYCLES, READ_BYTES, WRITE_BYTES; the other counter CSRs
  read 0): cycles from RUN to done, cycles in which the array took operands (the cores'
  ``busy`` counter summed over the GEMMs), bytes moved on the memory ports (descriptors
  included).

The host side is :func:`fpga_boards.gemm_host.run_gemms_on_link`.

Latency: a descriptor fetch costs one read burst (memory latency + beats) per GEMM before
the core starts; the core's own latency follows.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from host_runtime.protocol import MEM_ALIGN
from hw.mem.axi4 import BURST_INCR, AXI4ReadSignature, AXI4WriteSignature, size_code

COUNTER_BITS = 48


class GemmCounters(data.StructLayout):
    """Field names are the lower-cased CSR names the host link reads them as."""

    def __init__(self):
        super().__init__({k: COUNTER_BITS for k in ("cycles", "matvec_cycles", "read_bytes", "write_bytes")})


def descriptor_bytes(command_bits: int, data_bits: int) -> int:
    """Bytes of one descriptor: the command rounded up to whole beats and to ``MEM_ALIGN``."""
    unit = max(data_bits // 8, MEM_ALIGN)
    return -(-command_bits // (8 * unit)) * unit


class GemmEngine(wiring.Component):
    """``core``: a tensor core component (``cmd``, ``axi_r``, ``axi_w``, ``done``,
    ``status``, ``counters``; see :mod:`hw.cores`). Ports: see the module docstring;
    ``axi_r`` has the core's ID width."""

    def __init__(self, core):
        self.core = core
        r, w = core.axi_r, core.axi_w
        self.addr_bits, self.data_bits = len(r.araddr), len(r.rdata)
        self.id_bits = len(r.arid)
        self.command_bits = len(core.cmd.payload.as_value())
        self.desc_bytes = descriptor_bytes(self.command_bits, self.data_bits)
        self.desc_beats = self.desc_bytes // (self.data_bits // 8)
        super().__init__({
            "start": In(1), "program_addr": In(self.addr_bits), "n_instr": In(16),
            "token": In(32), "pos": In(32),         # the decode engine's RUN arguments; unused
            "busy": Out(1), "error": Out(1), "next_token": Out(16),
            "counters": Out(GemmCounters()),
            "axi_r": Out(AXI4ReadSignature(addr_bits=self.addr_bits, data_bits=self.data_bits,
                                           id_bits=self.id_bits)),
            "axi_w": Out(AXI4WriteSignature(addr_bits=self.addr_bits, data_bits=self.data_bits,
                                            id_bits=len(w.awid))),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = self.core
        D, bpb = self.data_bits, self.data_bits // 8
        r, cr = self.axi_r, core.axi_r

        fetching = Signal()         # the engine owns the read port (the core is idle)
        addr = Signal(self.addr_bits)
        left = Signal(16)           # descriptors still to run
        desc = Signal(self.desc_beats * D)
        beat = Signal(range(self.desc_beats + 1))
        ar_sent = Signal()
        done_count = Signal(16)
        err = Signal()
        c = self.counters
        m.d.comb += [self.next_token.eq(done_count), self.error.eq(err)]

        # ---- read port: the engine's descriptor burst while fetching, else the core ----
        own_arvalid = Signal()
        m.d.comb += [
            r.araddr.eq(Mux(fetching, addr, cr.araddr)),
            r.arlen.eq(Mux(fetching, self.desc_beats - 1, cr.arlen)),
            r.arsize.eq(Mux(fetching, size_code(D), cr.arsize)),
            r.arburst.eq(Mux(fetching, BURST_INCR, cr.arburst)),
            r.arid.eq(Mux(fetching, 0, cr.arid)),
            r.arvalid.eq(Mux(fetching, own_arvalid, cr.arvalid)),
            r.rready.eq(Mux(fetching, 1, cr.rready)),
            cr.arready.eq(~fetching & r.arready),
            cr.rvalid.eq(~fetching & r.rvalid),
            cr.rdata.eq(r.rdata), cr.rresp.eq(r.rresp), cr.rlast.eq(r.rlast), cr.rid.eq(r.rid),
        ]
        wiring.connect(m, core.axi_w, wiring.flipped(self.axi_w))

        # ---- counters -------------------------------------------------------------------
        with m.If(self.start & ~self.busy):
            m.d.sync += [c.cycles.eq(0), c.matvec_cycles.eq(0), c.read_bytes.eq(0), c.write_bytes.eq(0)]
        with m.Else():
            with m.If(self.busy):
                m.d.sync += c.cycles.eq(c.cycles + 1)
            with m.If(r.rvalid & r.rready):
                m.d.sync += c.read_bytes.eq(c.read_bytes + bpb)
            with m.If(self.axi_w.wvalid & self.axi_w.wready):
                m.d.sync += c.write_bytes.eq(c.write_bytes + bpb)
            with m.If(core.done):
                m.d.sync += c.matvec_cycles.eq(c.matvec_cycles + core.counters.busy)

        # ---- sequencer ------------------------------------------------------------------
        core_err = Signal()
        m.d.comb += core_err.eq(core.status.as_value() != 0)
        m.d.comb += core.cmd.payload.eq(desc[:self.command_bits])
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [addr.eq(self.program_addr), left.eq(self.n_instr), done_count.eq(0),
                                 err.eq(0)]
                    with m.If(self.n_instr != 0):
                        m.d.sync += [fetching.eq(1), ar_sent.eq(0), beat.eq(0)]
                        m.next = "FETCH"
            with m.State("FETCH"):
                m.d.comb += [self.busy.eq(1), own_arvalid.eq(~ar_sent)]
                with m.If(r.arvalid & r.arready):
                    m.d.sync += ar_sent.eq(1)
                with m.If(r.rvalid):
                    # beats arrive in address order: shift each in from the top
                    m.d.sync += [desc.eq(Cat(desc[D:], r.rdata)), beat.eq(beat + 1)]
                    with m.If(r.rresp != 0):
                        m.d.sync += err.eq(1)
                    with m.If(r.rlast):
                        m.d.sync += fetching.eq(0)
                        m.next = "ISSUE"
            with m.State("ISSUE"):
                m.d.comb += [self.busy.eq(1), core.cmd.valid.eq(~err)]
                with m.If(err):
                    m.next = "IDLE"
                with m.Elif(core.cmd.ready):
                    m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += self.busy.eq(1)
                with m.If(core.done):
                    m.d.sync += [done_count.eq(done_count + ~core_err), left.eq(left - 1),
                                 addr.eq(addr + self.desc_bytes)]
                    with m.If(core_err):
                        m.d.sync += err.eq(1)
                        m.next = "IDLE"
                    with m.Elif(left == 1):
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += [fetching.eq(1), ar_sent.eq(0), beat.eq(0)]
                        m.next = "FETCH"
        return m


def gemm_engine(cfg) -> GemmEngine:
    """The config's tensor core (``rtl_gen.generate.elaborate_core``) as an engine."""
    from rtl_gen.generate import elaborate_core
    return GemmEngine(elaborate_core(cfg))
