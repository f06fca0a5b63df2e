"""The systolic tensor core: array + tiling controller + AXI4 memory port + counters.

:class:`SystolicCore` runs one GEMM per command, C[M, N] = A[M, K] @ W[K, N], for any
M, N (up to 65535) and K (output-stationary: up to ``k_max``; weight-stationary: up to
65535), reading A and W from external memory and writing C back, all in the packed
layouts of :mod:`host_runtime.gemm_layout` (vectors packed into beats by
:mod:`hw.mem.gearbox`; shapes padded to the array with zeros by the host).

Output-stationary (R x C array; loops: groups g of ``row_blocks`` R-row blocks of A,
  column blocks j over ceil(N/C), row block b in the group, k over K):
  a group of A blocks is loaded into one of two on-chip banks (the next group loads while
  the current one is reused for every j); W is read once per group, one K x C tile at a
  time into one of two tile banks, and each tile is replayed for every block of the group.
  Each (i, j) tile yields R rows of C, in (g, j, b) order. Memory traffic: W once per
  group (so ``row_blocks`` divides it), A once.
Weight-stationary (loops j over ceil(N/C), row chunks of ``m_tile``, kb over ceil(K/R)):
  each k-block of R x C weights loads into the shadow registers while the previous block
  computes; the chunk's a-vectors stream from memory; column sums accumulate in the
  array's buffer and leave as rows of C after the last k-block.

Both read streams share the one AXI4 read port by ID (:class:`~hw.mem.reader.ReadArbiter`).

Numerics: exact products, ``acc_bits`` two's-complement sums that wrap
(:func:`ref_model.gemm.systolic_gemm`). Performance counters count from the command's
acceptance to ``done``.
"""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..mem.port import gemm_memory_port
from ..mem.axi4 import AXI4ReadSignature, AXI4WriteSignature
from ..mem.gearbox import packing
from .systolic_array import OutputStationaryArray, WeightStationaryArray

DIM_BITS = 16   # M, N, K fields of a command
COUNTER_BITS = 48


class GemmCommand(data.StructLayout):
    def __init__(self, addr_bits: int):
        super().__init__({"a_addr": addr_bits, "w_addr": addr_bits, "c_addr": addr_bits,
                          "m": DIM_BITS, "k": DIM_BITS, "n": DIM_BITS})


class CounterLayout(data.StructLayout):
    """Performance counters of one command: ``cycles`` from acceptance to done,
    ``busy`` cycles in which the array took an operand vector (R x C MACs issued),
    ``read_bytes``/``write_bytes`` moved on the memory port."""

    def __init__(self):
        super().__init__({"cycles": COUNTER_BITS, "busy": COUNTER_BITS,
                          "read_bytes": COUNTER_BITS, "write_bytes": COUNTER_BITS})


class StatusLayout(data.StructLayout):
    """``bad_command``: a dimension is 0 or K exceeds ``k_max`` (nothing was run);
    ``read_error``/``write_error``: the memory answered a non-OKAY response."""

    def __init__(self):
        super().__init__({"bad_command": 1, "read_error": 1, "write_error": 1})


def _ceil_shift(value, slots: int):
    """ceil(value / slots) for a power-of-two ``slots``."""
    s = slots.bit_length() - 1
    return (value + (slots - 1)) >> s


