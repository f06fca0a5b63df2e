"""Vector units of the decode engine: RMSNorm, RoPE, SwiGLU, residual add, argmax.

Each unit is the gateware twin of the :mod:`ref_model.decode` function of the same name,
bit for bit (the docstrings there state the formats; int32 ``Q.frac`` activations,
round-half-up shifts, saturation to int32 on every write). Inputs are
:mod:`amaranth.lib.stream` streams (the unit may hold them off); outputs are *push*
interfaces (``o_valid`` + data, no ready): their consumer is an on-chip buffer write
port that takes one word per cycle, so no unit ever waits on its output.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .funcs import RsqrtUnit, SigmoidUnit, SinCosUnit, rr

INT32_MAX, INT32_MIN = (1 << 31) - 1, -(1 << 31)


def sat32(m: Module, v, name: str) -> Signal:
    """Saturate a signed value to int32 (combinational)."""
    out = Signal(signed(32), name=name)
    m.d.comb += out.eq(Mux(v > INT32_MAX, INT32_MAX, Mux(v < INT32_MIN, INT32_MIN, v)))
    return out


def delay(m: Module, sig, n: int, name: str):
    """``sig`` through ``n`` registers."""
    for k in range(n):
        nxt = Signal.like(sig, name=f"{name}_d{k + 1}")
        m.d.sync += nxt.eq(sig)
        sig = nxt
    return sig


class RmsNormCommand(data.StructLayout):
    def __init__(self):
        super().__init__({"n": 16, "eps": 32})


class RmsNormUnit(wiring.Component):
    """:func:`ref_model.decode.rmsnorm` over one vector of ``n`` elements.

    Members
    -------
    cmd : In(stream of RmsNormCommand): length and ``eps_int``.
    x : In(stream of signed(32)): the vector **twice** (pass 1 sums the squares, pass 2
        scales; the engine streams its buffer twice rather than keeping a copy here).
    gain : In(stream of signed(32)): the folded gains, consumed with pass 2.
    o_valid, y : Out: the ``n`` results, int32 ``Q.frac``, in order.
    busy : Out(1).

    Numerics: ``ss = sum((h*h) >> ss_shift) + eps`` (64-bit); ``(m, s) = rsqrt(ss)``;
    ``t = rshift_round(h*m, s + ss_shift/2 - frac - 8)``; ``y = sat32(rshift_round(t*gain,
    gain_frac + 8))``. Timing: ``n`` cycles, 11 for the rsqrt, ``n`` + 6.
    """

    def __init__(self, *, frac: int, gain_frac: int, ss_shift: int, rsqrt_table: list[int]):
        if ss_shift % 2:
            raise ValueError("ss_shift must be even")
        self.frac, self.gain_frac, self.ss_shift = frac, gain_frac, ss_shift
        self.rsqrt_table = rsqrt_table
        super().__init__({
            "cmd": In(stream.Signature(RmsNormCommand())),
            "x": In(stream.Signature(signed(32))),
            "gain": In(stream.Signature(signed(32))),
            "o_valid": Out(1), "y": Out(signed(32)), "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.rsqrt = rsq = RsqrtUnit(self.rsqrt_table)
        n = Signal(16)
        eps = Signal(32)
        i = Signal(16)
        ss = Signal(64)
        mant = Signal(24)
        shift = Signal(range(64))
        h = self.x.payload
        # pass 1 pipeline: square (registered), truncate, accumulate
        sq_v = Signal()
        sq = Signal(64)
        m.d.sync += [sq_v.eq(0), sq.eq((h * h) >> self.ss_shift)]
        # pass 2 pipeline
        v1 = Signal()
        g1 = Signal(signed(32))
        p1 = Signal(signed(57))
        m.d.sync += [v1.eq(0), p1.eq(h * mant), g1.eq(self.gain.payload)]
        v2, v3, v4, v5 = Signal(), Signal(), Signal(), Signal()
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.cmd.ready.eq(1)
                with m.If(self.cmd.valid):
                    m.d.sync += [n.eq(self.cmd.payload.n), eps.eq(self.cmd.payload.eps), i.eq(0), ss.eq(0),
                                 self.busy.eq(1)]
                    m.next = "SQUARES"
            with m.State("SQUARES"):
                m.d.comb += self.x.ready.eq(1)
                with m.If(self.x.valid):
                    m.d.sync += [sq_v.eq(1), i.eq(i + 1)]
                    with m.If(i == n - 1):
                        m.next = "SUM"
            with m.State("SUM"):   # the last square lands in ss this cycle
                m.next = "RSQRT"
            with m.State("RSQRT"):
                m.d.comb += [rsq.i_valid.eq(1), rsq.x.eq(ss + eps)]
                m.next = "WAIT"
            with m.State("WAIT"):
                with m.If(rsq.o_valid):
                    m.d.sync += [mant.eq(rsq.m), i.eq(0),
                                 shift.eq(rsq.s + self.ss_shift // 2 - self.frac - 8)]
                    m.next = "SCALE"
            with m.State("SCALE"):
                m.d.comb += [self.x.ready.eq(self.gain.valid), self.gain.ready.eq(self.x.valid)]
                with m.If(self.x.valid & self.gain.valid):
                    m.d.sync += [v1.eq(1), i.eq(i + 1)]
                    with m.If(i == n - 1):
                        m.next = "DRAIN"
            with m.State("DRAIN"):
                with m.If(~self.o_valid & ~v1 & ~v2 & ~v3 & ~v4 & ~v5):
                    m.d.sync += self.busy.eq(0)
                    m.next = "IDLE"
        with m.If(sq_v):
            m.d.sync += ss.eq(ss + sq)
        # h*m -> + half -> >> shift -> *gain -> rounded, saturated
        half = Signal(57)
        m.d.comb += half.eq(Const(1, 57) << (shift - 1)[:6])
        ph2, g2 = Signal(signed(58)), Signal(signed(32))
        m.d.sync += [v2.eq(v1), ph2.eq(p1 + half), g2.eq(g1)]
        t3, g3 = Signal(signed(40)), Signal(signed(32))
        m.d.sync += [v3.eq(v2), t3.eq(ph2 >> shift), g3.eq(g2)]
        q4 = Signal(signed(72))
        m.d.sync += [v4.eq(v3), q4.eq(t3 * g3)]
        r5 = Signal(signed(72))
        m.d.sync += [v5.eq(v4), r5.eq(rr(q4, self.gain_frac + 8))]
        y = sat32(m, r5, "y_sat")
        m.d.sync += [self.o_valid.eq(v5), self.y.eq(y)]
        return m


class RopeCommand(data.StructLayout):
    def __init__(self):
        super().__init__({"heads": 8, "head_dim": 9, "pos": 14})


class RopeUnit(wiring.Component):
    """:func:`ref_model.decode.rope` over ``heads`` x ``head_dim`` elements at ``pos``.

    Members
    -------
    cmd : In(stream of RopeCommand).
    consts : In(stream of unsigned(64)): the ``head_dim/2`` phase constants (Q0.48),
        consumed first; the phases ``(pos*c) >> 16 mod 2**32`` and their sin/cos are
        computed once into a table and reused for every head.
    x : In(stream of signed(32)): the vector, pairs ``(x[2i], x[2i+1])`` in order.
    o_valid, y : Out: rotated elements in order (two per pair, one per cycle).

    Numerics: ``rshift_round(x0*c - x1*s, 16)``, ``rshift_round(x0*s + x1*c, 16)``,
    saturated; ``cos``/``sin`` Q1.16 from :class:`~hw.decode.funcs.SinCosUnit`.
    """

    def __init__(self, *, max_head_dim: int, sin_table: list[int], phase_frac: int = 48):
        self.max_pairs = max_head_dim // 2
        self.sin_table, self.phase_frac = sin_table, phase_frac
        super().__init__({
            "cmd": In(stream.Signature(RopeCommand())),
            "consts": In(stream.Signature(64)),
            "x": In(stream.Signature(signed(32))),
            "o_valid": Out(1), "y": Out(signed(32)), "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.sc = sc = SinCosUnit(self.sin_table)
        tab_layout = data.StructLayout({"cos": signed(18), "sin": signed(18)})
        m.submodules.tab = tab = Memory(shape=tab_layout, depth=self.max_pairs, init=[])
        tw, tr = tab.write_port(), tab.read_port(domain="comb")
        cmd = Signal(RopeCommand())
        k = Signal(9)          # pairs handed to sin/cos, then pair index per head
        got = Signal(9)        # table entries written
        head = Signal(8)
        half_sel = Signal()    # second element of a pair
        x0 = Signal(signed(32))
        pairs = Signal(9)
        m.d.comb += pairs.eq(cmd.head_dim >> 1)
        ph = Signal(64)
        m.d.comb += ph.eq((cmd.pos * self.consts.payload) >> (self.phase_frac - 32))
        m.d.comb += [sc.phase.eq(ph[:32]), tw.addr.eq(got), tw.data.cos.eq(sc.cos), tw.data.sin.eq(sc.sin),
                     tw.en.eq(sc.o_valid)]
        with m.If(sc.o_valid):
            m.d.sync += got.eq(got + 1)
        # rotate: a pair is complete when its second element arrives
        v1 = Signal()
        x0_1, x1_1 = Signal(signed(32)), Signal(signed(32))
        c1, s1 = Signal(signed(18)), Signal(signed(18))
        v2, v3, pend = Signal(), Signal(), Signal()
        m.d.sync += v1.eq(0)
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.cmd.ready.eq(1)
                with m.If(self.cmd.valid):
                    m.d.sync += [cmd.eq(self.cmd.payload), k.eq(0), got.eq(0), self.busy.eq(1)]
                    m.next = "PHASES"
            with m.State("PHASES"):
                m.d.comb += [self.consts.ready.eq(1), sc.i_valid.eq(self.consts.valid)]
                with m.If(self.consts.valid):
                    m.d.sync += k.eq(k + 1)
                    with m.If(k == pairs - 1):
                        m.next = "TABLE"
            with m.State("TABLE"):
                with m.If(got == pairs):
                    m.d.sync += [k.eq(0), head.eq(0), half_sel.eq(0)]
                    m.next = "ROTATE"
            with m.State("ROTATE"):
                m.d.comb += [self.x.ready.eq(1), tr.addr.eq(k)]
                with m.If(self.x.valid):
                    m.d.sync += half_sel.eq(~half_sel)
                    with m.If(~half_sel):
                        m.d.sync += x0.eq(self.x.payload)
                    with m.Else():
                        m.d.sync += [v1.eq(1), x0_1.eq(x0), x1_1.eq(self.x.payload),
                                     c1.eq(tr.data.cos), s1.eq(tr.data.sin), k.eq(k + 1)]
                        with m.If(k == pairs - 1):
                            m.d.sync += [k.eq(0), head.eq(head + 1)]
                            with m.If(head == cmd.heads - 1):
                                m.next = "DRAIN"
            with m.State("DRAIN"):
                with m.If(~v1 & ~v2 & ~v3 & ~pend):
                    m.d.sync += self.busy.eq(0)
                    m.next = "IDLE"
        # 4 products, then the two rounded sums; the pair leaves over two cycles
        a2, b2, c2, d2 = (Signal(signed(50), name=f"prod_{n}") for n in "abcd")
        m.d.sync += [v2.eq(v1), a2.eq(x0_1 * c1), b2.eq(x1_1 * s1), c2.eq(x0_1 * s1), d2.eq(x1_1 * c1)]
        r0, r1 = Signal(signed(52)), Signal(signed(52))
        m.d.sync += [v3.eq(v2), r0.eq(rr(a2 - b2, 16)), r1.eq(rr(c2 + d2, 16))]
        y0, y1 = sat32(m, r0, "y0"), sat32(m, r1, "y1")
        second = Signal(signed(32))
        m.d.sync += [self.o_valid.eq(0), pend.eq(0)]
        with m.If(v3):
            m.d.sync += [self.o_valid.eq(1), self.y.eq(y0), second.eq(y1), pend.eq(1)]
        with m.Elif(pend):
            m.d.sync += [self.o_valid.eq(1), self.y.eq(second)]
        return m


class ElementwiseCommand(data.StructLayout):
    def __init__(self):
        super().__init__({"n": 16, "op": 1})


class ElementwiseUnit(wiring.Component):
    """ADD (:func:`ref_model.decode.residual_add`) and SWIGLU (:func:`~ref_model.decode.swiglu`).

    Members
    -------
    cmd : In(stream of ElementwiseCommand): ``n`` elements; ``op`` 0 = ADD, 1 = SWIGLU.
    a, b : In(streams of signed(32)): ``x``/``y`` for ADD, ``g``/``u`` for SWIGLU.
    o_valid, y : Out: ``sat32(a + b)``, or ``sat32(rshift_round(silu(sat32(a << (16-frac)))
        * b, 16))``. One element per cycle; latency 1 (ADD) or 8 (SWIGLU).
    """

    def __init__(self, *, frac: int, sigmoid_table: list[int]):
        self.frac, self.sigmoid_table = frac, sigmoid_table
        super().__init__({
            "cmd": In(stream.Signature(ElementwiseCommand())),
            "a": In(stream.Signature(signed(32))),
            "b": In(stream.Signature(signed(32))),
            "o_valid": Out(1), "y": Out(signed(32)), "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.sig = sg = SigmoidUnit(self.sigmoid_table)
        n = Signal(16)
        i = Signal(16)
        op = Signal()
        take = Signal()
        m.d.comb += take.eq(self.a.valid & self.b.valid)
        g16 = Signal(signed(48))
        m.d.comb += g16.eq(self.a.payload << (16 - self.frac))
        add_v, v6, v7, pipe_busy = Signal(), Signal(), Signal(), Signal()
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.cmd.ready.eq(1)
                with m.If(self.cmd.valid):
                    m.d.sync += [n.eq(self.cmd.payload.n), op.eq(self.cmd.payload.op), i.eq(0), self.busy.eq(1)]
                    m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += [self.a.ready.eq(self.b.valid), self.b.ready.eq(self.a.valid)]
                with m.If(take):
                    m.d.sync += i.eq(i + 1)
                    with m.If(i == n - 1):
                        m.next = "DRAIN"
            with m.State("DRAIN"):
                with m.If(~(add_v | sg.o_valid | v6 | v7 | self.o_valid | pipe_busy)):
                    m.d.sync += self.busy.eq(0)
                    m.next = "IDLE"
        run = Signal()
        m.d.comb += run.eq(take & self.a.ready)   # a.ready is high only in RUN
        # ADD: one cycle
        add_y = Signal(signed(32))
        m.d.sync += [add_v.eq(run & ~op), add_y.eq(sat32(m, self.a.payload + self.b.payload, "sum_sat"))]
        # SWIGLU: saturate g to int32 Q.16, silu (5 cycles), times u, rounded, saturated
        m.d.comb += [sg.i_valid.eq(run & op), sg.x.eq(sat32(m, g16, "g16"))]
        u_late = delay(m, self.b.payload, sg.LATENCY, "u")
        # SigmoidUnit's own valid chain: anything still inside it keeps the unit busy
        inflight = [run & op]
        for k in range(1, sg.LATENCY):
            inflight.append(delay(m, inflight[-1], 1, f"in{k}"))
        m.d.comb += pipe_busy.eq(Cat(*inflight[1:]).any())
        p6 = Signal(signed(66))
        m.d.sync += [v6.eq(sg.o_valid), p6.eq(sg.silu * u_late)]
        r7 = Signal(signed(66))
        m.d.sync += [v7.eq(v6), r7.eq(rr(p6, 16))]
        swi = sat32(m, r7, "swi_sat")
        m.d.sync += [self.o_valid.eq(add_v | v7), self.y.eq(Mux(v7, swi, add_y))]
        return m


class ArgmaxUnit(wiring.Component):
    """:func:`ref_model.decode.argmax`: index of the largest int32, lowest index on ties.

    ``i_valid``/``x`` one element per cycle (a push input: it snoops the LM head's output);
    ``start`` clears it; ``index`` and ``value`` hold the running result."""

    def __init__(self, index_bits: int = 17):
        super().__init__({"start": In(1), "i_valid": In(1), "x": In(signed(32)),
                          "index": Out(index_bits), "value": Out(signed(32))})

    def elaborate(self, platform):
        m = Module()
        count = Signal.like(self.index)
        with m.If(self.start):
            m.d.sync += [count.eq(0), self.index.eq(0), self.value.eq(INT32_MIN)]
        with m.Elif(self.i_valid):
            m.d.sync += count.eq(count + 1)
            with m.If((count == 0) | (self.x > self.value)):
                m.d.sync += [self.index.eq(count), self.value.eq(self.x)]
        return m
