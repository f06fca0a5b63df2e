"""Fixed-point function units of the decode engine: rsqrt, reciprocal, exp, sin/cos, sigmoid.

Each unit is the gateware twin of the :mod:`ref_model.fixedpoint` function of the same
name, bit for bit: table lookup with linear interpolation, Newton steps where the
reference has them, round-half-up shifts. Units are fully pipelined (one input per
cycle, no stalls): ``i_valid`` with the inputs, ``o_valid`` with the outputs ``LATENCY``
cycles later. ROM contents are parameters (the generator passes
:func:`ref_model.fixedpoint.rom_tables`), so the tables exist in one place.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .products import Pipe

TAB_FRAC = 24
MANT_FRAC = 23


def rr(v, s: int):
    """``rshift_round(v, s)`` for a constant ``s > 0``: add half, arithmetic shift."""
    return (v + (1 << (s - 1))) >> s


def _msb_tree(x):
    """``(nonzero, index of the highest set bit)`` of ``x`` (width a power of two): at each
    level the upper half's index is ``Cat(i_hi, 1)``, wiring rather than an adder, so the
    tree is log2(width) levels of 2:1 muxes."""
    w = len(x)
    if w == 1:
        return x[0], Const(0, 0)
    h = w // 2
    nz_lo, i_lo = _msb_tree(x[:h])
    nz_hi, i_hi = _msb_tree(x[h:])
    return nz_lo | nz_hi, Mux(nz_hi, Cat(i_hi, Const(1, 1)), Cat(i_lo, Const(0, 1)))


def bit_length(m: Module, x, width: int, name: str) -> Signal:
    """Highest set bit + 1 (0 for 0): a priority encoder over ``width`` bits, built as a
    balanced tree of 2:1 muxes (log2 ``width`` levels rather than a ``width``-long chain)
    and one small final increment."""
    bl = Signal(range(width + 1), name=name)
    p2 = 1 << max(width - 1, 0).bit_length()
    xv = Value.cast(x)[:width]
    nz, idx = _msb_tree(Cat(xv, Const(0, p2 - width)) if p2 > width else xv)
    m.d.comb += bl.eq(Mux(nz, idx + 1, 0))
    return bl


def _rom(m: Module, name: str, table: list[int], ports: int):
    bits = max(max(table).bit_length(), 1)
    mem = Memory(shape=bits, depth=len(table), init=table)
    m.submodules[name] = mem
    return [mem.read_port() for _ in range(ports)]


def _slope_rom(m: Module, name: str, table: list[int]):
    """One read port giving ``(t[i], t[min(i+1, last)] - t[i])``: the interpolation base and
    slope in one word (the slope's width is the table's: 17-19 bits signed for the
    reference tables, so the interpolation product is one MULT18X18D or close)."""
    last = len(table) - 1
    slopes = [table[min(i + 1, last)] - table[i] for i in range(len(table))]
    abits = max(max(table).bit_length(), 1)
    sbits = max(max(abs(v) for v in slopes).bit_length() + 1, 2)
    layout = data.StructLayout({"a": abits, "d": signed(sbits)})
    mem = Memory(shape=layout, depth=len(table), init=[{"a": a, "d": d} for a, d in zip(table, slopes)])
    m.submodules[name] = mem
    return mem.read_port()


class _Unit(wiring.Component):
    LATENCY = 0

    def _valid_chain(self, m: Module) -> None:
        v = self.i_valid
        for k in range(self.LATENCY):
            nv = Signal(name=f"v{k + 1}")
            m.d.sync += nv.eq(v)
            v = nv
        m.d.comb += self.o_valid.eq(v)


def _norm_shift(x, e):
    """``x >> e`` for ``e >= 0``, ``x << -e`` otherwise (``e`` signed, ``|e| < 64``)."""
    return Mux(e >= 0, x >> e.as_unsigned()[:6], x << (-e).as_unsigned()[:6])


class RsqrtUnit(_Unit):
    """:func:`ref_model.fixedpoint.rsqrt`: ``x`` uint 1..2**62 -> ``m`` Q1.23 in
    [2**22, 2**23], shift ``s`` (``1/sqrt(x) ~= m * 2**-s``). Latency 26.

    Stages: bit length (balanced tree), even exponent, normalize, table (base and slope in
    one word), interpolation product, one Newton step ``y*(3 - m*y*y)/2`` as three split
    products (:meth:`Pipe.mul`: one MULT18X18D each, the narrow pieces in LUTs), clamp,
    shift; every product and every round in a cycle of its own (>= 100 MHz on ECP5)."""

    LATENCY = 26

    def __init__(self, table: list[int]):
        self.table = table
        super().__init__({"i_valid": In(1), "x": In(63), "o_valid": Out(1), "m": Out(24), "s": Out(signed(8))})

    def elaborate(self, platform):
        m = Module()
        self._valid_chain(m)
        rom = _slope_rom(m, "tab", self.table)
        P = Pipe(m, platform=platform)
        x1 = P.reg(self.x, 0, "x1")
        bl2 = P.reg(bit_length(m, x1, 63, "bl"), 1, "bl2")
        e_raw = Signal(signed(8))
        m.d.comb += e_raw.eq(bl2 - 24)
        e3 = P.reg(e_raw + e_raw[0], 2, "e3", signed(8))        # exponent rounded up to even
        xn4 = P.reg(_norm_shift(P.at(x1, 3), e3), 3, "xn4", 24)  # in [2**22, 2**24)
        m.d.comb += rom.addr.eq(xn4[16:] - 64)                    # (xn - 2**22) >> 16
        a6 = P.reg(rom.data.a, 5, "a6")
        d6 = P.reg(rom.data.d, 5, "d6")
        d, k = P.mul(d6, P.at(xn4, 6)[:16], 6, "ip", signed(42))
        y = P.reg(rr(P.at(a6, k) + rr(d, 16), 1), k, "y", 25)    # Q.23
        k += 1
        yy, k2 = P.mul(y, y, k, "yy", 50, lut_bits=9)
        y26 = P.reg(rr(yy, MANT_FRAC), k2, "y26", 26)
        my, k3 = P.mul(P.at(xn4, k2 + 1), y26, k2 + 1, "my", 50, lut_bits=9)
        my27 = Signal(27)
        m.d.comb += my27.eq(rr(my, 22))
        t = P.reg((3 << MANT_FRAC) - my27, k3, "t", signed(28))
        p, k4 = P.mul(P.at(y, k3 + 1), t, k3 + 1, "yt", signed(54), lut_bits=9)
        y8 = P.reg(rr(p, MANT_FRAC + 1), k4, "y8", signed(27))
        lo, hi = 1 << (MANT_FRAC - 1), 1 << MANT_FRAC
        y9 = P.reg(Mux(y8 < lo, lo, Mux(y8 > hi, hi, y8)), k4 + 1, "y9", 24)
        e9 = P.at(e3, k4 + 2)
        m.d.sync += [self.m.eq(y9), self.s.eq(MANT_FRAC + 11 + (e9 >> 1))]
        assert k4 + 3 == self.LATENCY, k4 + 3
        return m


class ReciprocalUnit(_Unit):
    """:func:`ref_model.fixedpoint.reciprocal`: ``x`` uint 1..2**62 -> ``m`` Q1.23,
    shift ``s`` (``1/x ~= m * 2**-s``). Latency 22.

    Fully pipelined (one input per cycle). Stages as :class:`RsqrtUnit`'s: bit length,
    normalize, table, interpolation, one Newton step ``y*(2 - m*y)`` as split products,
    clamp."""

    LATENCY = 22

    def __init__(self, table: list[int]):
        self.table = table
        super().__init__({"i_valid": In(1), "x": In(63), "o_valid": Out(1), "m": Out(24), "s": Out(signed(8))})

    def elaborate(self, platform):
        m = Module()
        self._valid_chain(m)
        rom = _slope_rom(m, "tab", self.table)
        P = Pipe(m, platform=platform)
        x1 = P.reg(self.x, 0, "x1")
        bl2 = P.reg(bit_length(m, x1, 63, "bl"), 1, "bl2")
        e3 = P.reg(bl2 - 24, 2, "e3", signed(8))
        xn4 = P.reg(_norm_shift(P.at(x1, 3), e3), 3, "xn4", 24)  # in [2**23, 2**24)
        m.d.comb += rom.addr.eq(xn4[17:] - 64)                    # (xn - 2**23) >> 17
        a6 = P.reg(rom.data.a, 5, "a6")
        d6 = P.reg(rom.data.d, 5, "d6")
        d, k = P.mul(d6, P.at(xn4, 6)[:17], 6, "ip", signed(43), lut_bits=2)
        y = P.reg(rr(P.at(a6, k) + rr(d, 17), 1), k, "y", 25)
        k += 1
        my, k2 = P.mul(P.at(xn4, k), y, k, "my", 49, lut_bits=9)
        my26 = Signal(26)
        m.d.comb += my26.eq(rr(my, 23))
        t = P.reg((2 << MANT_FRAC) - my26, k2, "t", signed(27))
        p, k3 = P.mul(P.at(y, k2 + 1), t, k2 + 1, "yt", signed(53), lut_bits=9)
        y7 = P.reg(rr(p, MANT_FRAC), k3, "y7", signed(27))
        lo, hi = 1 << (MANT_FRAC - 1), 1 << MANT_FRAC
        y8 = P.reg(Mux(y7 < lo, lo, Mux(y7 > hi, hi, y7)), k3 + 1, "y8", 24)
        e8 = P.at(e3, k3 + 2)
        m.d.sync += [self.m.eq(y8), self.s.eq(MANT_FRAC + 23 + e8)]
        assert k3 + 3 == self.LATENCY, k3 + 3
        return m


class ExpNegUnit(_Unit):
    """:func:`ref_model.fixedpoint.exp_neg`: ``x`` Q.16 int32 <= 0 -> ``y`` Q0.16 in
    [0, 65536]. Latency 12, fully pipelined.

    ``-x >= 2**20`` (``x <= -16.0``) gives 0 exactly (``n >= 23``, the final shift
    exceeds the table value's bits), so the ``-x * log2(e)`` product takes 20 x 31 bits:
    two MULT18X18D and a 3-bit piece in LUTs. The interpolation slope is 17 bits
    (base and slope in one ROM word): one MULT18X18D."""

    LATENCY = 12

    def __init__(self, table: list[int], log2e_q30: int):
        self.table, self.log2e = table, log2e_q30
        super().__init__({"i_valid": In(1), "x": In(signed(32)), "o_valid": Out(1), "y": Out(17)})

    def elaborate(self, platform):
        m = Module()
        self._valid_chain(m)
        rom = _slope_rom(m, "tab", self.table)
        P = Pipe(m, platform=platform)
        nx = Signal(32)
        m.d.comb += nx.eq((-self.x).as_unsigned()[:32])
        nx1 = P.reg(nx[:20], 0, "nx1")
        big1 = P.reg(nx[20:] != 0, 0, "big1")
        tp, k = P.mul(nx1, Const(self.log2e, 31), 1, "t", 51, lut_bits=3)
        t = P.reg(rr(tp, 22), k, "t", 40)        # Q.24
        k += 1
        m.d.comb += rom.addr.eq(t[16:24])
        n = P.reg(t[24:], k, "n", 16)
        a = P.reg(rom.data.a, k + 1, "a")
        dd = P.reg(rom.data.d, k + 1, "dd")
        d, k2 = P.mul(dd, P.at(t, k + 2)[:16], k + 2, "ip", signed(34))
        y4 = P.reg(P.at(a, k2) + rr(d, 16), k2, "y4", 25)
        n2 = P.at(n, k2)
        sh = P.reg(Mux(n2 + 8 > 62, 62, n2 + 8), k2, "sh", range(63))
        half = Signal(63)
        m.d.comb += half.eq(Const(1, 63) << (sh - 1)[:6])
        ys = P.reg(y4 + half, k2 + 1, "ys", 63)
        k3 = k2 + 2
        m.d.sync += self.y.eq(Mux(P.at(big1, k3), 0, ys >> P.at(sh, k3)))
        assert k3 + 1 == self.LATENCY, k3 + 1
        return m


class SinCosUnit(_Unit):
    """:func:`ref_model.fixedpoint.sincos`: phase uint32 turns -> ``cos``, ``sin`` Q1.16
    signed (18-bit). Latency 9, fully pipelined.

    Two ROM ports (base and slope in one word); the 18-bit slope times the 22-bit fraction
    is one MULT18X18D and a 5-bit piece in LUTs, per output."""

    LATENCY = 9

    def __init__(self, table: list[int]):
        self.table = table
        super().__init__({"i_valid": In(1), "phase": In(32), "o_valid": Out(1),
                          "cos": Out(signed(18)), "sin": Out(signed(18))})

    def elaborate(self, platform):
        m = Module()
        self._valid_chain(m)
        mem_s = _slope_rom(m, "tab", self.table)
        # a second port on the same table: the memory is shared
        mem = m.submodules["tab"]
        mem_c = mem.read_port()
        top = len(self.table) - 1
        P = Pipe(m, platform=platform)
        # 1: quadrant and the two quarter-wave arguments
        quad1 = P.reg(self.phase[30:], 0, "quad1")
        r1 = P.reg(self.phase[:30], 0, "r1", 30)
        rc1 = P.reg((1 << 30) - self.phase[:30], 0, "rc1", 31)
        for port, p in ((mem_s, r1), (mem_c, rc1)):
            idx = p[22:]
            m.d.comb += port.addr.eq(Mux(idx > top, top, idx))
        as3 = P.reg(mem_s.data.a, 2, "as3")
        ds3 = P.reg(mem_s.data.d, 2, "ds3")
        ac3 = P.reg(mem_c.data.a, 2, "ac3")
        dc3 = P.reg(mem_c.data.d, 2, "dc3")
        ds, k = P.mul(ds3, P.at(r1, 3)[:22], 3, "ips", signed(48), lut_bits=5)
        dc, _ = P.mul(dc3, P.at(rc1, 3)[:22], 3, "ipc", signed(48), lut_bits=5)
        s4 = P.reg(P.at(as3, k) + rr(ds, 22), k, "s4", signed(26))
        c4 = P.reg(P.at(ac3, k) + rr(dc, 22), k, "c4", signed(26))
        quad4 = P.at(quad1, k + 1)
        sin5, cos5 = Signal(signed(26)), Signal(signed(26))
        with m.Switch(quad4):
            with m.Case(0):
                m.d.comb += [sin5.eq(s4), cos5.eq(c4)]
            with m.Case(1):
                m.d.comb += [sin5.eq(c4), cos5.eq(-s4)]
            with m.Case(2):
                m.d.comb += [sin5.eq(-s4), cos5.eq(-c4)]
            with m.Case(3):
                m.d.comb += [sin5.eq(-c4), cos5.eq(s4)]
        sn = P.reg(sin5, k + 1, "sn")
        cs = P.reg(cos5, k + 1, "cs")
        m.d.sync += [self.sin.eq(rr(sn, 8)), self.cos.eq(rr(cs, 8))]
        assert k + 3 == self.LATENCY, k + 3
        return m


class SigmoidUnit(_Unit):
    """:func:`ref_model.fixedpoint.sigmoid` and :func:`~ref_model.fixedpoint.silu`:
    ``x`` Q.16 int32 -> ``sig`` Q0.16 in [0, 65536] and ``silu = rshift_round(x*sig, 16)``
    int32 Q.16. Latency 12, fully pipelined (base and slope in one ROM word; ``x*sig`` as a
    split, registered product)."""

    LATENCY = 12

    def __init__(self, table: list[int]):
        self.table = table
        super().__init__({"i_valid": In(1), "x": In(signed(32)), "o_valid": Out(1),
                          "sig": Out(17), "silu": Out(signed(34))})

    def elaborate(self, platform):
        m = Module()
        self._valid_chain(m)
        rom = _slope_rom(m, "tab", self.table)
        last = len(self.table) - 1
        P = Pipe(m, platform=platform)
        x1 = P.reg(self.x, 0, "x1")
        ax1 = P.reg(Mux(self.x < 0, -self.x, self.x), 0, "ax1", 32)
        # the clamped table index registered before it addresses the ROM (BRAM address setup)
        top1 = Signal()
        m.d.comb += top1.eq(ax1[10:] >= last)
        idx2 = P.reg(Mux(top1, last, ax1[10:]), 1, "idx2", range(last + 1))
        fr2 = P.reg(Mux(top1, 0, ax1[:10]), 1, "fr2", 10)
        m.d.comb += rom.addr.eq(idx2)
        a3 = P.reg(rom.data.a, 3, "a3")
        d3 = P.reg(rom.data.d, 3, "d3")
        d, k = P.mul(d3, P.at(fr2, 4), 4, "ip", signed(36))
        x4 = P.at(x1, k)
        y = Signal(26)
        m.d.comb += y.eq(P.at(a3, k) + rr(d, 10))
        y4 = P.reg(Mux(x4 < 0, (1 << TAB_FRAC) - y, y), k, "y4", 25)
        sig = P.reg(rr(y4, 8), k + 1, "sig", 17)
        p, k2 = P.mul(P.at(x1, k + 2), sig, k + 2, "silu", signed(50))
        m.d.sync += [self.sig.eq(P.at(sig, k2)), self.silu.eq(rr(p, 16))]
        assert k2 + 1 == self.LATENCY, k2 + 1
        return m


def scale_rom(scale_bits: int) -> list[int]:
    """``round(2**(b+16)/m)`` for ``m`` in ``[2**(b-1), 2**b)`` (index ``m``; low half 0;
    18-bit entries): the reciprocal ROM of :func:`ref_model.decode.act_scale_rom`."""
    n = 1 << scale_bits
    return [0] * (n // 2) + [((1 << (scale_bits + 17)) // m + 1) >> 1 for m in range(n // 2, n)]


class MantScaleUnit(_Unit):
    """The mantissa scale of :func:`ref_model.decode._mant_scale` (activation and KV
    quantizers): ``amax`` uint32 and ``cmul = round(2**24/qmax)`` -> ``man`` (``b`` bits),
    ``s`` (signed), and the reciprocal ``rcp = R[man]`` (18 bits).

    ``r = amax*cmul``; ``s = bit_length(r) - b``; ``man = ceil(r/2**s)`` (a carry to
    ``2**b`` gives ``man/2``, ``s+1``); ``amax = 0``: ``man = 2**(b-1)``, ``s = -16``.
    Needs ``s > 0`` for non-zero ``amax`` (true for ``cmul >= 2**(b+1)``). Latency 10: the
    32 x 25 product is split (:meth:`Pipe.mul`: two MULT18X18D, the 7-bit pieces in LUTs)
    and registered before the bit length, each shift and add in a stage of its own."""

    LATENCY = 10

    def __init__(self, scale_bits: int):
        self.b = scale_bits
        super().__init__({"i_valid": In(1), "amax": In(32), "cmul": In(25), "o_valid": Out(1),
                          "man": Out(scale_bits), "s": Out(signed(8)), "rcp": Out(18)})

    def elaborate(self, platform):
        m = Module()
        b = self.b
        self._valid_chain(m)
        (rom,) = _rom(m, "rom", scale_rom(b), 1)
        P = Pipe(m, platform=platform)
        z1 = P.reg(self.amax == 0, 0, "z1")
        r, k = P.mul(self.amax, self.cmul, 0, "r", 57, lut_bits=7)
        s2 = P.reg(bit_length(m, r, 57, "bl") - b, k, "s2", signed(8))
        up = P.reg(Mux(s2 > 0, s2, 0), k + 1, "up", range(64))
        rp = P.reg(P.at(r, k + 2) + (Const(1, 57) << up) - 1, k + 2, "rp", 58)
        man4 = P.reg(rp >> P.at(up, k + 3), k + 3, "man4", b + 1)
        z4, s4 = P.at(z1, k + 4), P.at(s2, k + 4)
        man5 = Signal(b)
        s5 = Signal(signed(8))
        with m.If(z4):
            m.d.sync += [man5.eq(1 << (b - 1)), s5.eq(-16)]
        with m.Elif(man4[b]):
            m.d.sync += [man5.eq(man4 >> 1), s5.eq(s4 + 1)]
        with m.Else():
            m.d.sync += [man5.eq(man4), s5.eq(s4)]
        m.d.comb += rom.addr.eq(man5)
        m.d.sync += [self.man.eq(man5), self.s.eq(s5)]
        m.d.comb += self.rcp.eq(rom.data)   # the synchronous ROM read lines up with the registers
        assert k + 6 == self.LATENCY, k + 6
        return m
