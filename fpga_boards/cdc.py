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

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.fifo import AsyncFIFO
from amaranth.lib.wiring import In, Out

from hw.host.wishbone import WishboneSignature
from hw.mem.axi4 import AXI4ReadSignature, AXI4WriteSignature

_AR = ("araddr", "arlen", "arsize", "arburst", "arid")
_R = ("rdata", "rresp", "rlast", "rid")
_AW = ("awaddr", "awlen", "awsize", "awburst", "awid")
_W = ("wdata", "wstrb", "wlast")
_B = ("bresp", "bid")


class AxiAsyncBridge(wiring.Component):
    def __init__(self, *, addr_bits: int, data_bits: int, read_id_bits: int = 1, write_id_bits: int = 1,
                 s_domain: str = "sync", m_domain: str = "mem", data_depth: int = 32):
        self.s_domain, self.m_domain, self.data_depth = s_domain, m_domain, data_depth
        rd = AXI4ReadSignature(addr_bits=addr_bits, data_bits=data_bits, id_bits=read_id_bits)
        wr = AXI4WriteSignature(addr_bits=addr_bits, data_bits=data_bits, id_bits=write_id_bits)
        super().__init__({"s_r": In(rd), "s_w": In(wr), "m_r": Out(rd), "m_w": Out(wr)})

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


class WishboneAsyncBridge(wiring.Component):
    """One Wishbone classic cycle at a time across clock domains (the DRAM controller's
    control registers, reached from the host link's external CSR window).

    ``s`` (slave side, ``s_domain``) -> ``m`` (master side, ``m_domain``). A cycle on ``s``
    is captured (address, data, select, write), a toggle crosses to ``m_domain`` through a
    two-flop synchronizer, the cycle runs on ``m`` until ``ack`` or ``err``, and a toggle
    crosses back; ``s`` then sees ``ack`` (or ``err``) for one cycle with ``dat_r``. The
    captured fields are stable for the whole crossing, so only the toggles are
    synchronized. Latency: about 3 cycles of each clock plus the slave's."""

    def __init__(self, *, addr_bits: int = 30, data_bits: int = 32, s_domain: str = "sync", m_domain: str = "mem"):
        self.s_domain, self.m_domain = s_domain, m_domain
        sig = WishboneSignature(addr_bits=addr_bits, data_bits=data_bits)
        super().__init__({"s": In(sig), "m": Out(sig)})

    def elaborate(self, platform):
        m = Module()
        s, mm = self.s, self.m
        sd, md = m.d[self.s_domain], m.d[self.m_domain]
        adr, dat_w, sel, we = Signal.like(s.adr), Signal.like(s.dat_w), Signal.like(s.sel), Signal()
        dat_r, err = Signal.like(s.dat_r), Signal()
        req, req_m, ack, ack_s = Signal(), Signal(), Signal(), Signal()
        m.submodules.req_sync = FFSynchronizer(req, req_m, o_domain=self.m_domain)
        m.submodules.ack_sync = FFSynchronizer(ack, ack_s, o_domain=self.s_domain)
        pending, seen_ack = Signal(), Signal()
        # ---- slave side: capture, wait for the answer --------------------------------
        with m.If(~pending & s.cyc & s.stb):
            sd += [adr.eq(s.adr), dat_w.eq(s.dat_w), sel.eq(s.sel), we.eq(s.we), req.eq(~req), pending.eq(1)]
        done = Signal()
        m.d.comb += done.eq(pending & (ack_s != seen_ack))
        with m.If(done):
            sd += [pending.eq(0), seen_ack.eq(ack_s)]
        m.d.comb += [s.ack.eq(done & ~err), s.err.eq(done & err), s.dat_r.eq(dat_r)]
        # ---- master side: run the cycle -------------------------------------------------
        seen_req, busy = Signal(), Signal()
        m.d.comb += [mm.adr.eq(adr), mm.dat_w.eq(dat_w), mm.sel.eq(sel), mm.we.eq(we),
                     mm.cyc.eq(busy), mm.stb.eq(busy)]
        with m.If(~busy & (req_m != seen_req)):
            md += [busy.eq(1), seen_req.eq(req_m)]
        with m.If(busy & (mm.ack | mm.err)):
            md += [busy.eq(0), dat_r.eq(mm.dat_r), err.eq(mm.err), ack.eq(~ack)]
        return m
