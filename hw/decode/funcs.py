"""Fixed-point function units of the decode engine: rsqrt, reciprocal, exp, sin/cos, sigmoid.

Each unit is the gateware twin of the :mod:`ref_model.fixedpoint` function of the same
name, bit for bit: table lookup with linear interpolation, Newton steps where the
reference has them, round-half-up shifts. Units are fully pipelined (one input per
cycle, no stalls): ``i_valid`` with the inputs, ``o_valid`` with the outputs ``LATENCY``
cycles later. ROM contents are parameters (the generator passes
:func:`ref_model.fixedpoint.rom_tables`), so the tables exist in one place.
"""

from amaranth.hdl import Const, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

TAB_FRAC = 24
MANT_FRAC = 23


def rr(v, s: int):
    """``rshift_round(v, s)`` for a constant ``s > 0``: add half, arithmetic shift."""
    return (v + (1 << (s - 1))) >> s


def bit_length(m: Module, x, width: int, name: str) -> Signal:
    """Highest set bit + 1 (0 for 0): a priority encoder over ``width`` bits."""
    bl = Signal(range(width + 1), name=name)
    for i in range(width):
        with m.If(x[i]):
            m.d.comb += bl.eq(i + 1)
    return bl


def _rom(m: Module, name: str, table: list[int], ports: int):
    bits = max(max(table).bit_length(), 1)
    mem = Memory(shape=bits, depth=len(table), init=table)
    m.submodules[name] = mem
    return [mem.read_port() for _ in range(ports)]


class _Unit(wiring.Component):
    LATENCY = 0

    def _valid_chain(self, m: Module) -> None:
        v = self.i_valid
        for k in range(self.LATENCY):
            nv = Signal(name=f"v{k + 1}")
            m.d.sync += nv.eq(v)
            v = nv
        m.d.comb += self.o_valid.eq(v)


class RsqrtUnit(_Unit):
    """:func:`ref_model.fixedpoint.rsqrt`: ``x`` uint 1..2**62 -> ``m`` Q1.23 in
    [2**22, 2**23], shift ``s`` (``1/sqrt(x) ~= m * 2**-s``). Latency 10."""

    LATENCY = 10

    def __init__(self, table: list[int]):
        self.table = table
        super().__init__({"i_valid": In(1), "x": In(63), "o_valid": Out(1), "m": Out(24), "s": Out(signed(8))})

    def elaborate(self, platform):
        m = Module()
        self._valid_chain(m)
        ra, rb = _rom(m, "tab", self.table, 2)
        # 1: exponent, rounded up to even
        x1 = Signal(63)
        m.d.sync += x1.eq(self.x)
        bl = bit_length(m, x1, 63, "bl")
        e_raw = Signal(signed(8))
        m.d.comb += e_raw.eq(bl - 24)
        # 2: normalize to xn in [2**22, 2**24); table index and fraction
        x2 = Signal(63)
        e2 = Signal(signed(8))
        m.d.sync += [x2.eq(x1), e2.eq(e_raw + e_raw[0])]
        xn = Signal(24)
        m.d.comb += xn.eq(Mux(e2 >= 0, x2 >> e2.as_unsigned()[:6], x2 << (-e2).as_unsigned()[:6]))
        off = Signal(24)   # xn - 2**22 < 3 * 2**22
        m.d.comb += [off.eq(xn - (1 << 22)), ra.addr.eq(off[16:]), rb.addr.eq(off[16:] + 1)]
        xn3, e3, fr3 = Signal(24), Signal(signed(8)), Signal(16)
        m.d.sync += [xn3.eq(xn), e3.eq(e2), fr3.eq(off[:16])]
        # 3 -> 4: interpolation product
        a4, d4 = Signal(25), Signal(signed(42))
        xn4, e4 = Signal(24), Signal(signed(8))
        m.d.sync += [a4.eq(ra.data), d4.eq((rb.data - ra.data) * fr3), xn4.eq(xn3), e4.eq(e3)]
        # 5: y in Q0.24, then Q.23
        y5 = Signal(25)
        xn5, e5 = Signal(24), Signal(signed(8))
        m.d.sync += [y5.eq(rr(a4 + rr(d4, 16), 1)), xn5.eq(xn4), e5.eq(e4)]
        # 6..8: Newton step y*(3 - m*y*y)/2
        y6, y26 = Signal(25), Signal(26)
        xn6, e6 = Signal(24), Signal(signed(8))
        m.d.sync += [y6.eq(y5), y26.eq(rr(y5 * y5, MANT_FRAC)), xn6.eq(xn5), e6.eq(e5)]
        y7, my7 = Signal(25), Signal(27)
        e7 = Signal(signed(8))
        m.d.sync += [y7.eq(y6), my7.eq(rr(xn6 * y26, 22)), e7.eq(e6)]
        y8 = Signal(signed(27))
        e8 = Signal(signed(8))
        m.d.sync += [y8.eq(rr(y7 * ((3 << MANT_FRAC) - my7), MANT_FRAC + 1)), e8.eq(e7)]
        # 9, 10: clamp, shift
        y9 = Signal(24)
        e9 = Signal(signed(8))
        lo, hi = 1 << (MANT_FRAC - 1), 1 << MANT_FRAC
        m.d.sync += [y9.eq(Mux(y8 < lo, lo, Mux(y8 > hi, hi, y8))), e9.eq(e8)]
        m.d.sync += [self.m.eq(y9), self.s.eq(MANT_FRAC + 11 + (e9 >> 1))]
        return m


