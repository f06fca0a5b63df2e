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

from ..pipeline import delay
from .funcs import RsqrtUnit, SigmoidUnit, SinCosUnit, rr
from .products import Pipe, registered_product

INT32_MAX, INT32_MIN = (1 << 31) - 1, -(1 << 31)


def sat32(m: Module, v, name: str) -> Signal:
    """Saturate a signed value to int32 (combinational)."""
    out = Signal(signed(32), name=name)
    m.d.comb += out.eq(Mux(v > INT32_MAX, INT32_MAX, Mux(v < INT32_MIN, INT32_MIN, v)))
    return out


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
        half = Signal(57)
        h = self.x.payload
        take1, take2 = Signal(), Signal()   # pass 1 / pass 2 element accepted this cycle
        # pass 1: the square as lo*lo + 2*lo*hi*2**17 + hi*hi*2**34 (3 MULT18X18D, the
        # cross product once) of the registered element (the input slot's mux straight into
        # the DSPs, far away in the engine, was a long path), registered; then summed,
        # truncated; then accumulated
        P = Pipe(m, "sq_", platform=platform)
        sq_v1 = P.reg(take1, 0, "v1")
        # (registered_product: the element's and the products' registers, on an ECP5 the
        # MULT18X18D's own)
        lo, hi = h[:17], h[17:].as_signed()
        sq_ll = registered_product(m, lo, lo, platform=platform, name="sq_ll")
        sq_lh = registered_product(m, lo, hi, platform=platform, name="sq_lh")
        sq_hh = registered_product(m, hi, hi, platform=platform, name="sq_hh")
        sq = P.reg((sq_ll + (sq_lh << 18) + (sq_hh << 34)) >> self.ss_shift, 2, "sq", 64)
        sq_v2, sq_v3 = P.at(sq_v1, 2), P.at(sq_v1, 3)
        with m.If(sq_v3):
            m.d.sync += ss.eq(ss + sq)
        # pass 2: h*m -> + half -> >> shift -> *gain -> rounded, saturated; every product
        # split and registered (Pipe.mul), every add and shift in a stage of its own
        Q = Pipe(m, "sc_", platform=platform)
        v1 = Q.reg(take2, 0, "v1")
        g1 = Q.reg(self.gain.payload, 0, "g1")
        p, k = Q.mul(h, mant, 0, "hm", signed(57), lut_bits=7)
        ph = Q.reg(p + half, k, "ph", signed(58))
        # the 58-bit barrel shift in two registered steps: by 8*shift[3:], then shift[:3]
        phc = Q.reg(ph >> Cat(Const(0, 3), shift[3:]), k + 1, "phc", signed(58))
        t = Q.reg(phc >> shift[:3], k + 2, "t", signed(40))
        q, k2 = Q.mul(t, Q.at(g1, k + 3), k + 3, "tg", signed(72), lut_bits=6)
        r = Q.reg(rr(q, self.gain_frac + 8), k2, "r", signed(72))
        y = sat32(m, r, "y_sat")
        m.d.sync += [self.o_valid.eq(Q.at(v1, k2 + 1)), self.y.eq(y)]
        in_flight = Cat(*(Q.at(v1, j) for j in range(1, k2 + 2)))
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.cmd.ready.eq(1)
                with m.If(self.cmd.valid):
                    m.d.sync += [n.eq(self.cmd.payload.n), eps.eq(self.cmd.payload.eps), i.eq(0), ss.eq(0),
                                 self.busy.eq(1)]
                    m.next = "SQUARES"
            with m.State("SQUARES"):
                m.d.comb += [self.x.ready.eq(1), take1.eq(self.x.valid)]
                with m.If(self.x.valid):
                    m.d.sync += i.eq(i + 1)
                    with m.If(i == n - 1):
                        m.next = "SUM"
            with m.State("SUM"):   # until the last square is in ss
                with m.If(~sq_v1 & ~sq_v2 & ~sq_v3):
                    m.next = "RSQRT"
            with m.State("RSQRT"):
                m.d.comb += [rsq.i_valid.eq(1), rsq.x.eq(ss + eps)]
                m.next = "WAIT"
            with m.State("WAIT"):
                with m.If(rsq.o_valid):
                    sh = Signal(range(64))
                    m.d.comb += sh.eq(rsq.s + self.ss_shift // 2 - self.frac - 8)
                    m.d.sync += [mant.eq(rsq.m), i.eq(0), shift.eq(sh),
                                 half.eq(Const(1, 57) << (sh - 1)[:6])]
                    m.next = "SCALE"
            with m.State("SCALE"):
                m.d.comb += [self.x.ready.eq(self.gain.valid), self.gain.ready.eq(self.x.valid)]
                with m.If(self.x.valid & self.gain.valid):
                    m.d.comb += take2.eq(1)
                    m.d.sync += i.eq(i + 1)
                    with m.If(i == n - 1):
                        m.next = "DRAIN"
            with m.State("DRAIN"):
                with m.If(~self.o_valid & (in_flight == 0)):
                    m.d.sync += self.busy.eq(0)
                    m.next = "IDLE"
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
        # phase = (pos * c) >> 16 mod 2**32: only the product's low 48 bits matter; pos (14
        # bits) is one operand, so the product is 14 LUT rows (no DSP), registered twice
        Ph = Pipe(m, "ph_", platform=platform)
        c_take = Signal()
        ph, kph = Ph.mul(self.consts.payload[:48], cmd.pos, 0, "ph", 48, lut_bits=14)
        ph_v1 = Ph.reg(c_take, 0, "v")
        ph_v = Ph.at(ph_v1, kph)
        ph_inflight = Cat(*(Ph.at(ph_v1, j) for j in range(1, kph + 1)))
        m.d.comb += [sc.i_valid.eq(ph_v), sc.phase.eq(ph[self.phase_frac - 32:]),
                     tw.addr.eq(got), tw.data.cos.eq(sc.cos), tw.data.sin.eq(sc.sin), tw.en.eq(sc.o_valid)]
        with m.If(sc.o_valid):
            m.d.sync += got.eq(got + 1)
        # rotate: a pair is complete when its second element arrives
        v1 = Signal()
        x0_1, x1_1 = Signal(signed(32)), Signal(signed(32))
        c1, s1 = Signal(signed(18)), Signal(signed(18))
        pend = Signal()
        m.d.sync += v1.eq(0)
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.cmd.ready.eq(1)
                with m.If(self.cmd.valid):
                    m.d.sync += [cmd.eq(self.cmd.payload), k.eq(0), got.eq(0), self.busy.eq(1)]
                    m.next = "PHASES"
            with m.State("PHASES"):
                m.d.comb += [self.consts.ready.eq(1), c_take.eq(self.consts.valid)]
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
                with m.If(~v1 & ~pend):
                    m.d.sync += self.busy.eq(0)
                    m.next = "IDLE"
        # a pair arrives at most every other cycle, so two products serve it over two cycles:
        # x0*c - x1*s, then x0*s + x1*c (4 MULT18X18D instead of 8), one element out per cycle
        R = Pipe(m, "rot_", platform=platform)
        v1d = Signal()
        m.d.sync += v1d.eq(v1)
        sel = v1d                      # second element of the pair
        go = R.reg(v1 | v1d, 0, "go")
        neg = R.reg(~sel, 0, "neg")
        xa = R.reg(x0_1, 0, "xa")
        xb = R.reg(x1_1, 0, "xb")
        ca = R.reg(Mux(sel, s1, c1), 0, "ca")
        cb = R.reg(Mux(sel, c1, s1), 0, "cb")
        pa, k = R.mul(xa, ca, 1, "pa", signed(50))
        pb, _ = R.mul(xb, cb, 1, "pb", signed(50))
        r = R.reg(rr(Mux(R.at(neg, k), pa - pb, pa + pb), 16), k, "r", signed(52))
        yv = sat32(m, r, "y_rot")
        m.d.sync += [self.o_valid.eq(R.at(go, k + 1)), self.y.eq(yv)]
        m.d.comb += pend.eq(Cat(v1d, *(R.at(go, j) for j in range(1, k + 2))).any() | ph_inflight.any())
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
        * b, 16))``. One element per cycle; latency 1 (ADD) or ``SigmoidUnit.LATENCY`` + 6
        (SWIGLU, 16: the product split and registered).
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
        # the saturated g registered before the sigmoid unit (its first stage negates it)
        sg_v = Signal()
        m.d.sync += [sg_v.eq(run & op), sg.x.eq(sat32(m, g16, "g16"))]
        m.d.comb += sg.i_valid.eq(sg_v)
        u_late = delay(m, self.b.payload, sg.LATENCY + 1, 1, name="u")
        # SigmoidUnit's own valid chain: anything still inside it keeps the unit busy
        inflight = [run & op]
        for k in range(1, sg.LATENCY + 1):
            inflight.append(delay(m, inflight[-1], 1, 1, name=f"in{k}"))
        m.d.comb += pipe_busy.eq(Cat(*inflight[1:]).any())
        # silu * u: a split, registered product (4 MULT18X18D), then the round, then saturate
        E = Pipe(m, "sw_", platform=platform)
        sv = E.reg(sg.o_valid, 0, "v")
        silu = E.reg(sg.silu, 0, "silu")
        u = E.reg(u_late, 0, "u")
        p6, k = E.mul(silu, u, 1, "p", signed(66))
        r7 = E.reg(rr(p6, 16), k, "r", signed(66))
        m.d.comb += v7.eq(E.at(sv, k + 1))
        m.d.comb += v6.eq(Cat(*(E.at(sv, j) for j in range(1, k + 1))).any())
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
