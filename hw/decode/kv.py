"""KV-cache unit of the decode engine: append the new K/V, quantize, and stream the past back.

:class:`KVUnit` owns one layer's KV region in external memory (layout:
:class:`hw.decode.isa.KVLayout`; offsets come from the engine registers the program
SETs) and runs two commands:

* **APPEND** (KV_APPEND): the new raw K and V rows (int32 ``Q.frac``) go to their ring
  slot; then, KIVI style, the V row that left the full-precision window is quantized per
  (token, head) and, when a group of ``k_group`` K rows is complete, the group is
  quantized per channel (:func:`ref_model.decode.kv_quantize`, mantissa scales:
  ``mn`` = minimum, ``(man, s) = _mant_scale(max - mn)``,
  ``codes = clamp(rshift_round((x - mn)*R[man], s + b - 8), 0, 2**bits - 1)``,
  ``e = s - 24``). Which rows are quantized depends on the position only
  (:func:`hw.decode.isa.kv_quantized_counts`). Both passes over the raw rows (stats, then
  codes) read them with one command (a K group's ring slots are contiguous) and handle a
  whole beat, ``W/32`` channels, per cycle (``W/32`` lane memories for the statistics and
  parameters, ``W/32`` quantizers whose codes leave packed as one unit); per quantization
  about ``2 x rows x row/(W/32)`` cycles plus one per statistic for the scales and one per
  parameter record (SmolLM2, K group of 32 at W = 128: ~3.5k cycles per layer).
* **READ** (for ATTEND): every cached K row of positions ``0..pos``, then every V row,
  dequantized (``mn + rshift_round(code*man, -e)``, :func:`ref_model.decode.kv_dequantize`)
  saturated to int32, or raw, as streams of ``lanes``-channel vectors (one KV head's
  consecutive channels) for the attention unit. An issuer queues the READ's bursts ahead
  of use (per K group its parameter records, then its code rows; V in chunks of
  ``V_CHUNK`` tokens: parameters, then codes; then the raw rows of the window), bounded
  only by the burst reader's FIFO credits; the consumer walks the same segments
  (:class:`_Walker`) and takes per cycle ``lanes`` codes (or raw words, or a beat of K
  parameter records) through a lane gearbox into ``lanes`` dequantizers. Cycles: about
  one per vector (KV4 at 32 lanes: one per beat), ``row / (W/64)`` per K group and
  ``kv_heads`` per V token for the parameters, and a cycle per segment (the walkers compute
  the next segment ahead).

Memory goes through one burst reader and one burst writer with a run-time-width packer
(raw words 32 bits, a beat's codes ``W/32 x`` 2/4/8 bits, parameter records 64 bits).
Requires ``k_group`` a power of two, a port of at most 128 bits (rows are 16-byte
aligned) and a row a multiple of ``W/32`` channels (``head_dim`` too, for V's per-head
statistics). On a port narrower than 128 bits READ skips each 16-byte run's pad beat.
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out, connect

from ..mem.axi4 import AXI4ReadSignature, AXI4WriteSignature
from ..mem.gearbox import UnitPacker
from ..mem.reader import BurstReader
from ..mem.writer import BurstWriter
from ..pipeline import RegFIFO2
from .attention import lane_vector
from .funcs import MantScaleUnit, bit_length
from .products import Pipe, lut_mul, registered_product, settled_mul

#: Unit widths of the (un)packers and their select codes.
UNITS = (2, 4, 8, 32, 64)
SEL_WORD, SEL_PARAM = 3, 4
SEL_KPARAMS = 5          # READ only: the K parameter records of a whole beat (up to lanes)
#: V parameter records are read for this many tokens at a time (one burst per chunk).
V_CHUNK = 16
#: Segments of a READ (see :class:`_Walker`).
SEG_PARAMS, SEG_CODES, SEG_RAW, SEG_DONE = 0, 1, 2, 3
PARAM = data.StructLayout({"mn": signed(32), "e": signed(8), "pad": 8, "man": 16})


class _Walker:
    """The segments of a READ, in order: per K group its parameter records then its code
    rows, then the raw K rows (tokens not yet quantized); the same for V with chunks of
    ``V_CHUNK`` tokens. The issuer and the consumer each walk them with one of these
    (``st``, ``isv`` = V side, first token ``tt``, tokens ``nt``, ``nt_m1 = nt - 1``);
    ``adv`` steps, allowed only while ``rdy``.

    The next segment is computed ahead into registers from the current one (the sums and
    compares of the step, in the cycle of a consumer's ``adv``, were the KV unit's 67.5 MHz
    path), so ``rdy`` is low for the cycle after a step or a start."""

    def __init__(self, m: Module, name: str, *, kq, vq, n, k_group):
        self.st = Signal(2, name=f"{name}_st", init=SEG_DONE)
        self.isv = Signal(name=f"{name}_isv")
        self.tt = Signal(15, name=f"{name}_tt")
        self.nt = Signal(15, name=f"{name}_nt")
        self.nt_m1 = Signal(15, name=f"{name}_nt_m1")
        self.adv = Signal(name=f"{name}_adv")
        self.rdy = Signal(name=f"{name}_rdy")
        self.kq, self.vq, self.k_group = kq, vq, k_group
        nx_st, nx_isv = Signal(2, name=f"{name}_nx_st"), Signal(name=f"{name}_nx_isv")
        nx_tt, nx_nt = Signal(15, name=f"{name}_nx_tt"), Signal(15, name=f"{name}_nx_nt")
        t2 = Signal(16, name=f"{name}_t2")
        m.d.comb += t2.eq(self.tt + self.nt)
        vleft = Signal(16, name=f"{name}_vleft")
        m.d.comb += vleft.eq(vq - t2)
        m.d.sync += [nx_st.eq(self.st), nx_isv.eq(self.isv), nx_tt.eq(self.tt), nx_nt.eq(self.nt)]
        with m.If(self.st == SEG_PARAMS):
            m.d.sync += nx_st.eq(SEG_CODES)
        with m.Elif((self.st == SEG_CODES) & (t2 < Mux(self.isv, vq, kq))):
            m.d.sync += [nx_st.eq(SEG_PARAMS), nx_tt.eq(t2),
                         nx_nt.eq(Mux(self.isv, Mux(vleft > V_CHUNK, V_CHUNK, vleft), k_group))]
        with m.Elif(t2 < n):
            m.d.sync += [nx_st.eq(SEG_RAW), nx_tt.eq(t2), nx_nt.eq(1)]
        with m.Elif(~self.isv):
            m.d.sync += [nx_isv.eq(1)] + self._side(vq, Mux(vq > V_CHUNK, V_CHUNK, vq), nx_st, nx_tt, nx_nt)
        with m.Else():
            m.d.sync += nx_st.eq(SEG_DONE)
        m.d.sync += self.rdy.eq(~self.adv)
        with m.If(self.adv):
            m.d.sync += [self.st.eq(nx_st), self.isv.eq(nx_isv), self.tt.eq(nx_tt), self.nt.eq(nx_nt),
                         self.nt_m1.eq(nx_nt - 1)]

    @staticmethod
    def _side(qn, first_nt, st, tt, nt):
        return [st.eq(Mux(qn != 0, SEG_PARAMS, SEG_RAW)), tt.eq(0), nt.eq(Mux(qn != 0, first_nt, 1))]

    def start(self):
        nt = Mux(self.kq != 0, self.k_group, 1)
        return ([self.isv.eq(0), self.rdy.eq(0), self.nt_m1.eq(nt - 1)]
                + self._side(self.kq, self.k_group, self.st, self.tt, self.nt))


class KVCommand(data.StructLayout):
    def __init__(self, addr_bits: int):
        super().__init__({"read": 1, "base": addr_bits, "pos": 14})


class KVRegs(data.StructLayout):
    """The engine registers the unit reads (SET by the program, stable while it runs)."""

    def __init__(self):
        super().__init__({"kv_bits": 5, "k_group": 11, "kv_window": 14, "kv_heads": 6, "head_dim": 9,
                          "max_ctx": 15, "v_raw": 32, "k_codes": 32, "k_params": 32, "v_codes": 32,
                          "v_params": 32})


def _pad16(m: Module, v, name: str) -> Signal:
    out = Signal(len(v) + 1, name=name)
    m.d.comb += out.eq((v + 15) & ~Const(15, len(v) + 1))
    return out


class KVUnit(wiring.Component):
    """See the module docstring.

    Members
    -------
    cmd : In(stream of KVCommand): ``read`` 0 = APPEND, 1 = READ; layer ``base``; ``pos``.
    regs : In(KVRegs).
    k_in, v_in : In(streams of signed(32)): APPEND's new rows (``kv_heads x head_dim``).
    k_out, v_out : Out(streams of ``lanes`` x signed(32)): READ's rows, all K then all V.
    axi_r, axi_w : the memory ports.
    busy : Out(1).
    """

    def __init__(self, *, max_kv_dim: int, scale_bits: int, addr_bits: int = 32, data_bits: int = 128,
                 max_burst: int = 16, outstanding: int = 4, lanes: int = 1, max_kv_heads: int | None = None):
        if data_bits > 128:
            raise ValueError("the KV unit needs a memory port of at most 128 bits (16-byte rows)")
        if lanes < 1 or lanes & (lanes - 1) or max_kv_dim % lanes:
            raise ValueError(f"KV lanes {lanes}: must be a power of two dividing the row ({max_kv_dim})")
        self.lanes = lanes
        #: raw words per beat: APPEND's quantization passes handle one beat per cycle
        self.P = data_bits // 32
        if max_kv_dim % self.P:
            raise ValueError(f"KV row {max_kv_dim}: must be a multiple of the raw words per beat ({self.P})")
        self.max_kv = max_kv_heads or max_kv_dim
        self.max_row, self.b = max_kv_dim, scale_bits
        self.addr_bits, self.data_bits, self.max_burst, self.outstanding = addr_bits, data_bits, max_burst, outstanding
        super().__init__({
            "cmd": In(stream.Signature(KVCommand(addr_bits))),
            "regs": In(KVRegs()),
            "k_in": In(stream.Signature(signed(32))),
            "v_in": In(stream.Signature(signed(32))),
            "k_out": Out(stream.Signature(lane_vector(lanes))),
            "v_out": Out(stream.Signature(lane_vector(lanes))),
            "axi_r": Out(AXI4ReadSignature(addr_bits=addr_bits, data_bits=data_bits)),
            "axi_w": Out(AXI4WriteSignature(addr_bits=addr_bits, data_bits=data_bits)),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        W = self.data_bits
        b = self.b
        R = self.max_row
        rd = BurstReader(addr_bits=self.addr_bits, data_bits=W, max_burst=self.max_burst,
                         outstanding=self.outstanding, out_reg=True)
        wr = BurstWriter(addr_bits=self.addr_bits, data_bits=W, max_burst=self.max_burst)
        # APPEND's quantization passes take a whole beat of raw words (P channels) per cycle
        P = self.P
        lg_p = P.bit_length() - 1
        pk = UnitPacker(data_bits=W, unit_bits=tuple(P * u for u in UNITS[:3]) + UNITS[3:])
        ms = MantScaleUnit(b)
        m.submodules.rd, m.submodules.wr, m.submodules.pk, m.submodules.ms = rd, wr, pk, ms
        connect(m, rd.axi, wiring.flipped(self.axi_r))
        connect(m, wr.axi, wiring.flipped(self.axi_w))
        reading = Signal()                       # a READ runs: beats go to the lane gearbox
        gb_pop = Signal()
        a_pop = Signal()                         # APPEND: a pass takes the beat of raw words
        m.d.comb += rd.data.ready.eq(Mux(reading, gb_pop, a_pop))
        xs = [rd.data.payload[32 * ll:32 * (ll + 1)].as_signed() for ll in range(P)]
        m.d.comb += [wr.data.payload.data.eq(pk.beats.payload.data), wr.data.payload.last.eq(pk.beats.payload.last),
                     wr.data.valid.eq(pk.beats.valid), pk.beats.ready.eq(wr.data.ready)]

        # per-statistic state of APPEND: min/max (stats), then the scale parameters, per
        # channel (K) or per head (V); statistic s lives in lane memory s % P at s // P, so
        # a beat's P channels meet their P statistics in one cycle
        PAR_Q = data.StructLayout({"man": b, "s": signed(8), "rcp": 18, "mn": signed(32)})
        sdepth = max(R // P, 1)
        mn_w, mn_r, mx_w, mx_r, par_w, par_r = [], [], [], [], [], []
        mn_s, mx_s = [], []    # second read ports of the statistics: S_SCALE's
        for ll in range(P):
            for name, shape, wl, rl, sl in (("mn", signed(32), mn_w, mn_r, mn_s), ("mx", signed(32), mx_w, mx_r, mx_s),
                                            ("par", PAR_Q, par_w, par_r, None)):
                mem = Memory(shape=shape, depth=sdepth, init=[])
                m.submodules[f"{name}_mem{ll}"] = mem
                wl.append(mem.write_port())
                rl.append(mem.read_port(domain="comb"))
                if sl is not None:
                    # its own port: the read-modify-write's address is then st2_sw alone, not
                    # a mux decoded from the FSM state (that was the KV unit's 55 MHz path)
                    sl.append(mem.read_port(domain="comb"))

        def lane_sel(ports, idx):
            """The read data of lane ``idx % P``."""
            return Array(p.data for p in ports)[idx[:lg_p]] if P > 1 else ports[0].data

        def lane_hit(idx, ll):
            return (idx[:lg_p] == ll) if P > 1 else Const(1)

        cmd = Signal(KVCommand(self.addr_bits))
        rg = self.regs
        # constants of the KV format, registered: they follow the registers, which the
        # program SETs long before any KV command (the engine's kv_bits register through
        # the take width's decode into the gearbox and the reader's ready was the whole
        # engine's 62.5 MHz path)
        q = Signal()                             # quantized KV (kv_bits != 16)
        m.d.sync += q.eq(rg.kv_bits != 16)
        sel_code = Signal(3)
        m.d.sync += sel_code.eq(Mux(rg.kv_bits == 2, 0, Mux(rg.kv_bits == 4, 1, 2)))
        qmax = Signal(8)
        m.d.sync += qmax.eq((Const(1, 9) << rg.kv_bits[:4]) - 1)
        cmul = Signal(25)
        m.d.sync += cmul.eq(Mux(rg.kv_bits == 2, ((1 << 25) // 3 + 1) >> 1,
                                Mux(rg.kv_bits == 4, ((1 << 25) // 15 + 1) >> 1, ((1 << 25) // 255 + 1) >> 1)))
        # log2(k_group) and the ring mask depend on the registers only (SET long before any
        # KV command): registered, with the ring's sum one stage earlier (a priority encoder
        # of the register sum straight into the slot-address product was a long path)
        lg_g = Signal(4)
        m.d.sync += lg_g.eq(bit_length(m, rg.k_group, 11, "lg_g_bl") - 1)
        ring_len = Signal(15)
        m.d.sync += ring_len.eq(rg.k_group + rg.kv_window - 1)
        ring_mask = Signal(15)
        m.d.sync += ring_mask.eq(Mux(q, (Const(1, 16) << bit_length(m, ring_len, 15, "ring_bl")) - 1, 0x7FFF))

        # sizes (registered at command start: multiplies)
        row = Signal(range(R + 1))
        raw_bytes = Signal(16)
        code_bytes_used = Signal(16)
        code_bytes = Signal(17)
        kpar_bytes = Signal(17)
        vpar_bytes = Signal(17)
        m.d.comb += [code_bytes.eq(_pad16(m, code_bytes_used, "cb_pad")),
                     kpar_bytes.eq(_pad16(m, (row << 3)[:16], "kp_pad")),
                     vpar_bytes.eq(_pad16(m, (rg.kv_heads << 3)[:16], "vp_pad"))]
        n = Signal(15)
        vq = Signal(15)
        kq = Signal(15)
        t = Signal(15)           # token being processed
        i = Signal(range(R + 1))   # element within a row
        c = Signal(9)            # channel within a head
        j = Signal(6)            # head
        rows_left = Signal(15)
        wst_left = Signal(12)      # codes pass: code rows whose writer transfer is not started yet
        is_k = Signal()            # the pass works on K (per channel) rather than V (per head)

        # the address and size products (token x row bytes, ...): two pipelined multipliers
        # shared by the states that need them; each state puts its operands on (mA_a, mA_b)
        # / (mB_a, mB_b) and acts once ``okA`` / ``okB`` say the product is there (a few
        # cycles per command or READ segment; combinational, a 15 x 16 product chained
        # into the reader's address was a long path). ``mkey`` names the site driving them:
        # the state registers of both FSMs and the issuer's segment (kind, side), wired
        # after the FSMs below. ``ok`` compares only it, not the operands (the operand muxes
        # through a 32-bit compare into ``ok`` was the KV unit's 63.6 MHz path), and it is
        # registers only (a key muxed from the state decode, one constant per site, into
        # that compare, ``ok`` and a command was its 81.4 MHz path). Every site's operands
        # are a function of its state and registers it does not change while in the state.
        mA_a, mA_b, mB_a, mB_b = Signal(15), Signal(17), Signal(15), Signal(17)
        mkey = Signal(16)
        pA, okA = settled_mul(m, mA_a, mA_b, self.addr_bits, "mulA", key=mkey)
        pB, okB = settled_mul(m, mB_a, mB_b, self.addr_bits, "mulB", key=mkey)
        # operands derived from registers, registered (``settled_mul`` allows one cycle late)
        iw_tt_g, g0_g, vq_m1 = Signal(15), Signal(15), Signal(15)

        def slot_mul(tok):
            """Put ``(tok & ring_mask) * raw_bytes`` on multiplier A."""
            return [mA_a.eq(tok & ring_mask), mA_b.eq(raw_bytes)]

        def slot_addr(part_off):
            return cmd.base + part_off + pA

        # the writer's start addresses, summed into registers every cycle from the products
        # (a state loads one once the product was there a cycle before: ``okA & okA_d``, or
        # ``a_go``, a cycle after its ok); the three-input sums behind the state decode into
        # the writer's address were the KV unit's 87.2 MHz path
        okA_d = Signal()
        m.d.sync += okA_d.eq(okA)
        wa_raw_k, wa_raw_v, wa_codes, wa_params = (Signal(self.addr_bits, name=f"wa_{n}")
                                                   for n in ("raw_k", "raw_v", "codes", "params"))
        m.d.sync += [wa_raw_k.eq(slot_addr(0)), wa_raw_v.eq(slot_addr(rg.v_raw)),
                     wa_codes.eq(cmd.base + Mux(is_k, rg.k_codes, rg.v_codes) + pB),
                     wa_params.eq(cmd.base + Mux(is_k, rg.k_params, rg.v_params) + pA)]

        # ---- transfer helpers --------------------------------------------------------
        # APPEND reads a pass's raw rows (the whole K group: its ring slots are contiguous,
        # the ring being a power of two no smaller than k_group) with one command
        # a_go: a register, raised the cycle after the state's go_want (the products' ok
        # through the state decode and the read/issue mux into the reader's command was
        # the KV unit's 83.1 MHz path); the state holds its operands until the reader takes
        # the command, and leaves then, so the late raise only costs a cycle
        a_go, go_want = Signal(), Signal()
        rbeats = Signal(range(R // P + 1))       # beats per raw row
        a_beats = Signal(24)
        m.d.comb += a_beats.eq(Mux(is_k, rbeats << lg_g, rbeats))
        iss_valid = Signal()
        iss_addr = Signal(self.addr_bits)
        iss_beats = Signal(24)
        a_addr = Signal(self.addr_bits)          # the K or V raw slot, summed like a_go's (registered)
        m.d.comb += a_addr.eq(Mux(is_k, wa_raw_k, wa_raw_v))
        m.d.sync += a_go.eq(go_want & ~(a_go & rd.cmd.ready))
        m.d.comb += [rd.cmd.payload.addr.eq(Mux(reading, iss_addr, a_addr)),
                     rd.cmd.payload.beats.eq(Mux(reading, iss_beats, a_beats)),
                     rd.cmd.valid.eq(Mux(reading, iss_valid, a_go))]
        wr_addr = Signal(self.addr_bits)
        m.d.comb += wr.start.payload.eq(wr_addr)
        pk_sel = Signal(3)
        m.d.comb += pk.sel.eq(pk_sel)

        pk_param = Signal(64)
        pw_rec, pw_v, pw_last, pw_done = Signal(64), Signal(), Signal(), Signal()   # P_WRITE's record register
        pk_last = Signal()
        pk_valid = Signal()
        pk_from_q = Signal()
        # APPEND's raw rows reach the packer through a register slot (word, last): the
        # A_RAWK / A_RAWV state's source mux and its ready straight into the packer's
        # last/valid clock enables (through the engine's K/V slot) was the engine's
        # 85.8 MHz path at b08d4eb
        m.submodules.raw_slot = raw_slot = RegFIFO2(data.StructLayout({"word": 32, "last": 1}))
        raw_sel = Signal()                         # the slot feeds the packer (pk_sel == SEL_WORD)
        m.d.comb += raw_slot.o.ready.eq(raw_sel & pk.units.ready)
        # ---- quantization pipeline: (x - mn)*R -> + half -> >> sa -> clamp -> packer ----
        # P lanes (a beat of raw words per cycle); their codes leave packed as one unit
        # C_ROW takes a beat (qt_*); the beat, its last flag and its parameters' word and
        # head are registered (qp_*), and the parameters are read from the LUT RAMs at that
        # registered address (the FSM's state decode into the RAMs' address mux, the read
        # and the lane mux into the first stage was the KV unit's 83.2 MHz path)
        qt_v, qt_last = Signal(), Signal()
        qp_v, qp_last = Signal(), Signal()
        qp_x = [Signal(signed(32), name=f"qp_x{ll}") for ll in range(P)]
        qp_par = [Signal(PAR_Q, name=f"qp_par{ll}") for ll in range(P)]
        qp_pw = Signal(range(sdepth))
        qp_j = Signal.like(j, name="qp_j")
        m.d.sync += [qp_v.eq(qt_v), qp_last.eq(qt_last)]
        qfifo = fifo.SyncFIFOBuffered(width=8 * P + 1, depth=16)
        m.submodules.qfifo = qfifo
        q_inflight = Signal(range(17))
        qcodes = []
        q_lat = None
        for ll in range(P):
            pp = Pipe(m, f"q{ll}_", platform=platform)
            # the beat and the parameters registered first (the reader's output through the
            # subtraction into the multiplier was a long path); then x - mn registered
            # before the product, whose MULT18X18D pieces are registered alone and summed a
            # stage later (the subtraction, the DSP and the pieces' sum in one cycle was
            # the KV unit's 74.3 MHz path)
            x0 = pp.reg(qp_x[ll], 0, "x0")
            par0 = pp.reg(qp_par[ll], 0, "par0", PAR_Q)
            d1 = pp.reg((x0 - par0.mn).as_unsigned()[:33], 1, "d1", 33)
            rcp1 = pp.reg(par0.rcp, 1, "rcp1")
            sa1 = pp.reg(Mux(par0.s + b - 8 > 0, par0.s + b - 8, 0), 1, "sa1", range(64))
            p1, k = pp.mul(d1, rcp1, 2, "p", 51)
            sa = pp.at(sa1, k)
            ph = pp.reg(p1 + Mux(sa == 0, 0, Const(1, 51) << (sa - 1)[:6]), k, "ph", 52)
            sh = pp.reg(ph >> pp.at(sa1, k + 1), k + 1, "sh", 52)
            code = Signal(8, name=f"qcode{ll}")
            m.d.comb += code.eq(Mux(sh > qmax, qmax, sh))
            qcodes.append(code)
            q_lat = pp.stage(sh)
        # valid and last of each stage (q_v[k]: a beat is in stage k + 1)
        q_v = [Signal(name=f"qv{k}") for k in range(q_lat)]
        q_l = [Signal(name=f"ql{k}") for k in range(q_lat)]
        m.d.sync += [q_v[0].eq(qp_v), q_l[0].eq(qp_last)]
        m.d.sync += [q_v[k].eq(q_v[k - 1]) for k in range(1, q_lat)]
        m.d.sync += [q_l[k].eq(q_l[k - 1]) for k in range(1, q_lat)]
        q_busy = Signal()      # a beat is in the quantization pipeline
        m.d.comb += q_busy.eq(Cat(*q_v).any())
        qpacked = Signal(8 * P)
        with m.Switch(sel_code):
            for sel, bits in ((0, 2), (1, 4), (2, 8)):
                with m.Case(sel):
                    m.d.comb += qpacked.eq(Cat(cd[:bits] for cd in qcodes))
        m.d.comb += [qfifo.w_en.eq(q_v[-1]), qfifo.w_data.eq(Cat(qpacked, q_l[-1]))]
        # ---- READ: lane gearbox, dequantization pipeline (lanes elements per cycle) ------
        # Takes from the beat stream: lanes codes of kv_bits, lanes raw words, or one 64-bit
        # parameter record; a take with tk_last drops the rest of its beat (rows and parameter
        # runs start on a beat). Takes wider than a beat gather several beats first.
        Lc = self.lanes
        lg_l = Lc.bit_length() - 1
        kp_n = min(W // 64, Lc)          # K parameter records per take
        tbs = (2 * Lc, 4 * Lc, 8 * Lc, 32 * Lc, 64, 64 * kp_n)
        BW = max(tbs + (W,))
        tk_sel = Signal(3)
        tk_last = Signal()
        tk_want = Signal()
        tk_en = Signal()                 # tk_want, and the consumer's walker may step
        tk_valid = Signal()
        took = Signal()                  # a take happens this cycle
        tk_data = Signal(BW)
        gb_off = Signal(range(W))
        gb_acc = Signal(BW)
        gb_have = Signal(range(max(BW // W, 1) + 1))
        beat = rd.data.payload
        skip = Signal()                  # dropping a 16-byte run's pad beat (W < 128)
        with m.Switch(tk_sel):
            for sel, tb in enumerate(tbs):
                with m.Case(sel):
                    if tb <= W:
                        m.d.comb += [tk_valid.eq(rd.data.valid), tk_data.eq(beat >> gb_off)]
                        with m.If(tk_en & rd.data.valid & ~skip):
                            end = Signal(name=f"gb_end{sel}")
                            m.d.comb += [end.eq(tk_last | (gb_off == W - tb)), gb_pop.eq(end)]
                            m.d.sync += gb_off.eq(Mux(end, 0, gb_off + tb))
                    else:
                        k = tb // W
                        cat = Signal(BW, name=f"gb_cat{sel}")
                        m.d.comb += [cat.eq(Cat(gb_acc[W:], beat)), tk_valid.eq(rd.data.valid & (gb_have == k - 1)),
                                     tk_data.eq(cat >> (BW - tb))]
                        with m.If(tk_en & rd.data.valid & ~skip):
                            m.d.comb += gb_pop.eq(1)
                            with m.If(gb_have == k - 1):
                                m.d.sync += gb_have.eq(0)
                            with m.Else():
                                m.d.sync += [gb_acc.eq(cat), gb_have.eq(gb_have + 1)]
        if W < 128:
            # every run that ends with tk_last is padded to 16 bytes: skip the pad beats
            ph = Signal(range(128 // W))
            with m.If(gb_pop):
                m.d.sync += ph.eq(ph + 1)
                # only the pop of the take that ends the run (a take wider than a beat pops
                # its earlier beats with tk_last already high)
                with m.If(took & tk_last & (ph != 128 // W - 1)):
                    m.d.sync += skip.eq(1)
            with m.If(skip):
                m.d.comb += [tk_valid.eq(0), gb_pop.eq(rd.data.valid)]
                with m.If(rd.data.valid & (ph == 128 // W - 1)):
                    m.d.sync += skip.eq(0)
        m.d.comb += took.eq(tk_en & tk_valid)
        rec = Signal(PARAM)
        m.d.comb += rec.eq(tk_data[:64])
        # parameters of the current K group (per channel: lanes records per word) and of the
        # current V chunk (per token and head)
        m.submodules.kpar = kpar = Memory(shape=data.ArrayLayout(PARAM, Lc), depth=max(R // Lc, 1), init=[])
        m.submodules.vpar = vpar = Memory(shape=PARAM, depth=V_CHUNK * self.max_kv, init=[])
        kpw, vpw = kpar.write_port(), vpar.write_port()
        # The parameter writes are registered (the reader's block RAM output through the
        # take mux straight into the LUT RAMs' write data was the KV unit's 55 MHz path);
        # the read ports are transparent to them, so a record written in the cycle the
        # codes segment reads it is seen
        kpr = kpar.read_port(transparent_for=(kpw,))
        vpr = vpar.read_port(transparent_for=(vpw,))
        kw_en, kw_addr, kw_data = Signal(), Signal.like(kpw.addr), Signal.like(kpw.data)
        vw_en, vw_addr, vw_data = Signal(), Signal.like(vpw.addr), Signal.like(vpw.data)
        m.d.sync += [kw_en.eq(0), vw_en.eq(0)]
        m.d.comb += [kpw.en.eq(kw_en), kpw.addr.eq(kw_addr), kpw.data.eq(kw_data),
                     vpw.en.eq(vw_en), vpw.addr.eq(vw_addr), vpw.data.eq(vw_data)]
        # D1: codes (or raw words) registered with the lanes' parameters read meanwhile
        d1_v, d1_raw, d1_k = Signal(), Signal(), Signal()
        d1_codes = Signal(data.ArrayLayout(8, Lc))
        d1_words = Signal(Lc * 32)
        d2_v, d2_k = Signal(), Signal()
        d2_val = Signal(data.ArrayLayout(signed(32), Lc))
        m.d.sync += d1_v.eq(0)
        for bits, sel in ((2, 0), (4, 1), (8, 2)):
            with m.If(tk_sel == sel):
                m.d.sync += [d1_codes[ll].eq(tk_data[ll * bits:(ll + 1) * bits]) for ll in range(Lc)]
        m.d.sync += d1_words.eq(tk_data[:Lc * 32])
        # E0: the lanes' parameters registered (block RAM outputs); E0b: the product's
        # operands registered again (next to their MULT18X18D: the DSPs are far from the
        # parameter memories in the engine); E1: code * man; E2: the rounding add (or the
        # left shift); E3: the right shift; E4: + mn; D2: saturated (all in one cycle after
        # D1 was the KV unit's long path)
        NE = 6
        e_v = [Signal(name=f"e_v{k}") for k in range(NE)]
        e_k = [Signal(name=f"e_k{k}") for k in range(NE)]
        e_raw = [Signal(name=f"e_raw{k}") for k in range(NE)]
        e_words = [Signal(Lc * 32, name=f"e_words{k}") for k in range(NE)]
        m.d.sync += [e_v[0].eq(d1_v), e_k[0].eq(d1_k), e_raw[0].eq(d1_raw), e_words[0].eq(d1_words)]
        for k in range(1, NE):
            m.d.sync += [e_v[k].eq(e_v[k - 1]), e_k[k].eq(e_k[k - 1]), e_raw[k].eq(e_raw[k - 1]),
                         e_words[k].eq(e_words[k - 1])]
        m.d.sync += [d2_v.eq(e_v[-1]), d2_k.eq(e_k[-1])]
        for ll in range(Lc):
            par = Signal(PARAM, name=f"dpar{ll}")
            code0 = Signal(8, name=f"dcode0_{ll}")
            m.d.sync += [par.eq(Mux(d1_k, kpr.data[ll], vpr.data)), code0.eq(d1_codes[ll])]
            par_b = Signal(PARAM, name=f"dpar_b{ll}")
            m.d.sync += par_b.eq(par)
            # code x mantissa: the operands registered again (next to the MULT18X18D), then
            # the product; on an ECP5 both registers are the DSP's own
            prod = Signal(24, name=f"dprod{ll}")
            m.d.comb += prod.eq(registered_product(m, code0, par.man, platform=platform, name=f"dprod_p{ll}"))
            par = par_b
            mn1, mn2, mn3 = (Signal(signed(32), name=f"dmn{k}_{ll}") for k in range(1, 4))
            m.d.sync += [mn1.eq(par.mn), mn2.eq(mn1), mn3.eq(mn2)]
            # mn + rshift_round(code*man, -e), saturated (shift clamped at 40: beyond, the
            # result saturates or rounds to mn alike). A right shift by r >= 1 rounds as
            # ((p >> (r - 1)) + 1) >> 1, and r - 1 = ~e for e < 0: the shifts come from the
            # parameter register with no adder (the shift's negate, clamp, - 1 and the
            # rounding half's decode into the rounding add was the KV unit's path, 76-78 MHz)
            e = par.e
            neg1 = Signal(name=f"dneg1_{ll}")
            rm1 = Signal(range(64), name=f"drm1_{ll}")          # r - 1 (e < 0)
            lsh = Signal(range(64), name=f"dlsh{ll}")           # left shift (e > 0)
            m.d.sync += [neg1.eq(e < 0), rm1.eq(Mux(e < -40, 39, (~e)[:6])),
                         lsh.eq(Mux(e > 0, Mux(e > 40, 40, e[:6]), 0))]
            pr, pl = Signal(24, name=f"dpr{ll}"), Signal(64, name=f"dpl{ll}")
            neg2 = Signal(name=f"dneg2_{ll}")
            m.d.sync += [pr.eq(prod >> rm1), pl.eq(prod << lsh), neg2.eq(neg1)]
            # the dequantized step is >= 0 and mn >= -2**31, so only the top saturates: a
            # step of 2**32 or more always does (flag ``big``), a smaller one fits 33 bits and
            # mn + step fits 34; the sum and the saturation are a stage each (one 81-bit add
            # and compare was the KV unit's 87 MHz path)
            deq = Signal(33, name=f"deq{ll}")
            big = Signal(name=f"dbig{ll}")
            m.d.sync += [deq.eq(Mux(neg2, (pr + 1) >> 1, pl[:33])), big.eq(~neg2 & pl[32:].any())]
            dsum = Signal(signed(34), name=f"dsum{ll}")
            big2 = Signal(name=f"dbig2_{ll}")
            m.d.sync += [dsum.eq(mn3 + deq), big2.eq(big)]
            m.d.sync += d2_val[ll].eq(Mux(e_raw[-1], e_words[-1][ll * 32:(ll + 1) * 32].as_signed(),
                                          Mux(big2 | (dsum > (1 << 31) - 1), (1 << 31) - 1, dsum)))
        dfifo = fifo.SyncFIFOBuffered(width=Lc * 32 + 1, depth=16)
        m.submodules.dfifo = dfifo
        d_inflight = Signal(range(17))
        m.d.comb += [dfifo.w_en.eq(d2_v), dfifo.w_data.eq(Cat(d2_val, d2_k))]
        # the outputs through a two-entry register FIFO: the attention unit's ready (its
        # state decode, across the die in the engine) reaches only its pointers, not the
        # block FIFO's read enable and output register (the attention unit's port
        # handshake was its path alone, 79.4 MHz)
        m.submodules.oq = oq = RegFIFO2(unsigned(Lc * 32 + 1))
        m.d.comb += [oq.i.payload.eq(dfifo.r_data), oq.i.valid.eq(dfifo.r_rdy), dfifo.r_en.eq(oq.i.ready)]
        out_k = oq.o.payload[-1]  # which output stream a vector goes to
        m.d.comb += [self.k_out.payload.eq(oq.o.payload[:-1]), self.v_out.payload.eq(oq.o.payload[:-1]),
                     self.k_out.valid.eq(oq.o.valid & out_k), self.v_out.valid.eq(oq.o.valid & ~out_k),
                     oq.o.ready.eq(Mux(out_k, self.k_out.ready, self.v_out.ready))]
        d_pop = Signal()
        d_take = Signal()
        m.d.comb += d_pop.eq(dfifo.r_rdy & dfifo.r_en)
        m.d.sync += d_inflight.eq(d_inflight + d_take - d_pop)
        # room for another take, registered (from the count a cycle old, so one below the
        # limit of 13, within the FIFO's 16; the take-to-pop loop is 10 cycles): the count's
        # compare ahead of the take enable and its fan-out was the KV unit's 82.3 MHz path
        d_room = Signal()
        m.d.sync += d_room.eq(d_inflight < 12)
        q_pop = Signal()
        m.d.comb += [pk.units.payload.unit.eq(Mux(raw_sel, raw_slot.o.payload.word, Mux(pk_sel == SEL_PARAM, pk_param,
                                                                        qfifo.r_data[:8 * P]))),
                     pk.units.payload.last.eq(Mux(pk_from_q, qfifo.r_data[8 * P],
                                                  Mux(raw_sel, raw_slot.o.payload.last, pk_last))),
                     pk.units.valid.eq(Mux(pk_from_q, qfifo.r_rdy, Mux(raw_sel, raw_slot.o.valid, pk_valid))),
                     qfifo.r_en.eq(pk_from_q & pk.units.ready),
                     q_pop.eq(qfifo.r_rdy & qfifo.r_en)]
        m.d.sync += q_inflight.eq(q_inflight + qt_v - q_pop)

        # ---- the scale unit: amax = max - min of an element's stats, results by index ----
        ms_idx = Signal(range(R + 1))      # next result's index
        ms_mn = Signal(signed(32))
        with m.If(ms.o_valid):
            for ll in range(P):
                m.d.comb += [par_w[ll].en.eq(lane_hit(ms_idx, ll)), par_w[ll].addr.eq(ms_idx >> lg_p),
                             par_w[ll].data.man.eq(ms.man), par_w[ll].data.s.eq(ms.s),
                             par_w[ll].data.rcp.eq(ms.rcp), par_w[ll].data.mn.eq(ms_mn)]
            m.d.sync += ms_idx.eq(ms_idx + 1)
        # S_SCALE reads statistic i; the LUT RAMs' data is registered (a1), then amax = max - min
        # (a2) enters the scale unit: the state-decoded read address through the RAM, the lane
        # mux and the 32-bit subtraction straight into the unit's first MULT18X18D was the
        # engine's 47 MHz path
        mn_i, mx_i = Signal(signed(32)), Signal(signed(32))
        s_v1, s_v2 = Signal(), Signal()
        mn_a1, mx_a1, mn_a2 = Signal(signed(32)), Signal(signed(32)), Signal(signed(32))
        amax_a2 = Signal(32)
        ms_in = Signal()          # S_SCALE drives mn_i / mx_i this cycle
        m.d.sync += [s_v1.eq(ms_in), mn_a1.eq(mn_i), mx_a1.eq(mx_i),
                     s_v2.eq(s_v1), mn_a2.eq(mn_a1), amax_a2.eq((mx_a1 - mn_a1).as_unsigned()[:32])]
        ms_mn_line = [Signal(signed(32), name=f"ms_mn{k}") for k in range(MantScaleUnit.LATENCY)]
        m.d.sync += ms_mn_line[0].eq(mn_a2)
        for k in range(1, MantScaleUnit.LATENCY):
            m.d.sync += ms_mn_line[k].eq(ms_mn_line[k - 1])
        m.d.comb += [ms_mn.eq(ms_mn_line[-1]), ms.cmul.eq(cmul), ms.amax.eq(amax_a2), ms.i_valid.eq(s_v2)]

        first = Signal()           # first row of a stats pass
        g0 = Signal(15)
        nparams = Signal(range(R + 1))
        started = Signal()         # the writer took the current transfer's address
        # READ: the consumer's counters; the segment walkers of consumer and issuer
        nrv = Signal(range(R // Lc + 1))         # vectors per row
        # "this take is the last" of a K parameter row / a V parameter run / a row of vectors,
        # as registers: each counter's flag is set with the counter, from a compare of its
        # old value with the bound one step earlier (registered at the command's start); a
        # counter reset to 0 takes the flag of a one-take bound. (The subtraction into
        # tk_last's compare, then the compare itself, into the gearbox's pop and the
        # reader's output FIFO were the KV unit's 64.5 and 77.5 MHz paths.)
        row_kp2 = Signal(range(R + 1))
        kvh_m2 = Signal(6)
        nrv_m2 = Signal(range(R // Lc + 1))
        m.d.sync += [row_kp2.eq(row - 2 * kp_n), kvh_m2.eq(rg.kv_heads - 2), nrv_m2.eq(nrv - 2)]
        ri_last, rj_last, vi_last = Signal(), Signal(), Signal()
        ri_last0, rj_last0, vi_last0 = Signal(), Signal(), Signal()   # the flag of a counter at 0
        m.d.comb += [ri_last0.eq(row == kp_n), rj_last0.eq(rg.kv_heads == 1), vi_last0.eq(nrv == 1)]
        nvh = Signal(range(R // Lc + 1))         # vectors per head
        # the READ consumer's own counters (i, j, c are APPEND's): the take's clock enables
        # then reach only these, not the counters every APPEND state also writes
        ri, rj, rc = Signal.like(i, name="ri"), Signal.like(j, name="rj"), Signal.like(c, name="rc")
        vi = Signal(range(R // Lc + 1))          # vector within the row
        vpp = Signal(range(V_CHUNK * self.max_kv + 1))   # V parameter of the vector's head
        tk = Signal(15)                          # token within the segment
        pl = Signal(range(Lc))                   # K parameter lane being assembled
        widx = Signal(range(R // Lc + 1))        # K parameter word
        pacc = Signal(Lc * 64)
        cw = _Walker(m, "cw", kq=kq, vq=vq, n=n, k_group=rg.k_group)
        iw = _Walker(m, "iw", kq=kq, vq=vq, n=n, k_group=rg.k_group)
        m.d.comb += tk_en.eq(tk_want & cw.rdy)
        m.d.sync += [iw_tt_g.eq(iw.tt >> lg_g), g0_g.eq(g0 >> lg_g), vq_m1.eq(vq - 1)]
        iss_start = Signal()
        with m.FSM(name="issuer") as iss_fsm:
            with m.State("I_IDLE"):
                with m.If(iss_start):
                    m.next = "I_CALC"
            with m.State("I_CALC"):          # the segment's address and length (registered)
                with m.If(iw.st == SEG_DONE):
                    m.next = "I_IDLE"
                with m.Else():
                    nbytes = Signal(24)
                    with m.Switch(iw.st):
                        with m.Case(SEG_PARAMS):
                            m.d.comb += [mA_a.eq(Mux(iw.isv, iw.tt, iw_tt_g)),
                                         mA_b.eq(Mux(iw.isv, vpar_bytes, kpar_bytes)),
                                         mB_a.eq(iw.nt), mB_b.eq(vpar_bytes)]
                            m.d.sync += iss_addr.eq(cmd.base + Mux(iw.isv, rg.v_params, rg.k_params) + pA)
                            m.d.comb += nbytes.eq(Mux(iw.isv, pB, kpar_bytes))
                        with m.Case(SEG_CODES):
                            m.d.comb += [mA_a.eq(iw.tt), mA_b.eq(code_bytes), mB_a.eq(iw.nt), mB_b.eq(code_bytes)]
                            m.d.sync += iss_addr.eq(cmd.base + Mux(iw.isv, rg.v_codes, rg.k_codes) + pA)
                            m.d.comb += nbytes.eq(pB)
                        with m.Case(SEG_RAW):
                            m.d.comb += slot_mul(iw.tt)
                            m.d.sync += iss_addr.eq(slot_addr(Mux(iw.isv, rg.v_raw, 0)))
                            m.d.comb += nbytes.eq(raw_bytes)
                    m.d.sync += iss_beats.eq(nbytes >> (W // 8).bit_length() - 1)
                    with m.If(okA & okB):
                        m.next = "I_ISSUE"
            with m.State("I_ISSUE"):
                m.d.comb += iss_valid.eq(iw.rdy)
                with m.If(iw.rdy & rd.cmd.ready):
                    m.d.comb += iw.adv.eq(1)
                    m.next = "I_CALC"

        # stats pass pipeline: ST1 the beat registered; STH the first level of its extremes'
        # tree (V: one head's channels) registered; STT the rest of the tree registered; ST2
        # the lanes' extremes registered; then the read-modify-write of the statistics (the
        # beat's min/max chain into the compare with the stored statistic was one long path,
        # then the two-level tree of 32-bit compares; then the tree's last compare with its
        # fan-out to every lane's ST2 register, the KV unit's 85.7 MHz path)
        st1_v, st1_fresh, st1_k, st2_v, st2_fresh = Signal(), Signal(), Signal(), Signal(), Signal()
        sth_v, sth_fresh, sth_k = Signal(), Signal(), Signal()
        stt_v, stt_fresh, stt_k = Signal(), Signal(), Signal()
        st1_sw, sth_sw, stt_sw, st2_sw = (Signal(range(sdepth), name=f"{n}_sw") for n in ("st1", "sth", "stt", "st2"))
        st1_x = [Signal(signed(32), name=f"st1_x{ll}") for ll in range(P)]
        st1_en = [Signal(name=f"st1_en{ll}") for ll in range(P)]
        sth_x = [Signal(signed(32), name=f"sth_x{ll}") for ll in range(P)]
        sth_en = [Signal(name=f"sth_en{ll}") for ll in range(P)]
        stt_x = [Signal(signed(32), name=f"stt_x{ll}") for ll in range(P)]
        stt_en = [Signal(name=f"stt_en{ll}") for ll in range(P)]
        stt_lo, stt_hi = Signal(signed(32)), Signal(signed(32))
        sth_lo = [Signal(signed(32), name=f"sth_lo{k}") for k in range(P // 2)]
        sth_hi = [Signal(signed(32), name=f"sth_hi{k}") for k in range(P // 2)]
        st2_lo = [Signal(signed(32), name=f"st2_lo{ll}") for ll in range(P)]
        st2_hi = [Signal(signed(32), name=f"st2_hi{ll}") for ll in range(P)]
        st2_en = [Signal(name=f"st2_en{ll}") for ll in range(P)]
        m.d.sync += [st1_v.eq(0), sth_v.eq(st1_v), sth_sw.eq(st1_sw), sth_fresh.eq(st1_fresh), sth_k.eq(st1_k),
                     stt_v.eq(sth_v), stt_sw.eq(sth_sw), stt_fresh.eq(sth_fresh), stt_k.eq(sth_k),
                     st2_v.eq(stt_v), st2_sw.eq(stt_sw), st2_fresh.eq(stt_fresh)]
        m.d.sync += [sth_x[ll].eq(st1_x[ll]) for ll in range(P)] + [sth_en[ll].eq(st1_en[ll]) for ll in range(P)]
        m.d.sync += [stt_x[ll].eq(sth_x[ll]) for ll in range(P)] + [stt_en[ll].eq(sth_en[ll]) for ll in range(P)]

        def pairs(vals, lt):     # one level of the tree: min/max do not depend on the order
            return [Mux(lt(vals[k + 1], vals[k]), vals[k + 1], vals[k]) for k in range(0, len(vals), 2)]

        m.d.sync += [lo.eq(v) for lo, v in zip(sth_lo, pairs(st1_x, lambda a, b: a < b))]
        m.d.sync += [hi.eq(v) for hi, v in zip(sth_hi, pairs(st1_x, lambda a, b: a > b))]
        lo_t, hi_t = list(sth_lo), list(sth_hi)
        while len(lo_t) > 1:
            lo_t, hi_t = pairs(lo_t, lambda a, b: a < b), pairs(hi_t, lambda a, b: a > b)
        m.d.sync += [stt_lo.eq(lo_t[0]), stt_hi.eq(hi_t[0])]
        for ll in range(P):
            m.d.sync += [st2_lo[ll].eq(Mux(stt_k, stt_x[ll], stt_lo)), st2_hi[ll].eq(Mux(stt_k, stt_x[ll], stt_hi)),
                         st2_en[ll].eq(stt_en[ll])]
        # the stored statistics are read in STT (registered), compared in ST2 and written in
        # ST3 from registers (the compare -> mux -> LUT RAM write data in one cycle was the
        # KV unit's 82.5 MHz path: most of it the route to the RAM). A beat's read misses the
        # two beats ahead of it (one in ST3, not yet written; one written at the edge that
        # registered the read), so ST2 takes their words from ST3 and ST4, the nearer first.
        st2_old_mn = [Signal(signed(32), name=f"st2_omn{ll}") for ll in range(P)]
        st2_old_mx = [Signal(signed(32), name=f"st2_omx{ll}") for ll in range(P)]
        st3_mn = [Signal(signed(32), name=f"st3_mn{ll}") for ll in range(P)]
        st3_mx = [Signal(signed(32), name=f"st3_mx{ll}") for ll in range(P)]
        st3_en = [Signal(name=f"st3_en{ll}") for ll in range(P)]
        st4_mn = [Signal(signed(32), name=f"st4_mn{ll}") for ll in range(P)]
        st4_mx = [Signal(signed(32), name=f"st4_mx{ll}") for ll in range(P)]
        st4_en = [Signal(name=f"st4_en{ll}") for ll in range(P)]
        st3_v, st3_sw = Signal(), Signal(range(sdepth))
        st2_f3, st2_f4 = Signal(), Signal()   # the beat in ST2 follows the one in ST3 / ST4 to its word
        m.d.sync += [st3_v.eq(st2_v), st3_sw.eq(st2_sw),
                     st2_f3.eq(st2_v & (st2_sw == stt_sw)), st2_f4.eq(st3_v & (st3_sw == stt_sw))]
        for ll in range(P):
            m.d.comb += [mn_r[ll].addr.eq(stt_sw), mx_r[ll].addr.eq(stt_sw),
                         mn_w[ll].addr.eq(st3_sw), mx_w[ll].addr.eq(st3_sw),
                         mn_w[ll].en.eq(st3_en[ll]), mx_w[ll].en.eq(st3_en[ll]),
                         mn_w[ll].data.eq(st3_mn[ll]), mx_w[ll].data.eq(st3_mx[ll])]
            m.d.sync += [st2_old_mn[ll].eq(mn_r[ll].data), st2_old_mx[ll].eq(mx_r[ll].data),
                         st3_en[ll].eq(st2_v & st2_en[ll]), st4_en[ll].eq(st3_en[ll]),
                         st4_mn[ll].eq(st3_mn[ll]), st4_mx[ll].eq(st3_mx[ll])]
            lo, hi = st2_lo[ll], st2_hi[ll]
            f3 = st2_f3 & st3_en[ll]
            f4 = st2_f4 & st4_en[ll]       # f3 first (the Muxes below)
            # the three compares from registers, the forward picks one (not a mux before them)
            lt = Mux(f3, lo < st3_mn[ll], Mux(f4, lo < st4_mn[ll], lo < st2_old_mn[ll]))
            gt = Mux(f3, hi > st3_mx[ll], Mux(f4, hi > st4_mx[ll], hi > st2_old_mx[ll]))
            old_mn = Mux(f3, st3_mn[ll], Mux(f4, st4_mn[ll], st2_old_mn[ll]))
            old_mx = Mux(f3, st3_mx[ll], Mux(f4, st4_mx[ll], st2_old_mx[ll]))
            m.d.sync += [st3_mn[ll].eq(Mux(st2_fresh | lt, lo, old_mn)),
                         st3_mx[ll].eq(Mux(st2_fresh | gt, hi, old_mx))]

        with m.FSM() as main_fsm:
            with m.State("IDLE"):
                m.d.comb += self.cmd.ready.eq(1)
                with m.If(self.cmd.valid):
                    m.d.sync += [cmd.eq(self.cmd.payload), self.busy.eq(1)]
                    m.next = "SIZE"
            with m.State("SIZE"):
                m.d.sync += [row.eq(lut_mul(rg.kv_heads, rg.head_dim)), n.eq(cmd.pos + 1)]
                m.next = "SIZE2"
            with m.State("SIZE2"):
                vq_raw = Signal(signed(16))
                m.d.comb += vq_raw.eq(n - rg.kv_window)
                m.d.sync += [raw_bytes.eq(row << 2), code_bytes_used.eq(lut_mul(row, rg.kv_bits) >> 3), rbeats.eq(row >> lg_p),
                             nrv.eq(row >> lg_l), nvh.eq(rg.head_dim >> lg_l),
                             vq.eq(Mux(~q | (vq_raw < 0), 0, vq_raw)),
                             kq.eq(Mux(~q | (vq_raw < 0), 0, (vq_raw >> lg_g) << lg_g))]
                m.next = "DISPATCH"
            with m.State("DISPATCH"):
                with m.If(cmd.read):
                    m.d.sync += [reading.eq(1), gb_off.eq(0), gb_have.eq(0), ri.eq(0), rj.eq(0), rc.eq(0), vi.eq(0),
                                 vpp.eq(0), tk.eq(0), pl.eq(0), widx.eq(0), ri_last.eq(ri_last0),
                                 rj_last.eq(rj_last0), vi_last.eq(vi_last0)] + cw.start() + iw.start()
                    m.d.comb += iss_start.eq(1)
                    m.next = "R_RUN"
                with m.Else():
                    m.d.comb += slot_mul(cmd.pos)
                    m.d.sync += [wr_addr.eq(wa_raw_k), pk_sel.eq(SEL_WORD), raw_sel.eq(1), i.eq(0)]
                    with m.If(okA & okA_d):
                        m.next = "A_RAWK"

            # ======================= APPEND ==========================================
            for name, src, nxt in (("A_RAWK", self.k_in, "A_RAWV_START"), ("A_RAWV", self.v_in, "A_QCHECK")):
                with m.State(name):
                    # the writer holds the packer's beats until it has taken the address
                    m.d.comb += [wr.start.valid.eq(~started), raw_slot.i.payload.word.eq(src.payload),
                                 raw_slot.i.payload.last.eq(i == row - 1), raw_slot.i.valid.eq(src.valid),
                                 src.ready.eq(raw_slot.i.ready)]
                    with m.If(wr.start.valid & wr.start.ready):
                        m.d.sync += started.eq(1)
                    with m.If(src.valid & src.ready):
                        m.d.sync += i.eq(i + 1)
                        with m.If(i == row - 1):
                            m.d.sync += [i.eq(0), started.eq(0)]
                            m.next = nxt
            with m.State("A_RAWV_START"):
                m.d.comb += slot_mul(cmd.pos)
                m.d.sync += wr_addr.eq(wa_raw_v)
                with m.If(okA & okA_d):
                    m.next = "A_RAWV"
            with m.State("A_QCHECK"):
                # V: the token pos - window leaves the window now (vq grew by one); first
                # the raw slot's last words leave for the packer (the states after set pk_sel)
                vnew = Signal()
                m.d.comb += vnew.eq(q & (vq != 0))
                with m.If(~raw_slot.o.valid):
                    m.d.sync += raw_sel.eq(0)
                    with m.If(vnew):
                        m.d.sync += [t.eq(vq - 1), is_k.eq(0), first.eq(1), rows_left.eq(1), i.eq(0), c.eq(0),
                                     j.eq(0)]
                        m.next = "S_READ"
                    with m.Else():
                        m.next = "A_KCHECK"
            with m.State("A_KCHECK"):
                knew = Signal()
                m.d.comb += knew.eq(q & (vq != 0) & ((vq & (rg.k_group - 1)) == 0))
                with m.If(knew):
                    m.d.sync += [g0.eq(vq - rg.k_group), t.eq(vq - rg.k_group), is_k.eq(1), first.eq(1),
                                 rows_left.eq(rg.k_group), i.eq(0)]
                    m.next = "S_READ"
                with m.Else():
                    m.next = "FINISH"

            # ---- stats pass: min/max per channel (K) or per head (V) over raw rows -----
            # a beat (P channels of one row, all of one head) per cycle
            with m.State("S_READ"):
                # the raw rows are read back only once the writer has them acknowledged on B:
                # AXI orders nothing between the read and the write channels, and the row
                # APPEND just wrote may still be in the writer's FIFO (a memory that took the
                # read first gave the statistics the ring slot's old row)
                m.d.comb += slot_mul(t) + [go_want.eq(okA & wr.idle & ~wr.start.valid)]
                with m.If(a_go & rd.cmd.ready):
                    m.d.sync += [i.eq(0), c.eq(0), j.eq(0)]
                    m.next = "S_ROW"
            with m.State("S_ROW"):
                sw = Signal(range(sdepth), name="s_word")
                m.d.comb += [sw.eq(Mux(is_k, i >> lg_p, j >> lg_p)), a_pop.eq(1)]
                fresh = Signal()   # the first value of this statistic in the pass
                m.d.comb += fresh.eq(Mux(is_k, first, c == 0))
                with m.If(rd.data.valid):
                    # the beat enters the stats pipeline (below)
                    m.d.sync += [st1_v.eq(1), st1_sw.eq(sw), st1_fresh.eq(fresh), st1_k.eq(is_k)]
                    m.d.sync += [st1_x[ll].eq(xs[ll]) for ll in range(P)]
                    m.d.sync += [st1_en[ll].eq(is_k | lane_hit(j, ll)) for ll in range(P)]
                    m.d.sync += [i.eq(i + P), c.eq(c + P)]
                    with m.If(c == rg.head_dim - P):
                        m.d.sync += [c.eq(0), j.eq(j + 1)]
                    with m.If(i == row - P):
                        m.d.sync += [first.eq(0), t.eq(t + 1), rows_left.eq(rows_left - 1), i.eq(0), c.eq(0), j.eq(0)]
                        with m.If(rows_left == 1):
                            m.d.sync += [ms_idx.eq(0), nparams.eq(Mux(is_k, row, rg.kv_heads))]
                            m.next = "S_DRAIN"
            with m.State("S_DRAIN"):    # the last beats' statistics are written
                with m.If(~st1_v & ~sth_v & ~stt_v & ~st2_v & ~st3_v):
                    m.next = "S_SCALE"
            with m.State("S_SCALE"):    # one statistic per cycle into the scale unit
                for ll in range(P):
                    m.d.comb += [mn_s[ll].addr.eq(i >> lg_p), mx_s[ll].addr.eq(i >> lg_p)]
                m.d.comb += [mn_i.eq(lane_sel(mn_s, i)), mx_i.eq(lane_sel(mx_s, i)), ms_in.eq(1)]
                m.d.sync += i.eq(i + 1)
                with m.If(i == nparams - 1):
                    m.next = "S_SCALE_WAIT"
            with m.State("S_SCALE_WAIT"):
                with m.If(ms_idx == nparams):
                    m.d.sync += [t.eq(Mux(is_k, g0, vq - 1)), rows_left.eq(Mux(is_k, rg.k_group, 1))]
                    m.next = "C_READ"
            # ---- codes pass: re-read the raw rows, quantize (a beat per cycle), write the
            # code rows (the row starts are handed to the writer as it takes them, below)
            with m.State("C_READ"):
                m.d.comb += slot_mul(t) + [mB_a.eq(t), mB_b.eq(code_bytes), go_want.eq(okA & okB)]
                with m.If(a_go & rd.cmd.ready):
                    m.d.sync += [i.eq(0), c.eq(0), j.eq(0), pk_sel.eq(sel_code), pk_from_q.eq(1),
                                 wst_left.eq(rows_left),
                                 wr_addr.eq(wa_codes)]
                    m.next = "C_ROW"
            with m.State("C_ROW"):
                m.d.comb += a_pop.eq(q_inflight < 10)
                with m.If(rd.data.valid & (q_inflight < 10)):
                    m.d.comb += [qt_v.eq(1), qt_last.eq(i == row - P)]
                    # the parameters' word: the beat's channels' (K) or its head's (V)
                    m.d.sync += [qp_pw.eq(Mux(is_k, i >> lg_p, j >> lg_p)), qp_j.eq(j)]
                    m.d.sync += [qp_x[ll].eq(xs[ll]) for ll in range(P)]
                    m.d.sync += [i.eq(i + P), c.eq(c + P)]
                    with m.If(c == rg.head_dim - P):
                        m.d.sync += [c.eq(0), j.eq(j + 1)]
                    with m.If(i == row - P):
                        m.d.sync += [t.eq(t + 1), rows_left.eq(rows_left - 1), i.eq(0), c.eq(0), j.eq(0)]
                        with m.If(rows_left == 1):
                            m.next = "C_FLUSH"
            with m.State("C_FLUSH"):     # the last row's codes leave the packer
                m.d.comb += [mA_a.eq(Mux(is_k, g0_g, vq_m1)), mA_b.eq(Mux(is_k, kpar_bytes, vpar_bytes))]
                with m.If((q_inflight == 0) & ~q_busy & (wst_left == 0) & okA & okA_d):
                    m.d.sync += [pk_from_q.eq(0), i.eq(0), pk_sel.eq(SEL_PARAM), wr_addr.eq(wa_params)]
                    m.next = "P_START"
            with m.State("P_START"):
                m.d.comb += wr.start.valid.eq(1)
                with m.If(wr.start.ready):
                    m.next = "P_WRITE"
            with m.State("P_WRITE"):     # the parameter records, one per statistic
                # Each record is read and built into a register ahead of the packer (the LUT
                # RAM read, lane mux and record straight into the packer's beat was the KV
                # unit's 61.7 MHz path): i counts records read, pw_done once all are
                for ll in range(P):
                    m.d.comb += par_r[ll].addr.eq(i >> lg_p)
                pr = lane_sel(par_r, i)
                e_rec = Signal(signed(8))
                m.d.comb += e_rec.eq(pr.s - 24)
                m.d.comb += [pk_valid.eq(pw_v), pk_last.eq(pw_last), pk_param.eq(pw_rec)]
                with m.If(~pw_v | pk.units.ready):
                    m.d.sync += [pw_v.eq(~pw_done), pw_last.eq(i == nparams - 1),
                                 pw_rec.eq(Cat(pr.mn, e_rec, Const(0, 8), pr.man, Const(0, 16 - b)))]
                    with m.If(~pw_done):
                        m.d.sync += i.eq(i + 1)
                        with m.If(i == nparams - 1):
                            m.d.sync += pw_done.eq(1)
                with m.If(pw_v & pw_last & pk.units.ready):
                    m.d.sync += [pw_v.eq(0), pw_done.eq(0)]
                    m.next = "P_NEXT"
            with m.State("P_NEXT"):
                with m.If(is_k):
                    m.next = "FINISH"
                with m.Else():
                    m.next = "A_KCHECK"

            # ======================= READ ============================================
            # The issuer (below) queues every burst of the READ ahead; this consumer walks
            # the same segments and turns their beats into lanes-wide K, then V vectors.
            with m.State("R_RUN"):     # the consumer runs below while ``reading``
                with m.If(~reading):
                    m.next = "FINISH"

            with m.State("FINISH"):
                with m.If(wr.idle & ~wr.start.valid):
                    m.d.sync += self.busy.eq(0)
                    m.next = "IDLE"
        key = Cat(main_fsm.state, iss_fsm.state, iw.isv, iw.st)
        assert len(key) <= len(mkey), len(key)
        m.d.comb += mkey.eq(key)
        # the codes pass's parameters, read at the registered word of the beat in qp_*
        # (no other state reads these RAMs while a beat is there: P_WRITE comes after the flush)
        vpar = lane_sel(par_r, qp_j)           # V: every channel of the beat is of head j
        with m.If(qp_v):
            m.d.comb += [par_r[ll].addr.eq(qp_pw) for ll in range(P)]
        m.d.comb += [qp_par[ll].eq(Mux(is_k, par_r[ll].data.as_value(), vpar.as_value())) for ll in range(P)]
        # ---- the READ consumer, gated by ``reading`` (a register, set with R_RUN and cleared
        # as it ends) rather than the FSM's state decode, which was the head of the take
        # enable's path to the counters and the dequantizer's stage registers
        with m.If(reading):
            w = cw
            m.d.comb += [kpr.addr.eq(vi), vpr.addr.eq(vpp)]
            with m.Switch(w.st):
                with m.Case(SEG_PARAMS):
                    m.d.comb += [tk_want.eq(1), tk_sel.eq(Mux(w.isv, SEL_PARAM, SEL_KPARAMS))]
                    with m.If(~w.isv):     # K: one record per channel, kp_n per take, lanes per word
                        m.d.comb += tk_last.eq(ri_last)
                        with m.If(took):
                            recs = tk_data[:64 * kp_n]
                            new = Cat(pacc[64 * kp_n:], recs) if Lc > kp_n else recs
                            m.d.sync += [pacc.eq(new), ri.eq(ri + kp_n), pl.eq(pl + 1), ri_last.eq(ri == row_kp2)]
                            with m.If(pl == Lc // kp_n - 1):
                                m.d.sync += [kw_en.eq(1), kw_addr.eq(widx), kw_data.eq(new)]
                                m.d.sync += [pl.eq(0), widx.eq(widx + 1)]
                            with m.If(ri_last):
                                m.d.sync += [ri.eq(0), pl.eq(0), widx.eq(0), vi.eq(0), rc.eq(0), tk.eq(0),
                                             ri_last.eq(ri_last0), vi_last.eq(vi_last0)]
                                m.d.comb += cw.adv.eq(1)
                    with m.Else():         # V: one record per head, each token's run padded
                        m.d.comb += tk_last.eq(rj_last)
                        with m.If(took):
                            m.d.sync += [vw_en.eq(1), vw_addr.eq(vpp), vw_data.eq(rec)]
                            m.d.sync += [vpp.eq(vpp + 1), rj.eq(rj + 1), rj_last.eq(rj == kvh_m2)]
                            with m.If(rj_last):
                                m.d.sync += [rj.eq(0), tk.eq(tk + 1), rj_last.eq(rj_last0)]
                                with m.If(tk == w.nt_m1):
                                    m.d.sync += [tk.eq(0), vi.eq(0), rc.eq(0), vpp.eq(0), vi_last.eq(vi_last0)]
                                    m.d.comb += cw.adv.eq(1)
                with m.Case(SEG_CODES, SEG_RAW):
                    m.d.comb += [tk_want.eq(d_room), tk_sel.eq(Mux(w.st == SEG_RAW, SEL_WORD, sel_code)),
                                 tk_last.eq(vi_last), d_take.eq(took)]
                    with m.If(took):
                        m.d.sync += [d1_v.eq(1), d1_raw.eq(w.st == SEG_RAW), d1_k.eq(~w.isv),
                                     vi.eq(vi + 1), rc.eq(rc + 1), vi_last.eq(vi == nrv_m2)]
                        with m.If(rc == nvh - 1):
                            m.d.sync += [rc.eq(0), vpp.eq(vpp + 1)]
                        with m.If(vi_last):
                            m.d.sync += [vi.eq(0), rc.eq(0), tk.eq(tk + 1), vi_last.eq(vi_last0)]
                            with m.If(tk == w.nt_m1):
                                m.d.sync += [tk.eq(0), vpp.eq(0)]
                                m.d.comb += cw.adv.eq(1)
                with m.Case(SEG_DONE):
                    with m.If((d_inflight == 0) & ~d1_v & ~d2_v):
                        m.d.sync += reading.eq(0)
        # codes pass: one writer transfer per code row (rows are padded to 16 bytes), each
        # started as soon as the writer has closed the previous one
        with m.If(wst_left != 0):
            m.d.comb += wr.start.valid.eq(1)
            with m.If(wr.start.ready):
                m.d.sync += [wst_left.eq(wst_left - 1), wr_addr.eq(wr_addr + code_bytes)]
        # READ keeps e + 24 in the parameter memory's ``s``, so both flows read ``s``
        return m
