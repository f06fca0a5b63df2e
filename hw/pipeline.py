"""Small structural helpers shared by the gateware: delay lines with a clock enable, a
two-entry register FIFO."""

from amaranth.hdl import Module, Mux, Signal, Value
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out


def delay(m, value, cycles: int, en, *, name: str = "dly"):
    """``value`` delayed by ``cycles`` enabled cycles (a chain of registers).

    With ``cycles == 0`` the value itself is returned. Each register loads only when
    ``en`` is high, so a stalled pipeline keeps its alignment.
    """
    value = Value.cast(value)
    for i in range(cycles):
        reg = Signal(value.shape(), name=f"{name}_{i}")
        with m.If(en):
            m.d.sync += reg.eq(value)
        value = reg
    return value


class RegFIFO2(wiring.Component):
    """A two-entry stream FIFO built of registers: a timing break between a producer and a
    consumer that each decide ``ready`` / ``valid`` from the other's handshake.

    Members
    -------
    i : In(stream of ``shape``). ``i.ready`` is a register's decode (not full).
    o : Out(stream of ``shape``). ``o.valid`` is a register's decode (not empty) and
        ``o.payload`` a register picked by a register.

    Full throughput (a push and a pop per cycle); one cycle of latency. ``o.ready`` reaches
    only the read pointer and the count, and ``i.valid`` only the write pointer, the count
    and the entries' clock enables, so neither side's combinational handshake reaches the
    other's.
    """

    def __init__(self, shape):
        self.shape = shape
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape))})

    def elaborate(self, platform):
        m = Module()
        ent = [Signal(self.shape, name=f"ent{k}") for k in range(2)]
        wp, rp, cnt = Signal(), Signal(), Signal(range(3))
        push, pop = Signal(), Signal()
        m.d.comb += [self.i.ready.eq(cnt != 2), push.eq(self.i.valid & self.i.ready),
                     self.o.valid.eq(cnt != 0), self.o.payload.eq(Mux(rp, ent[1], ent[0])),
                     pop.eq(self.o.valid & self.o.ready)]
        with m.If(push):
            m.d.sync += wp.eq(~wp)
            for k in range(2):
                with m.If(wp == k):
                    m.d.sync += ent[k].eq(self.i.payload)
        with m.If(pop):
            m.d.sync += rp.eq(~rp)
        m.d.sync += cnt.eq(cnt + push - pop)
        return m
