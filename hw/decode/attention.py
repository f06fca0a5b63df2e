"""Attention unit of the decode engine: one query token over the cached keys and values.

:class:`AttentionUnit` computes :func:`ref_model.decode.attention` bit for bit for all
query heads of a layer (grouped-query: head ``h`` reads KV head ``h // rep``,
``rep = heads / kv_heads``). It is memory-agnostic: the KV unit streams the already
dequantized K rows and then the V rows (token order, each row ``kv_heads x head_dim``
int32 ``Q.frac``) as vectors of ``lanes`` consecutive channels of one KV head, so each
cached row is read from memory once per layer for all the heads that share it.

Lane-parallel datapath: every K (V) vector is used by all ``rep`` heads of its group in
the same cycle (``par_heads x lanes`` multipliers of 18 x 32 bits, shared by the score and
the value phase, which never overlap; one adder tree of ``lanes`` products per head), so
the score and the value phase each take one cycle per vector, i.e.
``n * kv_heads * head_dim / lanes`` cycles. Integer sums are exact (48-bit score,
56-bit value accumulators), so the order of the adder trees does not change any bit.
Head and token indices are running counters and pointers (no ``h*hd + c`` products in
the datapath); every memory is read synchronously and the stages are registered.

Phases:

1. Q: ``nh x hd`` queries arrive one per cycle; per head the power-of-two quantizer
   (:func:`ref_model.decode.quantize_act` with ``scale_bits = 0``): ``sh`` smallest with
   ``rshift_round(amax, sh) <= 127`` (``amax = 0``: ``sh = -16``), then a pass writes the
   int8 codes ``rshift_round(q, sh)`` into a code memory laid out like the K rows (word
   ``j*hd/lanes + c/lanes`` holds the ``lanes`` codes of all heads of group ``j``).
2. Scores: per K vector, ``s_h += sum_l qa_h[c+l] * k[c+l]`` for the group's heads; at a
   head's last vector ``S_h[t] = sat32(rshift_round(s_h*C, 2*frac - sh_h))`` with
   ``C = round(2**16/sqrt(hd))`` (from the command), running max per head.
3. Softmax, ``par_heads`` heads at a time: ``p = exp_neg(sat32(S - max))``, ``Z = sum p``,
   ``(m, r) = reciprocal(Z)`` (one head per cycle), ``P = rshift_round(p*m, r - 16)``.
4. Values: per V vector, ``o_h[c+l] += P_h[t] * v[c+l]`` (56-bit accumulators).
5. Out: ``sat32(rshift_round(o, 16))`` for every head and channel, in order, one per cycle.

Cycles per command: ``2*nh*hd`` (Q) + ``2 * n*kv_heads*hd/lanes`` (scores, values)
+ ``2 * n*kv_heads`` (exp, P) + ``nh*hd`` (out) + pipeline fills (~30).

Limits (checked by the engine's program compiler): ``lanes`` a power of two dividing
``head_dim``, ``heads / kv_heads <= par_heads``, ``kv_heads <= max_kv_heads``.
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .funcs import ExpNegUnit, ReciprocalUnit, bit_length, rr
from .products import registered_product
from .vector import INT32_MIN, sat32

ACC_BITS = 56
SCORE_BITS = 48


class AttendCommand(data.StructLayout):
    def __init__(self, ctx_bits: int):
        super().__init__({"heads": 6, "kv_heads": 6, "head_dim": 9, "n": ctx_bits, "c": 17})


def lane_vector(lanes: int) -> data.ArrayLayout:
    """The K/V stream payload: ``lanes`` int32 channels of one KV head."""
    return data.ArrayLayout(signed(32), lanes)


def _shift_round(m: Module, v, amt, width: int, name: str) -> Signal:
    """``rshift_round(v, amt)`` for a run-time signed ``amt`` (left shift when negative)."""
    half = Signal(width, name=f"{name}_half")
    m.d.comb += half.eq(Mux(amt > 0, Const(1, width) << (amt - 1).as_unsigned()[:7], 0))
    out = Signal(signed(width + 8), name=name)
    m.d.comb += out.eq(Mux(amt > 0, (v + half) >> amt.as_unsigned()[:7], v << (-amt).as_unsigned()[:7]))
    return out


def _shift_round_reg(m: Module, v, amt, width: int, name: str) -> Signal:
    """:func:`_shift_round` in two register stages (latency 2): the rounding add, then the
    shift (both in one cycle were a long path)."""
    half = Signal(width, name=f"{name}_half")
    m.d.comb += half.eq(Mux(amt > 0, Const(1, width) << (amt - 1).as_unsigned()[:7], 0))
    vh_e = v + half
    vh, v1 = Signal(vh_e.shape(), name=f"{name}_vh"), Signal.like(v, name=f"{name}_v1")
    pos, ra, la = Signal(name=f"{name}_pos"), Signal(7, name=f"{name}_ra"), Signal(7, name=f"{name}_la")
    m.d.sync += [vh.eq(vh_e), v1.eq(v), pos.eq(amt > 0), ra.eq(amt.as_unsigned()[:7]), la.eq((-amt).as_unsigned()[:7])]
    out = Signal(signed(width + 8), name=name)
    m.d.sync += out.eq(Mux(pos, vh >> ra, v1 << la))
    return out


class AttentionUnit(wiring.Component):
    """See the module docstring.

    Parameters
    ----------
    max_heads, max_head_dim, max_ctx : sizes of the on-chip buffers.
    frac : ``Q.frac`` of q, k, v and the outputs.
    lanes : channels per K/V vector (a power of two dividing ``max_head_dim``).
    par_heads : query heads served per vector (>= ``heads / kv_heads`` of any command);
        ``max_heads`` when not given.
    max_kv_heads : ``max_heads`` when not given.

    Members
    -------
    cmd : In(stream of AttendCommand): heads, kv_heads, head_dim, ``n`` tokens (>= 1),
        ``c`` = round(2**16/sqrt(head_dim)).
    q : In(stream of signed(32)): ``heads x head_dim`` queries (after RoPE).
    k, v : In(streams of ``lanes`` x signed(32)): ``n`` rows of ``kv_heads x head_dim``,
        all K rows first, then all V rows. Both are always ready in their phase.
    o_valid, y : Out: the ``heads x head_dim`` outputs in order, one per cycle.
    busy : Out(1).
    """

    def __init__(self, *, max_heads: int, max_head_dim: int, max_ctx: int, frac: int,
                 exp_table: list[int], log2e_q30: int, rcp_table: list[int], lanes: int = 1,
                 par_heads: int | None = None, max_kv_heads: int | None = None):
        if lanes < 1 or lanes & (lanes - 1) or max_head_dim % lanes:
            raise ValueError(f"attention lanes {lanes}: must be a power of two dividing head_dim {max_head_dim}")
        self.max_heads, self.max_hd, self.max_ctx, self.frac = max_heads, max_head_dim, max_ctx, frac
        self.lanes = lanes
        self.par_heads = min(par_heads or max_heads, max_heads)
        self.max_kv = min(max_kv_heads or max_heads, max_heads)
        self.exp_table, self.log2e, self.rcp_table = exp_table, log2e_q30, rcp_table
        self.ctx_bits = max(max_ctx.bit_length(), 1)
        super().__init__({
            "cmd": In(stream.Signature(AttendCommand(self.ctx_bits))),
            "q": In(stream.Signature(signed(32))),
            "k": In(stream.Signature(lane_vector(lanes))),
            "v": In(stream.Signature(lane_vector(lanes))),
            "o_valid": Out(1), "y": Out(signed(32)), "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        F, L, R, KV = self.frac, self.lanes, self.par_heads, self.max_kv
        H, D, T = self.max_heads, self.max_hd, self.max_ctx
        lg_l = L.bit_length() - 1
        VW = KV * D // L                        # vector words per row (max)
        exs = [ExpNegUnit(self.exp_table, self.log2e) for _ in range(R)]
        for r, ex in enumerate(exs):
            m.submodules[f"exp{r}"] = ex
        m.submodules.rcp = rcp = ReciprocalUnit(self.rcp_table)
        # raw queries (head order), then the int8 codes laid out like the K rows
        m.submodules.qmem = qmem = Memory(shape=signed(32), depth=H * D, init=[])
        qw, qr = qmem.write_port(), qmem.read_port(domain="comb")
        m.submodules.qcode = qcode = Memory(shape=R * L * 8, depth=VW, init=[])
        qcw, qcr = qcode.write_port(granularity=8), qcode.read_port()
        # per bank r (head j*rep + r of group j): scores / p / P at j*T + t; outputs at word
        # j*hd/L + c/L
        sws, srs, ows, ors = [], [], [], []
        for r in range(R):
            sm = Memory(shape=signed(32), depth=KV * T, init=[])
            om = Memory(shape=data.ArrayLayout(signed(ACC_BITS), L), depth=VW, init=[])
            m.submodules[f"smem{r}"], m.submodules[f"omem{r}"] = sm, om
            sws.append(sm.write_port())
            srs.append(sm.read_port())
            ow = om.write_port()
            ows.append(ow)
            ors.append(om.read_port(transparent_for=(ow,)))

        cmd = Signal(AttendCommand(self.ctx_bits))
        hd, nkv = cmd.head_dim, cmd.kv_heads
        rep = Signal(6)          # query heads per KV head
        nvh = Signal(range(D // L + 1))   # vectors per head
        # per-head state: amax by head (Q phase only), the rest by (bank r, kv head j)
        amax = Array(Signal(32, name=f"amax{h}") for h in range(H))

        def grid(name, shape, init=0):
            return Array(Array(Signal(shape, name=f"{name}{r}_{j}", init=init) for j in range(KV)) for r in range(R))
        shb = grid("sh", signed(8))
        smax = grid("smax", signed(32), INT32_MIN)
        zsum = grid("z", 32)
        rmb = grid("rm", 24)
        rsb = grid("rs", signed(8))

        i = Signal(16)
        h = Signal(6)
        c = Signal(9)
        j = Signal(6)
        r = Signal(range(R + 1))
        lane = Signal(range(L))
        cv = Signal(range(D // L + 1))    # vector within the head
        vi = Signal(range(VW + 1))        # vector within the row
        vbase = Signal(range(VW + 1))     # first vector of group j
        t = Signal(self.ctx_bits)
        ptr = Signal(range(KV * T + 1))   # score-memory pointer j*T + t
        pbase = Signal(range(KV * T + 1))
        last_t = t == cmd.n - 1
        last_j = j == nkv - 1
        last_cv = cv == nvh - 1
        last_r = r == rep - 1
        last_lane = lane == L - 1
        qv = self.q.payload
        # per-head |q| max in two steps: |q| and its head (one-hot) registered, then compared
        # with every head's maximum at once (the port's value through the negation, the
        # head mux and the compare into the maximum's enable was the unit's 80.0 MHz path)
        qm_v, qm_mag, qm_hot = Signal(), Signal(32), Signal(H)
        m.d.sync += qm_v.eq(0)
        for hh in range(H):
            with m.If(qm_v & qm_hot[hh] & (qm_mag > amax[hh])):
                m.d.sync += amax[hh].eq(qm_mag)

        def clear_counters():
            return [j.eq(0), r.eq(0), lane.eq(0), cv.eq(0), vi.eq(0), vbase.eq(0), t.eq(0), ptr.eq(0), pbase.eq(0)]

        def walk_heads(after: str) -> None:
            """Step (lane, cv, r, j) -- channel lanes, vectors of a head, heads of a group,
            KV groups -- in output order (the caller steps ``lane``); go to ``after``
            past the last."""
            with m.If(last_lane):
                m.d.sync += [lane.eq(0), cv.eq(cv + 1)]
                with m.If(last_cv):
                    m.d.sync += [cv.eq(0), r.eq(r + 1)]
                    with m.If(last_r):
                        m.d.sync += [r.eq(0), j.eq(j + 1), vbase.eq(vbase + nvh)]
                        with m.If(last_j):
                            m.next = after

        # pipeline valid flags (for the drains)
        qc_v = Signal()
        qc_v2 = [Signal(name=f"qc_v2_{k}") for k in range(2)]   # the code's shift stages
        s_v = [Signal(name=f"s_v{k}") for k in range(7)]
        e_v = Signal()
        p_v = [Signal(name=f"p_v{k}") for k in range(7)]
        VA = 5                   # the value pipeline's accumulate stage (see below)
        v_v = [Signal(name=f"v_v{k}") for k in range(VA + 1)]
        o_v, o_v1 = Signal(), Signal()
        s_x = [Signal(name=f"s_x{k}") for k in range(7)]   # the extra score stages (see below)
        for sig in [qc_v, e_v, o_v] + s_v + p_v + v_v:
            m.d.sync += sig.eq(0)

        # stage registers (declared here, driven below)
        qc_x = Signal(signed(32))
        qc_s = Signal(signed(8))
        qc_a = Signal(range(VW + 1))
        qc_lane = Signal(range(R * L))
        kvec1 = Signal(lane_vector(L))
        klast = [Signal(name=f"klast{k}") for k in range(4)]
        kj = [Signal(6, name=f"kj{k}") for k in range(7)]
        vvec1 = Signal(lane_vector(L))
        vfirst = [Signal(name=f"vfirst{k}") for k in range(VA + 1)]
        vaddr = [Signal(range(VW + 1), name=f"vaddr{k}") for k in range(VA + 1)]
        e_j = Signal(6)
        p_a = [Signal(range(KV * T + 1), name=f"p_a{k}") for k in range(7)]
        p_j = Signal(6)
        o_r, o_l = Signal(range(R + 1)), Signal(range(L))
        ex_done = Signal()
        rc_done = Signal()
        qs_ph = Signal(3)
        qs_shr = Signal(34)     # the rounded maximum shifted (its own step: the shift, compare and
                                # write of the per-head shift in one cycle was a 68.9 MHz path)
        qs_a, qs_ah = Signal(32), Signal(34)
        qs_s0 = Signal(signed(8))

        # ``go``: the command was taken last cycle. The counters, maxima and sums across the
        # unit are cleared then (in REP, which uses none of them), from this register: the
        # engine's issue logic through the handshake into their resets was one combinational
        # path across the die (the whole engine's at speed grade 8, 78.2 MHz at 307a08c)
        go = Signal()
        m.d.sync += go.eq(self.cmd.valid & self.cmd.ready)
        with m.If(go):
            m.d.sync += clear_counters()
            for hh in range(H):
                m.d.sync += amax[hh].eq(0)
            for rr_ in range(R):
                for jj in range(KV):
                    m.d.sync += [smax[rr_][jj].eq(INT32_MIN), zsum[rr_][jj].eq(0)]
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.cmd.ready.eq(1)
                with m.If(self.cmd.valid):
                    m.d.sync += [cmd.eq(self.cmd.payload), i.eq(0), h.eq(0), c.eq(0), self.busy.eq(1)]
                    m.next = "REP"
            with m.State("REP"):      # heads per kv head (small division by repeated subtraction)
                m.d.sync += [rep.eq(0), i.eq(cmd.heads), nvh.eq(hd >> lg_l)]
                m.next = "REP_LOOP"
            with m.State("REP_LOOP"):
                with m.If(i != 0):
                    m.d.sync += [i.eq(i - cmd.kv_heads), rep.eq(rep + 1)]
                with m.Else():
                    m.d.sync += i.eq(0)
                    m.next = "Q_IN"
            with m.State("Q_IN"):     # raw queries in head order, per-head |q| max
                m.d.comb += [self.q.ready.eq(1), qw.addr.eq(i), qw.data.eq(qv), qw.en.eq(self.q.valid)]
                with m.If(self.q.valid):
                    m.d.sync += [qm_v.eq(1), qm_mag.eq(Mux(qv < 0, -qv, qv)), qm_hot.eq(Const(1, H) << h)]
                    m.d.sync += [c.eq(c + 1), i.eq(i + 1)]
                    with m.If(c == hd - 1):
                        m.d.sync += [c.eq(0), h.eq(h + 1)]
                        with m.If(h == cmd.heads - 1):
                            m.d.sync += h.eq(0)
                            m.next = "Q_MAX"
            with m.State("Q_MAX"):    # the last |q| reaches its head's maximum
                m.next = "Q_SHIFT"
            with m.State("Q_SHIFT"):  # per head: the power-of-two shift, kept by (r, j)
                # six register steps per head (the head's maximum, its bit length, the shift
                # amount, the rounding add, the shift, the check): one combinational path was
                # far too long. The first five run every cycle outside the FSM (below) from
                # the head h, which stays for the six steps; the sixth keeps the result
                m.d.sync += qs_ph.eq(qs_ph + 1)
                with m.Switch(qs_ph):
                    with m.Case(5):
                        over = Signal()
                        m.d.comb += over.eq((qs_s0 > 0) & (qs_shr > 127))
                        m.d.sync += [shb[r][j].eq(qs_s0 + over), h.eq(h + 1), r.eq(r + 1), qs_ph.eq(0)]
                        with m.If(last_r):
                            m.d.sync += [r.eq(0), j.eq(j + 1)]
                        with m.If(h == cmd.heads - 1):
                            m.d.sync += [i.eq(0)] + clear_counters()
                            m.next = "Q_CODE"
            with m.State("Q_CODE"):   # codes rshift_round(q, sh) into the K-row layout
                m.d.comb += qr.addr.eq(i)
                m.d.sync += [qc_v.eq(1), qc_x.eq(qr.data), qc_s.eq(shb[r][j]), qc_a.eq(vbase + cv),
                             qc_lane.eq(Cat(lane[:lg_l], r[:max((R - 1).bit_length(), 1)]) if L > 1 else r),
                             i.eq(i + 1), lane.eq(lane + 1)]
                walk_heads("Q_CODE_DRAIN")
            with m.State("Q_CODE_DRAIN"):   # the last codes go through the shift stages
                with m.If(~qc_v & ~qc_v2[0] & ~qc_v2[1]):
                    m.d.sync += clear_counters()
                    m.next = "SCORE"
            with m.State("SCORE"):    # one K vector per cycle for all heads of its group
                m.d.comb += [self.k.ready.eq(1), qcr.addr.eq(vi)]
                with m.If(self.k.valid):
                    m.d.sync += [s_v[0].eq(1), kvec1.eq(self.k.payload), klast[0].eq(last_cv), kj[0].eq(j),
                                 vi.eq(vi + 1), cv.eq(cv + 1)]
                    with m.If(last_cv):
                        m.d.sync += [cv.eq(0), j.eq(j + 1)]
                        with m.If(last_j):
                            m.d.sync += [j.eq(0), vi.eq(0), t.eq(t + 1)]
                            with m.If(last_t):
                                m.next = "SCORE_DRAIN"
            with m.State("SCORE_DRAIN"):
                with m.If(Cat(*s_v, *s_x) == 0):
                    m.d.sync += clear_counters()
                    m.next = "EXP"
            with m.State("EXP"):      # p = exp_neg(S - max) for every (j, t), all banks at once
                m.d.comb += [s.addr.eq(ptr) for s in srs]
                m.d.sync += [e_v.eq(1), e_j.eq(j), ptr.eq(ptr + 1), t.eq(t + 1)]
                with m.If(last_t):
                    m.d.sync += [t.eq(0), j.eq(j + 1), ptr.eq(pbase + T), pbase.eq(pbase + T)]
                    with m.If(last_j):
                        m.next = "EXP_DRAIN"
            with m.State("EXP_DRAIN"):
                with m.If(ex_done):
                    m.d.sync += clear_counters()
                    m.next = "RCP"
            with m.State("RCP"):      # reciprocal of each head's Z (pipelined, one per cycle)
                m.d.comb += [rcp.i_valid.eq(1), rcp.x.eq(zsum[r][j])]
                m.d.sync += r.eq(r + 1)
                with m.If(last_r):
                    m.d.sync += [r.eq(0), j.eq(j + 1)]
                    with m.If(last_j):
                        m.next = "RCP_DRAIN"
            with m.State("RCP_DRAIN"):
                with m.If(rc_done):
                    m.d.sync += clear_counters()
                    m.next = "PROB"
            with m.State("PROB"):     # P = rshift_round(p*m, r - 16), in place, all banks at once
                m.d.comb += [s.addr.eq(ptr) for s in srs]
                m.d.sync += [p_v[0].eq(1), p_a[0].eq(ptr), p_j.eq(j), ptr.eq(ptr + 1), t.eq(t + 1)]
                with m.If(last_t):
                    m.d.sync += [t.eq(0), j.eq(j + 1), ptr.eq(pbase + T), pbase.eq(pbase + T)]
                    with m.If(last_j):
                        m.next = "PROB_DRAIN"
            with m.State("PROB_DRAIN"):
                with m.If(Cat(*p_v) == 0):
                    m.d.sync += clear_counters()
                    m.next = "VALUE"
            with m.State("VALUE"):    # one V vector per cycle for all heads of its group
                m.d.comb += [self.v.ready.eq(1)] + [s.addr.eq(ptr) for s in srs]
                with m.If(self.v.valid):
                    m.d.sync += [v_v[0].eq(1), vvec1.eq(self.v.payload), vaddr[0].eq(vi), vfirst[0].eq(t == 0),
                                 vi.eq(vi + 1), cv.eq(cv + 1)]
                    with m.If(last_cv):
                        m.d.sync += [cv.eq(0), j.eq(j + 1), ptr.eq(ptr + T)]
                        with m.If(last_j):
                            m.d.sync += [j.eq(0), vi.eq(0), t.eq(t + 1), ptr.eq(t + 1)]
                            with m.If(last_t):
                                m.next = "VALUE_DRAIN"
            with m.State("VALUE_DRAIN"):
                with m.If(Cat(*v_v) == 0):
                    m.d.sync += clear_counters()
                    m.next = "OUT"
            with m.State("OUT"):      # heads in order: (j, r), channels (cv, lane)
                m.d.comb += [o.addr.eq(vbase + cv) for o in ors]
                m.d.sync += [o_v.eq(1), o_r.eq(r), o_l.eq(lane), lane.eq(lane + 1)]
                walk_heads("OUT_DRAIN")
            with m.State("OUT_DRAIN"):
                with m.If(~o_v & ~o_v1):
                    m.next = "DONE"
            with m.State("DONE"):
                m.d.sync += self.busy.eq(0)
                m.next = "IDLE"

        # ---- Q_SHIFT's first five steps, free-running (no clock enable from the FSM, whose
        # state decode routed across the die into the rounding add was the unit's 90.1 MHz
        # path): the head's |q| max, its bit length (the priority encoder into the - 7 and
        # the zero mux in one cycle was the unit's 95.2 MHz path), the shift, the rounding
        # add, the shifted value ------------------------------------------------------------
        m.d.sync += qs_a.eq(amax[h])
        qs_bl, qs_z = Signal(6), Signal()
        m.d.sync += [qs_bl.eq(bit_length(m, qs_a, 32, "q_bl")), qs_z.eq(qs_a == 0)]
        m.d.sync += qs_s0.eq(Mux(qs_z, -16, qs_bl - 7))
        half = Signal(33)
        m.d.comb += half.eq(Mux(qs_s0 > 0, Const(1, 33) << (qs_s0 - 1).as_unsigned()[:5], 0))
        m.d.sync += [qs_ah.eq(qs_a + half), qs_shr.eq(qs_ah >> qs_s0.as_unsigned()[:5])]

        # ---- Q codes: the shifted query, written to its byte lane ----------------------
        code = _shift_round_reg(m, qc_x, qc_s, 33, "qcode_v")
        qc_a2 = [Signal.like(qc_a, name=f"qc_a2_{k}") for k in range(2)]
        qc_lane2 = [Signal.like(qc_lane, name=f"qc_lane2_{k}") for k in range(2)]
        m.d.sync += [qc_v2[0].eq(qc_v), qc_a2[0].eq(qc_a), qc_lane2[0].eq(qc_lane),
                     qc_v2[1].eq(qc_v2[0]), qc_a2[1].eq(qc_a2[0]), qc_lane2[1].eq(qc_lane2[0])]
        m.d.comb += [qcw.addr.eq(qc_a2[1]), qcw.data.eq(Cat(*([code[:8]] * (R * L)))),
                     qcw.en.eq(Mux(qc_v2[1], Const(1, R * L) << qc_lane2[1], 0))]

        # ---- the multipliers: one array of par_heads x lanes, shared by the score phase
        # (int8 query code x K channel) and the value phase (17-bit P x V channel); the two
        # phases never overlap (all K vectors of a command, then all V vectors), so one
        # 18 x 32 multiplier per (head, lane) serves both. An 18 x 32 product is two
        # MULT18X18D (x the low 17 and the high 15 bits of the 32-bit side), each registered
        # alone, then their sum registered (the DSP output through the carry chain that sums
        # the two halves in one cycle was the unit's 85 MHz path): ``mul`` is there four
        # cycles after the operands' sources (the registered operands, the same again next
        # to the DSPs, the halves, the sum)
        mul = [[Signal(signed(50), name=f"mul{rr_}_{ll}") for ll in range(L)] for rr_ in range(R)]
        # the value phase's operands a cycle later: P registered by its block RAM first (the
        # RAM's 5.6 ns clock-to-out across the die into the operand mux was the unit's
        # 87.5 MHz path), the V vector with it
        vvec2 = Signal.like(vvec1)
        m.d.sync += vvec2.eq(vvec1)
        for rr_ in range(R):
            pval = Signal(17, name=f"pval{rr_}")
            m.d.sync += pval.eq(srs[rr_].data.as_unsigned()[:17])
            for ll in range(L):
                qa = qcr.data[(rr_ * L + ll) * 8:(rr_ * L + ll + 1) * 8].as_signed()
                # operands registered (a block RAM's output through the mux into the two
                # MULT18X18D of an 18 x 32 product was a long path): products one cycle later
                ma = Signal(signed(18), name=f"mul_a{rr_}_{ll}")
                mb = Signal(signed(32), name=f"mul_b{rr_}_{ll}")
                m.d.sync += [ma.eq(Mux(v_v[1], pval, qa)), mb.eq(Mux(v_v[1], vvec2[ll], kvec1[ll]))]
                # registered again next to each of the two MULT18X18D (few DSP columns, far
                # from the muxes and memories in the engine), and the halves' products
                # registered: on an ECP5 the DSPs' own input and output registers
                mlo = registered_product(m, ma, mb[:17], platform=platform, name=f"mul_lo{rr_}_{ll}")
                mhi = registered_product(m, ma, mb[17:].as_signed(), platform=platform, name=f"mul_hi{rr_}_{ll}")
                m.d.sync += mul[rr_][ll].eq((mhi << 17) + mlo)

        # ---- score pipeline ---------------------------------------------------------------
        # S1: products of the group's codes with the K vector
        prod = [[mul[rr_][ll][:40].as_signed() for ll in range(L)] for rr_ in range(R)]
        # (three stages ahead of it: the registered operands, twice, the product halves)
        s_pre, klast_pre, kj_pre = s_x[0], Signal(), Signal(6)
        s_pre2, klast_pre2, kj_pre2 = s_x[4], Signal(), Signal(6)
        s_pre3, klast_pre3, kj_pre3 = s_x[6], Signal(), Signal(6)
        m.d.sync += [s_pre.eq(s_v[0]), klast_pre.eq(klast[0]), kj_pre.eq(kj[0]),
                     s_pre2.eq(s_pre), klast_pre2.eq(klast_pre), kj_pre2.eq(kj_pre),
                     s_pre3.eq(s_pre2), klast_pre3.eq(klast_pre2), kj_pre3.eq(kj_pre2),
                     s_v[1].eq(s_pre3), klast[1].eq(klast_pre3), kj[1].eq(kj_pre3)]
        # S2: adder tree per head
        psum = [Signal(signed(SCORE_BITS), name=f"ps{rr_}") for rr_ in range(R)]
        for rr_ in range(R):
            m.d.sync += psum[rr_].eq(sum(prod[rr_]))
        m.d.sync += [s_v[2].eq(s_v[1]), klast[2].eq(klast[1]), kj[2].eq(kj[1])]
        # S3: accumulate; a head's last vector hands the dot product on
        sacc = [Signal(signed(SCORE_BITS), name=f"sacc{rr_}") for rr_ in range(R)]
        fin = [Signal(signed(SCORE_BITS), name=f"fin{rr_}") for rr_ in range(R)]
        for rr_ in range(R):
            tot = Signal(signed(SCORE_BITS), name=f"stot{rr_}")
            m.d.comb += tot.eq(sacc[rr_] + psum[rr_])
            with m.If(s_v[2]):
                m.d.sync += sacc[rr_].eq(Mux(klast[2], 0, tot))
                m.d.sync += fin[rr_].eq(tot)
        m.d.sync += [s_v[3].eq(s_v[2] & klast[2]), kj[3].eq(kj[2])]
        # S4: s*C and the shift amount 2F - sh
        sc = [Signal(signed(SCORE_BITS + 18), name=f"sc{rr_}") for rr_ in range(R)]
        amt = [Signal(signed(10), name=f"amt{rr_}") for rr_ in range(R)]
        # in three stages: the operands registered (next to the DSPs), three 16 x 17 partial
        # products (one MULT18X18D each, as the 48 x 17 product took), then their sum;
        # s = hi*2^32 + mid*2^16 + lo (hi signed)
        kj4a, kj4b = Signal(6), Signal(6)
        for rr_ in range(R):
            # registered_product: the operands' and the products' registers (on an ECP5 the
            # MULT18X18D's own)
            f, c = fin[rr_], cmd.c
            plo = registered_product(m, f[:16], c, platform=platform, name=f"sc_lo{rr_}")
            pmid = registered_product(m, f[16:32], c, platform=platform, name=f"sc_mid{rr_}")
            phi = registered_product(m, f[32:48].as_signed(), c, platform=platform, name=f"sc_hi{rr_}")
            amt_a = Signal(signed(10), name=f"amt_a{rr_}")
            amt_b = Signal(signed(10), name=f"amt_b{rr_}")
            m.d.sync += amt_a.eq(2 * F - shb[rr_][kj[3]])
            m.d.sync += amt_b.eq(amt_a)
            m.d.sync += [sc[rr_].eq((phi << 32) + (pmid << 16) + plo), amt[rr_].eq(amt_b)]
        m.d.sync += [s_x[3].eq(s_v[3]), kj4a.eq(kj[3]), s_x[5].eq(s_x[3]), kj4b.eq(kj4a),
                     s_v[4].eq(s_x[5]), kj[4].eq(kj4b)]
        # S5: S = sat32(rshift_round(s*C, 2F - sh))
        sval = [Signal(signed(32), name=f"sval{rr_}") for rr_ in range(R)]
        for rr_ in range(R):
            # the shift in two register stages, then the saturation
            m.d.sync += sval[rr_].eq(sat32(m, _shift_round_reg(m, sc[rr_], amt[rr_], SCORE_BITS + 26, f"ssh{rr_}"),
                                           f"s_sat{rr_}"))
        kj5a, kj5b = Signal(6), Signal(6)
        m.d.sync += [s_x[1].eq(s_v[4]), kj5a.eq(kj[4]), s_x[2].eq(s_x[1]), kj5b.eq(kj5a),
                     s_v[5].eq(s_x[2]), kj[5].eq(kj5b)]
        # S6: store at j*T + t, running max (scores finalize in (t, j) order)
        s_ptr = Signal(range(KV * T + 1))
        s_t = Signal(self.ctx_bits)
        with m.If(s_v[5]):
            m.d.sync += s_ptr.eq(s_ptr + T)
            with m.If(kj[5] == nkv - 1):
                m.d.sync += [s_t.eq(s_t + 1), s_ptr.eq(s_t + 1)]
        with m.If(go):
            m.d.sync += [s_ptr.eq(0), s_t.eq(0)]
        # the running max compares the score with every KV head's max at once and a one-hot
        # head (registered) picks the one to update: the head-indexed mux before the 32-bit
        # compare was the attention unit's 80.0 MHz path
        kj5_hot = Signal(KV)
        m.d.sync += kj5_hot.eq(Const(1, KV) << kj5b)
        for rr_ in range(R):
            with m.If(s_v[5]):
                m.d.comb += [sws[rr_].addr.eq(s_ptr), sws[rr_].data.eq(sval[rr_]), sws[rr_].en.eq(1)]
                for jj in range(KV):
                    with m.If(kj5_hot[jj] & (sval[rr_] > smax[rr_][jj])):
                        m.d.sync += smax[rr_][jj].eq(sval[rr_])

        # ---- exp: one (j, t) of every bank per cycle ----------------------------------------
        # the score (the block RAM's output) and its head's max registered, then S - max
        # saturated and registered (the RAM's clock-to-out into the subtract was a long path)
        e_v2, e_v3 = Signal(), Signal()
        m.d.sync += [e_v2.eq(e_v), e_v3.eq(e_v2)]
        for rr_, ex in enumerate(exs):
            es = Signal(signed(32), name=f"ed_s{rr_}")
            em = Signal(signed(32), name=f"ed_m{rr_}")
            dd = Signal(signed(34), name=f"ed{rr_}")
            dx = Signal(signed(32), name=f"ed_x{rr_}")
            m.d.sync += [es.eq(srs[rr_].data), em.eq(smax[rr_][e_j])]
            m.d.comb += dd.eq(es - em)
            m.d.sync += dx.eq(sat32(m, dd, f"ed_sat{rr_}"))
            m.d.comb += [ex.i_valid.eq(e_v3), ex.x.eq(dx)]
        # results return in issue order: their own (j, t) pointer
        x_ptr = Signal(range(KV * T + 1))
        x_base = Signal(range(KV * T + 1))
        x_t = Signal(self.ctx_bits)
        x_j = Signal(6)
        with m.If(exs[0].o_valid):
            m.d.sync += [x_ptr.eq(x_ptr + 1), x_t.eq(x_t + 1)]
            with m.If(x_t == cmd.n - 1):
                m.d.sync += [x_t.eq(0), x_j.eq(x_j + 1), x_ptr.eq(x_base + T), x_base.eq(x_base + T)]
                with m.If(x_j == nkv - 1):
                    m.d.sync += ex_done.eq(1)
            for rr_, ex in enumerate(exs):
                m.d.comb += [sws[rr_].addr.eq(x_ptr), sws[rr_].data.eq(ex.y), sws[rr_].en.eq(1)]
                m.d.sync += zsum[rr_][x_j].eq(zsum[rr_][x_j] + ex.y)
        with m.If(go):
            m.d.sync += [x_ptr.eq(0), x_base.eq(0), x_t.eq(0), x_j.eq(0), ex_done.eq(0)]

        # ---- reciprocals: results in (j, r) order ----------------------------------------
        c_r = Signal(range(R + 1))
        c_j = Signal(6)
        with m.If(rcp.o_valid):
            m.d.sync += [rmb[c_r][c_j].eq(rcp.m), rsb[c_r][c_j].eq(rcp.s), c_r.eq(c_r + 1)]
            with m.If(c_r == rep - 1):
                m.d.sync += [c_r.eq(0), c_j.eq(c_j + 1)]
                with m.If(c_j == nkv - 1):
                    m.d.sync += rc_done.eq(1)
        with m.If(go):
            m.d.sync += [c_r.eq(0), c_j.eq(0), rc_done.eq(0)]

        # ---- P = rshift_round(p*m, r - 16) --------------------------------------------------
        # stages: p and (m, r) registered; the same again (next to the DSPs) and the two
        # partial products p * m[:18], p * m[18:] (registered_product: on an ECP5 the
        # MULT18X18Ds' own registers); their sum; the shift in two stages; write back
        pm = [Signal(48, name=f"pm{rr_}") for rr_ in range(R)]
        psh = [Signal(signed(9), name=f"psh{rr_}") for rr_ in range(R)]
        for rr_ in range(R):
            pa, pb = Signal(17, name=f"pa{rr_}"), Signal(24, name=f"pb{rr_}")
            psh_a = Signal(signed(9), name=f"psh_a{rr_}")
            psh_b = Signal(signed(9), name=f"psh_b{rr_}")
            psh_c = Signal(signed(9), name=f"psh_c{rr_}")
            m.d.sync += [pa.eq(srs[rr_].data.as_unsigned()[:17]), pb.eq(rmb[rr_][p_j]),
                         psh_a.eq(rsb[rr_][p_j] - 16)]
            plo = registered_product(m, pa, pb[:18], platform=platform, name=f"pm_lo{rr_}")
            phi = registered_product(m, pa, pb[18:], platform=platform, name=f"pm_hi{rr_}")
            m.d.sync += [psh_b.eq(psh_a), psh_c.eq(psh_b)]
            m.d.sync += [pm[rr_].eq((phi << 18) + plo), psh[rr_].eq(psh_c)]
        for k in range(1, len(p_v)):
            m.d.sync += [p_v[k].eq(p_v[k - 1]), p_a[k].eq(p_a[k - 1])]
        for rr_ in range(R):
            pv = _shift_round_reg(m, pm[rr_], psh[rr_], 48, f"pp{rr_}")
            with m.If(p_v[-1]):
                m.d.comb += [sws[rr_].addr.eq(p_a[-1]), sws[rr_].data.eq(pv), sws[rr_].en.eq(1)]

        # ---- value pipeline ----------------------------------------------------------------
        # V(VA-2): the accumulator word is read (the products are made in V0..VA: P and V
        # registered, the operands, again, the halves, the sum); V(VA-1): the word leaves the block
        # RAM and is registered; V(VA): accumulate and write back. The block RAM's output
        # straight into the 56-bit add and back into its write port was one cycle; now the
        # add starts from registers. The previous vector's sum is not in the word read one
        # cycle before it was written: a vector whose predecessor (in the previous cycle)
        # wrote the same word takes that sum from ``wsum`` instead; two cycles apart, the
        # transparent read already sees the write.
        vprod = mul
        for k in range(1, VA + 1):
            m.d.sync += [v_v[k].eq(v_v[k - 1]), vaddr[k].eq(vaddr[k - 1]), vfirst[k].eq(vfirst[k - 1])]
        with m.If(v_v[VA - 2]):
            m.d.comb += [o.addr.eq(vaddr[VA - 2]) for o in ors]
        # V(VA): the previous cycle's V(VA) wrote this vector's word. Decided a stage early
        # (the vector in VA now is the previous one when the vector in VA-1 gets there; the
        # stages advance every cycle) and registered: the address compare in the accumulate
        # stage fanning out to every accumulator lane's base mux was the unit's 78 MHz path
        fwd = Signal()
        m.d.sync += fwd.eq(v_v[VA] & (vaddr[VA] == vaddr[VA - 1]))
        for rr_ in range(R):
            for ll in range(L):
                rd = Signal(signed(ACC_BITS), name=f"ord{rr_}_{ll}")
                ws = Signal(signed(ACC_BITS), name=f"wsum{rr_}_{ll}")
                tot = Signal(signed(ACC_BITS), name=f"otot{rr_}_{ll}")
                base = Mux(vfirst[VA], 0, Mux(fwd, ws, rd))   # the first token starts from zero
                m.d.comb += tot.eq(base + vprod[rr_][ll])
                m.d.sync += rd.eq(ors[rr_].data[ll])
                with m.If(v_v[VA]):
                    m.d.sync += ws.eq(tot)
                    m.d.comb += [ows[rr_].addr.eq(vaddr[VA]), ows[rr_].en.eq(1), ows[rr_].data[ll].eq(tot)]

        # ---- out: sat32(rshift_round(o, 16)) of bank o_r, lane o_l --------------------------
        banks = Array(Array(o.data[ll] for ll in range(L)) for o in ors)
        o_w = Signal(signed(ACC_BITS))    # the selected word, registered
        m.d.sync += [o_w.eq(banks[o_r][o_l]), o_v1.eq(o_v)]
        with m.If(o_v1):
            m.d.sync += self.y.eq(sat32(m, rr(o_w, 16), "o_sat"))
        m.d.sync += self.o_valid.eq(o_v1)
        return m
