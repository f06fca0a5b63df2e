"""Attention unit of the decode engine: one query token over the cached keys and values.

:class:`AttentionUnit` computes :func:`ref_model.decode.attention` bit for bit for all
query heads of a layer (grouped-query: head ``h`` reads KV head ``h // (nh/nkv)``). It is
memory-agnostic: the KV unit streams the already dequantized K rows and then the V rows
(token order, each row ``nkv x head_dim`` int32 ``Q.frac``), so each cached row is read
from memory once per layer for all the heads that share it.

Phases (one MAC per cycle in this first version: correct at any size, fast enough for
the small configs; the lane-parallel version keeps these phases):

1. Q: ``nh x hd`` queries arrive; per head the power-of-two quantizer
   (:func:`ref_model.decode.quantize_act` with ``scale_bits = 0``): ``sh`` smallest with
   ``rshift_round(amax, sh) <= 127`` (``amax = 0``: ``sh = -16``), codes
   ``rshift_round(q, sh)``.
2. Scores: per K row, ``s_h += qa_h[c] * k[c]`` over the head's channels; at the row's
   end ``S_h[t] = sat32(rshift_round(s_h*C, 2*frac - sh_h))`` with
   ``C = round(2**16/sqrt(hd))`` (a constant per head_dim, from the command), running max.
3. Softmax per head: ``p = exp_neg(sat32(S - max))``, ``Z = sum p``,
   ``(m, r) = reciprocal(Z)``, ``P = rshift_round(p*m, r - 16)``.
4. Values: per V row, ``o_h[c] += P_h[t] * v[c]`` (56-bit accumulators).
5. Out: ``sat32(rshift_round(o, 16))`` for every head and channel, in order.
"""

from amaranth.hdl import Array, Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .funcs import ExpNegUnit, ReciprocalUnit, bit_length, rr
from .vector import INT32_MIN, sat32

ACC_BITS = 56


class AttendCommand(data.StructLayout):
    def __init__(self, ctx_bits: int):
        super().__init__({"heads": 6, "kv_heads": 6, "head_dim": 9, "n": ctx_bits, "c": 17})


