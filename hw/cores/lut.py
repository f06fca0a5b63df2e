"""The LUT tensor core: mixed-precision GEMM by table lookup (LUT Tensor Core / T-MAC).

:class:`LutCore` runs one GEMM per command, ``C[M, N] = sum over quant groups of
rescale(A[M, K] @ (Q - z)[K, N])``, with low-bit weight codes ``Q`` (W1..W4 or ternary,
chosen per command), per-group f16 scales and zero points, and signed activations, all
read from external memory in the layout of :mod:`host_runtime.lut_layout`. The bit-exact
reference is :func:`ref_model.lut.lut_gemm`; its docstring states the numerics.

Structure (``R = rows``, ``C = cols``, ``KG = k_groups``, ``K_t = g * KG``)::

    A stream -> TablePrecompute (one entry per cycle per table, Gray-code order)
             -> R*KG table memories (2 x entries deep, C async read ports each)
    W stream -> params (scale, zero) | bit planes --+--> C*R lookup lanes:
                                                      sum of KG lookups +-S  (stage L)
                                                      2P += v << plane       (stage G)
                                                      mant * P               (stage R1)
                                                      round-shift, acc += .  (stage R2)
                                                   -> R rows of C accumulators -> C stream

* **Table precompute** sits on the activation stream: each A vector (``R x K_t``
  activations) becomes ``R x KG`` tables, written one entry per cycle in Gray-code order
  (each entry is the previous one +- ``2 a_j``: one adder per table). With
  symmetrization a table holds ``2**(g-1)`` entries; the lookup negates the entry of the
  complement pattern. Every table memory is double-buffered (``2 x entries`` words): the
  next chunk's tables are written while the current ones are read.
* **LUT core**: each W plane vector (``C x K_t`` bits, one bit plane of ``K_t`` weights
  of ``C`` columns) indexes the tables: ``R x C x KG`` lookups per cycle, one plane per
  cycle, bit-serially (LSB first) over the command's ``wbits`` planes, combined by
  shift-add. One table build serves all ``C`` columns (the elongated tile) and all planes.
* **Group scaling**: each quant group of ``group_size`` weights along K starts with
  ``param_vectors`` W vectors that carry every column's f16 scale and zero point; the zero
  point enters as ``+-S`` per plane (see ref_model.lut), the scale as ``group_rescale``
  into ``Q.frac`` (round half up), then an ``acc_bits`` accumulator that wraps.

Tiling: tiles ``(i, j)`` over ``ceil(M / R)`` row blocks and ``ceil(N / C)`` column
blocks, i outer; each tile streams row block i of A and column block j of W once and
yields R rows of C (C x acc_bits each), in (i, j, r) order. Both reads share the AXI4
read port (:class:`~hw.mem.reader.ReadArbiter`); C goes out through the write port.

Throughput: one chunk (``K_t`` activations x ``C`` columns x ``R`` rows) per
``max(wbits, entries)`` cycles in steady state, plus ``param_vectors`` cycles per quant
group. Latency after the last plane of a tile: 3 cycles to C's output buffer.

Counters: ``cycles`` (command accepted to done), ``busy`` (plane lookups issued, each
``R x C x K_t`` one-bit products), ``read_bytes``, ``write_bytes``.
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..mem.port import gemm_memory_port
from ..mem.axi4 import AXI4ReadSignature, AXI4WriteSignature
from ..mem.gearbox import packing
from .systolic import DIM_BITS, CounterLayout, StatusLayout

__all__ = ["LutCommand", "LutCore", "TablePrecompute", "F16_EXP_BIAS_SHIFT"]

#: ``sh = 31 - max(e, 1)``: the right shift of the rescale once the product is moved left
#: by ``frac + 7`` (exponent field e of the f16 scale; see :class:`LutCore`).
F16_EXP_BIAS_SHIFT = 31


class LutCommand(data.StructLayout):
    """One GEMM: the systolic core's fields plus the weight precision.

    ``wbits``: weight bit planes (1..``weight_bits``); ``ternary``: codes 0..2 with zero
    point 1 (``wbits`` must be 2). ``k`` must be a multiple of ``group_size``."""

    def __init__(self, addr_bits: int):
        super().__init__({"a_addr": addr_bits, "w_addr": addr_bits, "c_addr": addr_bits,
                          "m": DIM_BITS, "k": DIM_BITS, "n": DIM_BITS, "wbits": 3, "ternary": 1})


def gray(t: int) -> int:
    return t ^ (t >> 1)


class TablePrecompute(wiring.Component):
    """Tables of one group of ``g`` activations, one entry per cycle.

    Parameters
    ----------
    g : activations per table. act_bits : their signed width.
    symmetric : store the ``2**(g-1)`` patterns with bit g-1 set (else all ``2**g``).
    entry_bits : signed width of an entry (``bit_length(g * 2**(act_bits-1)) + 1``).

    Members
    -------
    acts : In(g x act_bits). Held by the caller while ``t`` runs.
    t : In(range(entries)). Step; entry ``gray(t)`` is produced in step t.
    index : Out(entries bits). ``gray(t)``: the table address of ``entry``.
    entry : Out(signed(entry_bits)). ``T(p) = sum_j a_j (2 bit_j(p) - 1)`` for the
        pattern ``p`` of ``index`` (``p = index | 2**(g-1)`` when symmetric).

    Step 0 computes ``T`` of index 0 with a g-input adder; step t > 0 adds ``+- 2 a_j``
    to the previous entry (j = the bit in which gray(t) and gray(t-1) differ), registered.
    Exact, no rounding; combinational output.
    """

    def __init__(self, *, g: int, act_bits: int, symmetric: bool, entry_bits: int):
        self.g, self.act_bits, self.symmetric, self.entry_bits = g, act_bits, symmetric, entry_bits
        self.entries = 1 << (g - 1) if symmetric else 1 << g
        super().__init__({
            "acts": In(data.ArrayLayout(signed(act_bits), g)),
            "t": In(range(self.entries)),
            "index": Out(range(self.entries)),
            "entry": Out(signed(entry_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        g, a = self.g, self.acts
        prev = Signal(signed(self.entry_bits))
        first = Signal(signed(self.entry_bits))
        top = a[g - 1] if self.symmetric else -a[g - 1]
        m.d.comb += first.eq(top - sum((a[j] for j in range(g - 1)), Const(0, signed(2))))
        m.d.comb += self.entry.eq(Mux(self.t == 0, first, prev))
        with m.Switch(self.t):
            for t in range(self.entries):
                with m.Case(t):
                    m.d.comb += self.index.eq(gray(t))
                    if t + 1 < self.entries:
                        j = (gray(t) ^ gray(t + 1)).bit_length() - 1
                        up = (gray(t + 1) >> j) & 1
                        m.d.sync += prev.eq(self.entry + (a[j] << 1) if up else self.entry - (a[j] << 1))
        return m


class LutCore(wiring.Component):
    """A LUT GEMM core described by an accelerator config (``core.kind: lut``).

    Parameters
    ----------
    cfg : the accelerator config (``rtl_gen.config.AcceleratorConfig``; read, not imported).

    Members
    -------
    cmd : In(stream of LutCommand). One GEMM; byte addresses aligned to the port width.
    axi_r : Out(AXI4ReadSignature, 1-bit ID). A and W reads.
    axi_w : Out(AXI4WriteSignature). C writes.
    busy, done, status, counters : as :class:`hw.cores.systolic.SystolicCore`;
        ``status.bad_command`` also when ``wbits`` is 0 or above ``weight_bits``, ternary
        without ``wbits = 2``, or K not a multiple of ``group_size``.
    """

    def __init__(self, cfg):
        self.cfg = cfg
        mem = cfg.memory
        self.addr_bits, self.data_bits = mem.addr_bits, mem.data_bits
        super().__init__({
            "cmd": In(stream.Signature(LutCommand(mem.addr_bits))),
            "axi_r": Out(AXI4ReadSignature(addr_bits=mem.addr_bits, data_bits=mem.data_bits, id_bits=1)),
            "axi_w": Out(AXI4WriteSignature(addr_bits=mem.addr_bits, data_bits=mem.data_bits)),
            "busy": Out(1),
            "done": Out(1),
            "status": Out(StatusLayout()),
            "counters": Out(CounterLayout()),
        })

    def _beats(self, vectors, vector_bits):
        slots, bpv = packing(vector_bits, self.data_bits)
        s = slots.bit_length() - 1
        return ((vectors + (slots - 1)) >> s) * bpv

    def _issue(self, m, cond, reader, addr, beats, unpacker, length):
        fire = Signal()
        m.d.comb += [
            fire.eq(cond & reader.cmd.ready & unpacker.seg.ready),
            reader.cmd.valid.eq(fire), reader.cmd.payload.addr.eq(addr), reader.cmd.payload.beats.eq(beats),
            unpacker.seg.valid.eq(fire), unpacker.seg.payload.length.eq(length), unpacker.seg.payload.count.eq(1),
        ]
        return fire

    def elaborate(self, platform):
        m = Module()
        cfg, core = self.cfg, self.cfg.core
        R, C, KG, g, Kt = core.rows, core.cols, core.k_groups, core.g, core.k_tile
        E, WB, ab = core.table_entries, core.weight_bits, core.act.bits
        G, pv, cpg = core.group_size, core.param_vectors, core.group_size // core.k_tile
        D, bpb = self.data_bits, self.data_bits // 8
        a_bits, w_bits, c_bits = R * Kt * ab, C * Kt, C * core.acc_bits

        # ---- memory port: two readers on the arbiter, one writer (as the systolic core)
        port = gemm_memory_port(m, axi_r=self.axi_r, axi_w=self.axi_w, addr_bits=self.addr_bits, data_bits=D,
                                max_burst=cfg.memory.max_burst, outstanding=cfg.memory.outstanding,
                                operands={"a": a_bits, "w": w_bits}, c_bits=c_bits)
        read_a, read_w = port.readers["a"], port.readers["w"]
        unpack_a, unpack_w = port.unpackers["a"], port.unpackers["w"]
        writer, pack_c = port.writer, port.pack_c

        # ---- command, top-level sequence (IDLE -> SETUP -> RUN -> DONE)
        cmd = Signal(LutCommand(self.addr_bits))
        planes = Signal(3)
        out_rows, rows_out = Signal(2 * DIM_BITS + 1), Signal(2 * DIM_BITS + 1)
        go, setup_done, setup_bad = Signal(), Signal(), Signal()
        start = Signal()
        m.d.comb += [self.busy.eq(~self.cmd.ready), start.eq(self.cmd.valid & self.cmd.ready)]
        p = self.cmd.payload
        bad = Signal()
        m.d.comb += bad.eq((p.m == 0) | (p.n == 0) | (p.k == 0) | (p.wbits == 0) | (p.wbits > WB)
                           | (p.ternary & (p.wbits != 2)))
        start_writer, writer_started = Signal(), Signal()
        with m.FSM(name="seq"):
            with m.State("IDLE"):
                m.d.comb += self.cmd.ready.eq(1)
                with m.If(self.cmd.valid):
                    m.d.sync += [cmd.eq(p), planes.eq(p.wbits), rows_out.eq(0), writer_started.eq(0),
                                 self.status.eq(0), self.counters.eq(0)]
                    with m.If(bad):
                        m.d.sync += self.status.bad_command.eq(1)
                        m.next = "DONE"
                    with m.Else():
                        m.next = "SETUP"
            with m.State("SETUP"):
                with m.If(setup_bad):
                    m.d.sync += self.status.bad_command.eq(1)
                    m.next = "DONE"
                with m.Elif(setup_done):
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

        # ---- SETUP: count column blocks (nt), row blocks (mt), quant groups (ng) by
        # stepping (no divider); segment lengths in vectors follow.
        nt, mt, ng = Signal(DIM_BITS + 1), Signal(DIM_BITS + 1), Signal(DIM_BITS + 1)
        col, row, kk = Signal(DIM_BITS + 8), Signal(DIM_BITS + 8), Signal(DIM_BITS + 13)
        a_vecs, w_vecs = Signal(DIM_BITS + 8), Signal(DIM_BITS + 12)
        w_per_group = Signal(8)
        counting = Signal()
        m.d.comb += w_per_group.eq(pv + cpg * planes)
        with m.If(start):
            m.d.sync += [nt.eq(0), mt.eq(0), ng.eq(0), col.eq(0), row.eq(0), kk.eq(0), a_vecs.eq(0), w_vecs.eq(0),
                         out_rows.eq(0), counting.eq(~bad)]
        with m.If(counting):
            with m.If(col < cmd.n):
                m.d.sync += [col.eq(col + C), nt.eq(nt + 1)]
            with m.Elif(kk < cmd.k):
                m.d.sync += [kk.eq(kk + G), ng.eq(ng + 1), a_vecs.eq(a_vecs + cpg), w_vecs.eq(w_vecs + w_per_group)]
            with m.Elif(row < cmd.m):
                m.d.sync += [row.eq(row + R), mt.eq(mt + 1), out_rows.eq(out_rows + nt * R)]
            with m.Else():
                m.d.sync += counting.eq(0)
                m.d.comb += [setup_done.eq(kk == cmd.k), setup_bad.eq(kk != cmd.k)]
        a_blk_beats, w_blk_beats = Signal(32), Signal(32)
        m.d.comb += [a_blk_beats.eq(self._beats(a_vecs, a_bits)), w_blk_beats.eq(self._beats(w_vecs, w_bits))]

        # ---- reads: per tile (i, j), row block i of A and column block j of W. Reads are
        # issued as soon as a reader has room (they run ahead into its FIFO, hiding the
        # memory latency at tile boundaries); segments are told to the unpackers one by one.
        tiles = Signal(2 * DIM_BITS + 2)
        with m.If(start):
            m.d.sync += tiles.eq(0)
        with m.If(counting & (col >= cmd.n) & (kk >= cmd.k) & (row < cmd.m)):
            m.d.sync += tiles.eq(tiles + nt)

        def tile_reader(name, reader, unpacker, base, blk_beats, vecs, outer_is_row):
            i, j = Signal(DIM_BITS + 1, name=f"{name}_i"), Signal(DIM_BITS + 1, name=f"{name}_j")
            ptr = Signal(self.addr_bits, name=f"{name}_ptr")
            segs = Signal(2 * DIM_BITS + 2, name=f"{name}_segs")
            with m.If(start):
                m.d.sync += [i.eq(0), j.eq(0), ptr.eq(base(self.cmd.payload)), segs.eq(0)]
            fire = Signal(name=f"{name}_fire")
            m.d.comb += [fire.eq(go & (i < mt) & reader.cmd.ready), reader.cmd.valid.eq(fire),
                         reader.cmd.payload.addr.eq(ptr), reader.cmd.payload.beats.eq(blk_beats)]
            with m.If(fire):
                last_j = j + 1 == nt
                m.d.sync += j.eq(Mux(last_j, 0, j + 1))
                with m.If(last_j):
                    m.d.sync += i.eq(i + 1)
                if outer_is_row:      # A: the same block for every j, then the next block
                    with m.If(last_j):
                        m.d.sync += ptr.eq(ptr + blk_beats * bpb)
                else:                 # W: the next block for every j, back to the start per i
                    m.d.sync += ptr.eq(Mux(last_j, cmd.w_addr, ptr + blk_beats * bpb))
            seg = Signal(name=f"{name}_seg")
            m.d.comb += [seg.eq(go & (segs < tiles) & unpacker.seg.ready), unpacker.seg.valid.eq(seg),
                         unpacker.seg.payload.length.eq(vecs), unpacker.seg.payload.count.eq(1)]
            with m.If(seg):
                m.d.sync += segs.eq(segs + 1)
        tile_reader("ra", read_a, unpack_a, lambda c: c.a_addr, a_blk_beats, a_vecs, True)
        tile_reader("rw", read_w, unpack_w, lambda c: c.w_addr, w_blk_beats, w_vecs, False)

        # ---- table precompute on the A stream
        act_reg = Signal(data.ArrayLayout(signed(ab), R * Kt))
        building, bhalf, uhalf = Signal(), Signal(), Signal()
        t = Signal(range(E))
        t_last = Signal()
        m.d.comb += t_last.eq(t == E - 1)
        occ, ready_cnt = Signal(range(3)), Signal(range(3))     # halves claimed / built, not yet released
        claim, built, release = Signal(), Signal(), Signal()
        m.d.sync += [occ.eq(occ + claim - release), ready_cnt.eq(ready_cnt + built - release)]
        # A half released by the lookups this cycle may be claimed in the same cycle.
        m.d.comb += [unpack_a.vectors.ready.eq(((occ < 2) | release) & (~building | t_last)),
                     claim.eq(unpack_a.vectors.valid & unpack_a.vectors.ready),
                     built.eq(building & t_last)]
        with m.If(start):
            m.d.sync += [bhalf.eq(0), uhalf.eq(0), building.eq(0), t.eq(0), occ.eq(0), ready_cnt.eq(0)]
        with m.If(claim):
            m.d.sync += act_reg.eq(unpack_a.vectors.payload)
        with m.If(building):
            m.d.sync += t.eq(t + 1)
        with m.If(built):
            m.d.sync += [bhalf.eq(~bhalf), t.eq(0)]
        with m.If(claim | built):
            m.d.sync += building.eq(claim)
        # The chunk's activation sum S per row, kept per table half.
        sum_bits = (Kt << (ab - 1)).bit_length() + 1
        s_half = [[Signal(signed(sum_bits), name=f"s_h{h}_r{r}") for r in range(R)] for h in range(2)]
        for r in range(R):
            s_now = sum((act_reg[r * Kt + k] for k in range(Kt)), Const(0, signed(2)))
            with m.If(building & (t == 0)):
                for h in range(2):
                    with m.If(bhalf == h):
                        m.d.sync += s_half[h][r].eq(s_now)

        eb = core.entry_bits
        idx_bits = (E - 1).bit_length()
        tables = {}
        for r in range(R):
            for kg in range(KG):
                pre = TablePrecompute(g=g, act_bits=ab, symmetric=core.symmetric, entry_bits=eb)
                m.submodules[f"pre_r{r}_g{kg}"] = pre
                m.d.comb += [pre.acts[j].eq(act_reg[r * Kt + kg * g + j]) for j in range(g)]
                m.d.comb += pre.t.eq(t)
                # Distributed RAM (ECP5 TRELLIS_DPR16X4, Xilinx LUTRAM): one copy per read
                # port, each a LUT whose address is the weight pattern; left to itself Yosys
                # would build these small memories from FFs and multiplexers.
                mem = Memory(shape=signed(eb), depth=core.table_depth, init=[], attrs={"ram_style": "distributed"})
                m.submodules[f"table_r{r}_g{kg}"] = mem
                wp = mem.write_port()
                m.d.comb += [wp.addr.eq(Cat(pre.index[:idx_bits] if idx_bits else Const(0, 0), bhalf)),
                             wp.data.eq(pre.entry), wp.en.eq(building)]
                tables[r, kg] = [mem.read_port(domain="comb") for _ in range(C)]

        # ---- W stream: parameters, then bit planes
        wv = unpack_w.vectors.payload
        params = [Signal(pv * Kt, name=f"param_c{n}") for n in range(C)]
        in_params = Signal(init=1)
        p_cnt = Signal(range(pv + 1))
        plane, chunk, group = Signal(3), Signal(range(cpg + 1)), Signal(DIM_BITS + 1)
        plane_last, chunk_last, group_last, group_first_q = Signal(), Signal(), Signal(), Signal()
        m.d.comb += [plane_last.eq(plane + 1 == planes), chunk_last.eq(chunk == cpg - 1),
                     group_last.eq(group + 1 == ng), group_first_q.eq(group == 0)]
        tile_end = Signal()
        m.d.comb += tile_end.eq(plane_last & chunk_last & group_last)
        out_full, drain_busy = Signal(), Signal()
        group_end = Signal()
        m.d.comb += group_end.eq(plane_last & chunk_last)
        fire = Signal()
        param_take = Signal()
        m.d.comb += [
            param_take.eq(go & in_params & unpack_w.vectors.valid),
            fire.eq(go & ~in_params & unpack_w.vectors.valid & (ready_cnt != 0)
                    # a group's last plane waits for the previous group's rescale to drain,
                    # a tile's last plane also for C's output buffer
                    & (~group_end | (~drain_busy & (~group_last | ~out_full)))),
            unpack_w.vectors.ready.eq(param_take | fire),
            release.eq(fire & plane_last),
        ]
        with m.If(start):
            m.d.sync += [in_params.eq(1), p_cnt.eq(0), plane.eq(0), chunk.eq(0), group.eq(0)]
        with m.If(param_take):
            for n in range(C):
                lane = wv[n * Kt:(n + 1) * Kt]
                m.d.sync += params[n].eq(Cat(params[n][Kt:], lane) if pv > 1 else lane)
            m.d.sync += p_cnt.eq(p_cnt + 1)
            with m.If(p_cnt == pv - 1):
                m.d.sync += [in_params.eq(0), p_cnt.eq(0)]
        with m.If(fire):
            m.d.sync += plane.eq(plane + 1)
            with m.If(plane_last):
                m.d.sync += [plane.eq(0), chunk.eq(chunk + 1), uhalf.eq(~uhalf)]
                with m.If(chunk_last):
                    m.d.sync += [chunk.eq(0), group.eq(group + 1), in_params.eq(1)]
                    with m.If(group_last):
                        m.d.sync += group.eq(0)

        # ---- stage L: lookups, sign correction, sum over groups, zero-point term
        vb, gb = core.plane_bits, core.group_sum_bits
        l_valid, l_first, l_last, l_tfirst, l_tlast = Signal(), Signal(), Signal(), Signal(), Signal()
        l_plane = Signal(3)
        l_v = [[Signal(signed(vb), name=f"l_v_r{r}_c{n}") for n in range(C)] for r in range(R)]
        l_scale = [Signal(16, name=f"l_scale_c{n}") for n in range(C)]
        m.d.sync += l_valid.eq(fire)
        with m.If(fire):
            m.d.sync += [l_plane.eq(plane), l_first.eq((chunk == 0) & (plane == 0)), l_last.eq(chunk_last & plane_last),
                         l_tfirst.eq(group_first_q), l_tlast.eq(group_last)]
        s_cur = [Signal(signed(sum_bits), name=f"s_cur_r{r}") for r in range(R)]
        for r in range(R):
            m.d.comb += s_cur[r].eq(Mux(uhalf, s_half[1][r], s_half[0][r]))
        for n in range(C):
            prm = params[n]
            zero = prm[16:16 + WB]
            z_i = Signal(name=f"z_c{n}")
            m.d.comb += z_i.eq(Mux(cmd.ternary, plane == 0, zero.bit_select(plane, 1)))
            with m.If(fire & plane_last & chunk_last):
                m.d.sync += l_scale[n].eq(prm[:16])
            for r in range(R):
                terms, negs = [], []
                for kg in range(KG):
                    pat = wv[n * Kt + kg * g: n * Kt + (kg + 1) * g]
                    rp = tables[r, kg][n]
                    if core.symmetric:
                        top = pat[g - 1]
                        low = pat[:g - 1]
                        idx = Mux(top, low, ~low)
                        m.d.comb += rp.addr.eq(Cat(idx, uhalf))
                        neg = ~top
                        # -T = ~T + 1: the +1s are counted and added once per lane.
                        terms.append((rp.data.as_unsigned() ^ neg.replicate(eb)).as_signed())
                        negs.append(neg)
                    else:
                        m.d.comb += rp.addr.eq(Cat(pat, uhalf))
                        terms.append(rp.data)
                terms.append((s_cur[r].as_unsigned() ^ z_i.replicate(sum_bits)).as_signed())
                negs.append(z_i)
                total = sum(terms[1:], terms[0]) + sum(negs[1:], negs[0])
                with m.If(fire):
                    m.d.sync += l_v[r][n].eq(total)

        # ---- stage G: 2P += v << plane over the quant group; at its end P -> p_buf
        pb = gb - 1
        lanes, U = R * C, core.rescale_units
        S = lanes // U                    # lanes per rescale unit = drain cycles per group
        plane_sel_bits = max(1, (WB - 1).bit_length())   # shift by 0..weight_bits-1 only
        gacc = [[Signal(signed(gb), name=f"gacc_r{r}_c{n}") for n in range(C)] for r in range(R)]
        p_buf = [[Signal(signed(pb), name=f"p_buf_r{r}_c{n}") for n in range(C)] for r in range(R)]
        d_scale = [Signal(16, name=f"d_scale_c{n}") for n in range(C)]
        d_tfirst, d_tlast = Signal(), Signal()
        for r in range(R):
            for n in range(C):
                s = Mux(l_first, 0, gacc[r][n]) + (l_v[r][n] << l_plane[:plane_sel_bits])
                with m.If(l_valid):
                    m.d.sync += gacc[r][n].eq(s)
                    with m.If(l_last):
                        m.d.sync += p_buf[r][n].eq(s >> 1)     # 2P is even: exact
        draining, d_idx = Signal(), Signal(range(S + 1))
        with m.If(l_valid & l_last):
            m.d.sync += [draining.eq(1), d_idx.eq(0), d_tfirst.eq(l_tfirst), d_tlast.eq(l_tlast)]
            m.d.sync += [d_scale[n].eq(l_scale[n]) for n in range(C)]
        with m.If(draining):
            m.d.sync += d_idx.eq(d_idx + 1)
            with m.If(d_idx == S - 1):
                m.d.sync += draining.eq(0)

        # ---- shared rescale: U units each take one lane per cycle (lane u*S + d_idx):
        # D1 = mant x P, D2 = round-shift into Q.frac and add to the lane's accumulator.
        # Accumulators form one rotating chain per unit (FFs only, no multiplexer): the
        # head is the lane being rescaled, the result re-enters at the tail.
        frac, acc_bits = core.frac, core.acc_bits
        left = frac + 7          # = frac + max exponent (6) + 1: every shift becomes a right shift
        d1_valid, d1_last = Signal(), Signal()
        m.d.sync += [d1_valid.eq(draining), d1_last.eq(draining & (d_idx == S - 1))]
        d2_prod = [Signal(signed(pb + 12), name=f"d2_prod_u{u}") for u in range(U)]
        d2_sh = [Signal(5, name=f"d2_sh_u{u}") for u in range(U)]
        chains = []
        for u in range(U):
            lane_ids = [u * S + k for k in range(S)]
            p_sel = Array([p_buf[ln // C][ln % C] for ln in lane_ids])[d_idx]
            sc = Signal(16, name=f"d_sc_u{u}")
            m.d.comb += sc.eq(Array([d_scale[ln % C] for ln in lane_ids])[d_idx])
            e, f = sc[10:15], sc[:10]
            mag = Cat(f, e != 0)
            mant = Signal(signed(12), name=f"mant_u{u}")
            m.d.comb += mant.eq(Mux(sc[15], -mag, mag))
            with m.If(draining):
                m.d.sync += [d2_prod[u].eq(p_sel * mant), d2_sh[u].eq(F16_EXP_BIAS_SHIFT - Mux(e == 0, 1, e))]
            chain = [Signal(acc_bits, name=f"acc_u{u}_{k}") for k in range(S)]
            chains.append(chain)
            # rshift_round(x, s) = (floor(x * 2**(1-s)) + 1) >> 1, and x * 2**(1-s) =
            # (x << left) >> sh with sh = s + left - 1 = 31 - max(e, 1) >= 1.
            shifted = (d2_prod[u] << left) >> d2_sh[u]
            term = (shifted[:acc_bits + 1] + 1)[1:acc_bits + 1]
            total = (Mux(d_tfirst, 0, chain[0]) + term)[:acc_bits]
            with m.If(d1_valid):
                m.d.sync += [chain[k].eq(chain[k + 1]) for k in range(S - 1)]
                m.d.sync += chain[S - 1].eq(total)
        acc_of = [chains[ln // S][ln % S] for ln in range(lanes)]
        out_buf = [[Signal(acc_bits, name=f"out_r{r}_c{n}") for n in range(C)] for r in range(R)]
        copy = Signal()
        m.d.sync += copy.eq(d1_last & d_tlast)
        with m.If(copy):
            m.d.sync += [out_buf[r][n].eq(acc_of[r * C + n]) for r in range(R) for n in range(C)]
            m.d.sync += out_full.eq(1)
        with m.If(fire & group_end):
            m.d.sync += drain_busy.eq(1)
        with m.If(d1_last):
            m.d.sync += drain_busy.eq(0)

        # ---- C out: R rows of C accumulators per tile
        out_r = Signal(range(R))
        with m.Switch(out_r):
            for r in range(R):
                with m.Case(r):
                    m.d.comb += pack_c.vectors.payload.vector.eq(Cat(*out_buf[r]))
        m.d.comb += [pack_c.vectors.valid.eq(out_full), pack_c.vectors.payload.last.eq(rows_out + 1 == out_rows)]
        with m.If(pack_c.vectors.valid & pack_c.vectors.ready):
            m.d.sync += [rows_out.eq(rows_out + 1), out_r.eq(out_r + 1)]
            with m.If(out_r == R - 1):
                m.d.sync += [out_r.eq(0), out_full.eq(0)]
        with m.If(start):
            m.d.sync += [out_r.eq(0), out_full.eq(0), drain_busy.eq(0)]

        # ---- counters and status
        with m.If(self.busy & ~self.done):
            m.d.sync += self.counters.cycles.eq(self.counters.cycles + 1)
        with m.If(fire):
            m.d.sync += self.counters.busy.eq(self.counters.busy + 1)
        with m.If(self.axi_r.rvalid & self.axi_r.rready):
            m.d.sync += self.counters.read_bytes.eq(self.counters.read_bytes + bpb)
        with m.If(self.axi_w.wvalid & self.axi_w.wready):
            m.d.sync += self.counters.write_bytes.eq(self.counters.write_bytes + bpb)
        with m.If(read_a.error | read_w.error):
            m.d.sync += self.status.read_error.eq(1)
        with m.If(writer.error):
            m.d.sync += self.status.write_error.eq(1)
        return m
