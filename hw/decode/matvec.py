"""Matrix-vector unit of the decode engine: weights streamed once, dequantized per group.

:class:`MatvecUnit` computes ``y = W @ x`` for one MATVEC instruction
(:mod:`hw.decode.isa`) bit for bit as :func:`ref_model.decode.matvec`:

1. the input vector ``x`` (int32 ``Q.F``, ``cols`` elements) is quantized by
   :class:`ActQuantizer` (:func:`ref_model.decode.quantize_act`: ``act_bits`` or, for
   inputs straight from an RMSNorm, ``norm_act_bits`` codes with a mantissa/exponent scale
   per ``act_block``) into on-chip group words;
2. the weight streamer reads the matrix's code stream and scale stream (planar layout)
   through one AXI4 read port, two burst readers sharing it by ID; reads start when the
   command is accepted and the readers' FIFOs (``prefetch``) take what arrives, so the port
   is busy while the input is being quantized;
3. each cycle one group of 32 weights meets its 32 activation codes: 32 products
   ``a * (code - offset)`` (<= 12 x 9 bits) and an adder tree give ``P`` (26 bits); the
   group term ``rshift_round(mant(d)*man*P, -(exp(d)+e+acc_frac))`` (+ the same with the
   group minimum ``m`` and ``S = sum a`` for asymmetric kinds) enters an ``acc_bits``
   accumulator that wraps; at the end of a row ``sat32(rshift_round(acc, acc_frac-F))``
   leaves on ``y``.

Throughput: one group (32 MACs) per cycle when both streams keep up; a 128-bit port
delivers a Q4_1 group (16 code bytes + 4 scale bytes) every 1.25 cycles, so the unit is
port-bound for every kind but W2/ternary (8 code bytes per group). Latency from a
group's issue to its accumulation: 12 cycles (every multiply, add and shift has its own
register stage, for Fmax).
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out, connect

from ..mem.axi4 import AXI4ReadSignature
from ..mem.gearbox import UnitUnpacker
from ..mem.reader import BurstReader, ReadArbiter
from ..pipeline import RegFIFO2, delay
from .funcs import MantScaleUnit
from .products import Pipe, lut_mul, lut_mul_pipe, registered_product
from .isa import WeightKind

GROUP = 32
_SCALE_FRAC = 24   # the activation-scale computation works in Q.(F+24)


class GroupWord(data.StructLayout):
    """One quantized group of the input vector: 32 codes, their sum, the block scale."""

    def __init__(self, code_bits: int, scale_bits: int):
        super().__init__({"a": data.ArrayLayout(signed(code_bits), GROUP), "s": signed(code_bits + 6),
                          "e": signed(8), "man": scale_bits})


class QuantCommand(data.StructLayout):
    def __init__(self):
        super().__init__({"length": 16, "norm": 1})


class ActQuantizer(wiring.Component):
    """:func:`ref_model.decode.quantize_act` (mantissa-scale mode) of one input vector.

    Members
    -------
    cmd : In(stream of QuantCommand): ``length`` elements (a multiple of 32), ``norm``
        selects ``norm_act_bits`` codes instead of ``act_bits``.
    data : In(stream of signed(32)): the elements, int32 ``Q.frac``.
    done : Out(1): high from the end of quantization until the next command.
    rd_addr, rd_en : In; rd_data : Out(GroupWord): group words, one cycle read latency.

    Per block (``act_block`` elements, or the whole vector when 0): ``amax = max|y|``;
    ``r = amax*C`` with ``C = round(2**24/qmax)``; ``s = bit_length(r) - b``;
    ``m = ceil(r/2**s)`` (a carry to ``2**b`` gives ``m/2``, ``s+1``); ``amax = 0`` gives
    ``m = 2**(b-1)``, ``s = -16``; codes ``clamp(rshift_round(y*R[m], s+b-8), +-qmax)``
    with the reciprocal ROM ``R``; block exponent ``e = s - 24 - frac``, mantissa ``m``.
    The scale of a block (:class:`~hw.decode.funcs.MantScaleUnit`) is computed while the next
    block arrives (7 cycles) and the block is quantized as soon as its scale is known, while
    later blocks load, so a vector takes about ``length + act_block + 14`` cycles.
    """

    def __init__(self, *, max_dim: int, act_bits: int, norm_act_bits: int, act_block: int,
                 scale_bits: int, frac: int):
        if scale_bits < 2 or scale_bits > 12:
            raise ValueError(f"act_scale_bits={scale_bits}: the quantizer supports mantissa scales of 2..12 bits")
        if max_dim % GROUP or act_block % GROUP:
            raise ValueError("max_dim and act_block must be multiples of 32")
        self.max_dim, self.act_bits, self.norm_act_bits = max_dim, act_bits, norm_act_bits
        self.act_block, self.scale_bits, self.frac = act_block, scale_bits, frac
        self.code_bits = max(act_bits, norm_act_bits)
        self.groups = max_dim // GROUP
        self.word = GroupWord(self.code_bits, scale_bits)
        super().__init__({
            "cmd": In(stream.Signature(QuantCommand())),
            "data": In(stream.Signature(signed(32))),
            "done": Out(1),
            "rd_addr": In(range(self.groups)),
            "rd_en": In(1),
            "rd_data": Out(self.word),
        })

    def elaborate(self, platform):
        m = Module()
        b = self.scale_bits
        blocks_max = self.max_dim // (self.act_block or self.max_dim)
        m.submodules.raw = raw = Memory(shape=signed(32), depth=self.max_dim, init=[])
        m.submodules.qmem = qmem = Memory(shape=self.word, depth=self.groups, init=[])
        # per block: reciprocal R, shift s+b-8, exponent e, mantissa m
        blk_layout = data.StructLayout({"r": 18, "sa": range(64), "e": signed(8), "man": b})
        m.submodules.bmem = bmem = Memory(shape=blk_layout, depth=blocks_max, init=[])
        raw_w, raw_r = raw.write_port(), raw.read_port()
        q_w, q_r = qmem.write_port(), qmem.read_port()
        b_w, b_r = bmem.write_port(), bmem.read_port(domain="comb")
        m.d.comb += [q_r.addr.eq(self.rd_addr), q_r.en.eq(self.rd_en), self.rd_data.eq(q_r.data)]

        length = Signal(16)
        norm = Signal()
        qmax = Signal(12)
        cmul = Signal(18)
        m.d.comb += [qmax.eq(Mux(norm, (1 << (self.norm_act_bits - 1)) - 1, (1 << (self.act_bits - 1)) - 1)),
                     cmul.eq(Mux(norm, ((1 << 25) // ((1 << (self.norm_act_bits - 1)) - 1) + 1) >> 1,
                                 ((1 << 25) // ((1 << (self.act_bits - 1)) - 1) + 1) >> 1))]

        # ---- load: store elements, block maxima -> the scale FSM -----------------------
        i = Signal(16)
        in_blk = Signal(16)
        blk_len = Signal(16)
        amax = Signal(32)
        pend = Signal()           # a block maximum waits for the scale FSM
        pend_max = Signal(32)
        pend_idx = Signal(range(max(blocks_max, 2)))
        blk_idx = Signal(range(max(blocks_max, 2)))
        y = self.data.payload
        mag = Signal(32)
        m.d.comb += mag.eq(Mux(y < 0, -y, y))
        new_max = Signal(32)
        m.d.comb += new_max.eq(Mux(mag > amax, mag, amax))
        # "the element is a block's / the vector's last" as registers, set with their
        # counters from a compare one step earlier (the counters' compares with length - 1
        # and blk_len - 1 into the handshake and the block index's enable was the matvec's
        # 101.3 MHz path); the same for the quantize pass's j / qin
        length_m2, blk_len_m2 = Signal(16), Signal(16)
        i_last, blk_last, j_last, qin_last = Signal(), Signal(), Signal(), Signal()

        # ---- block scales: the shared mantissa-scale unit, 6 cycles per block ------------
        m.submodules.scale = ms = MantScaleUnit(b)
        sc_busy = Signal()
        sc_idx = Signal.like(pend_idx)
        m.d.comb += [ms.amax.eq(pend_max), ms.cmul.eq(cmul)]
        with m.If(pend & ~sc_busy):
            m.d.comb += ms.i_valid.eq(1)
            m.d.sync += [sc_busy.eq(1), pend.eq(0), sc_idx.eq(pend_idx)]
        scaled = Signal(range(blocks_max + 1))   # blocks whose scale is in bmem
        with m.If(ms.o_valid):
            m.d.comb += [b_w.en.eq(1), b_w.addr.eq(sc_idx), b_w.data.r.eq(ms.rcp),
                         b_w.data.e.eq(ms.s - _SCALE_FRAC - self.frac), b_w.data.man.eq(ms.man),
                         b_w.data.sa.eq(Mux(ms.s + b - 8 > 0, ms.s + b - 8, 0))]
            m.d.sync += [sc_busy.eq(0), scaled.eq(scaled + 1)]

        # ---- quantize pass: one element per cycle through 3 stages ---------------------
        j = Signal(16)
        qblk = Signal(range(max(blocks_max, 2)))
        qin = Signal(16)
        v1, v2, v3 = Signal(), Signal(), Signal()
        v1b, v2a, v2c, v3b, v4b = Signal(), Signal(), Signal(), Signal(), Signal()
        lane1, lane2, lane3 = Signal(5), Signal(5), Signal(5)
        g1, g2, g3 = (Signal(range(self.groups)) for _ in range(3))
        code3 = Signal(signed(self.code_bits))
        blk1, blk2, blk3 = (Signal(blk_layout) for _ in range(3))
        lanes = Array(Signal(signed(self.code_bits), name=f"lane{k}") for k in range(GROUP))
        ssum = Signal(signed(self.code_bits + 6))
        m.d.comb += b_r.addr.eq(qblk)

        # LOAD stores the elements and hands each block's maximum to the scale unit; the
        # quantize pass trails it, one element per cycle, through every block whose scale
        # is known (``qblk < scaled``)
        qrun = Signal()                # the quantize pass has elements left
        m.d.sync += v1.eq(0)           # overridden while the pass issues
        with m.If(qrun & (qblk < scaled)):
            m.d.comb += [raw_r.addr.eq(j), raw_r.en.eq(1)]
            m.d.sync += [v1.eq(1), lane1.eq(j[:5]), g1.eq(j[5:]), blk1.eq(b_r.data),
                         j.eq(j + 1), qin.eq(qin + 1)]
            m.d.sync += [j_last.eq(j == length_m2), qin_last.eq(qin == blk_len_m2)]
            with m.If(qin_last | j_last):
                m.d.sync += [qin.eq(0), qblk.eq(qblk + 1), qin_last.eq(blk_len == 1)]
            with m.If(j_last):
                m.d.sync += qrun.eq(0)
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.cmd.ready.eq(1)
                with m.If(self.cmd.valid):
                    n = self.cmd.payload.length
                    bl = self.act_block if self.act_block else n
                    m.d.sync += [length.eq(n), norm.eq(self.cmd.payload.norm),
                                 i.eq(0), in_blk.eq(0), amax.eq(0), blk_idx.eq(0), self.done.eq(0),
                                 blk_len.eq(bl), length_m2.eq(n - 2), blk_len_m2.eq(bl - 2),
                                 i_last.eq(n == 1), j_last.eq(n == 1), blk_last.eq(bl == 1), qin_last.eq(bl == 1),
                                 j.eq(0), qblk.eq(0), qin.eq(0), ssum.eq(0), scaled.eq(0), qrun.eq(1)]
                    m.next = "LOAD"
            with m.State("LOAD"):
                m.d.comb += [self.data.ready.eq(~pend), raw_w.addr.eq(i), raw_w.data.eq(y),
                             raw_w.en.eq(self.data.valid & ~pend)]
                with m.If(self.data.valid & ~pend):
                    m.d.sync += [i.eq(i + 1), in_blk.eq(in_blk + 1), amax.eq(new_max),
                                 i_last.eq(i == length_m2), blk_last.eq(in_blk == blk_len_m2)]
                    with m.If(blk_last | i_last):
                        m.d.sync += [pend.eq(1), pend_max.eq(new_max), pend_idx.eq(blk_idx),
                                     blk_idx.eq(blk_idx + 1), in_blk.eq(0), amax.eq(0), blk_last.eq(blk_len == 1)]
                    with m.If(i_last):
                        m.next = "DRAIN"
            with m.State("DRAIN"):
                with m.If(~qrun & ~v1 & ~v1b & ~v2a & ~v2c & ~v2 & ~v3b & ~v4b & ~v3):
                    m.d.sync += self.done.eq(1)
                    m.next = "IDLE"

        # stage 2: the element leaves the block RAM (registered: a block RAM's output straight
        # into the multiplier was the 61 MHz path); stages 2a, 2c, 2b: product y * R[m], its
        # operands registered next to the DSPs, its MULT18X18D pieces registered alone, then summed (the 32 x 18 product's two DSPs and
        # their carry-chain sum in one cycle, with the DSPs placed far from the logic, was the
        # engine's 62.8 MHz path at f838351)
        y1b = Signal(signed(32))
        lane1b, g1b, blk1b = Signal(5), Signal.like(g1), Signal(blk_layout)
        m.d.sync += [v1b.eq(v1), lane1b.eq(lane1), g1b.eq(g1), blk1b.eq(blk1), y1b.eq(raw_r.data)]
        p2, p2_k = Pipe(m, "qz_", platform=platform).mul(y1b, blk1b.r, 0, "p", signed(50), lut_bits=1)
        assert p2_k == 3, p2_k      # 2a: operands registered, 2c: the pieces, 2: their sum
        lane2a, g2a, blk2a = Signal(5), Signal.like(g1), Signal(blk_layout)
        lane2c, g2c, blk2c = Signal(5), Signal.like(g1), Signal(blk_layout)
        m.d.sync += [v2a.eq(v1b), lane2a.eq(lane1b), g2a.eq(g1b), blk2a.eq(blk1b)]
        m.d.sync += [v2c.eq(v2a), lane2c.eq(lane2a), g2c.eq(g2a), blk2c.eq(blk2a)]
        m.d.sync += [v2.eq(v2c), lane2.eq(lane2c), g2.eq(g2c), blk2.eq(blk2c)]
        # stage 3: add the rounding half; stage 4: shift; stage 5: clamp
        sa = blk2.sa
        half = Signal(50)
        m.d.comb += half.eq(Mux(sa == 0, 0, Const(1, 50) << (sa - 1)[:6]))
        ph3 = Signal(signed(52))
        lane3b, lane4b = Signal(5), Signal(5)
        g3b, g4b = Signal.like(g2), Signal.like(g2)
        blk3b, blk4b = Signal(blk_layout), Signal(blk_layout)
        m.d.sync += [ph3.eq(p2 + half), v3b.eq(v2), lane3b.eq(lane2), g3b.eq(g2), blk3b.eq(blk2)]
        sh4 = Signal(signed(52))
        m.d.sync += [sh4.eq(ph3 >> blk3b.sa), v4b.eq(v3b), lane4b.eq(lane3b), g4b.eq(g3b), blk4b.eq(blk3b)]
        m.d.sync += [v3.eq(v4b), lane3.eq(lane4b), g3.eq(g4b), blk3.eq(blk4b),
                     code3.eq(Mux(sh4 > qmax, qmax, Mux(sh4 < -qmax, -qmax, sh4)))]
        # stage 6: assemble the group word; the 32nd code writes it
        with m.If(v3):
            m.d.sync += [lanes[lane3].eq(code3), ssum.eq(Mux(lane3 == 0, code3, ssum + code3))]
            with m.If(lane3 == GROUP - 1):
                m.d.comb += [q_w.en.eq(1), q_w.addr.eq(g3), q_w.data.s.eq(ssum + code3),
                             q_w.data.e.eq(blk3.e), q_w.data.man.eq(blk3.man)]
                for k in range(GROUP - 1):
                    m.d.comb += q_w.data.a[k].eq(lanes[k])
                m.d.comb += q_w.data.a[GROUP - 1].eq(code3)
        return m


class MatvecCommand(data.StructLayout):
    def __init__(self, addr_bits: int):
        super().__init__({"kind": 3, "norm": 1, "rows": 16, "cols": 16,
                          "codes_addr": addr_bits, "scales_addr": addr_bits})


def _f16(m: Module, bits, name: str):
    """IEEE half -> (signed 12-bit mantissa, exponent -24..5): ref_model.formats.f16_decode."""
    e = bits[10:15]
    f = bits[:10]
    mag = Signal(11, name=f"{name}_mag")
    mant = Signal(signed(12), name=f"{name}_mant")
    exp = Signal(signed(7), name=f"{name}_exp")
    m.d.comb += [mag.eq(Mux(e == 0, f, Cat(f, Const(1, 1)))),
                 mant.eq(Mux(bits[15], -mag, mag)),
                 exp.eq(Mux(e == 0, 1, e) - 25)]
    return mant, exp


def _shift_round(m: Module, y, sh, out_bits: int, name: str):
    """``rshift_round(y, sh)`` modulo ``2**out_bits`` for a signed shift ``sh``
    (negative: exact left shift; right shifts round half up; ``|y| < 2**(y_bits-1)``)."""
    yb = len(y)
    right = Signal(range(yb + 2), name=f"{name}_r")
    left = Signal(range(out_bits + 1), name=f"{name}_l")
    m.d.comb += [right.eq(Mux(sh > yb + 1, yb + 1, Mux(sh > 0, sh, 0))),
                 left.eq(Mux(-sh >= out_bits, out_bits, Mux(sh < 0, -sh, 0)))]
    half = Signal(yb + 2, name=f"{name}_half")
    m.d.comb += half.eq(Mux(right == 0, 0, Const(1, yb + 2) << (right - 1)[:len(right)]))
    r = Signal(signed(yb + 2), name=f"{name}_rv")
    m.d.comb += r.eq((y + half) >> right)
    out = Signal(signed(out_bits), name=name)
    m.d.comb += out.eq(Mux(sh > 0, r, Mux(left == out_bits, 0, (y << left)[:out_bits])))
    return out


class MatvecUnit(wiring.Component):
    """``y = matvec(W, quantize_act(x))`` for one MATVEC instruction (see module docstring).

    Members
    -------
    cmd : In(stream of MatvecCommand): weight ``kind`` (:class:`hw.decode.isa.WeightKind`),
        ``norm`` input, ``rows`` x ``cols`` (cols a multiple of 32, <= ``max_dim``), byte
        addresses of the code and scale streams (beat aligned).
    x : In(stream of signed(32)): the ``cols`` input elements.
    y : Out(stream of signed(32)): the ``rows`` results, int32 ``Q.frac``.
    axi : Out(AXI4ReadSignature).
    busy : Out(1). ``weight_stall`` : Out(1): a group could not issue for want of weight
        data (counted by the engine as memory stalls).

    ``prefetch`` = (code beats, scale beats): the depths of the two weight readers' FIFOs
    (default: ``outstanding x max_burst`` each). Reads start when the command is accepted,
    so FIFOs deep enough to take what the port delivers while the input is quantized keep
    the port busy then (:func:`hw.decode.engine.matvec_prefetch`).
    """

    def __init__(self, *, max_dim: int, act_bits: int = 8, norm_act_bits: int = 12, act_block: int = 32,
                 act_scale_bits: int = 8, acc_bits: int = 48, acc_frac: int = 24, frac: int = 12,
                 addr_bits: int = 32, data_bits: int = 128, max_burst: int = 16, outstanding: int = 4,
                 prefetch: tuple[int, int] | None = None, lut_lanes: int = 0):
        self.max_dim, self.acc_bits, self.acc_frac, self.frac = max_dim, acc_bits, acc_frac, frac
        #: lanes whose code x weight product is built from LUTs (:func:`.products.lut_mul`)
        #: instead of a DSP block: the DSP budget of an ECP5-85 (same numerics, same timing)
        self.lut_lanes = lut_lanes
        self.prefetch = prefetch
        self.addr_bits, self.data_bits = addr_bits, data_bits
        self.max_burst, self.outstanding = max_burst, outstanding
        self.quant = ActQuantizer(max_dim=max_dim, act_bits=act_bits, norm_act_bits=norm_act_bits,
                                  act_block=act_block, scale_bits=act_scale_bits, frac=frac)
        super().__init__({
            "cmd": In(stream.Signature(MatvecCommand(addr_bits))),
            "x": In(stream.Signature(signed(32))),
            "y": Out(stream.Signature(signed(32))),
            "axi": Out(AXI4ReadSignature(addr_bits=addr_bits, data_bits=data_bits, id_bits=1)),
            "busy": Out(1),
            "weight_stall": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        W, bpb = self.data_bits, self.data_bits // 8
        m.submodules.quant = quant = self.quant
        rd = dict(addr_bits=self.addr_bits, data_bits=W, max_burst=self.max_burst, outstanding=self.outstanding)
        code_depth, scale_depth = self.prefetch or (None, None)
        # registered reader outputs: the scale reader's block RAM output (5.8 ns clock-to-out)
        # through the scale unpacker's mux into ``sc0`` was the matvec's 87.9 MHz path
        m.submodules.rcodes = rcodes = BurstReader(**rd, depth=code_depth, out_reg=True)
        m.submodules.rscales = rscales = BurstReader(**rd, depth=scale_depth, out_reg=True)
        m.submodules.arb = arb = ReadArbiter(n=2, addr_bits=self.addr_bits, data_bits=W)
        connect(m, rcodes.axi, arb.m0)
        connect(m, rscales.axi, arb.m1)
        connect(m, arb.out, wiring.flipped(self.axi))
        m.submodules.ucodes = ucodes = UnitUnpacker(data_bits=W, unit_bits=(64, 128, 256))
        m.submodules.uscales = uscales = UnitUnpacker(data_bits=W, unit_bits=(16, 32))
        connect(m, rcodes.data, ucodes.beats)
        connect(m, rscales.data, uscales.beats)
        # the groups' codes and scales through register FIFOs: DOT's issue (both valid)
        # as the unpackers' ready, through the code unpacker into the reader's FIFO count
        # and back to the unpacker's buffer enable, was the matvec's 94.4 MHz path
        m.submodules.qcodes = qcodes = RegFIFO2(ucodes.max_unit)
        m.submodules.qscales = qscales = RegFIFO2(uscales.max_unit)
        connect(m, ucodes.units, qcodes.i)
        connect(m, uscales.units, qscales.i)
        connect(m, wiring.flipped(self.x), quant.data)

        # ---- command: start the weight reads at once (prefetch), then quantize ----------
        cmd = Signal(MatvecCommand(self.addr_bits))
        cb_sel = Signal(2)      # code bits 2 / 4 / 8 -> unit select 0 / 1 / 2
        asym = Signal()
        offset = Signal(4)
        signed_codes = Signal()
        groups = Signal(32)
        gpr = Signal(11)        # groups per row
        code_bytes = Signal(32)
        scale_bytes = Signal(32)
        kind = cmd.kind
        m.d.comb += [
            cb_sel.eq(Mux(kind == WeightKind.Q8_0, 2, Mux((kind == WeightKind.W2) | (kind == WeightKind.TERNARY), 0, 1))),
            asym.eq((kind == WeightKind.Q4_1) | (kind == WeightKind.W2)),
            offset.eq(Mux(kind == WeightKind.Q4_0, 8, 0)),
            signed_codes.eq((kind == WeightKind.Q8_0) | (kind == WeightKind.TERNARY)),
            gpr.eq(cmd.cols >> 5),
        ]
        issued = Signal(4)      # which of the 4 start-up commands have been taken
        row = Signal(16)
        g = Signal(11)
        inflight = Signal(range(17))
        out_fifo = fifo.SyncFIFOBuffered(width=32, depth=16)
        m.submodules.out_fifo = out_fifo
        issue = Signal()
        row_end_issue = Signal()
        popped = Signal()
        m.d.comb += [popped.eq(self.y.valid & self.y.ready)]
        m.d.sync += inflight.eq(inflight + row_end_issue - popped)

        # rows x groups per row: a register after each adder level (in one cycle this
        # 16 x 11 product was the matvec's 93.1 MHz path); ``cmd`` is still from IDLE on, so
        # SIZE takes the product ``size_lat`` cycles after entering
        groups_p, size_lat = lut_mul_pipe(m, cmd.rows, gpr, 32, "groups")
        size_wait = Signal(range(size_lat + 1))
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.cmd.ready.eq(1)
                m.d.sync += size_wait.eq(0)
                with m.If(self.cmd.valid):
                    m.d.sync += [cmd.eq(self.cmd.payload), issued.eq(0), self.busy.eq(1)]
                    m.next = "SIZE"
            with m.State("SIZE"):   # sizes of the two streams (rows x groups per row, pipelined)
                m.d.sync += size_wait.eq(size_wait + 1)
                with m.If(size_wait == size_lat):
                    m.d.sync += groups.eq(groups_p)
                    m.next = "SIZE2"
            with m.State("SIZE2"):
                m.d.sync += [code_bytes.eq(Mux(cb_sel == 2, groups << 5, Mux(cb_sel == 1, groups << 4, groups << 3))),
                             scale_bytes.eq(Mux(asym, groups << 2, groups << 1))]
                m.next = "START"
            with m.State("START"):
                m.d.comb += [
                    rcodes.cmd.payload.addr.eq(cmd.codes_addr),
                    rcodes.cmd.payload.beats.eq((code_bytes + bpb - 1) >> (bpb.bit_length() - 1)),
                    rcodes.cmd.valid.eq(~issued[0]),
                    rscales.cmd.payload.addr.eq(cmd.scales_addr),
                    rscales.cmd.payload.beats.eq((scale_bytes + bpb - 1) >> (bpb.bit_length() - 1)),
                    rscales.cmd.valid.eq(~issued[1]),
                    ucodes.cmd.payload.count.eq(groups), ucodes.cmd.payload.sel.eq(cb_sel),
                    ucodes.cmd.valid.eq(~issued[2]),
                    uscales.cmd.payload.count.eq(groups), uscales.cmd.payload.sel.eq(asym),
                    uscales.cmd.valid.eq(~issued[3]),
                    quant.cmd.payload.length.eq(cmd.cols), quant.cmd.payload.norm.eq(cmd.norm),
                ]
                took = Cat(*(c.valid & c.ready for c in (rcodes.cmd, rscales.cmd, ucodes.cmd, uscales.cmd)))
                m.d.sync += issued.eq(issued | took)
                with m.If((issued | took) == 0b1111):
                    m.next = "QUANT_START"
            with m.State("QUANT_START"):
                m.d.comb += [quant.cmd.valid.eq(1), quant.cmd.payload.length.eq(cmd.cols),
                             quant.cmd.payload.norm.eq(cmd.norm)]
                with m.If(quant.cmd.ready):
                    m.next = "QUANT"
            with m.State("QUANT"):
                with m.If(quant.done):
                    m.d.sync += [row.eq(0), g.eq(0)]
                    m.next = "DOT"
            with m.State("DOT"):
                can = qcodes.o.valid & qscales.o.valid & (inflight < 16)
                m.d.comb += [issue.eq(can), self.weight_stall.eq(~(qcodes.o.valid & qscales.o.valid))]
                with m.If(can):
                    m.d.sync += g.eq(g + 1)
                    with m.If(g == gpr - 1):
                        m.d.comb += row_end_issue.eq(1)
                        m.d.sync += [g.eq(0), row.eq(row + 1)]
                        with m.If(row == cmd.rows - 1):
                            m.next = "FINISH"
            with m.State("FINISH"):   # wait for the last results to leave
                with m.If((inflight == 0) & ~out_fifo.r_rdy):
                    m.d.sync += self.busy.eq(0)
                    m.next = "IDLE"
        m.d.comb += [qcodes.o.ready.eq(issue), qscales.o.ready.eq(issue),
                     quant.rd_addr.eq(g), quant.rd_en.eq(1)]

        # ---- datapath -----------------------------------------------------------------
        # d1: the group word leaves the block RAM, codes and scales are registered;
        # d2: the group word and the decoded weights are registered (a block RAM's output
        # straight into 32 multipliers limited Fmax to 57 MHz); then 32 products
        v0, last0 = Signal(), Signal()
        codes0 = Signal(256)
        sc0 = Signal(32)
        m.d.sync += [v0.eq(issue), last0.eq(row_end_issue), codes0.eq(qcodes.o.payload),
                     sc0.eq(qscales.o.payload)]
        v1, last1 = Signal(), Signal()
        sc1 = Signal(32)
        qw = Signal(self.quant.word)
        m.d.sync += [v1.eq(v0), last1.eq(last0), sc1.eq(sc0), qw.eq(quant.rd_data)]
        prods = [Signal(signed(self.quant.code_bits + 9), name=f"prod{k}") for k in range(GROUP)]
        lane_terms = []         # per lane, the registered terms whose sum is its product
        for k, p in enumerate(prods):
            w = Signal(signed(9), name=f"w{k}")
            w1 = Signal(signed(9), name=f"w{k}_r")
            c2, c4, c8 = codes0[2 * k:2 * k + 2], codes0[4 * k:4 * k + 4], codes0[8 * k:8 * k + 8]
            with m.Switch(cb_sel):
                with m.Case(0):
                    m.d.comb += w.eq(Mux(signed_codes, c2.as_signed(), c2))
                with m.Case(1):
                    m.d.comb += w.eq(c4 - offset)
                with m.Default():
                    m.d.comb += w.eq(c8.as_signed())
            m.d.sync += w1.eq(w)
            # the operands registered again, next to the lane's MULT18X18D (the DSP columns
            # are far from the group-word memory in the engine); a LUT lane alike, to keep
            # all lanes in step
            if k < self.lut_lanes:
                a2, w2 = Signal.like(qw.a[k], name=f"a{k}_r2"), Signal.like(w1, name=f"w{k}_r2")
                m.d.sync += [a2.eq(qw.a[k]), w2.eq(w1)]
                # a LUT lane's product in two registered halves, w1 = lo + 32 * hi (lo 5 bits
                # unsigned, hi 4 bits signed), summed by the adder tree's first level (the
                # whole 9-term LUT product in one cycle was the matvec's 96.3 MHz path)
                hi = Signal(signed(self.quant.code_bits + 9), name=f"prod{k}_hi")
                m.d.sync += [p.eq(lut_mul(a2, w2[:5])), hi.eq(lut_mul(a2, w2[5:].as_signed()) << 5)]
                lane_terms.append([p, hi])
            else:
                # the same two stages (operands, product) around the lane's MULT18X18D: on an
                # ECP5 the DSP's own registers
                m.d.comb += p.eq(registered_product(m, qw.a[k], w1, platform=platform, name=f"lane{k}"))
                lane_terms.append([p])
        md, ed = _f16(m, sc1[:16], "d")
        mm, em = _f16(m, sc1[16:32], "m")
        side = Signal(2)             # valid, last: travel with every stage
        m.d.sync += side.eq(Cat(v1, last1))
        # d2: the decoded f16 scales registered (their decode straight into the multiplier
        # was the 72 MHz path); d3: mantissa products and shift amounts. The mantissa
        # products as registered_product: on an ECP5 the d2 and d3 registers are the
        # MULT18X18D's own
        ed2, em2, qe2 = Signal(signed(7)), Signal(signed(7)), Signal(signed(8))
        m.d.sync += [ed2.eq(ed), em2.eq(em), qe2.eq(qw.e)]
        kd, km = Signal(signed(25)), Signal(signed(25))
        kd_p = registered_product(m, md, qw.man, platform=platform, name="kd_p")
        km_p = registered_product(m, mm, qw.man, platform=platform, name="km_p")
        # asym holds for the whole command, and the pipeline drains between commands
        m.d.comb += [kd.eq(kd_p), km.eq(Mux(asym, km_p, 0))]
        shd, shm = Signal(signed(10)), Signal(signed(10))
        s2 = Signal(signed(self.quant.code_bits + 6))
        m.d.sync += [shd.eq(-(ed2 + qe2 + self.acc_frac)), shm.eq(-(em2 + qe2 + self.acc_frac)), s2.eq(qw.s)]

        def later(sig, n, name):
            """``sig`` delayed by ``n`` registers."""
            return delay(m, sig, n, 1, name=name)

        # d4..d6: adder tree 32 -> 8 -> 2 -> 1 (P, 26 bits; the lane products are at d3)
        pbits = self.quant.code_bits + 9 + 5
        # every entry is a list of terms (two for a LUT lane, one otherwise) summed with
        # its group's others
        tree = lane_terms
        for level, fan in enumerate((4, 4, 2)):
            nxt = [Signal(signed(pbits), name=f"sum{level}_{k}") for k in range(len(tree) // fan)]
            for k, t in enumerate(nxt):
                m.d.sync += t.eq(sum(x for terms in tree[fan * k:fan * k + fan] for x in terms))
            tree = [[t] for t in nxt]
        (P6,), = tree
        shifts = {}
        for name, sh, yb in (("d", shd, pbits + 25), ("m", shm, len(s2) + 25)):
            # d4: decode the shift amount (from d3); d5: the rounding half
            pos4 = Signal(name=f"pos_{name}")
            right4 = Signal(range(yb + 2), name=f"right_{name}")
            left4 = Signal(range(self.acc_bits + 1), name=f"left_{name}")
            m.d.sync += [pos4.eq(sh > 0), right4.eq(Mux(sh > yb + 1, yb + 1, Mux(sh > 0, sh, 0))),
                         left4.eq(Mux(-sh >= self.acc_bits, self.acc_bits, Mux(sh < 0, -sh, 0)))]
            half5 = Signal(yb + 2, name=f"half5_{name}")
            m.d.sync += half5.eq(Mux(right4 == 0, 0, Const(1, yb + 2) << (right4 - 1)[:len(right4)]))
            shifts[name] = (later(pos4, 1, f"pos5_{name}"), later(right4, 1, f"right5_{name}"),
                            later(left4, 1, f"left5_{name}"), half5, yb)
        kd6, km6, s6 = later(kd, 3, "kd"), later(km, 3, "km"), later(s2, 4, "s")
        # d7: P x kd's operands registered (next to their MULT18X18D); d8: the pieces, each
        # registered alone; d9 = kyd: their sum (a 26 x 25 product with its 4-DSP sum in one
        # cycle was the 81 MHz path). The names below (y7, pos7, d8 ...) count from kyd = "7"
        pipe = Pipe(m, "mv_", platform=platform)
        yd7, kyd = pipe.mul(P6, kd6, 6, "yd", signed(pbits + 25))
        ym7, kym = pipe.mul(s6, km6, 6, "ym", signed(len(s2) + 25))
        assert kyd == kym, (kyd, kym)
        terms = []
        for name, y7 in (("d", yd7), ("m", ym7)):
            pos5, right5, left5, half5, yb = shifts[name]
            pos7, right7, left7, half7 = (later(x, kyd - 5, f"{x.name}_7") for x in (pos5, right5, left5, half5))
            # d8: add the rounding half (0 for left shifts); d9: barrel shift mod 2**acc_bits
            yh8 = Signal(signed(yb + 2), name=f"yh8_{name}")
            m.d.sync += yh8.eq(y7 + half7)
            pos8, right8, left8 = (later(x, 1, f"{x.name}_8") for x in (pos7, right7, left7))
            t9 = Signal(signed(self.acc_bits), name=f"t9_{name}")
            m.d.sync += t9.eq(Mux(pos8, yh8 >> right8, Mux(left8 == self.acc_bits, 0, (yh8 << left8)[:self.acc_bits])))
            terms.append(t9)
        # d10: the group term; d11: accumulate; d12: a row's result, rounded and saturated
        t10 = Signal(signed(self.acc_bits))
        m.d.sync += t10.eq(terms[0] + terms[1])
        side10 = later(side, kyd + 1, "side")
        acc = Signal(signed(self.acc_bits))
        total = Signal(signed(self.acc_bits))
        m.d.comb += total.eq(acc + t10)
        fin = Signal(signed(self.acc_bits))
        vfin = Signal()
        m.d.sync += vfin.eq(side10[0] & side10[1])
        with m.If(side10[0]):
            m.d.sync += acc.eq(Mux(side10[1], 0, total))
            with m.If(side10[1]):
                m.d.sync += fin.eq(total)
        sh = self.acc_frac - self.frac
        rounded = Signal(signed(self.acc_bits + 1))
        m.d.comb += rounded.eq((fin + (1 << (sh - 1) if sh > 0 else 0)) >> sh)
        sat = Signal(signed(32))
        vsat = Signal()
        m.d.sync += [vsat.eq(vfin),
                     sat.eq(Mux(rounded > (1 << 31) - 1, (1 << 31) - 1, Mux(rounded < -(1 << 31), -(1 << 31), rounded)))]
        m.d.comb += [out_fifo.w_en.eq(vsat), out_fifo.w_data.eq(sat),
                     self.y.payload.eq(out_fifo.r_data.as_signed()), self.y.valid.eq(out_fifo.r_rdy),
                     out_fifo.r_en.eq(self.y.ready)]
        return m