class ReciprocalUnit(_Unit):
    """:func:`ref_model.fixedpoint.reciprocal`: ``x`` uint 1..2**62 -> ``m`` Q1.23,
    shift ``s`` (``1/x ~= m * 2**-s``). Latency 9."""

    LATENCY = 9

    def __init__(self, table: list[int]):
        self.table = table
        super().__init__({"i_valid": In(1), "x": In(63), "o_valid": Out(1), "m": Out(24), "s": Out(signed(8))})

    def elaborate(self, platform):
        m = Module()
        self._valid_chain(m)
        ra, rb = _rom(m, "tab", self.table, 2)
        x1 = Signal(63)
        m.d.sync += x1.eq(self.x)
        bl = bit_length(m, x1, 63, "bl")
        x2 = Signal(63)
        e2 = Signal(signed(8))
        m.d.sync += [x2.eq(x1), e2.eq(bl - 24)]
        xn = Signal(24)
        m.d.comb += xn.eq(Mux(e2 >= 0, x2 >> e2.as_unsigned()[:6], x2 << (-e2).as_unsigned()[:6]))
        off = Signal(23)
        m.d.comb += [off.eq(xn - (1 << 23)), ra.addr.eq(off[17:]), rb.addr.eq(off[17:] + 1)]
        xn3, e3, fr3 = Signal(24), Signal(signed(8)), Signal(17)
        m.d.sync += [xn3.eq(xn), e3.eq(e2), fr3.eq(off[:17])]
        a4, d4 = Signal(25), Signal(signed(43))
        xn4, e4 = Signal(24), Signal(signed(8))
        m.d.sync += [a4.eq(ra.data), d4.eq((rb.data - ra.data) * fr3), xn4.eq(xn3), e4.eq(e3)]
        y5 = Signal(25)
        xn5, e5 = Signal(24), Signal(signed(8))
        m.d.sync += [y5.eq(rr(a4 + rr(d4, 17), 1)), xn5.eq(xn4), e5.eq(e4)]
        y6, my6 = Signal(25), Signal(26)
        e6 = Signal(signed(8))
        m.d.sync += [y6.eq(y5), my6.eq(rr(xn5 * y5, 23)), e6.eq(e5)]
        y7 = Signal(signed(27))
        e7 = Signal(signed(8))
        m.d.sync += [y7.eq(rr(y6 * ((2 << MANT_FRAC) - my6), MANT_FRAC)), e7.eq(e6)]
        lo, hi = 1 << (MANT_FRAC - 1), 1 << MANT_FRAC
        y8 = Signal(24)
        e8 = Signal(signed(8))
        m.d.sync += [y8.eq(Mux(y7 < lo, lo, Mux(y7 > hi, hi, y7))), e8.eq(e7)]
        m.d.sync += [self.m.eq(y8), self.s.eq(MANT_FRAC + 23 + e8)]
        return m


