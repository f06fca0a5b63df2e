"""An AXI4 slave on block RAM: a board top's working memory where no DRAM controller is used.

:class:`AxiBram` serves one AXI4 read port and one AXI4 write port (the signatures of
:mod:`hw.mem.axi4`, slave side) from a true dual-port memory of ``size_bytes`` bytes,
full-width INCR bursts only (what every master of this project issues). Addresses wrap at
``size_bytes`` (the host link refuses requests past its ``mem_size``, so none arrive).

Timing: read data one cycle after the address is accepted, then one beat per cycle while
``rready``; a write burst takes one beat per cycle and answers OKAY one cycle after its
last beat. Responses are always OKAY.
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In

from hw.mem.axi4 import AXI4ReadSignature, AXI4WriteSignature


class AxiBram(wiring.Component):
    def __init__(self, *, size_bytes: int, addr_bits: int, data_bits: int, id_bits: int = 1, init: bytes = b""):
        bpb = data_bits // 8
        if size_bytes % bpb or (size_bytes // bpb) & (size_bytes // bpb - 1):
            raise ValueError(f"size_bytes={size_bytes} must be a power-of-two number of {bpb}-byte beats")
        if len(init) > size_bytes:
            raise ValueError(f"init of {len(init)} bytes exceeds size_bytes={size_bytes}")
        self.size_bytes, self.addr_bits, self.data_bits, self.id_bits = size_bytes, addr_bits, data_bits, id_bits
        padded = bytes(init) + bytes(-len(init) % bpb)
        #: initial contents, one int per beat (little-endian), e.g. a self-test image
        self.init = [int.from_bytes(padded[i:i + bpb], "little") for i in range(0, len(padded), bpb)]
        super().__init__({
            "axi_r": In(AXI4ReadSignature(addr_bits=addr_bits, data_bits=data_bits, id_bits=id_bits)),
            "axi_w": In(AXI4WriteSignature(addr_bits=addr_bits, data_bits=data_bits, id_bits=id_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        bpb = self.data_bits // 8
        words = self.size_bytes // bpb
        shift = bpb.bit_length() - 1
        wbits = max(1, (words - 1).bit_length())
        m.submodules.mem = mem = self.mem = Memory(shape=self.data_bits, depth=words, init=self.init)
        rport = mem.read_port()
        wport = mem.write_port(granularity=8)
        r, w = self.axi_r, self.axi_w

        # ---- reads: an issue pointer one cycle ahead of the data register -------------
        r_addr = Signal(wbits)
        r_left = Signal(9)              # beats of the current burst still to issue
        r_id, rv, r_last = Signal(self.id_bits), Signal(), Signal()
        issue = Signal()
        m.d.comb += [r.arready.eq(r_left == 0),
                     issue.eq((r_left != 0) & (~rv | r.rready)),
                     rport.addr.eq(r_addr), rport.en.eq(issue),
                     r.rvalid.eq(rv), r.rdata.eq(rport.data), r.rlast.eq(r_last), r.rresp.eq(0)]
        burst_id = Signal(self.id_bits)
        with m.If(r.arvalid & r.arready):
            m.d.sync += [r_addr.eq(r.araddr[shift:]), r_left.eq(r.arlen + 1), burst_id.eq(r.arid)]
        with m.If(rv & r.rready):
            m.d.sync += rv.eq(0)
        with m.If(issue):
            m.d.sync += [rv.eq(1), r_last.eq(r_left == 1), r_addr.eq(r_addr + 1), r_left.eq(r_left - 1),
                         r_id.eq(burst_id)]
        m.d.comb += r.rid.eq(r_id)

        # ---- writes ---------------------------------------------------------------------
        w_addr = Signal(wbits)
        w_active, bv = Signal(), Signal()
        w_id = Signal(self.id_bits)
        m.d.comb += [w.awready.eq(~w_active & ~bv), w.wready.eq(w_active),
                     wport.addr.eq(w_addr), wport.data.eq(w.wdata),
                     wport.en.eq(Mux(w.wvalid & w_active, w.wstrb, 0)),
                     w.bvalid.eq(bv), w.bresp.eq(0), w.bid.eq(w_id)]
        with m.If(w.awvalid & w.awready):
            m.d.sync += [w_addr.eq(w.awaddr[shift:]), w_active.eq(1), w_id.eq(w.awid)]
        with m.If(w.wvalid & w.wready):
            m.d.sync += w_addr.eq(w_addr + 1)
            with m.If(w.wlast):
                m.d.sync += [w_active.eq(0), bv.eq(1)]
        with m.If(bv & w.bready):
            m.d.sync += bv.eq(0)
        return m
