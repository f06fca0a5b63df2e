"""A narrow AXI4 master on a wide AXI4 slave: narrow bursts on the wide bus.

LiteDRAM's controller is generated at its native width (ECPIX-5: 128 bits). A design with a
narrower memory port (``memory.data_bits`` 64) reaches it through this adapter rather than
through LiteDRAM's own width converter: bursts through that converter hang (the AXI write
response of an 8-beat 64-bit burst never comes in LiteDRAM's simulation core; the same
symptom as enjoy-digital/litedram#370).

AXI4 (ARM IHI 0022, A3.4.1 "narrow transfers") lets a master issue beats narrower than the
bus: ``arsize``/``awsize`` is the narrow beat's size, the address steps by it, and each beat
travels on the byte lanes of its address. LiteDRAM's AXI front end (``AXIBurst2Beat``) steps
the address by the size and turns each beat into one native command, so every narrow beat is
one native access (a BL8 burst of 16 bytes on ECPIX-5's x16 DDR3) at the lanes' byte
enables: by that count half the DRAM's peak at 64 of 128 bits (ECPIX-5: 200 of 400 MB/s at
50 MHz; not measured).

Interface: ``s_r``/``s_w`` are the narrow slave ports (the master's side: ``In``),
``m_r``/``m_w`` the wide master ports; ``arsize``/``awsize`` pass through (the narrow master
sets its own beat size). Read data: each R beat's lanes are picked by the beat's address,
which the adapter follows with a FIFO of the accepted bursts' first lanes; the slave must
return bursts in request order (LiteDRAM does: one native port, an ID FIFO). Write data is
repeated on every lane and the strobes shifted to the beat's lane; a W beat waits until its
burst's AW was accepted. Latency: none added (combinational lanes); AR / AW stall while the
lane FIFOs are full (``depth`` bursts in flight).
"""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import fifo, wiring
from amaranth.lib.wiring import In, Out

from .axi4 import AXI4ReadSignature, AXI4WriteSignature


class AxiNarrowAdapter(wiring.Component):
    def __init__(self, *, addr_bits: int, narrow_bits: int, wide_bits: int, read_id_bits: int = 1,
                 write_id_bits: int = 1, depth: int = 32):
        if narrow_bits >= wide_bits or wide_bits % narrow_bits or (wide_bits // narrow_bits) & (wide_bits // narrow_bits - 1):
            self._MustUse__silence = True     # never elaborated
            raise ValueError(f"narrow AXI adapter {narrow_bits} -> {wide_bits} bits: the wide port must be "
                             f"a power-of-two multiple of the narrow one")
        self.addr_bits, self.narrow_bits, self.wide_bits, self.depth = addr_bits, narrow_bits, wide_bits, depth
        self.lanes = wide_bits // narrow_bits
        super().__init__({
            "s_r": In(AXI4ReadSignature(addr_bits=addr_bits, data_bits=narrow_bits, id_bits=read_id_bits)),
            "s_w": In(AXI4WriteSignature(addr_bits=addr_bits, data_bits=narrow_bits, id_bits=write_id_bits)),
            "m_r": Out(AXI4ReadSignature(addr_bits=addr_bits, data_bits=wide_bits, id_bits=read_id_bits)),
            "m_w": Out(AXI4WriteSignature(addr_bits=addr_bits, data_bits=wide_bits, id_bits=write_id_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        k, nb = self.lanes, self.narrow_bits
        lg_nbytes = (nb // 8).bit_length() - 1
        lane_bits = max(1, (k - 1).bit_length())
        s_r, s_w, m_r, m_w = self.s_r, self.s_w, self.m_r, self.m_w

        def first_lane(addr):
            return addr[lg_nbytes:lg_nbytes + lane_bits] if k > 1 else 0

        # ---- reads: AR through, the burst's first lane queued; R lanes picked per beat ----
        m.submodules.rq = rq = fifo.SyncFIFOBuffered(width=lane_bits, depth=self.depth)
        for name in ("araddr", "arlen", "arsize", "arburst", "arid"):
            m.d.comb += getattr(m_r, name).eq(getattr(s_r, name))
        m.d.comb += [m_r.arvalid.eq(s_r.arvalid & rq.w_rdy), s_r.arready.eq(m_r.arready & rq.w_rdy),
                     rq.w_en.eq(s_r.arvalid & s_r.arready), rq.w_data.eq(first_lane(s_r.araddr))]
        r_lane = Signal(lane_bits)          # the lane of the next R beat after the first
        r_mid = Signal()                    # inside a burst (its first beat was taken)
        lane = Signal(lane_bits)
        m.d.comb += lane.eq(Mux(r_mid, r_lane, rq.r_data))
        m.d.comb += [s_r.rdata.eq(m_r.rdata.word_select(lane, nb)), s_r.rresp.eq(m_r.rresp),
                     s_r.rlast.eq(m_r.rlast), s_r.rid.eq(m_r.rid),
                     s_r.rvalid.eq(m_r.rvalid & (r_mid | rq.r_rdy)), m_r.rready.eq(s_r.rready & (r_mid | rq.r_rdy))]
        with m.If(s_r.rvalid & s_r.rready):
            m.d.sync += r_lane.eq(lane + 1)
            with m.If(m_r.rlast):
                m.d.sync += r_mid.eq(0)
            with m.Else():
                m.d.sync += r_mid.eq(1)
        m.d.comb += rq.r_en.eq(s_r.rvalid & s_r.rready & m_r.rlast)

        # ---- writes: AW through, the burst's first lane queued; W on every lane ----------
        m.submodules.wq = wq = fifo.SyncFIFOBuffered(width=lane_bits, depth=self.depth)
        for name in ("awaddr", "awlen", "awsize", "awburst", "awid"):
            m.d.comb += getattr(m_w, name).eq(getattr(s_w, name))
        m.d.comb += [m_w.awvalid.eq(s_w.awvalid & wq.w_rdy), s_w.awready.eq(m_w.awready & wq.w_rdy),
                     wq.w_en.eq(s_w.awvalid & s_w.awready), wq.w_data.eq(first_lane(s_w.awaddr))]
        w_lane = Signal(lane_bits)
        w_mid = Signal()
        wl = Signal(lane_bits)
        m.d.comb += wl.eq(Mux(w_mid, w_lane, wq.r_data))
        ok = w_mid | wq.r_rdy                # the beat's burst address was accepted
        m.d.comb += [m_w.wdata.eq(Cat(*([s_w.wdata] * k))),
                     m_w.wstrb.eq(s_w.wstrb << (wl * (nb // 8))), m_w.wlast.eq(s_w.wlast),
                     m_w.wvalid.eq(s_w.wvalid & ok), s_w.wready.eq(m_w.wready & ok)]
        with m.If(s_w.wvalid & s_w.wready):
            m.d.sync += w_lane.eq(wl + 1)
            m.d.sync += w_mid.eq(~s_w.wlast)
        m.d.comb += wq.r_en.eq(s_w.wvalid & s_w.wready & s_w.wlast)
        m.d.comb += [s_w.bresp.eq(m_w.bresp), s_w.bid.eq(m_w.bid), s_w.bvalid.eq(m_w.bvalid),
                     m_w.bready.eq(s_w.bready)]
        return m