class ExpNegUnit(_Unit):
    """:func:`ref_model.fixedpoint.exp_neg`: ``x`` Q.16 int32 <= 0 -> ``y`` Q0.16 in
    [0, 65536]. Latency 5."""

    LATENCY = 5

    def __init__(self, table: list[int], log2e_q30: int):
        self.table, self.log2e = table, log2e_q30
        super().__init__({"i_valid": In(1), "x": In(signed(32)), "o_valid": Out(1), "y": Out(17)})

    def elaborate(self, platform):
        m = Module()
        self._valid_chain(m)
        ra, rb = _rom(m, "tab", self.table, 2)
        # 1: t = -x*log2(e) in Q.24 (62-bit product, rounded)
        t1 = Signal(40)
        m.d.sync += t1.eq(rr((-self.x).as_unsigned()[:32] * self.log2e, 22))
        # 2: integer part n and fraction -> table
        n2, fr2 = Signal(16), Signal(16)
        m.d.comb += [ra.addr.eq(t1[16:24]), rb.addr.eq(t1[16:24] + 1)]
        m.d.sync += [n2.eq(t1[24:]), fr2.eq(t1[:16])]
        # 3: interpolation product
        a3, d3 = Signal(25), Signal(signed(42))
        n3 = Signal(16)
        m.d.sync += [a3.eq(ra.data), d3.eq((rb.data - ra.data) * fr2), n3.eq(n2)]
        y4 = Signal(25)
        sh4 = Signal(range(63))
        m.d.sync += [y4.eq(a3 + rr(d3, 16)), sh4.eq(Mux(n3 + 8 > 62, 62, n3 + 8))]
        half = Signal(63)
        m.d.comb += half.eq(Const(1, 63) << (sh4 - 1)[:6])
        m.d.sync += self.y.eq((y4 + half) >> sh4)
        return m


class SinCosUnit(_Unit):
    """:func:`ref_model.fixedpoint.sincos`: phase uint32 turns -> ``cos``, ``sin`` Q1.16
    signed (18-bit). Latency 5."""

    LATENCY = 5

    def __init__(self, table: list[int]):
        self.table = table
        super().__init__({"i_valid": In(1), "phase": In(32), "o_valid": Out(1),
                          "cos": Out(signed(18)), "sin": Out(signed(18))})

    def elaborate(self, platform):
        m = Module()
        self._valid_chain(m)
        sa, sb, ca, cb = _rom(m, "tab", self.table, 4)
        top = len(self.table) - 1
        # 1: quadrant and the two quarter-wave arguments
        quad1 = Signal(2)
        r1, rc1 = Signal(30), Signal(31)
        m.d.sync += [quad1.eq(self.phase[30:]), r1.eq(self.phase[:30]), rc1.eq((1 << 30) - self.phase[:30])]
        for (pa, pb), p in (((sa, sb), r1), ((ca, cb), rc1)):
            idx = p[22:]
            m.d.comb += [pa.addr.eq(Mux(idx > top, top, idx)), pb.addr.eq(Mux(idx + 1 > top, top, idx + 1))]
        quad2 = Signal(2)
        fs2, fc2 = Signal(22), Signal(22)
        m.d.sync += [quad2.eq(quad1), fs2.eq(r1[:22]), fc2.eq(rc1[:22])]
        # 3: interpolation products; 4: quarter values
        quad3 = Signal(2)
        as3, ds3, ac3, dc3 = Signal(25), Signal(signed(48)), Signal(25), Signal(signed(48))
        m.d.sync += [quad3.eq(quad2), as3.eq(sa.data), ds3.eq((sb.data - sa.data) * fs2),
                     ac3.eq(ca.data), dc3.eq((cb.data - ca.data) * fc2)]
        quad4 = Signal(2)
        s4, c4 = Signal(signed(26)), Signal(signed(26))
        m.d.sync += [quad4.eq(quad3), s4.eq(as3 + rr(ds3, 22)), c4.eq(ac3 + rr(dc3, 22))]
        # 5: quadrant signs, Q0.24 -> Q1.16
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
        m.d.sync += [self.sin.eq(rr(sin5, 8)), self.cos.eq(rr(cos5, 8))]
        return m


