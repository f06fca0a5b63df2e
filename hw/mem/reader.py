"""Burst read DMA: a (byte address, beat count) command becomes AXI4 INCR bursts."""

from types import SimpleNamespace

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from ..pipeline import RegFIFO2
from .axi4 import AXI4ReadSignature, BURST_INCR, burst_limit, size_code

#: Widest transfer one command may ask for, in beats.
BEATS_BITS = 24
#: An AXI4 address request's fields (what ReadArbiter's ``in_reg`` slots hold).
_AR_FIELDS = ("araddr", "arlen", "arsize", "arburst", "arid")


class ReadCommand(data.StructLayout):
    def __init__(self, addr_bits: int):
        super().__init__({"addr": addr_bits, "beats": BEATS_BITS})


class BurstReader(wiring.Component):
    """Reads ``beats`` full-width beats from ``addr`` and streams them out in order.

    Parameters
    ----------
    addr_bits, data_bits : AXI4 port widths.
    max_burst : beats per burst (bursts also stop at 4 KiB boundaries).
    outstanding : bursts in flight; the data FIFO holds ``outstanding * max_burst`` beats.
    depth : optional, beats the data FIFO holds (at least ``max_burst``): a deeper
        prefetch, as many bursts in flight as its free room allows.
    out_reg : a two-entry register FIFO after the block RAM one (full throughput;
        ``data.payload`` is a register picked by a register, ``data.valid`` a register's
        decode, and ``data.ready`` reaches only a pointer and a count). The
        FIFO's block RAM output has a long clock-to-out; a consumer that muxes the beat (a
        gearbox) and decides ``ready`` from it meets timing only this way. One cycle more
        latency.

    Members
    -------
    cmd : In(stream of ReadCommand). ``addr`` must be aligned to the beat size.
    axi : Out(AXI4ReadSignature). ``arid`` is 0; an arbiter may rewrite it.
    data : Out(stream of data_bits). The beats, in address order.
    error : Out(1). Sticky: some beat came back with a non-OKAY ``rresp``.

    Behaviour
    ---------
    An address request is issued only when the FIFO has room reserved for its whole
    burst (credit counting), so ``rready`` stays high and a slow consumer never blocks
    the shared read-data channel. Latency: first beat out one cycle after the memory's
    first ``rvalid`` (two with ``out_reg``).
    """

    def __init__(self, *, addr_bits: int, data_bits: int, max_burst: int, outstanding: int,
                 depth: int | None = None, out_reg: bool = False):
        if depth is not None and depth < max_burst:
            raise ValueError(f"reader depth {depth}: must hold a whole burst ({max_burst} beats)")
        self.addr_bits, self.data_bits = addr_bits, data_bits
        self.max_burst, self.outstanding = max_burst, outstanding
        self.depth = depth or max_burst * outstanding
        self.out_reg = out_reg
        super().__init__({
            "cmd": In(stream.Signature(ReadCommand(addr_bits))),
            "axi": Out(AXI4ReadSignature(addr_bits=addr_bits, data_bits=data_bits)),
            "data": Out(stream.Signature(data_bits)),
            "error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        bpb = self.data_bits // 8
        m.submodules.buf = buf = fifo.SyncFIFOBuffered(width=self.data_bits, depth=self.depth)

        addr = Signal(self.addr_bits)
        remaining = Signal(BEATS_BITS)
        # remaining == 0, kept as a register: ``cmd.ready`` from registers only (the
        # 20-bit zero test into the consumer's command logic, the KV unit's FSM and its
        # writer's address across the die, was the engine's 62.7 MHz path)
        rem_zero = Signal(init=1)
        credits = Signal(range(self.depth + 1), init=self.depth)
        # The next burst's length is computed over two registered steps (the 4 KiB and
        # max_burst cap from the address, then the minimum with ``remaining``): a long
        # path otherwise. ``settled`` counts the cycles since addr/remaining changed.
        cap = Signal(range(self.max_burst + 1))
        length = Signal(range(self.max_burst + 1))
        settled = Signal(range(3))
        m.d.sync += [cap.eq(burst_limit(addr, self.max_burst, max_burst=self.max_burst, bytes_per_beat=bpb, m=m)),
                     length.eq(Mux(remaining < cap, remaining, cap)),
                     settled.eq(Mux(settled == 2, 2, settled + 1))]
        fresh = settled == 2

        m.d.comb += [
            self.axi.arsize.eq(size_code(self.data_bits)),
            self.axi.arburst.eq(BURST_INCR),
            self.cmd.ready.eq(rem_zero & ~self.axi.arvalid),
        ]
        with m.If(self.cmd.valid & self.cmd.ready):
            m.d.sync += [addr.eq(self.cmd.payload.addr), remaining.eq(self.cmd.payload.beats), settled.eq(0),
                         rem_zero.eq(self.cmd.payload.beats == 0)]

        issued = Signal(range(self.max_burst + 1))
        with m.If(self.axi.arvalid):
            with m.If(self.axi.arready):
                m.d.sync += self.axi.arvalid.eq(0)
        with m.Elif(fresh & ~rem_zero & (credits >= length)):
            # Latch the request; AXI wants it stable while arvalid is high.
            m.d.sync += [
                self.axi.arvalid.eq(1),
                self.axi.araddr.eq(addr),
                self.axi.arlen.eq(length - 1),
                addr.eq(addr + length * bpb),
                remaining.eq(remaining - length),
                rem_zero.eq(remaining == length),
                settled.eq(0),
            ]
            m.d.comb += issued.eq(length)

        # credits count the FIFO's room: a beat frees it when it leaves the FIFO (the output
        # register, when there is one, is a slot of its own)
        popped = Signal()
        m.d.comb += popped.eq(buf.r_rdy & buf.r_en)
        m.d.sync += credits.eq(credits + popped - issued)

        m.d.comb += [
            self.axi.rready.eq(1),  # room is reserved before each request
            buf.w_en.eq(self.axi.rvalid),
            buf.w_data.eq(self.axi.rdata),
        ]
        if self.out_reg:
            # the beat and the FIFO's read enable come from registers, and the consumer's
            # ready reaches only the read pointer and the count (the consumer's ready through
            # the FIFO's read enable into the block RAM's clock enable, then into the clock
            # enable of a skid buffer's whole beat, were each as long a path as the data out)
            m.submodules.oq = oq = RegFIFO2(self.data_bits)
            m.d.comb += [oq.i.payload.eq(buf.r_data), oq.i.valid.eq(buf.r_rdy), buf.r_en.eq(oq.i.ready)]
            wiring.connect(m, oq.o, wiring.flipped(self.data))
        else:
            m.d.comb += [
                self.data.payload.eq(buf.r_data),
                self.data.valid.eq(buf.r_rdy),
                buf.r_en.eq(self.data.ready),
            ]
        with m.If(self.axi.rvalid & (self.axi.rresp != 0)):
            m.d.sync += self.error.eq(1)
        return m


class ReadArbiter(wiring.Component):
    """Shares one AXI4 read port between ``n`` masters by transaction ID.

    Address requests are granted round-robin through a one-entry register slice
    (one cycle added to each request); ``arid`` carries the master's index and read data
    is routed back by ``rid``. With ``in_id_bits`` the masters' own IDs travel in the low
    bits (``arid = {index, master arid}``), so an arbitrated master (a unit with several
    readers) can be arbitrated again. Masters must keep ``rready`` high (as :class:`BurstReader`
    does), so one master's slow consumer cannot block another's data.

    ``in_reg``: each master's address request first goes into a two-entry register FIFO
    of its own (:class:`~hw.pipeline.RegFIFO2`), so ``arready`` to a master is a
    register's decode and the round-robin choice starts from registers: the request and
    the grant no longer make a round trip between a master and the arbiter in one cycle
    (masters spread over a large die). One cycle more per request.
    """

    def __init__(self, *, n: int, addr_bits: int, data_bits: int, in_id_bits: int = 0, in_reg: bool = False):
        self.n, self.in_id_bits, self.in_reg = n, in_id_bits, in_reg
        self.sel_bits = max(1, (n - 1).bit_length())
        self.id_bits = self.sel_bits + in_id_bits
        members = {f"m{i}": In(AXI4ReadSignature(addr_bits=addr_bits, data_bits=data_bits, id_bits=max(in_id_bits, 1)))
                   for i in range(n)}
        members["out"] = Out(AXI4ReadSignature(addr_bits=addr_bits, data_bits=data_bits, id_bits=self.id_bits))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        masters = [getattr(self, f"m{i}") for i in range(self.n)]
        reqs = masters            # what the round robin sees: arvalid / arready / the request
        if self.in_reg:
            reqs = []
            for i, mm in enumerate(masters):
                lay = data.StructLayout({f: len(getattr(mm, f)) for f in _AR_FIELDS})
                m.submodules[f"ar{i}"] = slot = RegFIFO2(lay)
                m.d.comb += [slot.i.valid.eq(mm.arvalid), mm.arready.eq(slot.i.ready)]
                m.d.comb += [getattr(slot.i.payload, f).eq(getattr(mm, f)) for f in _AR_FIELDS]
                reqs.append(SimpleNamespace(arvalid=slot.o.valid, arready=slot.o.ready,
                                            **{f: getattr(slot.o.payload, f) for f in _AR_FIELDS}))
        out = self.out
        last_grant = Signal(range(self.n))
        free = Signal()
        m.d.comb += free.eq(~out.arvalid | out.arready)
        with m.If(out.arvalid & out.arready):
            m.d.sync += out.arvalid.eq(0)
        # Round-robin: the first requester after the last grant wins.
        with m.If(free):
            chosen = Signal(range(self.n))
            any_req = Signal()
            # Later assignments win, so offset 1 (the next master) has the highest priority.
            for offset in reversed(range(1, self.n + 1)):
                for i in range(self.n):
                    cand = (i + offset) % self.n
                    with m.If((last_grant == i) & reqs[cand].arvalid):
                        m.d.comb += [chosen.eq(cand), any_req.eq(1)]
            with m.If(any_req):
                m.d.sync += [out.arvalid.eq(1), out.arid[self.in_id_bits:].eq(chosen), last_grant.eq(chosen)]
                for i, mm in enumerate(reqs):
                    with m.If(chosen == i):
                        m.d.comb += mm.arready.eq(1)
                        m.d.sync += [out.araddr.eq(mm.araddr), out.arlen.eq(mm.arlen),
                                     out.arsize.eq(mm.arsize), out.arburst.eq(mm.arburst)]
                        if self.in_id_bits:
                            m.d.sync += out.arid[:self.in_id_bits].eq(mm.arid[:self.in_id_bits])
        for i, mm in enumerate(masters):
            hit = out.rid[self.in_id_bits:] == i
            m.d.comb += [
                mm.rdata.eq(out.rdata), mm.rresp.eq(out.rresp), mm.rlast.eq(out.rlast),
                mm.rvalid.eq(out.rvalid & hit),
            ]
            if self.in_id_bits:
                m.d.comb += mm.rid.eq(out.rid[:self.in_id_bits])
            with m.If(hit):
                m.d.comb += out.rready.eq(mm.rready)
        return m

