"""The decode engine: a sequencer running token programs over on-chip buffers and units.

:class:`DecodeEngine` fetches the token program (:mod:`hw.decode.isa`) from external
memory and executes one instruction at a time, each on its unit: MATVEC on
:class:`~hw.decode.matvec.MatvecUnit`, RMSNORM / ROPE / ADD / SWIGLU / ARGMAX on the
vector units, KV_APPEND and the KV half of ATTEND on :class:`~hw.decode.kv.KVUnit`,
ATTEND's math on :class:`~hw.decode.attention.AttentionUnit`; EMBED and STORE are
small DMA steps here. The argmax unit snoops every MATVEC's output, so the ARGMAX over
the LM head's logits (the MATVEC just before it) takes the running result without another
pass over the buffer; ARGMAX over anything else streams its source. Activations live in on-chip buffers (:class:`~hw.decode.isa.Buf`),
sized by the engine's limits; the program is streamed in ahead of execution.

Interface
---------
``start`` (pulse) with ``program_addr``, ``n_instr``, ``token``, ``pos``: run one token
program; ``busy`` until a cycle after its HALT (the counters count each event a cycle
late, from registers); then ``next_token`` holds ARGMAX's result. ``counters`` (since
``start``, complete when ``busy`` falls): cycles, cycles per unit class, bytes read and written, read-port idle
cycles (busy and no read beat), matvec cycles stalled for weights. ``error``: a memory
response error or an unknown opcode (sticky until the next start).

One AXI4 read port (program, weights, gains/constants/embedding, KV: arbitrated by ID)
and one AXI4 write port (KV, STORE; one writer at a time, as instructions run in order).
"""

import operator
from functools import reduce

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out, connect

from ..mem.axi4 import AXI4ReadSignature, AXI4WriteSignature
from ..mem.gearbox import UnitPacker, UnitUnpacker, VectorUnpacker
from ..mem.reader import BEATS_BITS, BurstReader, ReadArbiter
from ..mem.writer import BurstWriter
from ..pipeline import RegFIFO2, delay
from .attention import AttentionUnit
from .isa import GROUP, INSTR_BITS, MODE_NORM_INPUT, Buf, InstrLayout, Op, Reg
from .kv import KVUnit
from .products import lut_mul_pipe, registered_product
from .matvec import MatvecUnit, _f16
from .vector import ArgmaxUnit, ElementwiseUnit, RmsNormUnit, RopeUnit, sat32

COUNTER_BITS = 40


class EngineCounters(data.StructLayout):
    def __init__(self):
        super().__init__({k: COUNTER_BITS for k in (
            "cycles", "matvec_cycles", "attend_cycles", "kv_cycles", "other_cycles",
            "read_bytes", "write_bytes", "read_idle", "weight_stall")})


class EngineLimits:
    """Buffer sizes and unit limits of one engine (from the config's decode section)."""

    def __init__(self, *, dim: int, ffn: int, heads: int, kv_heads: int, head_dim: int, vocab: int, ctx: int,
                 lanes: int = 1, matvec_lut_lanes: int = 0):
        #: channels per cycle of the KV read and attention path (power of two dividing head_dim)
        self.lanes = lanes
        #: matvec lanes whose product is built from LUTs instead of a DSP block (0..32)
        self.matvec_lut_lanes = matvec_lut_lanes
        self.dim, self.ffn, self.heads, self.kv_heads = dim, ffn, heads, kv_heads
        self.head_dim, self.vocab, self.ctx = head_dim, vocab, ctx

    def buffer_depth(self, buf: Buf) -> int:
        return {Buf.X: self.dim, Buf.H: self.dim, Buf.T: self.dim, Buf.Q: self.heads * self.head_dim,
                Buf.O: self.heads * self.head_dim, Buf.K: self.kv_heads * self.head_dim,
                Buf.V: self.kv_heads * self.head_dim, Buf.G: self.ffn, Buf.U: self.ffn,
                Buf.LOGITS: self.vocab}[buf]