class SigmoidUnit(_Unit):
    """:func:`ref_model.fixedpoint.sigmoid` and :func:`~ref_model.fixedpoint.silu`:
    ``x`` Q.16 int32 -> ``sig`` Q0.16 in [0, 65536] and ``silu = rshift_round(x*sig, 16)``
    int32 Q.16. Latency 5."""

    LATENCY = 5

    def __init__(self, table: list[int]):
        self.table = table
        super().__init__({"i_valid": In(1), "x": In(signed(32)), "o_valid": Out(1),
                          "sig": Out(17), "silu": Out(signed(34))})

    def elaborate(self, platform):
        m = Module()
        self._valid_chain(m)
        ra, rb = _rom(m, "tab", self.table, 2)
        last = len(self.table) - 1
        x1 = Signal(signed(32))
        ax1 = Signal(32)
        m.d.sync += [x1.eq(self.x), ax1.eq(Mux(self.x < 0, -self.x, self.x))]
        idx = Signal(range(last + 1))
        m.d.comb += [idx.eq(Mux(ax1[10:] >= last, last, ax1[10:])),
                     ra.addr.eq(idx), rb.addr.eq(Mux(idx + 1 > last, last, idx + 1))]
        x2 = Signal(signed(32))
        fr2 = Signal(10)
        m.d.sync += [x2.eq(x1), fr2.eq(Mux(idx >= last, 0, ax1[:10]))]
        x3 = Signal(signed(32))
        a3, d3 = Signal(25), Signal(signed(36))
        m.d.sync += [x3.eq(x2), a3.eq(ra.data), d3.eq((rb.data - ra.data) * fr2)]
        x4 = Signal(signed(32))
        y4 = Signal(25)
        y = Signal(26)
        m.d.comb += y.eq(a3 + rr(d3, 10))
        m.d.sync += [x4.eq(x3), y4.eq(Mux(x3 < 0, (1 << TAB_FRAC) - y, y))]
        sig = Signal(17)
        m.d.comb += sig.eq(rr(y4, 8))
        m.d.sync += [self.sig.eq(sig), self.silu.eq(rr(x4 * sig, 16))]
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
    Needs ``s > 0`` for non-zero ``amax`` (true for ``cmul >= 2**(b+1)``). Latency 6."""

    LATENCY = 6

    def __init__(self, scale_bits: int):
        self.b = scale_bits
        super().__init__({"i_valid": In(1), "amax": In(32), "cmul": In(25), "o_valid": Out(1),
                          "man": Out(scale_bits), "s": Out(signed(8)), "rcp": Out(18)})

    def elaborate(self, platform):
        m = Module()
        b = self.b
        self._valid_chain(m)
        (rom,) = _rom(m, "rom", scale_rom(b), 1)
        r1 = Signal(57)
        z1 = Signal()
        m.d.sync += [r1.eq(self.amax * self.cmul), z1.eq(self.amax == 0)]
        bl = bit_length(m, r1, 57, "bl")
        r2, z2 = Signal(57), Signal()
        s2 = Signal(signed(8))
        m.d.sync += [r2.eq(r1), z2.eq(z1), s2.eq(bl - b)]
        up = Signal(range(64))
        m.d.comb += up.eq(Mux(s2 > 0, s2, 0))
        rp3, z3 = Signal(58), Signal()
        s3, up3 = Signal(signed(8)), Signal(range(64))
        m.d.sync += [rp3.eq(r2 + (Const(1, 57) << up) - 1), z3.eq(z2), s3.eq(s2), up3.eq(up)]
        man4, z4 = Signal(b + 1), Signal()
        s4 = Signal(signed(8))
        m.d.sync += [man4.eq(rp3 >> up3), z4.eq(z3), s4.eq(s3)]
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
        return m