class SystolicCore(wiring.Component):
    """A systolic GEMM core described by an accelerator config.

    Parameters
    ----------
    cfg : the accelerator config (``rtl_gen.config.AcceleratorConfig``; read, not imported).

    Members
    -------
    cmd : In(stream of GemmCommand). One GEMM; byte addresses aligned to the port width.
    axi_r : Out(AXI4ReadSignature, 1-bit ID). A and W reads.
    axi_w : Out(AXI4WriteSignature). C writes.
    busy : Out(1). A command is running.
    done : Out(1). One-cycle pulse when a command has finished (C fully acknowledged).
    status : Out(StatusLayout). Of the last command (errors are sticky within it).
    counters : Out(CounterLayout). Of the last command.
    """

    def __init__(self, cfg):
        self.cfg = cfg
        core, mem = cfg.core, cfg.memory
        self.rows, self.cols = core.rows, core.cols
        self.dataflow = core.dataflow
        self.addr_bits, self.data_bits = mem.addr_bits, mem.data_bits
        super().__init__({
            "cmd": In(stream.Signature(GemmCommand(mem.addr_bits))),
            "axi_r": Out(AXI4ReadSignature(addr_bits=mem.addr_bits, data_bits=mem.data_bits, id_bits=1)),
            "axi_w": Out(AXI4WriteSignature(addr_bits=mem.addr_bits, data_bits=mem.data_bits)),
            "busy": Out(1),
            "done": Out(1),
            "status": Out(StatusLayout()),
            "counters": Out(CounterLayout()),
        })

    # ------------------------------------------------------------------ shared parts
    def elaborate(self, platform):
        m = Module()
        cfg, R, C = self.cfg, self.rows, self.cols
        D, bpb = self.data_bits, self.data_bits // 8
        a_bits, w_bits = cfg.a_vector_bits, cfg.w_vector_bits
        port = gemm_memory_port(m, axi_r=self.axi_r, axi_w=self.axi_w, addr_bits=self.addr_bits, data_bits=D,
                                max_burst=cfg.memory.max_burst, outstanding=cfg.memory.outstanding,
                                operands={"a": a_bits, "w": w_bits}, c_bits=cfg.c_vector_bits)
        read_a, read_w = port.readers["a"], port.readers["w"]
        unpack_a, unpack_w = port.unpackers["a"], port.unpackers["w"]
        writer, pack_c = port.writer, port.pack_c

        act_shape, weight_shape = cfg.act_format, cfg.weight_format
        from amaranth.hdl import signed, unsigned
        ash = signed(act_shape.bits) if act_shape.signed else unsigned(act_shape.bits)
        wsh = signed(weight_shape.bits) if weight_shape.signed else unsigned(weight_shape.bits)
        common = dict(rows=R, cols=C, act_shape=ash, weight_shape=wsh, acc_bits=cfg.core.acc_bits,
                      edge_pipeline=cfg.core.edge_pipeline, dsp_pes=cfg.dsp_pes)
        if self.dataflow == "output_stationary":
            m.submodules.array = array = OutputStationaryArray(**common)
        else:
            m.submodules.array = array = WeightStationaryArray(**common, m_tile=cfg.core.m_tile)

        # ---- command registers and the top-level sequence
        cmd = Signal(GemmCommand(self.addr_bits))
        out_rows = Signal(2 * DIM_BITS + 1)      # rows of C the array will produce
        rows_out = Signal(2 * DIM_BITS + 1)      # rows of C handed to the packer
        go = Signal()                             # the per-dataflow loops run
        setup_done = Signal()
        m.d.comb += self.busy.eq(~self.cmd.ready)
        bad = Signal()
        dims = self.cmd.payload
        deep_limit = cfg.core.k_max if self.dataflow == "output_stationary" else (1 << DIM_BITS) - 1
        too_deep = (dims.k > deep_limit) if deep_limit < (1 << DIM_BITS) - 1 else 0
        m.d.comb += bad.eq((dims.m == 0) | (dims.n == 0) | (dims.k == 0) | too_deep)
        start_writer = Signal()
        writer_started = Signal()
        with m.FSM(name="seq"):
            with m.State("IDLE"):
                m.d.comb += self.cmd.ready.eq(1)
                with m.If(self.cmd.valid):
                    m.d.sync += [cmd.eq(self.cmd.payload), rows_out.eq(0), writer_started.eq(0),
                                 self.status.eq(0), self.counters.eq(0)]
                    with m.If(bad):
                        m.d.sync += self.status.bad_command.eq(1)
                        m.next = "DONE"
                    with m.Else():
                        m.next = "SETUP"
            with m.State("SETUP"):
                with m.If(setup_done):
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

        # ---- results: array -> packer (last on the final row) -> writer
        m.d.comb += [pack_c.vectors.valid.eq(array.c.valid), pack_c.vectors.payload.vector.eq(array.c.payload),
                     pack_c.vectors.payload.last.eq(rows_out + 1 == out_rows), array.c.ready.eq(pack_c.vectors.ready)]
        with m.If(array.c.valid & array.c.ready):
            m.d.sync += rows_out.eq(rows_out + 1)

        # ---- counters and status
        running = self.busy & ~self.done
        with m.If(running):
            m.d.sync += self.counters.cycles.eq(self.counters.cycles + 1)
        with m.If(array.a.valid & array.a.ready):
            m.d.sync += self.counters.busy.eq(self.counters.busy + 1)
        with m.If(self.axi_r.rvalid & self.axi_r.rready):
            m.d.sync += self.counters.read_bytes.eq(self.counters.read_bytes + bpb)
        with m.If(self.axi_w.wvalid & self.axi_w.wready):
            m.d.sync += self.counters.write_bytes.eq(self.counters.write_bytes + bpb)
        with m.If(read_a.error | read_w.error):
            m.d.sync += self.status.read_error.eq(1)
        with m.If(writer.error):
            m.d.sync += self.status.write_error.eq(1)

        ctx = dict(m=m, cmd=cmd, go=go, setup_done=setup_done, out_rows=out_rows, array=array,
                   read_a=read_a, read_w=read_w, unpack_a=unpack_a, unpack_w=unpack_w, start=self.cmd.valid & self.cmd.ready)
        if self.dataflow == "output_stationary":
            self._output_stationary(**ctx)
        else:
            self._weight_stationary(**ctx)
        return m

    # ------------------------------------------------------------------ helpers
    def _issue(self, m, cond, reader, addr, beats, unpacker, length, count):
        """Push a read command and its segment command together when ``cond``.
        Returns the signal that is high in the cycle both are accepted."""
        fire = Signal()
        both_ready = reader.cmd.ready & unpacker.seg.ready
        m.d.comb += [
            fire.eq(cond & both_ready),
            reader.cmd.valid.eq(fire), reader.cmd.payload.addr.eq(addr), reader.cmd.payload.beats.eq(beats),
            unpacker.seg.valid.eq(fire), unpacker.seg.payload.length.eq(length), unpacker.seg.payload.count.eq(count),
        ]
        return fire

    def _beats(self, vectors, vector_bits):
        slots, bpv = packing(vector_bits, self.data_bits)
        return _ceil_shift(vectors, slots) * bpv

    # ------------------------------------------------------------------ output-stationary
    def _output_stationary(self, *, m, cmd, go, setup_done, out_rows, array, read_a, read_w,
                           unpack_a, unpack_w, start):
        cfg, R, C = self.cfg, self.rows, self.cols
        RB = cfg.core.row_blocks
        bpb = self.data_bits // 8
        a_blk_beats = Signal(25)
        w_blk_beats = Signal(25)
        m.d.comb += [a_blk_beats.eq(self._beats(cmd.k, cfg.a_vector_bits)),
                     w_blk_beats.eq(self._beats(cmd.k, cfg.w_vector_bits))]

        # SETUP: count column blocks (nt), row blocks (mt) and groups of RB row blocks
        # (ng, the last one ``last_gsize`` blocks) by stepping; no divider.
        nt, mt, ng = Signal(DIM_BITS + 1), Signal(DIM_BITS + 1), Signal(DIM_BITS + 1)
        rb_phase = Signal(range(RB + 1))
        last_gsize = Signal(range(RB + 1))
        col, row = Signal(DIM_BITS + 8), Signal(DIM_BITS + 8)
        w_total = Signal(41)
        counting = Signal()
        with m.If(start):
            m.d.sync += [nt.eq(0), mt.eq(0), ng.eq(0), rb_phase.eq(0), col.eq(0), row.eq(0), w_total.eq(0),
                         out_rows.eq(0), counting.eq(1)]
        with m.If(counting):
            with m.If(col < cmd.n):
                m.d.sync += [col.eq(col + C), nt.eq(nt + 1), w_total.eq(w_total + w_blk_beats)]
            with m.Elif(row < cmd.m):
                m.d.sync += [row.eq(row + R), mt.eq(mt + 1), out_rows.eq(out_rows + nt * R),
                             rb_phase.eq(Mux(rb_phase == RB - 1, 0, rb_phase + 1)), last_gsize.eq(rb_phase + 1)]
                with m.If(rb_phase == 0):
                    m.d.sync += ng.eq(ng + 1)
            with m.Else():
                m.d.sync += counting.eq(0)
                m.d.comb += setup_done.eq(1)

        def group_size(g):
            return Mux(g + 1 == ng, last_gsize, RB)

        # A: two banks, each holding one group of up to RB row blocks of K a-vectors.
        kbits = max(1, (cfg.core.k_max - 1).bit_length())
        bbits = max(1, (RB - 1).bit_length())
        m.submodules.a_banks = a_banks = Memory(shape=cfg.a_vector_bits, depth=2 << (kbits + bbits), init=[])
        a_wp, a_rp = a_banks.write_port(), a_banks.read_port()
        a_g_issued, a_g_written, a_g_used = (Signal(DIM_BITS + 1, name=n) for n in ("a_g_issued", "a_g_written", "a_g_used"))
        a_b_issue = Signal(range(RB + 1))
        a_ptr = Signal(self.addr_bits)
        with m.If(start):
            m.d.sync += [a_g_issued.eq(0), a_g_written.eq(0), a_g_used.eq(0), a_b_issue.eq(0),
                         a_ptr.eq(self.cmd.payload.a_addr)]
        # Banks of A: ``a_held`` groups issued and not yet used up, ``a_full`` of them loaded.
        a_held, a_full = Signal(range(3)), Signal(range(3))
        a_group_issued, a_group_done, a_group_used = Signal(), Signal(), Signal()
        m.d.sync += [a_held.eq(a_held + a_group_issued - a_group_used),
                     a_full.eq(a_full + a_group_done - a_group_used)]
        fire_a = self._issue(m, go & (a_g_issued < ng) & (a_held != 2), read_a, a_ptr, a_blk_beats,
                             unpack_a, cmd.k, 1)
        with m.If(fire_a):
            m.d.sync += [a_ptr.eq(a_ptr + a_blk_beats * bpb), a_b_issue.eq(a_b_issue + 1)]
            with m.If(a_b_issue + 1 == group_size(a_g_issued)):
                m.d.sync += [a_b_issue.eq(0), a_g_issued.eq(a_g_issued + 1)]
                m.d.comb += a_group_issued.eq(1)
        a_widx = Signal(kbits + 1)
        a_wb = Signal(range(RB + 1))
        with m.If(start):
            m.d.sync += [a_widx.eq(0), a_wb.eq(0)]
        m.d.comb += [unpack_a.vectors.ready.eq(1),   # a bank is free whenever its group was issued
                     a_wp.addr.eq(Cat(a_widx[:kbits], a_wb[:bbits], a_g_written[0])),
                     a_wp.data.eq(unpack_a.vectors.payload), a_wp.en.eq(unpack_a.vectors.valid)]
        with m.If(unpack_a.vectors.valid):
            m.d.sync += a_widx.eq(a_widx + 1)
            with m.If(a_widx + 1 == cmd.k):
                m.d.sync += [a_widx.eq(0), a_wb.eq(a_wb + 1)]
                with m.If(a_wb + 1 == group_size(a_g_written)):
                    m.d.sync += [a_wb.eq(0), a_g_written.eq(a_g_written + 1)]
                    m.d.comb += a_group_done.eq(1)

        # W: the whole of W once per group, as ceil(N/C) tiles of K w-vectors; each tile
        # goes into one of two banks and is replayed for every row block of the group.
        w_issued = Signal(DIM_BITS + 1)
        with m.If(start):
            m.d.sync += w_issued.eq(0)
        fire_w = self._issue(m, go & (w_issued < ng), read_w, cmd.w_addr, w_total, unpack_w, cmd.k, nt)
        with m.If(fire_w):
            m.d.sync += w_issued.eq(w_issued + 1)
        m.submodules.w_banks = w_banks = Memory(shape=cfg.w_vector_bits, depth=2 << kbits, init=[])
        w_wp, w_rp = w_banks.write_port(), w_banks.read_port()
        # Tile counters only select a bank by parity; occupancy (0..2 full banks) is
        # counted separately so no wide subtraction sits on the ready path.
        wt_written, wt_used = Signal(1), Signal(1)
        w_full = Signal(range(3))
        w_widx = Signal(kbits + 1)
        with m.If(start):
            m.d.sync += [wt_written.eq(0), wt_used.eq(0), w_widx.eq(0)]
        w_room = Signal()
        w_tile_done, w_tile_used = Signal(), Signal()
        m.d.sync += w_full.eq(w_full + w_tile_done - w_tile_used)
        m.d.comb += [w_room.eq(w_full != 2),
                     unpack_w.vectors.ready.eq(w_room),
                     w_wp.addr.eq(Cat(w_widx[:kbits], wt_written[0])), w_wp.data.eq(unpack_w.vectors.payload),
                     w_wp.en.eq(unpack_w.vectors.valid & w_room)]
        with m.If(unpack_w.vectors.valid & w_room):
            m.d.sync += w_widx.eq(w_widx + 1)
            with m.If(w_widx + 1 == cmd.k):
                m.d.sync += [w_widx.eq(0), wt_written.eq(wt_written + 1)]
                m.d.comb += w_tile_done.eq(1)

        # Feeder, loops (group, j, b, k): F1 reads both banks, F2 presents to the array.
        # The end of each loop is a registered flag (k_last, b_last, j_last) so the
        # counters' updates do not wait on chained comparisons.
        k, b, j = Signal(DIM_BITS), Signal(range(RB + 1)), Signal(DIM_BITS + 1)
        k_last, b_last, j_last = Signal(), Signal(), Signal()
        gsize = Signal(range(RB + 1))   # blocks in the group being fed
        with m.If(start):
            m.d.sync += [k.eq(0), b.eq(0), j.eq(0), k_last.eq(self.cmd.payload.k == 1)]
        with m.If(setup_done):
            first_gsize = Mux(ng == 1, last_gsize, RB)
            m.d.sync += [gsize.eq(first_gsize), b_last.eq(first_gsize == 1), j_last.eq(nt == 1)]
        f2_valid, f2_first, f2_last = Signal(), Signal(), Signal()
        take = Signal()
        m.d.comb += take.eq(array.a.valid & array.a.ready)
        adv = Signal()
        m.d.comb += adv.eq(~f2_valid | take)
        f1 = Signal()
        m.d.comb += [
            f1.eq(go & adv & (a_full != 0) & (w_full != 0)),
            a_rp.addr.eq(Cat(k[:kbits], b[:bbits], a_g_used[0])), a_rp.en.eq(adv),
            w_rp.addr.eq(Cat(k[:kbits], wt_used[0])), w_rp.en.eq(adv),
        ]
        with m.If(adv):
            m.d.sync += [f2_valid.eq(f1), f2_first.eq(k == 0), f2_last.eq(k_last)]
        with m.If(f1):
            m.d.sync += [k.eq(k + 1), k_last.eq(k + 2 == cmd.k)]
            with m.If(k_last):
                m.d.sync += [k.eq(0), k_last.eq(cmd.k == 1), b.eq(b + 1), b_last.eq(b + 2 == gsize)]
                with m.If(b_last):
                    m.d.sync += [b.eq(0), b_last.eq(gsize == 1), j.eq(j + 1), j_last.eq(j + 2 == nt),
                                 wt_used.eq(wt_used + 1)]
                    m.d.comb += w_tile_used.eq(1)
                    with m.If(j_last):
                        next_gsize = Mux(a_g_used + 2 == ng, last_gsize, RB)
                        m.d.sync += [j.eq(0), j_last.eq(nt == 1), a_g_used.eq(a_g_used + 1),
                                     gsize.eq(next_gsize), b_last.eq(next_gsize == 1)]
                        m.d.comb += a_group_used.eq(1)

        # Tiles must start at least ``min_tile_ticks`` apart (results share the chain).
        gap = array.min_tile_ticks
        since = Signal(range(gap + 1), init=gap)
        gap_ok = Signal(init=1)          # registered since >= gap
        with m.If(take & f2_first):
            m.d.sync += [since.eq(1), gap_ok.eq(gap <= 1)]
        with m.Elif(array.tick & (since < gap)):
            m.d.sync += [since.eq(since + 1), gap_ok.eq(since + 1 >= gap)]
        ok = ~f2_first | gap_ok
        m.d.comb += [
            array.a.valid.eq(f2_valid & ok), array.w.valid.eq(f2_valid & ok),
            array.a.payload.data.eq(a_rp.data), array.a.payload.first.eq(f2_first),
            array.a.payload.last.eq(f2_last), array.w.payload.eq(w_rp.data),
        ]

    # ------------------------------------------------------------------ weight-stationary
    def _weight_stationary(self, *, m, cmd, go, setup_done, out_rows, array, read_a, read_w,
                           unpack_a, unpack_w, start):
        cfg, R, C = self.cfg, self.rows, self.cols
        bpb = self.data_bits // 8
        mt = cfg.core.m_tile
        a_slots, a_bpv = packing(cfg.a_vector_bits, self.data_bits)
        w_blk_beats = self._beats(R, cfg.w_vector_bits)      # a constant
        a_seg_beats = Signal(25)
        m.d.comb += a_seg_beats.eq(self._beats(cmd.m, cfg.a_vector_bits))
        chunk_bytes = (mt // a_slots) * a_bpv * bpb          # bytes of m_tile a-vectors (a constant)

        # SETUP: column blocks (nt), k-blocks (kt), W bytes per column block, rows of C.
        nt, kt = Signal(DIM_BITS + 1), Signal(DIM_BITS + 1)
        col, kk = Signal(DIM_BITS + 8), Signal(DIM_BITS + 8)
        w_pass_beats = Signal(41)
        counting = Signal()
        with m.If(start):
            m.d.sync += [nt.eq(0), kt.eq(0), col.eq(0), kk.eq(0), w_pass_beats.eq(0), out_rows.eq(0), counting.eq(1)]
        with m.If(counting):
            with m.If(col < cmd.n):
                m.d.sync += [col.eq(col + C), nt.eq(nt + 1), out_rows.eq(out_rows + cmd.m)]
            with m.Elif(kk < cmd.k):
                m.d.sync += [kk.eq(kk + R), kt.eq(kt + 1), w_pass_beats.eq(w_pass_beats + w_blk_beats)]
            with m.Else():
                m.d.sync += counting.eq(0)
                m.d.comb += setup_done.eq(1)

        def chunk_len(m_base):
            rest = cmd.m - m_base
            return Mux(rest < mt, rest, mt)

        # A: for j, for row chunk, for k-block: one segment of the chunk's rows.
        aj, a_mbase, a_kb = Signal(DIM_BITS + 1), Signal(DIM_BITS + 1), Signal(DIM_BITS + 1)
        a_chunk_ptr, a_ptr = Signal(self.addr_bits), Signal(self.addr_bits)
        with m.If(start):
            m.d.sync += [aj.eq(0), a_mbase.eq(0), a_kb.eq(0),
                         a_chunk_ptr.eq(self.cmd.payload.a_addr), a_ptr.eq(self.cmd.payload.a_addr)]
        a_len = Signal(DIM_BITS + 1)
        m.d.comb += a_len.eq(chunk_len(a_mbase))
        fire_a = self._issue(m, go & (aj < nt), read_a, a_ptr, self._beats(a_len, cfg.a_vector_bits),
                             unpack_a, a_len, 1)
        with m.If(fire_a):
            m.d.sync += [a_kb.eq(a_kb + 1), a_ptr.eq(a_ptr + a_seg_beats * bpb)]
            with m.If(a_kb + 1 == kt):
                m.d.sync += a_kb.eq(0)
                with m.If(a_mbase + mt < cmd.m):
                    m.d.sync += [a_mbase.eq(a_mbase + mt), a_chunk_ptr.eq(a_chunk_ptr + chunk_bytes),
                                 a_ptr.eq(a_chunk_ptr + chunk_bytes)]
                with m.Else():
                    m.d.sync += [a_mbase.eq(0), aj.eq(aj + 1), a_chunk_ptr.eq(cmd.a_addr), a_ptr.eq(cmd.a_addr)]

        # W: for j, for row chunk: the column block's k-blocks, R vectors each.
        wj, w_mbase = Signal(DIM_BITS + 1), Signal(DIM_BITS + 1)
        w_ptr = Signal(self.addr_bits)
        with m.If(start):
            m.d.sync += [wj.eq(0), w_mbase.eq(0), w_ptr.eq(self.cmd.payload.w_addr)]
        fire_w = self._issue(m, go & (wj < nt), read_w, w_ptr, w_pass_beats, unpack_w, R, kt)
        with m.If(fire_w):
            with m.If(w_mbase + mt < cmd.m):
                m.d.sync += w_mbase.eq(w_mbase + mt)
            with m.Else():
                m.d.sync += [w_mbase.eq(0), wj.eq(wj + 1), w_ptr.eq(w_ptr + w_pass_beats * bpb)]
        m.d.comb += [array.w.valid.eq(unpack_w.vectors.valid), array.w.payload.eq(unpack_w.vectors.payload),
                     unpack_w.vectors.ready.eq(array.w.ready)]

        # Feeder: tag each a-vector with its place in the loops.
        f_mbase, f_kb, f_row = Signal(DIM_BITS + 1), Signal(DIM_BITS + 1), Signal(DIM_BITS + 1)
        with m.If(start):
            m.d.sync += [f_mbase.eq(0), f_kb.eq(0), f_row.eq(0)]
        f_len = Signal(DIM_BITS + 1)
        m.d.comb += f_len.eq(chunk_len(f_mbase))
        m.d.comb += [
            array.a.valid.eq(unpack_a.vectors.valid),
            array.a.payload.data.eq(unpack_a.vectors.payload),
            array.a.payload.swap.eq(f_row == 0),
            array.a.payload.first_kb.eq(f_kb == 0),
            array.a.payload.last_kb.eq(f_kb + 1 == kt),
            array.a.payload.row.eq(f_row),
            unpack_a.vectors.ready.eq(array.a.ready),
        ]
        with m.If(array.a.valid & array.a.ready):
            m.d.sync += f_row.eq(f_row + 1)
            with m.If(f_row + 1 == f_len):
                m.d.sync += [f_row.eq(0), f_kb.eq(f_kb + 1)]
                with m.If(f_kb + 1 == kt):
                    m.d.sync += f_kb.eq(0)
                    with m.If(f_mbase + mt < cmd.m):
                        m.d.sync += f_mbase.eq(f_mbase + mt)
                    with m.Else():
                        m.d.sync += f_mbase.eq(0)