def matvec_prefetch(limits: EngineLimits, *, max_burst: int = 16, outstanding: int = 4) -> tuple[int, int]:
    """Depths (code beats, scale beats) of the matvec's weight readers.

    A MATVEC starts its weight reads when it takes the command and quantizes its input
    meanwhile (about ``cols`` cycles, up to ``max(dim, ffn)``); the port delivers at most a
    beat per cycle then, about four code beats per scale beat for Q4 weights (16 code bytes
    and 4 scale bytes per group). Code FIFO: the largest power of two not above
    ``max(dim, ffn)``; scales: a quarter of it (SmolLM2: 1024 and 256 beats, 16 + 4 KiB
    on a 128-bit port). Never below the readers' default ``outstanding x max_burst``.
    """
    base = max_burst * outstanding
    longest = max(limits.dim, limits.ffn)
    code = 1 << (longest.bit_length() - 1)
    return max(code, base), max(code // 4, base)


class _Streamer(wiring.Component):
    """Streams ``count`` words of one buffer (a synchronous read port shared through the
    engine's port mux) with a small FIFO, so the consumer may stall.

    ``data`` arrives ``read_latency`` cycles after ``en`` (in the engine: the registered
    read request, the port's read register, the registered mux over the buffers); at most
    ``depth - 1`` words are in flight or queued, so the FIFO never overflows; one word per
    cycle while the consumer takes them. ``out`` is a :class:`~hw.pipeline.RegFIFO2`'s
    output (``valid`` and ``payload`` from registers; ``ready`` reaches only its pointers),
    one cycle behind the FIFO's. ``done``: nothing left to issue, in flight or queued, and
    no ``start`` this cycle."""

    def __init__(self, index_bits: int, *, read_latency: int = 2):
        self.read_latency = read_latency
        self.depth = read_latency + 3
        super().__init__({"start": In(1), "count": In(index_bits), "addr": Out(index_bits), "en": Out(1),
                          "data": In(signed(32)), "out": Out(stream.Signature(signed(32))), "done": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.q = q = fifo.SyncFIFOBuffered(width=32, depth=self.depth)
        left = Signal.like(self.count)
        inflight = Signal(range(self.depth + 1))
        issue = Signal()
        m.d.comb += issue.eq((left != 0) & (inflight + q.level < self.depth - 1))
        with m.If(self.start):
            m.d.sync += [left.eq(self.count), self.addr.eq(0)]
        with m.Elif(issue):
            m.d.sync += [left.eq(left - 1), self.addr.eq(self.addr + 1)]
        m.d.comb += self.en.eq(issue)
        got = delay(m, issue, self.read_latency, 1, name="got")   # the word arrives
        # the output through a two-entry register FIFO: the consumer's ready (a unit's
        # handshake across the die) reaches only its pointers, not the FIFO's level and
        # read enable above, which feed ``issue`` (that route was the engine's path)
        m.submodules.ob = ob = RegFIFO2(signed(32))
        m.d.comb += [q.w_en.eq(got), q.w_data.eq(self.data), ob.i.payload.eq(q.r_data.as_signed()),
                     ob.i.valid.eq(q.r_rdy), q.r_en.eq(ob.i.ready)]
        wiring.connect(m, ob.o, wiring.flipped(self.out))
        m.d.sync += inflight.eq(inflight + issue - got)
        m.d.comb += self.done.eq(~self.start & (left == 0) & (inflight == 0) & ~q.r_rdy & ~ob.o.valid)
        return m


class DecodeEngine(wiring.Component):
    """See the module docstring. ``numerics`` is a :class:`ref_model.decode.DecodeNumerics`
    -like object (hardware constants); ``tables`` the ROMs of
    :func:`ref_model.fixedpoint.rom_tables`."""

    def __init__(self, limits: EngineLimits, numerics, tables: dict, *, addr_bits: int = 32, data_bits: int = 128,
                 max_burst: int = 16, outstanding: int = 4):
        if data_bits not in (64, 128):
            raise ValueError("the decode engine needs a 64- or 128-bit memory port")
        if limits.lanes % (data_bits // 32):
            # KV_APPEND quantizes a beat of channels of one head per cycle; a model's
            # head_dim is a multiple of the lanes, so of the beat too
            raise ValueError(f"{limits.lanes} attention lanes: the KV unit needs a multiple of "
                             f"{data_bits // 32} (raw words per beat)")
        self.lim, self.num, self.tables = limits, numerics, tables
        self.addr_bits, self.data_bits, self.max_burst, self.outstanding = addr_bits, data_bits, max_burst, outstanding
        self.index_bits = max(max(limits.buffer_depth(b) for b in Buf), 2).bit_length()
        super().__init__({
            "start": In(1), "program_addr": In(addr_bits), "n_instr": In(16), "token": In(17), "pos": In(14),
            "busy": Out(1), "next_token": Out(17), "error": Out(1),
            "counters": Out(EngineCounters()),
            "axi_r": Out(AXI4ReadSignature(addr_bits=addr_bits, data_bits=data_bits, id_bits=3)),
            "axi_w": Out(AXI4WriteSignature(addr_bits=addr_bits, data_bits=data_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        L, N, T = self.lim, self.num, self.tables
        W, bpb = self.data_bits, self.data_bits // 8
        F = N.act_frac
        rdp = dict(addr_bits=self.addr_bits, data_bits=W, max_burst=self.max_burst, outstanding=self.outstanding)

        # ---- units -----------------------------------------------------------------------
        mv = MatvecUnit(max_dim=max(L.dim, L.ffn), act_bits=N.act_bits, norm_act_bits=N.norm_act_bits,
                        act_block=N.act_block, act_scale_bits=N.act_scale_bits, acc_bits=N.acc_bits,
                        acc_frac=N.acc_frac, frac=F,
                        prefetch=matvec_prefetch(L, max_burst=self.max_burst, outstanding=self.outstanding),
                        lut_lanes=L.matvec_lut_lanes, **rdp)
        norm = RmsNormUnit(frac=F, gain_frac=N.norm_gain_frac, ss_shift=N.ss_shift, rsqrt_table=T["rsqrt"])
        rope = RopeUnit(max_head_dim=L.head_dim, sin_table=T["sin"])
        elem = ElementwiseUnit(frac=F, sigmoid_table=T["sigmoid"])
        amax = ArgmaxUnit(index_bits=17)
        att = AttentionUnit(max_heads=L.heads, max_head_dim=L.head_dim, max_ctx=L.ctx, frac=F,
                            exp_table=T["exp2"], log2e_q30=T["log2e_q30"][0], rcp_table=T["reciprocal"],
                            lanes=L.lanes, par_heads=L.heads // L.kv_heads, max_kv_heads=L.kv_heads)
        kv = KVUnit(max_kv_dim=L.kv_heads * L.head_dim, scale_bits=N.kv_scale_bits, lanes=L.lanes,
                    max_kv_heads=L.kv_heads, **rdp)
        m.submodules.matvec, m.submodules.norm, m.submodules.rope = mv, norm, rope
        m.submodules.elem, m.submodules.argmax, m.submodules.attention, m.submodules.kv = elem, amax, att, kv
        # every unit's command through a RegFIFO2 slot: the FSM's issue logic (state, pready,
        # started_unit) reaches a register next to the sequencer, not the unit's accept and the
        # resets behind it across the die (the attention unit's accept into its counters was
        # the speed-8 route's path at 307a08c, 78.17 MHz)
        mv_cmd, mv_p = _cmd_slot(m, "cmd_matvec", mv)
        norm_cmd, norm_p = _cmd_slot(m, "cmd_norm", norm)
        rope_cmd, rope_p = _cmd_slot(m, "cmd_rope", rope)
        elem_cmd, elem_p = _cmd_slot(m, "cmd_elem", elem)
        att_cmd, att_p = _cmd_slot(m, "cmd_attention", att)
        kv_cmd, kv_p = _cmd_slot(m, "cmd_kv", kv)

        # ---- memory: program reader, word reader (gains, constants, embedding), store writer
        # registered reader outputs (as the matvec's and the KV unit's): the consumers' ready
        # reaches only the output FIFO's pointer and count, not the block RAM's read enable
        prog_rd = BurstReader(**rdp, out_reg=True)
        word_rd = BurstReader(**rdp, out_reg=True)
        m.submodules.prog_rd, m.submodules.word_rd = prog_rd, word_rd
        m.submodules.prog_unp = prog_unp = VectorUnpacker(data_bits=W, vector_bits=INSTR_BITS)
        m.submodules.word_unp = word_unp = UnitUnpacker(data_bits=W, unit_bits=(8, 16, 32, 64))
        connect(m, prog_rd.data, prog_unp.beats)
        connect(m, word_rd.data, word_unp.beats)
        # in_reg: the four masters sit across the die (program and word readers, the matvec,
        # the KV unit); their requests meet the round robin from registers
        m.submodules.arb = arb = ReadArbiter(n=4, in_id_bits=1, in_reg=True,
                                             **{k: rdp[k] for k in ("addr_bits", "data_bits")})
        connect(m, prog_rd.axi, arb.m0)
        connect(m, mv.axi, arb.m1)
        connect(m, word_rd.axi, arb.m2)
        connect(m, kv.axi_r, arb.m3)
        connect(m, arb.out, wiring.flipped(self.axi_r))
        st_wr = BurstWriter(addr_bits=self.addr_bits, data_bits=W, max_burst=self.max_burst)
        m.submodules.st_wr = st_wr
        m.submodules.st_pk = st_pk = UnitPacker(data_bits=W, unit_bits=(32,))
        m.d.comb += [st_wr.data.payload.data.eq(st_pk.beats.payload.data),
                     st_wr.data.payload.last.eq(st_pk.beats.payload.last),
                     st_wr.data.valid.eq(st_pk.beats.valid), st_pk.beats.ready.eq(st_wr.data.ready)]
        # the write port: the KV unit's writer or the STORE writer (never both at once)
        w_kv = Signal()
        kw, sw, aw = kv.axi_w, st_wr.axi, self.axi_w
        for name in ("awaddr", "awlen", "awsize", "awburst", "awid", "awvalid", "wdata", "wstrb", "wlast", "wvalid",
                     "bready"):
            m.d.comb += getattr(aw, name).eq(Mux(w_kv, getattr(kw, name), getattr(sw, name)))
        for name in ("awready", "wready", "bresp", "bvalid"):
            m.d.comb += [getattr(kw, name).eq(Mux(w_kv, getattr(aw, name), 0)),
                         getattr(sw, name).eq(Mux(w_kv, 0, getattr(aw, name)))]
        m.d.comb += [getattr(kw, "bid").eq(aw.bid), getattr(sw, "bid").eq(aw.bid)]

        # ---- buffers: one write port (the producing unit), one read port per channel ----
        bufs, wports, rports = {}, {}, {}
        for b in Buf:
            mem = Memory(shape=signed(32), depth=L.buffer_depth(b), init=[])
            m.submodules[f"buf_{b.name.lower()}"] = mem
            bufs[b], wports[b], rports[b] = mem, mem.write_port(), mem.read_port()
        # read latency 3: the buffers' read address and enable registered (each streamer's
        # issue decision and address fan out to every buffer's port across the die), the
        # port's read register, the registered mux over the buffers below
        chan_a = _Streamer(self.index_bits, read_latency=3)
        chan_b = _Streamer(self.index_bits, read_latency=3)
        m.submodules.chan_a, m.submodules.chan_b = chan_a, chan_b
        sel_a, sel_b, sel_w = Signal(4), Signal(4), Signal(4)
        for b in Buf:
            rp = rports[b]
            m.d.sync += [rp.addr.eq(Mux(sel_a == b, chan_a.addr, chan_b.addr)),
                         rp.en.eq(Mux(sel_a == b, chan_a.en, Mux(sel_b == b, chan_b.en, 0)))]
        # the buffers' outputs muxed into a register (a block RAM's clock-to-out through the
        # mux over the buffers into the streamer's FIFO in one cycle was a long path); the
        # streamers count it in their read latency
        data_a = Signal(signed(32))
        data_b = Signal(signed(32))
        with m.Switch(sel_a):
            for b in Buf:
                with m.Case(b):
                    m.d.sync += data_a.eq(rports[b].data)
        with m.Switch(sel_b):
            for b in Buf:
                with m.Case(b):
                    m.d.sync += data_b.eq(rports[b].data)
        m.d.comb += [chan_a.data.eq(data_a), chan_b.data.eq(data_b)]
        w_valid = Signal()
        w_data = Signal(signed(32))
        w_idx = Signal(self.index_bits)
        # the write registered (address, data, the buffer's one-hot enable): the producing
        # units' outputs through the state mux to the write ports of every buffer across the
        # die was a long route; a buffer is written one cycle after the unit's result (the
        # sequencer's FETCH and EXEC come before any instruction reads it)
        wr_idx = Signal(self.index_bits)
        wr_data = Signal(signed(32))
        wr_en = Signal(len(Buf))
        m.d.sync += [wr_idx.eq(w_idx), wr_data.eq(w_data),
                     wr_en.eq(Cat(*(w_valid & (sel_w == b) for b in Buf)))]
        for k, b in enumerate(Buf):
            wp = wports[b]
            m.d.comb += [wp.addr.eq(wr_idx), wp.data.eq(wr_data), wp.en.eq(wr_en[k])]
        with m.If(w_valid):
            m.d.sync += w_idx.eq(w_idx + 1)

        # the channels' start and count registered (the states' unit handshakes and count
        # muxes straight into the streamers' counters crossed the die): a channel starts a
        # cycle after its unit took the command; its ``done`` is low while ``start`` is high
        a_start, b_start = Signal(), Signal()
        a_count, b_count = Signal.like(chan_a.count), Signal.like(chan_b.count)
        m.d.sync += [chan_a.start.eq(a_start), chan_a.count.eq(a_count),
                     chan_b.start.eq(b_start), chan_b.count.eq(b_count)]

        # ---- channel routes: which unit consumes channel A / B ------------------------------
        # One-hot registers set in EXEC. Each consumer's valid is the channel's valid AND its
        # bit, the channel's ready an OR of (bit AND that consumer's ready): the handshakes
        # no longer pass the sequencer's state decode (the channel-A consumer mux in every
        # state was the engine's 57 MHz path). A route stays set until the next EXEC; the
        # channel is idle (done) from the end of an instruction to the start of the next.
        RA = {k: i for i, k in enumerate(("mv", "norm", "rope", "elem", "kv", "att", "amax", "store"))}
        RB = {k: i for i, k in enumerate(("elem", "kv"))}
        # likewise the word stream's consumer and the unit whose results go to the buffers
        RW = {k: i for i, k in enumerate(("norm", "rope", "emb"))}
        RY = {k: i for i, k in enumerate(("mv", "norm", "rope", "elem", "att", "emb"))}
        route_a, route_b = Signal(len(RA)), Signal(len(RB))
        route_w, route_y = Signal(len(RW)), Signal(len(RY))
        a_sinks = {"mv": mv.x, "norm": norm.x, "rope": rope.x, "elem": elem.a, "kv": kv.k_in, "att": att.q}
        b_sinks = {"elem": elem.b, "kv": kv.v_in}
        # each unit's input through a RegFIFO2 of its own: the channel's word crosses the die
        # register to register into it, and reaches the unit's logic (RMSNorm's square
        # multiplier, ...) from a register next to it (the channel's payload routed across
        # the die into RMSNorm's MULT18X18D was the engine's 55.98 MHz path at 65b1c12)
        a_ready, b_ready = [], []
        for chan, sinks, route, idx, ready in ((chan_a, a_sinks, route_a, RA, a_ready),
                                               (chan_b, b_sinks, route_b, RB, b_ready)):
            for k, sink in sinks.items():
                name = f"{'a' if chan is chan_a else 'b'}_in_{k}"
                ready.append(route[idx[k]] & _slot(m, name, signed(32), chan.out.payload,
                                                   chan.out.valid & route[idx[k]], sink))
        # ARGMAX takes every word; STORE hands them to the packer
        a_ready += [route_a[RA["amax"]], route_a[RA["store"]] & st_pk.units.ready]
        m.d.comb += [chan_a.out.ready.eq(Cat(*a_ready).any()), chan_b.out.ready.eq(Cat(*b_ready).any())]
        # the KV unit's READ rows go only to the attention unit (it produces them in ATTEND
        # only), each through a RegFIFO2 of its own next to the attention unit: the KV
        # output FIFO's K/V tag routed across the die into the attention unit's row
        # counters (3 hops, 8.4 ns of routing) was the speed-8 route's path at e5785d4
        # (74.32 MHz). Only buffering is added, so no new ordering constraint
        for name, src, dst in (("kv_k", kv.k_out, att.k), ("kv_v", kv.v_out, att.v)):
            m.d.comb += src.ready.eq(_slot(m, name, src.payload.shape(), src.payload, src.valid, dst))

        # ---- registers and the instruction stream ------------------------------------------
        regs = [Signal(32, name=f"reg_{r.name.lower()}") for r in Reg]
        ins = Signal(InstrLayout())
        m.d.comb += [prog_unp.seg.payload.length.eq(self.n_instr), prog_unp.seg.payload.count.eq(1)]
        m.d.comb += [prog_rd.cmd.payload.addr.eq(self.program_addr),
                     prog_rd.cmd.payload.beats.eq(self.n_instr * (INSTR_BITS // W))]
        reg = lambda r: regs[r]  # noqa: E731
        m.d.comb += [kv.regs.kv_bits.eq(reg(Reg.KV_BITS)), kv.regs.k_group.eq(reg(Reg.K_GROUP)),
                     kv.regs.kv_window.eq(reg(Reg.KV_WINDOW)), kv.regs.kv_heads.eq(reg(Reg.N_KV_HEADS)),
                     kv.regs.head_dim.eq(reg(Reg.HEAD_DIM)), kv.regs.max_ctx.eq(reg(Reg.MAX_CTX)),
                     kv.regs.v_raw.eq(reg(Reg.KV_V_RAW)), kv.regs.k_codes.eq(reg(Reg.KV_K_CODES)),
                     kv.regs.k_params.eq(reg(Reg.KV_K_PARAMS)), kv.regs.v_codes.eq(reg(Reg.KV_V_CODES)),
                     kv.regs.v_params.eq(reg(Reg.KV_V_PARAMS))]

        # ---- word reader requests (gains, RoPE constants, embedding row) -------------------
        # The states put a request on wr_go / wr_addr / wr_count / wr_sel and hold it until
        # wr_started. The request is registered, then its sums (leading units to skip, units
        # and beats to read) one register level each: the combinational sums from the FSM
        # state into the reader's counters were the engine's longest path. wr_ok (a
        # register) raises the commands once the pipeline holds this request: every state
        # holds its request still from the cycle wr_go rises, and wr_go falls for at least a
        # cycle after each start (the state marks the request taken), so the age count
        # restarts for each request.
        wr_go = Signal()
        wr_addr = Signal(self.addr_bits)     # byte address (any alignment of the unit size)
        wr_count = Signal(16)
        wr_sel = Signal(2)                   # 8 / 16 / 32 / 64-bit units
        wr_taken = Signal(2)
        r_addr, r_count, r_sel = Signal(self.addr_bits), Signal(16), Signal(2)
        m.d.sync += [r_addr.eq(wr_addr), r_count.eq(wr_count), r_sel.eq(wr_sel)]
        skip = Signal(16)                    # leading units of the first beat to drop
        total = Signal(17)
        q_sel, q_addr = Signal(2), Signal(self.addr_bits)
        m.d.sync += [skip.eq((r_addr & (bpb - 1)) >> r_sel), total.eq(r_count + ((r_addr & (bpb - 1)) >> r_sel)),
                     q_sel.eq(r_sel), q_addr.eq(r_addr & ~Const(bpb - 1, self.addr_bits))]
        beats = Signal(BEATS_BITS)          # as wide as the reader's command field
        m.d.sync += beats.eq(((total << q_sel) + bpb - 1) >> (bpb.bit_length() - 1))
        wr_age = Signal(2)
        wr_ok = Signal()
        m.d.sync += wr_age.eq(Mux(wr_go, Mux(wr_age == 3, 3, wr_age + 1), 0))
        m.d.comb += [word_rd.cmd.payload.addr.eq(q_addr), word_rd.cmd.payload.beats.eq(beats),
                     word_unp.cmd.payload.count.eq(total), word_unp.cmd.payload.sel.eq(q_sel),
                     word_rd.cmd.valid.eq(wr_ok & ~wr_taken[0]), word_unp.cmd.valid.eq(wr_ok & ~wr_taken[1])]
        took = Cat(word_rd.cmd.valid & word_rd.cmd.ready, word_unp.cmd.valid & word_unp.cmd.ready)
        wr_started = Signal()
        m.d.comb += wr_started.eq(wr_ok & ((wr_taken | took) == 0b11))
        m.d.sync += wr_ok.eq(wr_go & (wr_age >= 2) & ~wr_started)
        with m.If(wr_ok):
            m.d.sync += wr_taken.eq(Mux(wr_started, 0, wr_taken | took))
        to_skip = Signal(16)
        words = stream.Signature(64).create()   # the word stream after the skipped units
        m.d.comb += [words.payload.eq(word_unp.units.payload), words.valid.eq(word_unp.units.valid & (to_skip == 0)),
                     word_unp.units.ready.eq(Mux(to_skip != 0, 1, words.ready))]
        with m.If(word_unp.units.valid & (to_skip != 0)):
            m.d.sync += to_skip.eq(to_skip - 1)
        with m.If(wr_started):
            m.d.sync += to_skip.eq(skip)

        # ---- EMBED datapath: scales of the row first (into a small memory), then codes ----
        m.submodules.emb_sc = emb_sc = Memory(shape=16, depth=max(L.dim // GROUP, 2), init=[])
        esw, esr = emb_sc.write_port(), emb_sc.read_port(domain="comb")
        e_i = Signal(16)
        emb_in = Signal()
        emb_v = [Signal(name=f"emb_v{k}") for k in range(6)]
        emb_y = Signal(signed(32))

        # ---- sequencer ---------------------------------------------------------------------
        words_started = Signal()             # this instruction's word-reader request was taken
        second_pass = Signal()               # RMSNORM: the source is streaming the second time
        store_left = Signal(17)
        att_c = Signal(17)                   # round(2**16/sqrt(head_dim))
        op = ins.op
        pos = reg(Reg.POS)
        started_unit = Signal()
        phase_ct = Signal(3)                 # 0 matvec, 1 attend, 2 kv, 3 other
        run = Signal()                       # between start and HALT (``busy`` is a cycle longer)
        ct_clear = Signal()                  # IDLE took a start: the counters restart
        # the argmax unit snoops every MATVEC's output: an ARGMAX over that result (the LM
        # head's logits) takes it without another pass, unless a buffer was written since
        snoop_ok = Signal()
        snoop_buf = Signal(4)
        snoop_n = Signal(16)
        # the count and address products of ROPE / KV_APPEND / ATTEND / EMBED, pipelined
        # (one register per adder level: a combinational 16 x 32 product chained into the
        # readers was a long path); their operands (the instruction, registers) are stable
        # from EXEC on, so these states start their units ``prep_lat`` cycles after EXEC
        ib = len(chan_a.count)
        p_rc, l_rc = lut_mul_pipe(m, ins.rows, ins.cols, ib, "p_rc")
        p_kv, l_kv = lut_mul_pipe(m, reg(Reg.N_KV_HEADS), reg(Reg.HEAD_DIM), ib, "p_kv")
        ng = ins.cols >> 5
        p_es, l_es = lut_mul_pipe(m, reg(Reg.TOKEN), ng << 1, self.addr_bits, "p_es")
        p_ec, l_ec = lut_mul_pipe(m, reg(Reg.TOKEN), ins.cols, self.addr_bits, "p_ec")
        emb_sc_addr, emb_code_addr = Signal(self.addr_bits), Signal(self.addr_bits)
        m.d.sync += [emb_sc_addr.eq(ins.addr2 + p_es), emb_code_addr.eq(ins.addr + p_ec)]
        prep_lat = max(l_rc, l_kv, l_es + 1, l_ec + 1)
        prep = Signal(range(prep_lat + 1))
        pready = Signal()
        m.d.comb += pready.eq(prep == prep_lat)
        with m.If(~pready):
            m.d.sync += prep.eq(prep + 1)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [run.eq(1), self.error.eq(0), regs[Reg.TOKEN].eq(self.token),
                                 regs[Reg.POS].eq(self.pos), snoop_ok.eq(0)]
                    m.d.comb += ct_clear.eq(1)
                    m.next = "PROGRAM"
            with m.State("PROGRAM"):
                m.d.comb += [prog_rd.cmd.valid.eq(1), prog_unp.seg.valid.eq(1)]
                with m.If(prog_rd.cmd.ready & prog_unp.seg.ready):
                    m.next = "FETCH"
            with m.State("FETCH"):
                m.d.comb += prog_unp.vectors.ready.eq(1)
                with m.If(prog_unp.vectors.valid):
                    m.d.sync += [ins.eq(prog_unp.vectors.payload), started_unit.eq(0), w_idx.eq(0), e_i.eq(0),
                                 prep.eq(0)]
                    m.next = "EXEC"
            with m.State("EXEC"):
                m.d.sync += [route_a.eq(0), route_b.eq(0), route_w.eq(0), route_y.eq(0)]
                with m.Switch(op):
                    with m.Case(Op.HALT):
                        m.d.sync += [regs[Reg.POS].eq(pos + 1), run.eq(0), self.next_token.eq(reg(Reg.NEXT))]
                        m.next = "IDLE"
                    with m.Case(Op.SET):
                        for r in Reg:
                            with m.If(ins.dst == r):
                                m.d.sync += regs[r].eq(ins.addr)
                        m.next = "FETCH"
                    with m.Case(Op.MATVEC):
                        m.d.sync += [sel_a.eq(ins.src), sel_w.eq(ins.dst), phase_ct.eq(0),
                                     snoop_ok.eq(1), snoop_buf.eq(ins.dst), snoop_n.eq(ins.rows),
                                     route_a.eq(1 << RA["mv"]), route_y.eq(1 << RY["mv"])]
                        m.next = "MATVEC"
                    with m.Case(Op.RMSNORM):
                        m.d.sync += [sel_a.eq(ins.src), sel_w.eq(ins.dst), phase_ct.eq(3), route_a.eq(1 << RA["norm"]),
                                     route_w.eq(1 << RW["norm"]), route_y.eq(1 << RY["norm"])]
                        m.next = "RMSNORM"
                    with m.Case(Op.ROPE):
                        m.d.sync += [sel_a.eq(ins.src), sel_w.eq(ins.dst), phase_ct.eq(3), route_a.eq(1 << RA["rope"]),
                                     route_w.eq(1 << RW["rope"]), route_y.eq(1 << RY["rope"])]
                        m.next = "ROPE"
                    with m.Case(Op.ADD, Op.SWIGLU):
                        m.d.sync += [sel_a.eq(ins.src), sel_b.eq(ins.src2), sel_w.eq(ins.dst), phase_ct.eq(3),
                                     route_a.eq(1 << RA["elem"]), route_b.eq(1 << RB["elem"]),
                                     route_y.eq(1 << RY["elem"])]
                        m.next = "ELEM"
                    with m.Case(Op.ARGMAX):
                        m.d.sync += [sel_a.eq(ins.src), phase_ct.eq(3), route_a.eq(1 << RA["amax"])]
                        with m.If(snoop_ok & (snoop_buf == ins.src) & (snoop_n == ins.cols)):
                            m.next = "ARGMAX_DONE"
                        with m.Else():
                            m.next = "ARGMAX"
                    with m.Case(Op.STORE):
                        m.d.sync += [sel_a.eq(ins.src), phase_ct.eq(3), route_a.eq(1 << RA["store"])]
                        m.next = "STORE"
                    with m.Case(Op.KV_APPEND):
                        m.d.sync += [sel_a.eq(ins.src), sel_b.eq(ins.src2), w_kv.eq(1), phase_ct.eq(2),
                                     route_a.eq(1 << RA["kv"]), route_b.eq(1 << RB["kv"])]
                        m.next = "KV_APPEND"
                    with m.Case(Op.ATTEND):
                        m.d.sync += [sel_a.eq(ins.src), sel_w.eq(ins.dst), phase_ct.eq(1), route_a.eq(1 << RA["att"]),
                                     route_y.eq(1 << RY["att"])]
                        m.next = "ATTEND"
                    with m.Case(Op.EMBED):
                        m.d.sync += [sel_w.eq(ins.dst), phase_ct.eq(3), route_w.eq(1 << RW["emb"]),
                                     route_y.eq(1 << RY["emb"])]
                        m.next = "EMBED_SCALES"
                    with m.Default():
                        m.d.sync += [self.error.eq(1), run.eq(0)]
                        m.next = "IDLE"
                # every instruction that writes a buffer (all but these) ends the snoop's validity
                with m.If((op != Op.MATVEC) & (op != Op.ARGMAX) & (op != Op.STORE) & (op != Op.SET)
                          & (op != Op.KV_APPEND) & (op != Op.HALT)):
                    m.d.sync += snoop_ok.eq(0)

            # MATVEC: input from channel A, results into dst
            with m.State("MATVEC"):
                m.d.comb += [mv_cmd.valid.eq(~started_unit), mv_cmd.payload.kind.eq(ins.mode[:3]),
                             mv_cmd.payload.norm.eq((ins.mode & MODE_NORM_INPUT) != 0),
                             mv_cmd.payload.rows.eq(ins.rows), mv_cmd.payload.cols.eq(ins.cols),
                             mv_cmd.payload.codes_addr.eq(ins.addr), mv_cmd.payload.scales_addr.eq(ins.addr2),
                             a_start.eq(mv_cmd.valid & mv_cmd.ready), a_count.eq(ins.cols)]
                m.d.comb += amax.start.eq(mv_cmd.valid & mv_cmd.ready)
                with m.If(mv_cmd.valid & mv_cmd.ready):
                    m.d.sync += started_unit.eq(1)
                with m.If(started_unit & ~(mv.busy | mv_p) & chan_a.done):
                    m.next = "FETCH"
            # RMSNORM: the source twice on channel A, gains from the word reader
            with m.State("RMSNORM"):
                first = ~started_unit
                m.d.comb += [norm_cmd.valid.eq(first), norm_cmd.payload.n.eq(ins.cols),
                             norm_cmd.payload.eps.eq(reg(Reg.EPS)),
                             a_start.eq(norm_cmd.valid & norm_cmd.ready), a_count.eq(ins.cols),
                             wr_go.eq(started_unit & ~words_started), wr_addr.eq(ins.addr),
                             wr_count.eq(ins.cols), wr_sel.eq(2)]
                with m.If(norm_cmd.valid & norm_cmd.ready):
                    m.d.sync += started_unit.eq(1)
                with m.If(wr_started):
                    m.d.sync += words_started.eq(1)
                with m.If(started_unit & chan_a.done & ~second_pass):
                    m.d.comb += a_start.eq(1)
                    m.d.sync += second_pass.eq(1)
                with m.If(started_unit & second_pass & chan_a.done & ~(norm.busy | norm_p)):
                    m.d.sync += [second_pass.eq(0), words_started.eq(0)]
                    m.next = "FETCH"
            # ROPE: constants from the word reader, vector on channel A
            with m.State("ROPE"):
                m.d.comb += [rope_cmd.valid.eq(~started_unit & pready), rope_cmd.payload.heads.eq(ins.rows),
                             rope_cmd.payload.head_dim.eq(ins.cols), rope_cmd.payload.pos.eq(pos),
                             a_start.eq(rope_cmd.valid & rope_cmd.ready), a_count.eq(p_rc),
                             wr_go.eq(~words_started & pready), wr_addr.eq(ins.addr), wr_count.eq(ins.cols >> 1),
                             wr_sel.eq(3)]
                with m.If(rope_cmd.valid & rope_cmd.ready):
                    m.d.sync += started_unit.eq(1)
                with m.If(wr_started):
                    m.d.sync += words_started.eq(1)
                with m.If(started_unit & words_started & chan_a.done & ~(rope.busy | rope_p)):
                    m.d.sync += words_started.eq(0)
                    m.next = "FETCH"
            # ADD / SWIGLU: channels A and B in parallel
            with m.State("ELEM"):
                m.d.comb += [elem_cmd.valid.eq(~started_unit), elem_cmd.payload.n.eq(ins.cols),
                             elem_cmd.payload.op.eq(op == Op.SWIGLU),
                             a_start.eq(elem_cmd.valid & elem_cmd.ready), a_count.eq(ins.cols),
                             b_start.eq(elem_cmd.valid & elem_cmd.ready), b_count.eq(ins.cols)]
                with m.If(elem_cmd.valid & elem_cmd.ready):
                    m.d.sync += started_unit.eq(1)
                with m.If(started_unit & chan_a.done & chan_b.done & ~(elem.busy | elem_p)):
                    m.next = "FETCH"
            # ARGMAX: snoop the source
            with m.State("ARGMAX"):
                m.d.comb += [amax.start.eq(~started_unit), a_start.eq(~started_unit), a_count.eq(ins.cols)]
                m.d.sync += started_unit.eq(1)
                with m.If(started_unit & chan_a.done):
                    m.next = "ARGMAX_DONE"
            with m.State("ARGMAX_DONE"):
                m.d.sync += regs[Reg.NEXT].eq(amax.index)
                m.next = "FETCH"
            # STORE: channel A -> packer -> writer at addr
            with m.State("STORE"):
                m.d.comb += [st_wr.start.valid.eq(~started_unit), st_wr.start.payload.eq(ins.addr),
                             a_start.eq(st_wr.start.valid & st_wr.start.ready), a_count.eq(ins.cols),
                             st_pk.sel.eq(0), st_pk.units.payload.unit.eq(chan_a.out.payload.as_unsigned()),
                             st_pk.units.payload.last.eq(store_left == 1),
                             st_pk.units.valid.eq(chan_a.out.valid & route_a[RA["store"]])]
                with m.If(st_wr.start.valid & st_wr.start.ready):
                    m.d.sync += [started_unit.eq(1), store_left.eq(ins.cols)]
                with m.If(chan_a.out.valid & chan_a.out.ready):
                    m.d.sync += store_left.eq(store_left - 1)
                with m.If(started_unit & chan_a.done & st_wr.idle):
                    m.next = "FETCH"
            # KV_APPEND: K from channel A, V from channel B
            with m.State("KV_APPEND"):
                m.d.comb += [kv_cmd.valid.eq(~started_unit & pready), kv_cmd.payload.read.eq(0),
                             kv_cmd.payload.base.eq(ins.addr), kv_cmd.payload.pos.eq(pos),
                             a_start.eq(kv_cmd.valid & kv_cmd.ready), b_start.eq(kv_cmd.valid & kv_cmd.ready),
                             a_count.eq(p_kv), b_count.eq(p_kv)]
                with m.If(kv_cmd.valid & kv_cmd.ready):
                    m.d.sync += started_unit.eq(1)
                with m.If(started_unit & ~(kv.busy | kv_p) & chan_a.done & chan_b.done):
                    m.d.sync += w_kv.eq(0)
                    m.next = "FETCH"
            # ATTEND: the KV unit reads the cache, the attention unit computes; Q on channel A
            with m.State("ATTEND"):
                hd = reg(Reg.HEAD_DIM)
                cval = Signal(17)
                m.d.comb += cval.eq(att_c)
                m.d.comb += [kv_cmd.valid.eq(~started_unit & pready), kv_cmd.payload.read.eq(1),
                             kv_cmd.payload.base.eq(ins.addr), kv_cmd.payload.pos.eq(pos),
                             att_cmd.valid.eq(~started_unit & pready), att_cmd.payload.heads.eq(ins.rows),
                             att_cmd.payload.kv_heads.eq(reg(Reg.N_KV_HEADS)), att_cmd.payload.head_dim.eq(hd),
                             att_cmd.payload.n.eq(pos + 1), att_cmd.payload.c.eq(cval),
                             a_start.eq(~started_unit & pready), a_count.eq(p_rc)]
                with m.If(pready):
                    m.d.sync += started_unit.eq(1)   # both slots empty here: they take it at once
                with m.If(started_unit & ~(kv.busy | kv_p) & ~(att.busy | att_p) & chan_a.done):
                    m.next = "FETCH"
            # EMBED: Q8_0 row TOKEN: its f16 scales, then its int8 codes -> dst
            with m.State("EMBED_SCALES"):
                m.d.comb += [wr_go.eq(~started_unit & pready), wr_addr.eq(emb_sc_addr),
                             wr_count.eq(ng), wr_sel.eq(1),
                             esw.en.eq(words.valid), esw.addr.eq(e_i), esw.data.eq(words.payload[:16])]
                with m.If(wr_started):
                    m.d.sync += started_unit.eq(1)
                with m.If(words.valid):
                    m.d.sync += e_i.eq(e_i + 1)
                    with m.If(e_i == ng - 1):
                        m.d.sync += [e_i.eq(0), started_unit.eq(0)]
                        m.next = "EMBED_CODES"
            with m.State("EMBED_CODES"):
                m.d.comb += [wr_go.eq(~started_unit), wr_addr.eq(emb_code_addr),
                             wr_count.eq(ins.cols), wr_sel.eq(0), esr.addr.eq(e_i >> 5), emb_in.eq(words.valid)]
                with m.If(wr_started):
                    m.d.sync += started_unit.eq(1)
                with m.If(words.valid):
                    m.d.sync += e_i.eq(e_i + 1)
                    with m.If(e_i == ins.cols - 1):
                        m.next = "EMBED_DRAIN"
            with m.State("EMBED_DRAIN"):   # the dequantizer pipeline empties into dst
                with m.If(Cat(*emb_v) == 0):
                    m.next = "FETCH"

        # EMBED's dequantizer, code * mant(scale) then rshift_round to Q.F, saturated: one
        # step per register stage (was one combinational path from the scale memory on)
        esc1, code1 = Signal(16), Signal(signed(8))
        m.d.sync += [emb_v[0].eq(emb_in), esc1.eq(esr.data), code1.eq(words.payload[:8])]
        md, ed = _f16(m, esc1, "emb")
        # the decoded scale and the code registered before the product (next to its DSP),
        # then the product registered (registered_product: on an ECP5 the MULT18X18D's own)
        sh1b = Signal(signed(8))
        m.d.sync += [emb_v[1].eq(emb_v[0]), sh1b.eq(-(ed + F))]
        prod2 = registered_product(m, md, code1, platform=platform, name="emb_prod")
        sh2 = Signal(signed(8))
        m.d.sync += [emb_v[2].eq(emb_v[1]), sh2.eq(sh1b)]
        ph3, pl3 = Signal(signed(41)), Signal(signed(64))
        sh3 = Signal(signed(8))
        m.d.sync += [emb_v[3].eq(emb_v[2]), sh3.eq(sh2), pl3.eq(prod2 << (-sh2).as_unsigned()[:6]),
                     ph3.eq(prod2 + Mux(sh2 > 0, Const(1, 40) << (sh2 - 1).as_unsigned()[:6], 0))]
        val4 = Signal(signed(64))
        m.d.sync += [emb_v[4].eq(emb_v[3]), val4.eq(Mux(sh3 > 0, ph3 >> sh3.as_unsigned()[:6], pl3))]
        m.d.sync += [emb_v[5].eq(emb_v[4]), emb_y.eq(sat32(m, val4, "emb_sat"))]

        # ---- routed hookups (see "channel routes"): the word stream, results, argmax ----
        # RMSNorm's gains and RoPE's constants through a RegFIFO2 each, as the channels'
        # inputs: the unit's ready (across the die) reaches only the slot's pointers, not the
        # skip count and the word unpacker's shift logic behind ``words.ready``
        w_sinks = {"norm": (norm.gain, words.payload[:32].as_signed()), "rope": (rope.consts, words.payload)}
        w_ready = [route_w[RW["emb"]]]      # EMBED takes every word
        for k, (sink, payload) in w_sinks.items():
            w_ready.append(route_w[RW[k]] & _slot(m, f"w_in_{k}", sink.payload.shape(), payload,
                                                  words.valid & route_w[RW[k]], sink))
        m.d.comb += words.ready.eq(Cat(*w_ready).any())
        results = {"mv": (mv.y.valid, mv.y.payload), "norm": (norm.o_valid, norm.y), "rope": (rope.o_valid, rope.y),
                   "elem": (elem.o_valid, elem.y), "att": (att.o_valid, att.y), "emb": (emb_v[-1], emb_y)}
        m.d.comb += [w_valid.eq(Cat(*(route_y[RY[k]] & v for k, (v, _) in results.items())).any()),
                     w_data.eq(reduce(operator.or_, (Mux(route_y[RY[k]], y, 0) for k, (_, y) in results.items()))),
                     mv.y.ready.eq(1),   # the matvec produces only in MATVEC
                     amax.i_valid.eq(Mux(route_a[RA["amax"]], chan_a.out.valid, mv.y.valid)),
                     amax.x.eq(Mux(route_a[RA["amax"]], chan_a.out.payload, mv.y.payload))]

        # C = round(2**16/sqrt(head_dim)) for every head dim the engine accepts (a ROM; the
        # reference's constant, ref_model.decode.attention)
        with m.Switch(reg(Reg.HEAD_DIM)):
            for d in range(1, L.head_dim + 1):
                with m.Case(d):
                    m.d.comb += att_c.eq(round((1 << 16) / d ** 0.5))

        # ---- counters -------------------------------------------------------------------
        # Each counter counts its event a cycle late, from registers (the event and its
        # clear): the sequencer's state and the read port's handshake straight into 360
        # counter clock enables across the die was the 80.36 MHz path at 425a11d. ``busy``
        # stays high that one cycle longer, so the totals are complete when it falls and
        # count the same cycles and beats as a same-cycle count would.
        ct = self.counters
        r_beat, w_beat = self.axi_r.rvalid & self.axi_r.rready, self.axi_w.wvalid & self.axi_w.wready
        events = {"cycles": run, "matvec_cycles": run & (phase_ct == 0), "attend_cycles": run & (phase_ct == 1),
                  "kv_cycles": run & (phase_ct == 2), "other_cycles": run & (phase_ct >= 3),
                  "read_bytes": r_beat, "write_bytes": w_beat, "read_idle": run & ~r_beat,
                  "weight_stall": run & mv.weight_stall}
        run_q = Signal()
        m.d.sync += run_q.eq(run)
        m.d.comb += self.busy.eq(run | run_q)
        for name, event in events.items():
            ev, clr = Signal(name=f"ct_ev_{name}"), Signal(name=f"ct_clr_{name}")  # a clear per counter: 40 loads each
            m.d.sync += [ev.eq(event), clr.eq(ct_clear)]
            field = getattr(ct, name)
            step = bpb if name in ("read_bytes", "write_bytes") else 1
            m.d.sync += field.eq(Mux(clr, 0, field) + Mux(ev, step, 0))
        with m.If((self.axi_r.rvalid & (self.axi_r.rresp != 0)) | (self.axi_w.bvalid & (self.axi_w.bresp != 0))):
            m.d.sync += self.error.eq(1)
        return m


def _cmd_slot(m: Module, name: str, unit):
    """A :class:`~hw.pipeline.RegFIFO2` (submodule ``name``) in front of ``unit.cmd``;
    returns its input stream and ``pending`` (a command in the slot, not yet taken: the
    unit's ``busy`` rises only the cycle after it takes one, so "done" is
    ``~(busy | pending)``). One cycle from the issue to the unit."""
    m.submodules[name] = slot = RegFIFO2(unit.cmd.payload.shape())
    connect_stream(m, slot.o, unit.cmd)
    return slot.i, slot.o.valid


def _slot(m: Module, name: str, shape, payload, valid, sink):
    """A :class:`~hw.pipeline.RegFIFO2` (submodule ``name``) from a routed stream
    (``payload``, ``valid``) to ``sink``; returns its ``ready`` (a register's decode)."""
    m.submodules[name] = slot = RegFIFO2(shape)
    m.d.comb += [slot.i.payload.eq(payload), slot.i.valid.eq(valid)]
    connect_stream(m, slot.o, sink)
    return slot.i.ready


def connect_stream(m: Module, src, dst) -> None:
    """Combinational valid/ready/payload hookup of two stream interfaces."""
    m.d.comb += [dst.payload.eq(src.payload), dst.valid.eq(src.valid), src.ready.eq(dst.ready)]
