"""The bit-serial tensor core (BitMoD class): bit-serial PEs + dequantization + tiling + AXI4.

:class:`BitSerialCore` runs one group-scaled GEMM per command,
C[M, N] = sum over groups of rescale(A[M, Kg] @ V[Kg, N], scale[g, N]) (Q.out_frac,
:func:`ref_model.bitserial.bitserial_gemm`), for any M, N (up to 65535) and K up to
``k_max``, in the packed layouts of :mod:`host_runtime.bitserial_layout`.

Array: ``cols`` PEs (:class:`hw.pe.bitserial.BitSerialPE`), each reducing ``rows``
activations against one weight bit-plane per cycle; all columns share the activation
vector. A weight is a sign and ``planes`` magnitude planes (planes per command, 1..
``max_planes``), so a k-block of ``rows`` weights per column takes ``planes`` cycles and a
GEMM's cycles scale with its weight planes; the data type of each group (INT-n, ternary,
FP3/FP4 with special values...) only changes the host's encoding, never the datapath.
One :class:`hw.pe.bitserial.BitSerialDequant` rescales each column's group sums by their
f16 scales and accumulates a row.

Loops: column blocks j over ceil(N/C): load the K x C weight panel (sign + planes per
k-block) and its scales into on-chip buffers, then stream every row m of A through it:
for each k-block (``rows`` activations) for each plane (most significant first): one
cycle. A is read once per column block, W and scales once.

Performance counters as :class:`hw.cores.systolic.SystolicCore`: ``cycles`` from command
acceptance to done, ``busy`` = plane steps issued to the array (each ``rows`` x ``cols``
one-bit MACs), ``read_bytes``/``write_bytes``.
"""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..mem.port import gemm_memory_port
from ..mem.axi4 import AXI4ReadSignature, AXI4WriteSignature
from ..mem.gearbox import packing
from ..pe.bitserial import BitSerialDequant, BitSerialPE
from ..pipeline import delay
from .systolic import DIM_BITS, CounterLayout, StatusLayout

PLANE_BITS = 4       # planes field of a command (1..8)
GROUP_LOG2_BITS = 3  # log2 of the group size (5..7)
_FIFO_DEPTH = 8
_FIFO_SLACK = 3


class BitSerialCommand(data.StructLayout):
    """One GEMM: byte addresses of A, the weight planes, the scales and C; M, K, N;
    ``planes`` (magnitude bit-planes, 1..max_planes) and ``group_log2`` (log2 of G)."""

    def __init__(self, addr_bits: int):
        super().__init__({"a_addr": addr_bits, "w_addr": addr_bits, "s_addr": addr_bits, "c_addr": addr_bits,
                          "m": DIM_BITS, "k": DIM_BITS, "n": DIM_BITS,
                          "planes": PLANE_BITS, "group_log2": GROUP_LOG2_BITS})


def _ceil_shift(value, slots: int):
    return (value + (slots - 1)) >> (slots.bit_length() - 1)