class AttentionUnit(wiring.Component):
    """See the module docstring.

    Members
    -------
    cmd : In(stream of AttendCommand): heads, kv_heads, head_dim, ``n`` tokens (>= 1),
        ``c`` = round(2**16/sqrt(head_dim)).
    q : In(stream of signed(32)): ``heads x head_dim`` queries (after RoPE).
    k, v : In(streams of signed(32)): ``n`` rows of ``kv_heads x head_dim``, all K rows
        first, then all V rows.
    o_valid, y : Out: the ``heads x head_dim`` outputs in order.
    busy : Out(1).
    """

    def __init__(self, *, max_heads: int, max_head_dim: int, max_ctx: int, frac: int,
                 exp_table: list[int], log2e_q30: int, rcp_table: list[int]):
        self.max_heads, self.max_hd, self.max_ctx, self.frac = max_heads, max_head_dim, max_ctx, frac
        self.exp_table, self.log2e, self.rcp_table = exp_table, log2e_q30, rcp_table
        self.ctx_bits = max(max_ctx.bit_length(), 1)
        super().__init__({
            "cmd": In(stream.Signature(AttendCommand(self.ctx_bits))),
            "q": In(stream.Signature(signed(32))),
            "k": In(stream.Signature(signed(32))),
            "v": In(stream.Signature(signed(32))),
            "o_valid": Out(1), "y": Out(signed(32)), "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        F = self.frac
        H, D, T = self.max_heads, self.max_hd, self.max_ctx
        m.submodules.exp = ex = ExpNegUnit(self.exp_table, self.log2e)
        m.submodules.rcp = rcp = ReciprocalUnit(self.rcp_table)
        m.submodules.qmem = qmem = Memory(shape=signed(32), depth=H * D, init=[])
        m.submodules.smem = smem = Memory(shape=signed(32), depth=H * T, init=[])   # S, then p, then P
        m.submodules.omem = omem = Memory(shape=signed(ACC_BITS), depth=H * D, init=[])
        qw, qr = qmem.write_port(), qmem.read_port(domain="comb")
        sw, sr = smem.write_port(), smem.read_port(domain="comb")
        ow, orp = omem.write_port(), omem.read_port(domain="comb")

        cmd = Signal(AttendCommand(self.ctx_bits))
        rep = Signal(6)          # query heads per KV head
        hd = cmd.head_dim
        # per-head state in registers (a handful of heads)
        amax = Array(Signal(32, name=f"amax{h}") for h in range(H))
        sh = Array(Signal(signed(8), name=f"sh{h}") for h in range(H))
        sacc = Array(Signal(signed(48), name=f"s{h}") for h in range(H))
        smax = Array(Signal(signed(32), name=f"smax{h}") for h in range(H))
        zsum = Array(Signal(32, name=f"z{h}") for h in range(H))
        rm = Array(Signal(24, name=f"rm{h}") for h in range(H))
        rs = Array(Signal(signed(8), name=f"rs{h}") for h in range(H))

        i = Signal(16)           # element counter within a phase
        h = Signal(6)            # head
        c = Signal(9)            # channel
        j = Signal(6)            # kv head
        r = Signal(6)            # head within the kv group
        t = Signal(self.ctx_bits)  # token
        qv = self.q.payload

        # shared MAC pipeline: product registered, then accumulate
        mac_v = Signal()
        mac_kind = Signal()      # 0: score, 1: value
        mac_h = Signal(6)
        mac_addr = Signal(range(H * D))
        mac_p = Signal(signed(56))
        mac_last = Signal()      # score: this element ends the head's row part
        m.d.sync += mac_v.eq(0)
        fin_v, ex_busy, rcp_busy = Signal(), Signal(), Signal()

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.cmd.ready.eq(1)
                with m.If(self.cmd.valid):
                    m.d.sync += [cmd.eq(self.cmd.payload), i.eq(0), h.eq(0), c.eq(0), self.busy.eq(1)]
                    for k in range(H):
                        m.d.sync += [amax[k].eq(0), sacc[k].eq(0), smax[k].eq(INT32_MIN), zsum[k].eq(0)]
                    m.next = "REP"
            with m.State("REP"):      # heads per kv head (small division by repeated subtraction)
                m.d.sync += rep.eq(0)
                m.d.sync += i.eq(cmd.heads)
                m.next = "REP_LOOP"
            with m.State("REP_LOOP"):
                with m.If(i != 0):
                    m.d.sync += [i.eq(i - cmd.kv_heads), rep.eq(rep + 1)]
                with m.Else():
                    m.next = "Q_IN"
            with m.State("Q_IN"):
                m.d.comb += [self.q.ready.eq(1), qw.addr.eq(h * D + c), qw.data.eq(qv), qw.en.eq(self.q.valid)]
                mag = Signal(32)
                m.d.comb += mag.eq(Mux(qv < 0, -qv, qv))
                with m.If(self.q.valid):
                    with m.If(mag > amax[h]):
                        m.d.sync += amax[h].eq(mag)
                    m.d.sync += c.eq(c + 1)
                    with m.If(c == hd - 1):
                        m.d.sync += [c.eq(0), h.eq(h + 1)]
                        with m.If(h == cmd.heads - 1):
                            m.d.sync += h.eq(0)
                            m.next = "Q_SHIFT"
            with m.State("Q_SHIFT"):  # per head: the power-of-two shift
                a = amax[h]
                bl = bit_length(m, a, 32, "q_bl")
                s0 = Signal(signed(8))
                m.d.comb += s0.eq(Mux(a == 0, -16, bl - 7))
                over = Signal()
                half = Signal(33)
                m.d.comb += half.eq(Mux(s0 > 0, Const(1, 33) << (s0 - 1).as_unsigned()[:5], 0))
                m.d.comb += over.eq((s0 > 0) & (((a + half) >> s0.as_unsigned()[:5]) > 127))
                m.d.sync += [sh[h].eq(s0 + over), h.eq(h + 1)]
                with m.If(h == cmd.heads - 1):
                    m.d.sync += [h.eq(0), j.eq(0), c.eq(0), r.eq(0), t.eq(0)]
                    m.next = "SCORE"
            with m.State("SCORE"):
                # element (t, j, c) of the K rows meets heads j*rep + r, r = 0..rep-1
                hh = Signal(6)
                m.d.comb += [hh.eq(j * rep + r), qr.addr.eq(hh * D + c)]
                qs = Signal(signed(32))
                s_h = sh[hh]
                # the query code on the fly: rshift_round(q, sh) (sh may be negative)
                qhalf = Signal(33)
                m.d.comb += qhalf.eq(Mux(s_h > 0, Const(1, 33) << (s_h - 1).as_unsigned()[:5], 0))
                m.d.comb += qs.eq(Mux(s_h >= 0, (qr.data + qhalf) >> s_h.as_unsigned()[:5],
                                      qr.data << (-s_h).as_unsigned()[:5]))
                with m.If(self.k.valid):
                    m.d.sync += [mac_v.eq(1), mac_kind.eq(0), mac_h.eq(hh), mac_p.eq(qs * self.k.payload),
                                 mac_last.eq(c == hd - 1)]
                    m.d.sync += r.eq(r + 1)
                    with m.If(r == rep - 1):
                        m.d.comb += self.k.ready.eq(1)
                        m.d.sync += [r.eq(0), c.eq(c + 1)]
                        with m.If(c == hd - 1):
                            m.d.sync += [c.eq(0), j.eq(j + 1)]
                            with m.If(j == cmd.kv_heads - 1):
                                m.d.sync += [j.eq(0), t.eq(t + 1)]
                                with m.If(t == cmd.n - 1):
                                    m.next = "SCORE_DRAIN"
            with m.State("SCORE_DRAIN"):
                with m.If(~mac_v & ~fin_v):
                    m.d.sync += [h.eq(0), t.eq(0)]
                    m.next = "EXP"
            with m.State("EXP"):      # p = exp_neg(S - max) for every (h, t), Z sums
                m.d.comb += [sr.addr.eq(h * T + t), ex.i_valid.eq(1)]
                d = Signal(signed(34))
                m.d.comb += d.eq(sr.data - smax[h])
                m.d.comb += ex.x.eq(sat32(m, d, "d_sat"))
                m.d.sync += t.eq(t + 1)
                with m.If(t == cmd.n - 1):
                    m.d.sync += [t.eq(0), h.eq(h + 1)]
                    with m.If(h == cmd.heads - 1):
                        m.next = "EXP_DRAIN"
            with m.State("EXP_DRAIN"):
                with m.If(~ex_busy):
                    m.d.sync += h.eq(0)
                    m.next = "RCP"
            with m.State("RCP"):      # reciprocal of each head's Z (pipelined, one per cycle)
                m.d.comb += [rcp.i_valid.eq(1), rcp.x.eq(zsum[h])]
                m.d.sync += h.eq(h + 1)
                with m.If(h == cmd.heads - 1):
                    m.next = "RCP_DRAIN"
            with m.State("RCP_DRAIN"):
                with m.If(~rcp_busy):
                    m.d.sync += [h.eq(0), t.eq(0)]
                    m.next = "PROB"
            with m.State("PROB"):     # P = rshift_round(p*m, r - 16), in place
                m.d.comb += [sr.addr.eq(h * T + t), sw.addr.eq(h * T + t), sw.en.eq(1)]
                pm = Signal(48)
                m.d.comb += pm.eq(sr.data.as_unsigned()[:17] * rm[h])
                psh = Signal(signed(9))
                m.d.comb += psh.eq(rs[h] - 16)
                phalf = Signal(48)
                m.d.comb += phalf.eq(Mux(psh > 0, Const(1, 48) << (psh - 1).as_unsigned()[:6], 0))
                m.d.comb += sw.data.eq(Mux(psh > 0, (pm + phalf) >> psh.as_unsigned()[:6],
                                           pm << (-psh).as_unsigned()[:6]))
                m.d.sync += t.eq(t + 1)
                with m.If(t == cmd.n - 1):
                    m.d.sync += [t.eq(0), h.eq(h + 1)]
                    with m.If(h == cmd.heads - 1):
                        m.d.sync += [h.eq(0), c.eq(0), i.eq(0)]
                        m.next = "O_CLEAR"
            with m.State("O_CLEAR"):
                m.d.comb += [ow.addr.eq(i), ow.data.eq(0), ow.en.eq(1)]
                m.d.sync += i.eq(i + 1)
                with m.If(i == H * D - 1):
                    m.d.sync += [j.eq(0), c.eq(0), r.eq(0), t.eq(0)]
                    m.next = "VALUE"
            with m.State("VALUE"):
                hh = Signal(6)
                m.d.comb += [hh.eq(j * rep + r), sr.addr.eq(hh * T + t)]
                with m.If(self.v.valid):
                    m.d.sync += [mac_v.eq(1), mac_kind.eq(1), mac_addr.eq(hh * D + c),
                                 mac_p.eq(sr.data * self.v.payload)]
                    m.d.sync += r.eq(r + 1)
                    with m.If(r == rep - 1):
                        m.d.comb += self.v.ready.eq(1)
                        m.d.sync += [r.eq(0), c.eq(c + 1)]
                        with m.If(c == hd - 1):
                            m.d.sync += [c.eq(0), j.eq(j + 1)]
                            with m.If(j == cmd.kv_heads - 1):
                                m.d.sync += [j.eq(0), t.eq(t + 1)]
                                with m.If(t == cmd.n - 1):
                                    m.next = "VALUE_DRAIN"
            with m.State("VALUE_DRAIN"):
                with m.If(~mac_v):
                    m.d.sync += [h.eq(0), c.eq(0)]
                    m.next = "OUT"
            with m.State("OUT"):
                m.d.comb += orp.addr.eq(h * D + c)
                m.d.sync += [self.o_valid.eq(1), self.y.eq(sat32(m, rr(orp.data, 16), "o_sat")), c.eq(c + 1)]
                with m.If(c == hd - 1):
                    m.d.sync += [c.eq(0), h.eq(h + 1)]
                    with m.If(h == cmd.heads - 1):
                        m.next = "DONE"
            with m.State("DONE"):
                m.d.sync += [self.o_valid.eq(0), self.busy.eq(0)]
                m.next = "IDLE"

        # ---- MAC stage 2 ----------------------------------------------------------------
        # score: accumulate into the head's register; the row part's end finalizes S
        fin_h = Signal(6)
        fin_s = Signal(signed(48))
        m.d.sync += fin_v.eq(0)
        with m.If(mac_v & (mac_kind == 0)):
            tot = Signal(signed(48))
            m.d.comb += tot.eq(sacc[mac_h] + mac_p)
            with m.If(mac_last):
                m.d.sync += [sacc[mac_h].eq(0), fin_v.eq(1), fin_h.eq(mac_h), fin_s.eq(tot)]
            with m.Else():
                m.d.sync += sacc[mac_h].eq(tot)
        # value: read-modify-write of the output accumulator (same address only a row apart)
        with m.If(mac_v & (mac_kind == 1)):
            m.d.comb += [orp.addr.eq(mac_addr), ow.addr.eq(mac_addr), ow.en.eq(1),
                         ow.data.eq(orp.data + mac_p)]
        # score finalize: S = sat32(rshift_round(s*C, 2F - sh)), stored, running max
        sc = Signal(signed(72))
        m.d.comb += sc.eq(fin_s * cmd.c)
        amt = Signal(signed(10))
        m.d.comb += amt.eq(2 * F - sh[fin_h])
        fhalf = Signal(72)
        m.d.comb += fhalf.eq(Mux(amt > 0, Const(1, 72) << (amt - 1).as_unsigned()[:7], 0))
        shifted = Signal(signed(80))
        m.d.comb += shifted.eq(Mux(amt > 0, (sc + fhalf) >> amt.as_unsigned()[:7], sc << (-amt).as_unsigned()[:7]))
        s_val = sat32(m, shifted, "s_sat")
        # tokens advance after the finalizing element of the last kv head; fin lags by
        # one cycle, so the token index of a finalized score is tracked separately
        fin_t = Signal(self.ctx_bits)
        with m.If(fin_v):
            m.d.comb += [sw.addr.eq(fin_h * T + fin_t), sw.data.eq(s_val), sw.en.eq(1)]
            with m.If(s_val > smax[fin_h]):
                m.d.sync += smax[fin_h].eq(s_val)
            with m.If(fin_h == cmd.heads - 1):
                m.d.sync += fin_t.eq(fin_t + 1)
        with m.If(self.cmd.valid & self.cmd.ready):
            m.d.sync += fin_t.eq(0)
        # exp results: p stored over S, Z summed (results return in issue order)
        ex_h = Signal(6)
        ex_t = Signal(self.ctx_bits)
        with m.If(ex.o_valid):
            m.d.comb += [sw.addr.eq(ex_h * T + ex_t), sw.data.eq(ex.y), sw.en.eq(1)]
            m.d.sync += [zsum[ex_h].eq(zsum[ex_h] + ex.y), ex_t.eq(ex_t + 1)]
            with m.If(ex_t == cmd.n - 1):
                m.d.sync += [ex_t.eq(0), ex_h.eq(ex_h + 1)]
        with m.If(self.cmd.valid & self.cmd.ready):
            m.d.sync += [ex_h.eq(0), ex_t.eq(0)]
        m.d.comb += ex_busy.eq((ex_h != cmd.heads) | ex.o_valid)
        rc_h = Signal(6)
        with m.If(rcp.o_valid):
            m.d.sync += [rm[rc_h].eq(rcp.m), rs[rc_h].eq(rcp.s), rc_h.eq(rc_h + 1)]
        with m.If(self.cmd.valid & self.cmd.ready):
            m.d.sync += rc_h.eq(0)
        m.d.comb += rcp_busy.eq(rc_h != cmd.heads)
        return m
