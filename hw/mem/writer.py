"""Burst write DMA: a stream of beats (ending with ``last``) becomes AXI4 INCR bursts."""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from .axi4 import AXI4WriteSignature, BURST_INCR, size_code


class WriteBeat(data.StructLayout):
    def __init__(self, data_bits: int):
        super().__init__({"data": data_bits, "last": 1})


class BurstWriter(wiring.Component):
    """Writes a stream of full-width beats to consecutive addresses from ``start``.

    Parameters
    ----------
    addr_bits, data_bits : AXI4 port widths.
    max_burst : beats per burst (bursts also stop at 4 KiB boundaries).

    Members
    -------
    start : In(stream of addr_bits). Base byte address of the next transfer (beat aligned).
    data : In(stream of WriteBeat). The beats; ``last`` marks a transfer's final beat.
    axi : Out(AXI4WriteSignature).
    idle : Out(1). No transfer open and every burst acknowledged on B.
    error : Out(1). Sticky: a write response was not OKAY.

    Behaviour
    ---------
    Store and forward per burst: beats collect in a FIFO of ``2 * max_burst`` and a burst
    is announced on AW once it is complete (``max_burst`` beats, a 4 KiB boundary, or
    ``last``), so ``awlen`` is always known and W never waits on the producer mid-burst.
    """

    def __init__(self, *, addr_bits: int, data_bits: int, max_burst: int):
        self.addr_bits, self.data_bits, self.max_burst = addr_bits, data_bits, max_burst
        super().__init__({
            "start": In(stream.Signature(addr_bits)),
            "data": In(stream.Signature(WriteBeat(data_bits))),
            "axi": Out(AXI4WriteSignature(addr_bits=addr_bits, data_bits=data_bits)),
            "idle": Out(1),
            "error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        bpb = self.data_bits // 8
        depth = 2 * self.max_burst
        m.submodules.beats = beats = fifo.SyncFIFOBuffered(width=self.data_bits, depth=depth)
        # Bursts formed but not yet announced on AW, and announced but not yet sent on W.
        m.submodules.aw_q = aw_q = fifo.SyncFIFOBuffered(width=self.addr_bits + 8, depth=4)
        m.submodules.w_q = w_q = fifo.SyncFIFOBuffered(width=8, depth=4)

        open_ = Signal()          # a transfer is in progress (start seen, last not yet)
        addr = Signal(self.addr_bits)             # start of the burst being formed
        beat_addr = Signal(self.addr_bits)        # address of the next beat
        count = Signal(range(self.max_burst + 1))  # beats of the burst being formed
        shift = bpb.bit_length() - 1
        # A burst ends at max_burst beats or on the last beat of a 4 KiB page; checking the
        # page offset of the current beat avoids a subtract-and-compare on every beat.
        page_end = beat_addr[shift:12] == (1 << (12 - shift)) - 1

        m.d.comb += self.start.ready.eq(~open_)
        with m.If(self.start.valid & self.start.ready):
            m.d.sync += [open_.eq(1), addr.eq(self.start.payload), beat_addr.eq(self.start.payload), count.eq(0)]

        take = Signal()
        m.d.comb += [
            self.data.ready.eq(open_ & beats.w_rdy & aw_q.w_rdy),
            take.eq(self.data.valid & self.data.ready),
            beats.w_en.eq(take),
            beats.w_data.eq(self.data.payload.data),
        ]
        close = Signal()
        m.d.comb += close.eq(take & (self.data.payload.last | (count == self.max_burst - 1) | page_end))
        with m.If(take):
            m.d.sync += [count.eq(count + 1), beat_addr.eq(beat_addr + bpb)]
        with m.If(close):
            # The burst's awlen is the index of its final beat, i.e. count before this beat.
            m.d.comb += [aw_q.w_en.eq(1), aw_q.w_data.eq(Cat(addr, count[:8]))]
            m.d.sync += [addr.eq(beat_addr + bpb), count.eq(0)]
            with m.If(self.data.payload.last):
                m.d.sync += open_.eq(0)

        # AW channel.
        m.d.comb += [self.axi.awsize.eq(size_code(self.data_bits)), self.axi.awburst.eq(BURST_INCR)]
        with m.If(~self.axi.awvalid | self.axi.awready):
            m.d.sync += self.axi.awvalid.eq(0)
            with m.If(aw_q.r_rdy & w_q.w_rdy):
                m.d.comb += [aw_q.r_en.eq(1), w_q.w_en.eq(1), w_q.w_data.eq(aw_q.r_data[self.addr_bits:])]
                m.d.sync += [self.axi.awvalid.eq(1), self.axi.awaddr.eq(aw_q.r_data[:self.addr_bits]),
                             self.axi.awlen.eq(aw_q.r_data[self.addr_bits:])]

        # W channel: send each announced burst's beats, wlast on the final one.
        sent = Signal(8)
        m.d.comb += [
            self.axi.wdata.eq(beats.r_data),
            self.axi.wstrb.eq(-1),
            self.axi.wvalid.eq(w_q.r_rdy & beats.r_rdy),
            self.axi.wlast.eq(sent == w_q.r_data),
            beats.r_en.eq(self.axi.wvalid & self.axi.wready),
        ]
        with m.If(self.axi.wvalid & self.axi.wready):
            m.d.sync += sent.eq(sent + 1)
            with m.If(self.axi.wlast):
                m.d.sync += sent.eq(0)
                m.d.comb += w_q.r_en.eq(1)

        # B channel: bursts formed and not yet acknowledged.
        pending = Signal(range(256))  # the memory model answers B well within 256 bursts
        m.d.comb += self.axi.bready.eq(1)
        m.d.sync += pending.eq(pending + close - self.axi.bvalid)
        with m.If(self.axi.bvalid & (self.axi.bresp != 0)):
            m.d.sync += self.error.eq(1)
        m.d.comb += self.idle.eq(~open_ & (pending == 0))
        return m