class BitSerialCore(wiring.Component):
    """A bit-serial GEMM core described by an accelerator config (``core.kind: bitserial``).

    Members
    -------
    cmd : In(stream of BitSerialCommand).
    axi_r : Out(AXI4ReadSignature, 2-bit ID). A, weight-plane and scale reads.
    axi_w : Out(AXI4WriteSignature). C writes.
    busy, done, status, counters : as :class:`hw.cores.systolic.SystolicCore`;
        ``status.bad_command``: a dimension is 0, K > k_max, planes outside
        1..max_planes or a group size not in ``group_sizes``.
    """

    def __init__(self, cfg):
        self.cfg = cfg
        core, mem = cfg.core, cfg.memory
        self.rows, self.cols = core.rows, core.cols
        self.addr_bits, self.data_bits = mem.addr_bits, mem.data_bits
        super().__init__({
            "cmd": In(stream.Signature(BitSerialCommand(mem.addr_bits))),
            "axi_r": Out(AXI4ReadSignature(addr_bits=mem.addr_bits, data_bits=mem.data_bits, id_bits=2)),
            "axi_w": Out(AXI4WriteSignature(addr_bits=mem.addr_bits, data_bits=mem.data_bits)),
            "busy": Out(1), "done": Out(1),
            "status": Out(StatusLayout()), "counters": Out(CounterLayout()),
        })

    def _beats(self, vectors, vector_bits):
        slots, bpv = packing(vector_bits, self.data_bits)
        return _ceil_shift(vectors, slots) * bpv

    def elaborate(self, platform):
        m = Module()
        cfg, core, R, C = self.cfg, self.cfg.core, self.rows, self.cols
        D, bpb, B = self.data_bits, self.data_bits // 8, core.max_planes
        ab = core.act.bits
        a_bits, p_bits, s_bits, c_bits = R * ab, R * C, 16 * C, C * core.acc_bits
        log_r = (R - 1).bit_length()

        port = gemm_memory_port(m, axi_r=self.axi_r, axi_w=self.axi_w, addr_bits=self.addr_bits, data_bits=D,
                                max_burst=cfg.memory.max_burst, outstanding=cfg.memory.outstanding,
                                operands={"a": a_bits, "w": p_bits, "s": s_bits}, c_bits=c_bits)
        read_a, read_w, read_s = port.readers["a"], port.readers["w"], port.readers["s"]
        unpack_a, unpack_w, unpack_s = port.unpackers["a"], port.unpackers["w"], port.unpackers["s"]
        writer, pack_c = port.writer, port.pack_c

        # ---- command, validation, derived sizes
        cmd = Signal(BitSerialCommand(self.addr_bits))
        dims = self.cmd.payload
        group_ok = Signal()
        m.d.comb += group_ok.eq(0)
        for g in core.group_sizes:
            with m.If(dims.group_log2 == g.bit_length() - 1):
                m.d.comb += group_ok.eq(1)
        bad = Signal()
        m.d.comb += bad.eq((dims.m == 0) | (dims.n == 0) | (dims.k == 0) | (dims.k > core.k_max) |
                           (dims.planes == 0) | (dims.planes > B) | ~group_ok)
        kb_bits = max(1, core.k_blocks_max.bit_length())
        groups = Signal(range(core.groups_max + 1))
        kb_total = Signal(kb_bits + 1)
        kpg = Signal(range(max(core.group_sizes) // R + 1))          # k-blocks per group
        nt = Signal(DIM_BITS + 1)
        out_rows = Signal(2 * DIM_BITS + 1)
        rows_out = Signal(2 * DIM_BITS + 1)
        w_vecs = Signal(kb_bits + PLANE_BITS + 1)                    # plane vectors per panel

        go, start = Signal(), Signal()
        m.d.comb += [self.busy.eq(~self.cmd.ready), start.eq(self.cmd.valid & self.cmd.ready)]
        col = Signal(DIM_BITS + 8)
        start_writer, writer_started = Signal(), Signal()
        with m.FSM(name="seq"):
            with m.State("IDLE"):
                m.d.comb += self.cmd.ready.eq(1)
                with m.If(self.cmd.valid):
                    m.d.sync += [cmd.eq(dims), rows_out.eq(0), writer_started.eq(0), self.status.eq(0),
                                 self.counters.eq(0), nt.eq(0), col.eq(0), out_rows.eq(0)]
                    with m.If(bad):
                        m.d.sync += self.status.bad_command.eq(1)
                        m.next = "DONE"
                    with m.Else():
                        m.next = "SIZES"
            with m.State("SIZES"):
                g_size = Signal(8)
                m.d.comb += g_size.eq(1 << cmd.group_log2)
                m.d.sync += [groups.eq((cmd.k + g_size - 1) >> cmd.group_log2),
                             kpg.eq(g_size >> log_r)]
                m.next = "COUNT"
            with m.State("COUNT"):
                # ceil(N / C) column blocks by stepping (no divider); K-blocks and plane vectors.
                m.d.sync += [kb_total.eq(groups * kpg), w_vecs.eq(groups * kpg * (cmd.planes + 1))]
                with m.If(col < cmd.n):
                    m.d.sync += [col.eq(col + C), nt.eq(nt + 1), out_rows.eq(out_rows + cmd.m)]
                with m.Else():
                    m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += [go.eq(1), start_writer.eq(~writer_started)]
                with m.If(writer_started & (rows_out == out_rows) & writer.idle):
                    m.next = "DONE"
            with m.State("DONE"):
                m.d.comb += self.done.eq(1)
                m.next = "IDLE"
        m.d.comb += [writer.start.valid.eq(start_writer), writer.start.payload.eq(cmd.c_addr)]
        with m.If(writer.start.valid & writer.start.ready):
            m.d.sync += writer_started.eq(1)

        # ---- the result path: dequant -> FIFO -> packer -> writer; the array ticks while the
        # FIFO has room (registered so the enable fans out from a flip-flop).
        m.submodules.results = results = fifo.SyncFIFOBuffered(width=c_bits, depth=_FIFO_DEPTH)
        tick = Signal()
        m.d.sync += tick.eq(results.level <= _FIFO_DEPTH - _FIFO_SLACK)
        m.d.comb += [pack_c.vectors.valid.eq(results.r_rdy), pack_c.vectors.payload.vector.eq(results.r_data),
                     pack_c.vectors.payload.last.eq(rows_out + 1 == out_rows), results.r_en.eq(pack_c.vectors.ready)]
        with m.If(results.r_rdy & results.r_en):
            m.d.sync += rows_out.eq(rows_out + 1)

        # ---- on-chip panel: sign planes, magnitude planes, scales of one column block
        m.submodules.sign_mem = sign_mem = Memory(shape=p_bits, depth=core.k_blocks_max, init=[])
        m.submodules.mag_mem = mag_mem = Memory(shape=p_bits, depth=core.k_blocks_max * B, init=[])
        m.submodules.scale_mem = scale_mem = Memory(shape=s_bits, depth=core.groups_max, init=[])
        sign_wp, mag_wp, scale_wp = sign_mem.write_port(), mag_mem.write_port(), scale_mem.write_port()
        sign_rp, mag_rp, scale_rp = (mem.read_port() for mem in (sign_mem, mag_mem, scale_mem))

        # ---- column-block loop: LOAD the panel, then COMPUTE every row through it
        j = Signal(DIM_BITS + 1)
        loading = Signal()
        w_issued, s_issued = Signal(), Signal()
        w_ptr, s_ptr = Signal(self.addr_bits), Signal(self.addr_bits)
        w_idx = Signal(range(B + 2))
        w_kb = Signal(kb_bits + 1)
        s_g = Signal(range(core.groups_max + 1))
        panel_beats, scale_beats = Signal(32), Signal(32)
        m.d.comb += [panel_beats.eq(self._beats(w_vecs, p_bits)), scale_beats.eq(self._beats(groups, s_bits))]
        with m.If(start):
            m.d.sync += [j.eq(0), loading.eq(1), w_issued.eq(0), s_issued.eq(0), w_idx.eq(0), w_kb.eq(0), s_g.eq(0),
                         w_ptr.eq(dims.w_addr), s_ptr.eq(dims.s_addr)]

        def issue(cond, reader, addr, beats, unpacker, length):
            fire = Signal()
            m.d.comb += [fire.eq(cond & reader.cmd.ready & unpacker.seg.ready),
                         reader.cmd.valid.eq(fire), reader.cmd.payload.addr.eq(addr),
                         reader.cmd.payload.beats.eq(beats), unpacker.seg.valid.eq(fire),
                         unpacker.seg.payload.length.eq(length), unpacker.seg.payload.count.eq(1)]
            return fire

        with m.If(issue(go & loading & ~w_issued, read_w, w_ptr, panel_beats, unpack_w, w_vecs)):
            m.d.sync += [w_issued.eq(1), w_ptr.eq(w_ptr + panel_beats * bpb)]
        with m.If(issue(go & loading & ~s_issued, read_s, s_ptr, scale_beats, unpack_s, groups)):
            m.d.sync += [s_issued.eq(1), s_ptr.eq(s_ptr + scale_beats * bpb)]
        # Panel writes: per k-block the sign vector, then planes most significant first.
        m.d.comb += [unpack_w.vectors.ready.eq(1), unpack_s.vectors.ready.eq(1)]
        wv = unpack_w.vectors
        m.d.comb += [sign_wp.addr.eq(w_kb), sign_wp.data.eq(wv.payload), sign_wp.en.eq(wv.valid & (w_idx == 0)),
                     mag_wp.addr.eq(w_kb * B + cmd.planes - w_idx), mag_wp.data.eq(wv.payload),
                     mag_wp.en.eq(wv.valid & (w_idx != 0))]
        with m.If(wv.valid):
            m.d.sync += w_idx.eq(w_idx + 1)
            with m.If(w_idx == cmd.planes):
                m.d.sync += [w_idx.eq(0), w_kb.eq(w_kb + 1)]
        sv = unpack_s.vectors
        m.d.comb += [scale_wp.addr.eq(s_g), scale_wp.data.eq(sv.payload), scale_wp.en.eq(sv.valid)]
        with m.If(sv.valid):
            m.d.sync += s_g.eq(s_g + 1)

        # A: all rows once per column block. The unpacker takes one segment command per
        # column block (M rows of kb_total vectors, each row starting on a beat) and the
        # reader one command per row, so rows stream back to back.
        a_j, a_seg_j = Signal(DIM_BITS + 1), Signal(DIM_BITS + 1)
        a_row = Signal(DIM_BITS + 1)
        a_ptr = Signal(self.addr_bits)
        a_row_beats = Signal(24)
        m.d.comb += a_row_beats.eq(self._beats(kb_total, a_bits))
        with m.If(start):
            m.d.sync += [a_j.eq(0), a_seg_j.eq(0), a_row.eq(0), a_ptr.eq(dims.a_addr)]
        seg_fire = Signal()
        m.d.comb += [seg_fire.eq(go & (a_seg_j < nt) & unpack_a.seg.ready),
                     unpack_a.seg.valid.eq(seg_fire), unpack_a.seg.payload.length.eq(kb_total),
                     unpack_a.seg.payload.count.eq(cmd.m)]
        with m.If(seg_fire):
            m.d.sync += a_seg_j.eq(a_seg_j + 1)
        a_fire = Signal()
        m.d.comb += [a_fire.eq(go & (a_j < nt) & read_a.cmd.ready), read_a.cmd.valid.eq(a_fire),
                     read_a.cmd.payload.addr.eq(a_ptr), read_a.cmd.payload.beats.eq(a_row_beats)]
        with m.If(a_fire):
            m.d.sync += [a_row.eq(a_row + 1), a_ptr.eq(a_ptr + a_row_beats * bpb)]
            with m.If(a_row + 1 == cmd.m):
                m.d.sync += [a_row.eq(0), a_j.eq(a_j + 1), a_ptr.eq(cmd.a_addr)]

        # The array (sequencer, panel reads, PEs) advances on ``run``: the result FIFO has room
        # and no finished group waits for the dequantization unit.
        run = Signal()

        # ---- compute sequencer (stage 0): one plane step per tick
        c_m = Signal(DIM_BITS)
        c_kb = Signal(kb_bits + 1)
        c_kig = Signal.like(kpg)
        c_g = Signal.like(groups)
        c_p = Signal(PLANE_BITS)
        first_plane = Signal()
        step = Signal()
        computing = Signal()
        m.d.comb += computing.eq(go & ~loading & (j < nt))
        m.d.comb += [first_plane.eq(c_p + 1 == cmd.planes),
                     step.eq(run & computing & (~first_plane | unpack_a.vectors.valid)),
                     unpack_a.vectors.ready.eq(run & computing & first_plane)]
        with m.If(loading & w_issued & s_issued & (w_kb == kb_total) & (s_g == groups)):
            m.d.sync += [loading.eq(0), c_m.eq(0), c_kb.eq(0), c_kig.eq(0), c_g.eq(0), c_p.eq(cmd.planes - 1)]
        a_hold = Signal(a_bits)
        with m.If(unpack_a.vectors.valid & unpack_a.vectors.ready):
            m.d.sync += a_hold.eq(unpack_a.vectors.payload)
        last_kb = Signal()
        last_group = Signal()
        m.d.comb += [last_kb.eq(c_kig + 1 == kpg), last_group.eq(c_g + 1 == groups)]
        with m.If(step):
            m.d.sync += c_p.eq(c_p - 1)
            with m.If(c_p == 0):
                m.d.sync += [c_p.eq(cmd.planes - 1), c_kb.eq(c_kb + 1), c_kig.eq(c_kig + 1)]
                with m.If(last_kb):
                    m.d.sync += [c_kig.eq(0), c_g.eq(c_g + 1)]
                    with m.If(last_group):
                        m.d.sync += [c_kb.eq(0), c_g.eq(0), c_m.eq(c_m + 1)]
                        with m.If(c_m + 1 == cmd.m):
                            # Column block done: the next panel may overwrite the buffers
                            # (every read of this one has been issued).
                            m.d.sync += [j.eq(j + 1), loading.eq(j + 1 < nt), w_issued.eq(0), s_issued.eq(0),
                                         w_kb.eq(0), s_g.eq(0)]
        for rp in (sign_rp, mag_rp, scale_rp):
            m.d.comb += rp.en.eq(run)
        m.d.comb += [sign_rp.addr.eq(c_kb), mag_rp.addr.eq(c_kb * B + c_p), scale_rp.addr.eq(c_g)]

        # Stage 1: memory data and the registered step flags reach the PEs.
        s1 = Signal(5)
        with m.If(run):
            m.d.sync += s1.eq(Cat(step, first_plane, c_p == 0, c_kig == 0, last_kb))
        s1_last_group = Signal()
        with m.If(run):
            m.d.sync += s1_last_group.eq(last_group)
        # Stage 2: a register after the panel RAMs (their clock-to-out would otherwise sit
        # in front of the adder trees on the critical path).
        pe_in = delay(m, Cat(sign_rp.data, mag_rp.data, a_hold, s1), 1, run, name="pe_in")
        sign_in, mag_in = pe_in[:p_bits], pe_in[p_bits:2 * p_bits]
        a_in, flags = pe_in[2 * p_bits:2 * p_bits + a_bits], pe_in[2 * p_bits + a_bits:]
        horner_bits = core.tree_bits + B
        pes = []
        for c in range(C):
            pe = BitSerialPE(rows=R, act_bits=ab, tree_bits=core.tree_bits, horner_bits=horner_bits,
                             partial_bits=core.partial_bits)
            m.submodules[f"pe_{c}"] = pe
            m.d.comb += [pe.en.eq(run), pe.valid.eq(flags[0]), pe.first_plane.eq(flags[1]), pe.last_plane.eq(flags[2]),
                         pe.first_kb.eq(flags[3]), pe.last_kb.eq(flags[4]),
                         pe.a.as_value().eq(a_in),
                         pe.sign.eq(sign_in[c * R:(c + 1) * R]), pe.mag.eq(mag_in[c * R:(c + 1) * R])]
            pes.append(pe)
        # The scales and the row-end flag wait out the input register and the PE latency.
        side = delay(m, Cat(scale_rp.data, s1_last_group), 1 + 2, run, name="scale_dly")
        m.submodules.dequant = dq = BitSerialDequant(cols=C, partial_bits=core.partial_bits, acc_bits=core.acc_bits,
                                                     frac=core.out_frac, digit_bits=core.dequant_digit_bits)
        m.d.comb += [run.eq(tick & ~(pes[0].p_valid & ~dq.ready)),
                     dq.en.eq(tick), dq.p_valid.eq(pes[0].p_valid), dq.last.eq(side[-1]),
                     dq.scale.as_value().eq(side[:s_bits])]
        for c in range(C):
            m.d.comb += dq.p[c].eq(pes[c].p)
        m.d.comb += [results.w_data.eq(dq.out.as_value()), results.w_en.eq(tick & dq.out_valid)]

        # ---- counters and status
        with m.If(self.busy & ~self.done):
            m.d.sync += self.counters.cycles.eq(self.counters.cycles + 1)
        with m.If(step):
            m.d.sync += self.counters.busy.eq(self.counters.busy + 1)
        with m.If(self.axi_r.rvalid & self.axi_r.rready):
            m.d.sync += self.counters.read_bytes.eq(self.counters.read_bytes + bpb)
        with m.If(self.axi_w.wvalid & self.axi_w.wready):
            m.d.sync += self.counters.write_bytes.eq(self.counters.write_bytes + bpb)
        with m.If(read_a.error | read_w.error | read_s.error):
            m.d.sync += self.status.read_error.eq(1)
        with m.If(writer.error):
            m.d.sync += self.status.write_error.eq(1)
        return m
