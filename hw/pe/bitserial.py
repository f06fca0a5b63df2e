"""Bit-serial processing element and dequantization unit of the bit-serial core (BitMoD class).

Weights reach the PE in the unified representation of :mod:`ref_model.formats`: a sign bit
and ``planes`` magnitude bit-planes per weight, whatever the data type (INT-n symmetric or
asymmetric, ternary, FP3/FP4 with a special value), so one datapath serves every type and
width, and a weight costs one cycle per magnitude plane.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out


class BitSerialPE(wiring.Component):
    """One output column: ``rows`` activations against one weight bit-plane per cycle.

    Parameters
    ----------
    rows : k-lanes (activations reduced per cycle).
    act_bits : signed activation width.
    tree_bits, horner_bits, partial_bits : signed widths of one plane's sum, of the
        plane-serial (Horner) register and of the group partial sum.

    Members
    -------
    en : In(1). Clock enable of the whole PE (the array's ``tick``).
    valid : In(1). A plane step is present.
    a : In(rows signed activations); held by the caller for all planes of a k-block.
    sign, mag : In(rows). Sign and this plane's magnitude bit of each lane's weight.
    first_plane, last_plane : In(1). Most / least significant plane of the k-block.
    first_kb, last_kb : In(1). First / last k-block of the group.
    p_valid : Out(1). ``p`` holds a finished group partial sum (for one enabled cycle).
    p : Out(signed(partial_bits)). P = sum over the group of a * value.

    Numerics: exact. Stage 1: S = sum over lanes of (mag ? (sign ? -a : a) : 0)
    (``tree_bits``). Stage 2: H = (first_plane ? 0 : 2 T) + S, T <- H (Horner over planes,
    most significant first); on the last plane the k-block's H is added to the group sum,
    and after the group's last k-block P leaves. Latency: inputs to ``p_valid`` 2 enabled
    cycles. No overflow for |a| <= 2**(act_bits-1), |value| < 2**planes, the group sizes the
    widths were derived for.
    """

    def __init__(self, *, rows: int, act_bits: int, tree_bits: int, horner_bits: int, partial_bits: int):
        self.rows, self.act_bits = rows, act_bits
        self.tree_bits, self.horner_bits, self.partial_bits = tree_bits, horner_bits, partial_bits
        super().__init__({
            "en": In(1), "valid": In(1),
            "a": In(data.ArrayLayout(signed(act_bits), rows)),
            "sign": In(rows), "mag": In(rows),
            "first_plane": In(1), "last_plane": In(1), "first_kb": In(1), "last_kb": In(1),
            "p_valid": Out(1), "p": Out(signed(partial_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        terms = []
        for r in range(self.rows):
            t = Signal(signed(self.act_bits + 1), name=f"term_{r}")
            a = self.a[r]
            m.d.comb += t.eq(Mux(self.mag[r], Mux(self.sign[r], -a, a), 0))
            terms.append(t)
        # Balanced adder tree (one level of carry chains per stage of two).
        while len(terms) > 1:
            nxt = []
            for i in range(0, len(terms) - 1, 2):
                s = Signal(signed(len(terms[i]) + 1), name="tree")
                m.d.comb += s.eq(terms[i] + terms[i + 1])
                nxt.append(s)
            if len(terms) % 2:
                nxt.append(terms[-1])
            terms = nxt
        s1 = Signal(signed(self.tree_bits))
        s1_valid, s1_fp, s1_lp, s1_fk, s1_lk = (Signal(name=n) for n in ("s1_valid", "s1_fp", "s1_lp", "s1_fk", "s1_lk"))
        with m.If(self.en):
            m.d.sync += [s1.eq(terms[0]), s1_valid.eq(self.valid), s1_fp.eq(self.first_plane),
                         s1_lp.eq(self.last_plane), s1_fk.eq(self.first_kb), s1_lk.eq(self.last_kb)]

        horner = Signal(signed(self.horner_bits))
        group = Signal(signed(self.partial_bits))
        h = Signal(signed(self.horner_bits))
        g_next = Signal(signed(self.partial_bits))
        m.d.comb += [h.eq(Mux(s1_fp, 0, horner << 1) + s1),
                     g_next.eq(Mux(s1_fk, 0, group) + h)]
        with m.If(self.en):
            m.d.sync += self.p_valid.eq(s1_valid & s1_lp & s1_lk)
            with m.If(s1_valid):
                m.d.sync += horner.eq(h)
                with m.If(s1_lp):
                    m.d.sync += group.eq(g_next)
                    with m.If(s1_lk):
                        m.d.sync += self.p.eq(g_next)
        return m


#: Width of the f16 scale magnitude with the implicit one (the 12-bit signed mantissa of
#: :func:`ref_model.formats.f16_decode` is this plus a sign).
SCALE_MAG_BITS = 11
#: f16 exponent bias plus the 10 fraction bits: value = mant * 2**(e - F16_EXP_OFFSET).
F16_EXP_OFFSET = 25


class BitSerialDequant(wiring.Component):
    """Rescales each column's group partial sum by its f16 scale, digit-serially, and
    accumulates the groups of an output row.

    Parameters
    ----------
    cols : columns (one datapath each, one shared controller).
    partial_bits : signed width of the incoming partial sums.
    acc_bits : output accumulator width (wraps).
    frac : output fraction bits.
    digit_bits : scale magnitude bits consumed per cycle.

    Members
    -------
    en : In(1). Clock enable.
    p_valid : In(1). ``p``, ``scale`` and ``last`` hold a group of every column.
    p : In(cols signed partial sums). scale : In(cols f16 bit patterns).
    last : In(1). The group is the last of its output row.
    out_valid : Out(1). ``out`` holds a finished row (for one enabled cycle).
    out : Out(cols signed(acc_bits)).

    Numerics (:func:`ref_model.formats.group_rescale`): the scale decodes to sign, an
    11-bit magnitude (implicit one restored; subnormals kept) and ``exp = max(e, 1) - 25``;
    the product magnitude x P is formed exactly, ``digit_bits`` magnitude bits per cycle
    from the most significant end (``ceil(11 / digit_bits)`` cycles, the shortest spacing
    of ``p_valid`` the caller may use), negated for a negative scale, shifted by
    ``s = -(exp + frac)`` (right with round half up: + 2**(s-1) then floor; left for s <= 0),
    and added into a two's-complement ``acc_bits`` accumulator that wraps; after the row's
    last group it leaves on ``out`` and the accumulator clears. Latency from ``p_valid`` to
    ``out_valid``: ``ceil(11 / digit_bits) + 2`` enabled cycles.
    """

    def __init__(self, *, cols: int, partial_bits: int, acc_bits: int, frac: int, digit_bits: int):
        self.cols, self.partial_bits, self.acc_bits = cols, partial_bits, acc_bits
        self.frac, self.digit_bits = frac, digit_bits
        self.digits = -(-SCALE_MAG_BITS // digit_bits)
        super().__init__({
            "en": In(1), "p_valid": In(1),
            "p": In(data.ArrayLayout(signed(partial_bits), cols)),
            "scale": In(data.ArrayLayout(16, cols)),
            "last": In(1),
            "out_valid": Out(1),
            "out": Out(data.ArrayLayout(signed(acc_bits), cols)),
        })

    def elaborate(self, platform):
        m = Module()
        d, nd, PB = self.digit_bits, self.digits, self.partial_bits
        mag_w = nd * d
        prod_bits = PB + mag_w + 1
        cnt = Signal(range(nd + 1))
        fin, last_l = Signal(), Signal()
        term_valid, term_last = Signal(), Signal()
        accept = Signal()
        m.d.comb += accept.eq(self.en & self.p_valid)
        with m.If(self.en):
            m.d.sync += fin.eq(Mux(accept, nd == 1, cnt == 1))
            with m.If(cnt != 0):
                m.d.sync += cnt.eq(cnt - 1)
            with m.If(accept):
                m.d.sync += [cnt.eq(nd - 1), last_l.eq(self.last)]
            m.d.sync += [term_valid.eq(fin), term_last.eq(last_l), self.out_valid.eq(term_valid & term_last)]
        for c in range(self.cols):
            sc = self.scale[c]
            e = sc[10:15]
            mag = Signal(mag_w, name=f"mag_{c}")
            m.d.comb += mag.eq(Mux(e == 0, sc[:10], Cat(sc[:10], Const(1, 1))))
            p_l = Signal(signed(PB), name=f"p_{c}")
            rem = Signal(mag_w, name=f"rem_{c}")
            neg, e_l = Signal(name=f"neg_{c}"), Signal(5, name=f"e_{c}")
            prod = Signal(signed(prod_bits), name=f"prod_{c}")
            with m.If(self.en):
                with m.If(accept):
                    m.d.sync += [p_l.eq(self.p[c]), neg.eq(sc[15]), e_l.eq(Mux(e == 0, 1, e)),
                                 rem.eq(mag << d), prod.eq(self.p[c] * mag[mag_w - d:])]
                with m.Elif(cnt != 0):
                    m.d.sync += [rem.eq(rem << d), prod.eq((prod << d) + p_l * rem[mag_w - d:])]
            # Final stage: sign and the rounding shift by s = 25 - max(e,1) - frac.
            x = Signal(signed(prod_bits + 1), name=f"x_{c}")
            m.d.comb += x.eq(Mux(neg, -prod, prod))
            s = Signal(signed(7), name=f"s_{c}")
            m.d.comb += s.eq(F16_EXP_OFFSET - self.frac - e_l)
            right = Signal(unsigned(5), name=f"right_{c}")
            left = Signal(unsigned(6), name=f"left_{c}")
            m.d.comb += [right.eq(Mux(s > 0, s, 0)), left.eq(Mux(s < 0, -s, 0))]
            half = Signal(unsigned(32), name=f"half_{c}")
            m.d.comb += half.eq((Const(1, 33) << right) >> 1)
            shifted = Signal(signed(self.acc_bits), name=f"term_{c}")
            m.d.comb += shifted.eq(Mux(s > 0, (x + half) >> right, x << left))
            term, acc = Signal(signed(self.acc_bits), name=f"t_{c}"), Signal(signed(self.acc_bits), name=f"acc_{c}")
            total = Signal(signed(self.acc_bits), name=f"total_{c}")
            m.d.comb += total.eq(acc + term)
            with m.If(self.en):
                m.d.sync += term.eq(shifted)
                with m.If(term_valid):
                    m.d.sync += acc.eq(Mux(term_last, 0, total))
                    with m.If(term_last):
                        m.d.sync += self.out[c].eq(total)
        return m
