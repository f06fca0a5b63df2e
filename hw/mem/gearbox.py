"""Width conversion between memory beats and operand vectors.

The packing rule (one place for it; ``host_runtime.gemm_layout`` mirrors it):

* a vector narrower than a beat occupies one of ``slots`` equal slots of the beat, least
  significant slot first, where ``slots`` is the largest power of two with
  ``slots * vector_bits <= data_bits`` (a power of two keeps every address a shift);
* a vector wider than a beat spans ``beats_per_vector = ceil(vector_bits / data_bits)``
  consecutive beats, least significant bits first;
* every segment (a run of vectors the hardware reads as a unit) starts on a beat.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out


def packing(vector_bits: int, data_bits: int) -> tuple[int, int]:
    """(slots per beat, beats per vector) of the packing rule; one of them is 1."""
    if vector_bits <= data_bits:
        slots = 1
        while slots * 2 * vector_bits <= data_bits:
            slots *= 2
        return slots, 1
    return 1, -(-vector_bits // data_bits)


def beats_for(vectors: int, vector_bits: int, data_bits: int) -> int:
    """Beats that a segment of ``vectors`` vectors occupies."""
    slots, bpv = packing(vector_bits, data_bits)
    return -(-vectors // slots) * bpv


class SegmentCommand(data.StructLayout):
    def __init__(self):
        super().__init__({"length": 24, "count": 24})


class VectorUnpacker(wiring.Component):
    """Beats in, vectors out, segment by segment.

    Members
    -------
    seg : In(stream of SegmentCommand). ``count`` segments of ``length`` vectors each
        (``length`` >= 1); the unused slots of each segment's last beat are dropped.
    beats : In(stream of data_bits).
    vectors : Out(stream of vector_bits).

    One vector per cycle at most; ``beats_per_vector`` cycles per vector when a vector
    spans several beats.
    """

    def __init__(self, *, data_bits: int, vector_bits: int):
        self.data_bits, self.vector_bits = data_bits, vector_bits
        self.slots, self.bpv = packing(vector_bits, data_bits)
        super().__init__({
            "seg": In(stream.Signature(SegmentCommand())),
            "beats": In(stream.Signature(data_bits)),
            "vectors": Out(stream.Signature(vector_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        length = Signal(24)
        segs_left = Signal(24)
        left = Signal(24)            # vectors still to emit in the current segment
        last_vec = Signal()          # registered: left == 1 (keeps compares off the ready path)
        last_seg = Signal()          # registered: segs_left == 1
        active = Signal()
        m.d.comb += self.seg.ready.eq(~active)
        with m.If(self.seg.valid & self.seg.ready & (self.seg.payload.count != 0)):
            m.d.sync += [active.eq(1), length.eq(self.seg.payload.length), left.eq(self.seg.payload.length),
                         last_vec.eq(self.seg.payload.length == 1),
                         segs_left.eq(self.seg.payload.count), last_seg.eq(self.seg.payload.count == 1)]

        out_fire = Signal()
        m.d.comb += out_fire.eq(self.vectors.valid & self.vectors.ready)
        seg_end = Signal()
        m.d.comb += seg_end.eq(out_fire & last_vec)
        with m.If(out_fire):
            m.d.sync += [left.eq(left - 1), last_vec.eq(left == 2)]
        with m.If(seg_end):
            m.d.sync += [left.eq(length), last_vec.eq(length == 1),
                         segs_left.eq(segs_left - 1), last_seg.eq(segs_left == 2)]
            with m.If(last_seg):
                m.d.sync += active.eq(0)

        if self.bpv == 1:
            slot = Signal(range(self.slots))
            lanes = [self.beats.payload[i * self.vector_bits:(i + 1) * self.vector_bits]
                     for i in range(self.slots)]
            sel = Signal(self.vector_bits)
            with m.Switch(slot):
                for i, lane in enumerate(lanes):
                    with m.Case(i):
                        m.d.comb += sel.eq(lane)
            m.d.comb += [
                self.vectors.payload.eq(sel),
                self.vectors.valid.eq(active & self.beats.valid),
            ]
            last_slot = (slot == self.slots - 1) if self.slots > 1 else Const(1)
            with m.If(out_fire):
                m.d.sync += slot.eq(slot + 1)
                with m.If(last_slot | seg_end):
                    m.d.sync += slot.eq(0)
                    m.d.comb += self.beats.ready.eq(1)
        else:
            parts = Signal(range(self.bpv + 1))
            buf = Signal((self.bpv - 1) * self.data_bits)
            m.d.comb += [
                self.vectors.payload.eq(Cat(buf, self.beats.payload)[:self.vector_bits]),
                self.vectors.valid.eq(active & self.beats.valid & (parts == self.bpv - 1)),
                self.beats.ready.eq(active & ((parts < self.bpv - 1) | self.vectors.ready)),
            ]
            with m.If(self.beats.valid & self.beats.ready):
                with m.If(parts == self.bpv - 1):
                    m.d.sync += parts.eq(0)
                with m.Else():
                    m.d.sync += [parts.eq(parts + 1)]
                    for i in range(self.bpv - 1):
                        with m.If(parts == i):
                            m.d.sync += buf[i * self.data_bits:(i + 1) * self.data_bits].eq(self.beats.payload)
        return m


class PackerInput(data.StructLayout):
    def __init__(self, vector_bits: int):
        super().__init__({"vector": vector_bits, "last": 1})


class PackerOutput(data.StructLayout):
    def __init__(self, data_bits: int):
        super().__init__({"data": data_bits, "last": 1})


class VectorPacker(wiring.Component):
    """Vectors in, beats out (the inverse of :class:`VectorUnpacker`).

    Members
    -------
    vectors : In(stream of PackerInput). ``last`` ends a segment: its beat is flushed
        with unused slots zero and carries ``last``.
    beats : Out(stream of PackerOutput).
    """

    def __init__(self, *, data_bits: int, vector_bits: int):
        self.data_bits, self.vector_bits = data_bits, vector_bits
        self.slots, self.bpv = packing(vector_bits, data_bits)
        super().__init__({
            "vectors": In(stream.Signature(PackerInput(vector_bits))),
            "beats": Out(stream.Signature(PackerOutput(data_bits))),
        })

    def elaborate(self, platform):
        m = Module()
        v_in = self.vectors
        if self.bpv == 1:
            beat = Signal(self.data_bits)
            slot = Signal(range(self.slots))
            full = Signal()      # ``beat`` holds a complete beat waiting to go out
            last = Signal()
            m.d.comb += [self.beats.valid.eq(full), self.beats.payload.data.eq(beat),
                         self.beats.payload.last.eq(last)]
            drained = ~full | self.beats.ready
            m.d.comb += v_in.ready.eq(drained)
            with m.If(self.beats.valid & self.beats.ready):
                m.d.sync += full.eq(0)
            with m.If(v_in.valid & v_in.ready):
                lanes = [beat[i * self.vector_bits:(i + 1) * self.vector_bits] for i in range(self.slots)]
                # Starting a new beat clears the slots above the first vector.
                with m.If(slot == 0):
                    m.d.sync += beat.eq(v_in.payload.vector)
                for i in range(1, self.slots):
                    with m.If(slot == i):
                        m.d.sync += lanes[i].eq(v_in.payload.vector)
                end = (slot == self.slots - 1) | v_in.payload.last
                m.d.sync += slot.eq(slot + 1)
                with m.If(end):
                    m.d.sync += [slot.eq(0), full.eq(1), last.eq(v_in.payload.last)]
        else:
            wide = Signal(self.bpv * self.data_bits)
            part = Signal(range(self.bpv))
            busy = Signal()
            last = Signal()
            final = part == self.bpv - 1
            m.d.comb += [
                # Accept the next vector in the cycle the current one's final beat leaves.
                v_in.ready.eq(~busy | (self.beats.ready & final)),
                self.beats.valid.eq(busy),
                self.beats.payload.data.eq(wide[:self.data_bits]),
                self.beats.payload.last.eq(last & final),
            ]
            with m.If(self.beats.valid & self.beats.ready):
                m.d.sync += [wide.eq(wide >> self.data_bits), part.eq(part + 1)]
                with m.If(final):
                    m.d.sync += busy.eq(0)
            with m.If(v_in.valid & v_in.ready):
                m.d.sync += [wide.eq(v_in.payload.vector), busy.eq(1), part.eq(0), last.eq(v_in.payload.last)]
        return m


class UnitCommand(data.StructLayout):
    def __init__(self, n_widths: int):
        super().__init__({"count": 24, "sel": range(max(n_widths, 2))})


class UnitUnpacker(wiring.Component):
    """Beats in, units of a width chosen per command out (the packing rule at run time).

    ``unit_bits`` lists the widths a command may select (powers of two); the decode
    engine's weight streams use it because one matrix is 4-bit codes and the next 8-bit.

    Members
    -------
    cmd : In(stream of UnitCommand). ``count`` units (>= 1) of width ``unit_bits[sel]``;
        the unused slots of the command's last beat are dropped.
    beats : In(stream of data_bits).
    units : Out(stream of max(unit_bits)), zero-extended.

    Throughput: one unit per cycle when a unit is no wider than a beat (the beat is held
    and its slots leave one per cycle; the next beat is taken in the cycle the last slot
    leaves), else one unit per ``unit/data_bits`` beats (port rate).
    """

    def __init__(self, *, data_bits: int, unit_bits: tuple[int, ...]):
        for u in unit_bits:
            if u & (u - 1) or (u < data_bits and data_bits % u) or (u > data_bits and u % data_bits):
                raise ValueError(f"unit width {u} and beat width {data_bits} are not powers of two")
        self.data_bits, self.unit_bits = data_bits, tuple(unit_bits)
        self.max_unit = max(unit_bits)
        super().__init__({
            "cmd": In(stream.Signature(UnitCommand(len(unit_bits)))),
            "beats": In(stream.Signature(data_bits)),
            "units": Out(stream.Signature(self.max_unit)),
        })

    def elaborate(self, platform):
        m = Module()
        W = self.data_bits
        left = Signal(24)
        last_unit = Signal()      # registered: left == 1
        sel = Signal.like(self.cmd.payload.sel)
        active = Signal()
        m.d.comb += self.cmd.ready.eq(~active)
        with m.If(self.cmd.valid & self.cmd.ready & (self.cmd.payload.count != 0)):
            m.d.sync += [active.eq(1), sel.eq(self.cmd.payload.sel), left.eq(self.cmd.payload.count),
                         last_unit.eq(self.cmd.payload.count == 1)]
        fire = Signal()
        m.d.comb += fire.eq(self.units.valid & self.units.ready)
        with m.If(fire):
            m.d.sync += [left.eq(left - 1), last_unit.eq(left == 2)]
            with m.If(last_unit):
                m.d.sync += active.eq(0)

        slot = Signal(range(max(W // min(self.unit_bits), 2)))
        parts = Signal(range(max(self.max_unit // W, 2)))
        buf = Signal(max(self.max_unit - W, 1))   # earlier beats of a unit wider than a beat
        with m.Switch(sel):
            for i, u in enumerate(self.unit_bits):
                with m.Case(i):
                    if u <= W:
                        n = W // u
                        lanes = [self.beats.payload[j * u:(j + 1) * u] for j in range(n)]
                        pick = Signal(u)
                        with m.Switch(slot):
                            for j, lane in enumerate(lanes):
                                with m.Case(j):
                                    m.d.comb += pick.eq(lane)
                        m.d.comb += [self.units.payload.eq(pick), self.units.valid.eq(active & self.beats.valid)]
                        with m.If(fire):
                            m.d.sync += slot.eq(slot + 1)
                            with m.If((slot == n - 1) | last_unit):
                                m.d.sync += slot.eq(0)
                                m.d.comb += self.beats.ready.eq(1)
                    else:
                        n = u // W
                        m.d.comb += [
                            self.units.payload.eq(Cat(buf[:(n - 1) * W], self.beats.payload)),
                            self.units.valid.eq(active & self.beats.valid & (parts == n - 1)),
                            self.beats.ready.eq(active & ((parts < n - 1) | self.units.ready)),
                        ]
                        with m.If(self.beats.valid & self.beats.ready):
                            with m.If(parts == n - 1):
                                m.d.sync += parts.eq(0)
                            with m.Else():
                                m.d.sync += parts.eq(parts + 1)
                                for j in range(n - 1):
                                    with m.If(parts == j):
                                        m.d.sync += buf[j * W:(j + 1) * W].eq(self.beats.payload)
        return m


class UnitPackerInput(data.StructLayout):
    def __init__(self, unit_bits: int):
        super().__init__({"unit": unit_bits, "last": 1})


class UnitPacker(wiring.Component):
    """Units of a width chosen at run time in, beats out (the inverse of :class:`UnitUnpacker`).

    Members
    -------
    sel : In(range(len(unit_bits))): the unit width, stable while a transfer runs.
    units : In(stream of UnitPackerInput): ``last`` ends a transfer; its beat leaves with
        the unused slots zero and carries ``last``.
    beats : Out(stream of PackerOutput).

    One unit per cycle when a unit is no wider than a beat; a wider unit leaves as
    ``unit/data_bits`` beats.
    """

    def __init__(self, *, data_bits: int, unit_bits: tuple[int, ...]):
        for u in unit_bits:
            if u & (u - 1) or (u < data_bits and data_bits % u) or (u > data_bits and u % data_bits):
                raise ValueError(f"unit width {u} and beat width {data_bits} are not powers of two")
        self.data_bits, self.unit_bits = data_bits, tuple(unit_bits)
        self.max_unit = max(unit_bits)
        super().__init__({
            "sel": In(range(max(len(unit_bits), 2))),
            "units": In(stream.Signature(UnitPackerInput(self.max_unit))),
            "beats": Out(stream.Signature(PackerOutput(data_bits))),
        })

    def elaborate(self, platform):
        m = Module()
        W = self.data_bits
        u_in = self.units
        beat = Signal(W)
        wide = Signal(max(self.max_unit, W))
        full = Signal()
        last = Signal()
        slot = Signal(range(max(W // min(self.unit_bits), 2)))
        part = Signal(range(max(self.max_unit // W, 2)))
        parts = Signal(range(max(self.max_unit // W, 2) + 1))
        m.d.comb += [self.beats.payload.data.eq(Mux(parts > 1, wide[:W], beat)),
                     self.beats.valid.eq(full)]
        with m.Switch(self.sel):
            for i, u in enumerate(self.unit_bits):
                with m.Case(i):
                    if u <= W:
                        n = W // u
                        m.d.comb += [u_in.ready.eq(~full | self.beats.ready), self.beats.payload.last.eq(last)]
                        with m.If(self.beats.valid & self.beats.ready):
                            m.d.sync += full.eq(0)
                        with m.If(u_in.valid & u_in.ready):
                            with m.If(slot == 0):
                                m.d.sync += beat.eq(u_in.payload.unit[:u])
                            for j in range(1, n):
                                with m.If(slot == j):
                                    m.d.sync += beat[j * u:(j + 1) * u].eq(u_in.payload.unit[:u])
                            m.d.sync += [slot.eq(slot + 1), parts.eq(1)]
                            with m.If((slot == n - 1) | u_in.payload.last):
                                m.d.sync += [slot.eq(0), full.eq(1), last.eq(u_in.payload.last)]
                    else:
                        n = u // W
                        final = part == n - 1
                        m.d.comb += [u_in.ready.eq(~full | (self.beats.ready & final)),
                                     self.beats.payload.last.eq(last & final)]
                        with m.If(self.beats.valid & self.beats.ready):
                            m.d.sync += [wide.eq(wide >> W), part.eq(part + 1)]
                            with m.If(final):
                                m.d.sync += full.eq(0)
                        with m.If(u_in.valid & u_in.ready):
                            m.d.sync += [wide.eq(u_in.payload.unit), full.eq(1), part.eq(0),
                                         parts.eq(n), last.eq(u_in.payload.last)]
        return m
