"""Bit-serial processing element and dequantization unit of the bit-serial core (BitMoD class).

Weights reach the PE in the unified representation of :mod:`ref_model.formats`: a sign bit
and ``planes`` magnitude bit-planes per weight, whatever the data type (INT-n symmetric or
asymmetric, ternary, FP3/FP4 with a special value), so one datapath serves every type and
width, and a weight costs one cycle per magnitude plane.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
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
        # -a = ~a + 1: each lane adds (sign ? ~a : a) when its plane bit is set (a LUT per
        # bit, no negation adder), and the +1s of the negated lanes enter as one popcount.
        terms = []
        for r in range(self.rows):
            t = Signal(signed(self.act_bits), name=f"term_{r}")
            a = self.a[r]
            m.d.comb += t.eq(Mux(self.mag[r], a ^ self.sign[r].replicate(self.act_bits), 0))
            terms.append(t)
        ones = Signal(range(self.rows + 1))
        m.d.comb += ones.eq(sum((self.mag[r] & self.sign[r] for r in range(self.rows)), Const(0, 1)))
        terms.append(ones)
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
    """Rescales each column's group partial sum by its f16 scale and accumulates the groups
    of an output row: a digit-serial multiplier per column, one shared shift-and-add stage.

    Parameters
    ----------
    cols : columns.
    partial_bits : signed width of the incoming partial sums.
    acc_bits : output accumulator width (wraps).
    frac : output fraction bits.
    digit_bits : scale magnitude bits each column's multiplier consumes per cycle.

    Members
    -------
    en : In(1). Clock enable.
    p_valid : In(1). ``p``, ``scale`` and ``last`` hold a group of every column.
    ready : Out(1). The group on ``p`` is taken in this cycle (when ``en`` and ``p_valid``).
        The caller holds ``p`` until then (the core freezes its array).
    p : In(cols signed partial sums). scale : In(cols f16 bit patterns).
    last : In(1). The group is the last of its output row.
    out_valid : Out(1). ``out`` holds a finished row (for one enabled cycle).
    out : Out(cols signed(acc_bits)).

    Numerics (:func:`ref_model.formats.group_rescale`): the scale decodes to sign, an
    11-bit magnitude (implicit one restored; subnormals kept) and ``exp = max(e, 1) - 25``.
    Stage 1, per column: the product magnitude x P, exact, ``digit_bits`` magnitude bits per
    cycle from the most significant end (``ceil(11 / digit_bits)`` cycles). Stage 2, shared
    by all columns, one column per cycle (the products wait in a shift register): negate
    for a negative scale, shift by ``s = -(exp + frac)`` (right with round half up, i.e.
    + 2**(s-1) then floor; left for s <= 0) and add into the column's two's-complement
    ``acc_bits`` accumulator (wraps; the accumulators rotate, so no column multiplexer is
    needed). After a row's last group its sums leave on ``out`` and the accumulators clear.
    Throughput: one group of all columns every ``max(ceil(11 / digit_bits), cols)`` cycles.
    """

    def __init__(self, *, cols: int, partial_bits: int, acc_bits: int, frac: int, digit_bits: int):
        self.cols, self.partial_bits, self.acc_bits = cols, partial_bits, acc_bits
        self.frac, self.digit_bits = frac, digit_bits
        self.digits = -(-SCALE_MAG_BITS // digit_bits)
        # Largest left shift: s = 25 - max(e, 1) - frac >= 25 - 31 - frac.
        self.max_left = 6 + frac
        super().__init__({
            "en": In(1), "p_valid": In(1), "ready": Out(1),
            "p": In(data.ArrayLayout(signed(partial_bits), cols)),
            "scale": In(data.ArrayLayout(16, cols)),
            "last": In(1),
            "out_valid": Out(1),
            "out": Out(data.ArrayLayout(signed(acc_bits), cols)),
        })

    @staticmethod
    def _digit_product(p, digit):
        """p x an unsigned digit as a sum of shifted copies (no multiplier cell)."""
        total = Mux(digit[0], p, 0)
        for i in range(1, len(digit)):
            total = total + Mux(digit[i], p, 0) * (1 << i)
        return total

    def elaborate(self, platform):
        m = Module()
        C, d, nd, PB = self.cols, self.digit_bits, self.digits, self.partial_bits
        mag_w = nd * d
        prod_bits = PB + mag_w + 1
        en = self.en

        # ---- stage 1: digit-serial products, all columns in step
        mcnt = Signal(range(nd + 1))
        mfull, m_last = Signal(), Signal()
        s_active = Signal()
        s_idx = Signal(range(C))
        can_transfer, transfer, accept = Signal(), Signal(), Signal()
        m.d.comb += [can_transfer.eq(~s_active | (s_idx == C - 1)),
                     transfer.eq(en & mfull & can_transfer),
                     self.ready.eq((mcnt == 0) & (~mfull | can_transfer)),
                     accept.eq(en & self.p_valid & self.ready)]
        with m.If(en):
            with m.If(mcnt != 0):
                m.d.sync += mcnt.eq(mcnt - 1)
                with m.If(mcnt == 1):
                    m.d.sync += mfull.eq(1)
            with m.Elif(transfer):
                m.d.sync += mfull.eq(0)
            with m.If(accept):
                m.d.sync += [mcnt.eq(nd - 1), mfull.eq(nd == 1), m_last.eq(self.last)]
        rec_bits = prod_bits + 1 + 7
        records = []
        for c in range(C):
            sc = self.scale[c]
            e = sc[10:15]
            mag = Signal(mag_w, name=f"mag_{c}")
            m.d.comb += mag.eq(Mux(e == 0, sc[:10], Cat(sc[:10], Const(1, 1))))
            p_l = Signal(signed(PB), name=f"p_{c}")
            rem = Signal(mag_w, name=f"rem_{c}")
            neg, e_l = Signal(name=f"neg_{c}"), Signal(signed(7), name=f"e_{c}")
            prod = Signal(signed(prod_bits), name=f"prod_{c}")
            with m.If(accept):
                m.d.sync += [p_l.eq(self.p[c]), neg.eq(sc[15]), e_l.eq(Mux(e == 0, 1, e)),
                             rem.eq(mag << d), prod.eq(self._digit_product(self.p[c], mag[mag_w - d:]))]
            with m.Elif(en & (mcnt != 0)):
                m.d.sync += [rem.eq(rem << d), prod.eq((prod << d) + self._digit_product(p_l, rem[mag_w - d:]))]
            records.append(Cat(prod, neg, e_l))

        # ---- stage 2: one column per cycle from a shift register of finished products
        hold = [Signal(rec_bits, name=f"hold_{c}") for c in range(C)]
        s_last = Signal()
        with m.If(transfer):
            m.d.sync += [h.eq(r) for h, r in zip(hold, records)]
            m.d.sync += [s_active.eq(1), s_idx.eq(0), s_last.eq(m_last)]
        with m.Elif(en & s_active):
            m.d.sync += [h.eq(nxt) for h, nxt in zip(hold, hold[1:] + [hold[-1]])]
            m.d.sync += s_idx.eq(s_idx + 1)
            with m.If(s_idx == C - 1):
                m.d.sync += s_active.eq(0)
        head = hold[0]
        prod_h, neg_h, e_h = head[:prod_bits].as_signed(), head[prod_bits], head[prod_bits + 1:].as_signed()
        x = Signal(signed(prod_bits + 1))
        m.d.comb += x.eq(Mux(neg_h, -prod_h, prod_h))
        # One right barrel shifter serves both directions: x * 2**L0 shifted right by
        # s + L0 >= 0 (L0 = the largest left shift), with the rounding half only for s > 0.
        s = Signal(signed(7))
        m.d.comb += s.eq(F16_EXP_OFFSET - self.frac - e_h)
        amount = Signal(range(self.max_left + 25))
        m.d.comb += amount.eq(s + self.max_left)
        half = Signal(self.max_left + 24)
        m.d.comb += half.eq(Mux(s > 0, (Const(1, self.max_left + 25) << amount) >> 1, 0))
        shifted = Signal(signed(self.acc_bits))
        m.d.comb += shifted.eq((Cat(Const(0, self.max_left), x).as_signed() + half) >> amount)

        # ---- stage 3: accumulate into the rotating accumulators
        term = Signal(signed(self.acc_bits))
        t_valid, t_last, t_end = Signal(), Signal(), Signal()
        with m.If(en):
            m.d.sync += [term.eq(shifted), t_valid.eq(s_active), t_last.eq(s_last), t_end.eq(s_idx == C - 1)]
        acc = [Signal(signed(self.acc_bits), name=f"acc_{c}") for c in range(C)]
        total = Signal(signed(self.acc_bits))
        m.d.comb += total.eq(acc[0] + term)
        with m.If(en):
            m.d.sync += self.out_valid.eq(t_valid & t_last & t_end)
            with m.If(t_valid):
                m.d.sync += [a.eq(nxt) for a, nxt in zip(acc, acc[1:] + [Mux(t_last, 0, total)])]
                with m.If(t_last):
                    outs = [self.out[c] for c in range(C)]
                    m.d.sync += [o.eq(nxt) for o, nxt in zip(outs, outs[1:] + [total])]
        return m
