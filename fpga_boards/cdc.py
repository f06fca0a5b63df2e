"""AXI4 clock-domain crossing: a design clocked slower than its DRAM controller.

The decode engine closes timing well below the DRAM controller's clock (LiteDRAM's ECP5
DDR3 core runs its user port at 75 MHz; the engine places at ~18 MHz), so a board top
runs the design on its own PLL clock and crosses its AXI4 ports into the controller's
domain here. Tensor cores that reach the controller's clock need no bridge (a top then
clocks the design from the controller, see :mod:`fpga_boards.top`).

:class:`AxiAsyncBridge`: ``s_r`` / ``s_w`` (slave side, in domain ``s_domain``) to
``m_r`` / ``m_w`` (master side, in ``m_domain``), one :class:`amaranth.lib.fifo.AsyncFIFO`
per channel (AR, R, AW, W, B), each carrying the channel's payload unchanged. Ordering
and burst boundaries are those of AXI4 (every channel stays in order; W beats may arrive
before their AW, which AXI4 allows). Latency: a few cycles of each clock per crossing
(gray-code pointers through two-flop synchronizers); throughput one beat per cycle of the
slower clock.
"""

from amaranth.hdl import Cat, Module
from amaranth.lib import wiring
from amaranth.lib.fifo import AsyncFIFO
from amaranth.lib.wiring import In, Out

from hw.mem.axi4 import AXI4ReadSignature, AXI4WriteSignature

_AR = ("araddr", "arlen", "arsize", "arburst", "arid")
_R = ("rdata", "rresp", "rlast", "rid")
_AW = ("awaddr", "awlen", "awsize", "awburst", "awid")
_W = ("wdata", "wstrb", "wlast")
_B = ("bresp", "bid")


class AxiAsyncBridge(wiring.Component):
    def __init__(self, *, addr_bits: int, data_bits: int, id_bits: int = 1, s_domain: str = "sync",
                 m_domain: str = "mem", data_depth: int = 32):
        self.s_domain, self.m_domain, self.data_depth = s_domain, m_domain, data_depth
        kw = dict(addr_bits=addr_bits, data_bits=data_bits, id_bits=id_bits)
        super().__init__({"s_r": In(AXI4ReadSignature(**kw)), "s_w": In(AXI4WriteSignature(**kw)),
                          "m_r": Out(AXI4ReadSignature(**kw)), "m_w": Out(AXI4WriteSignature(**kw))})

    def elaborate(self, platform):
        m = Module()
        s_r, s_w, m_r, m_w = self.s_r, self.s_w, self.m_r, self.m_w

        def channel(name, src, dst, fields, valid, ready, w_domain, r_domain, depth):
            width = sum(len(getattr(src, f)) for f in fields)
            fifo = AsyncFIFO(width=width, depth=depth, w_domain=w_domain, r_domain=r_domain)
            m.submodules[name] = fifo
            m.d.comb += [fifo.w_data.eq(Cat(*(getattr(src, f) for f in fields))),
                         fifo.w_en.eq(getattr(src, valid)), getattr(src, ready).eq(fifo.w_rdy),
                         Cat(*(getattr(dst, f) for f in fields)).eq(fifo.r_data),
                         getattr(dst, valid).eq(fifo.r_rdy), fifo.r_en.eq(getattr(dst, ready))]

        S, M, D = self.s_domain, self.m_domain, self.data_depth
        channel("ar", s_r, m_r, _AR, "arvalid", "arready", S, M, 4)
        channel("r", m_r, s_r, _R, "rvalid", "rready", M, S, D)
        channel("aw", s_w, m_w, _AW, "awvalid", "awready", S, M, 4)
        channel("w", s_w, m_w, _W, "wvalid", "wready", S, M, D)
        channel("b", m_w, s_w, _B, "bvalid", "bready", M, S, 4)
        return m
