"""The systolic PE grids, output-stationary and weight-stationary, with their edges.

Both arrays take operand vectors on two streams and give rows of accumulators on one;
the tiling around them (which vectors, in which order) is in
:mod:`hw.cores.systolic`. The whole array advances in lock step under one enable,
``tick``, which is low only while the result FIFO is nearly full: inputs that are not
valid on a tick enter the array as bubbles, so stalls never break the skew.
"""

from amaranth.hdl import Cat, Module, Mux, Shape, Signal, signed
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from ..pe.mac import OutputStationaryPE, WeightStationaryPE
from ..pipeline import delay

#: Result FIFO depth; the array stops ticking when fewer than ``_FIFO_SLACK`` slots are
#: free, which covers the one row that can leave the array in the cycle the registered
#: stop takes effect.
_FIFO_DEPTH = 8
_FIFO_SLACK = 3
#: Register stages every operand passes before the skew (decouples the array from the
#: buffer RAMs' clock-to-out), on top of the configurable ``edge_pipeline``.
_IN = 1


class OSActVector(data.StructLayout):
    """An a-vector of the output-stationary array: column k of an R-row block of A."""

    def __init__(self, act_shape, rows: int):
        super().__init__({"data": data.ArrayLayout(act_shape, rows), "first": 1, "last": 1})


class WSActVector(data.StructLayout):
    """An a-vector of the weight-stationary array: R consecutive k of one row of A.

    ``swap``: first row of a k-block (switch to the freshly loaded weights);
    ``first_kb``/``last_kb``: the k-block is the first/last of the sum; ``row``: index of
    the row within the current pass (the accumulator buffer address).
    """

    def __init__(self, act_shape, rows: int, row_bits: int):
        super().__init__({"data": data.ArrayLayout(act_shape, rows), "swap": 1,
                          "first_kb": 1, "last_kb": 1, "row": row_bits})


class _ArrayBase(wiring.Component):
    def __init__(self, *, rows, cols, act_shape, weight_shape, acc_bits, edge_pipeline, dsp_pes, a_layout):
        self.rows, self.cols = rows, cols
        self.act_shape, self.weight_shape = Shape.cast(act_shape), Shape.cast(weight_shape)
        self.acc_bits, self.edge_pipeline, self.dsp_pes = acc_bits, edge_pipeline, dsp_pes
        super().__init__({
            "a": In(stream.Signature(a_layout)),
            "w": In(stream.Signature(data.ArrayLayout(self.weight_shape, cols))),
            "c": Out(stream.Signature(data.ArrayLayout(signed(acc_bits), cols))),
            "tick": Out(1),
        })

    def _use_dsp(self, r, c):
        return r * self.cols + c < self.dsp_pes

    def _grid(self, m, pe_class, en):
        """rows x cols PEs as submodules ``pe_R_C``, all enabled by ``en``; the first
        ``dsp_pes`` in row-major order get DSP multipliers."""
        pes = [[pe_class(act_shape=self.act_shape, weight_shape=self.weight_shape, acc_bits=self.acc_bits,
                         use_dsp=self._use_dsp(r, c)) for c in range(self.cols)] for r in range(self.rows)]
        for r, row in enumerate(pes):
            for c, pe in enumerate(row):
                m.submodules[f"pe_{r}_{c}"] = pe
                m.d.comb += pe.en.eq(en)
        return pes

    def _result_fifo(self, m):
        m.submodules.results = results = fifo.SyncFIFOBuffered(width=self.cols * self.acc_bits, depth=_FIFO_DEPTH)
        # Registered so the enable that fans out to every PE starts at a flip-flop.
        m.d.sync += self.tick.eq(results.level <= _FIFO_DEPTH - _FIFO_SLACK)
        m.d.comb += [self.c.payload.eq(results.r_data), self.c.valid.eq(results.r_rdy),
                     results.r_en.eq(self.c.ready)]
        return results


class OutputStationaryArray(_ArrayBase):
    """``rows`` x ``cols`` output-stationary array: each PE owns one element of C.

    Members
    -------
    a : In(stream of OSActVector). ``data[r]`` = A[i*R + r, k]; ``first``/``last`` mark
        k = 0 and k = K-1 of a tile.
    w : In(stream of ``cols`` weights). ``w[c]`` = W[k, j*C + c].
    c : Out(stream of ``cols`` accumulators). After each tile, its ``rows`` result rows
        in order r = 0..R-1.
    tick : Out(1). The array advanced this cycle.

    ``a`` and ``w`` are taken together. Timing: the vector taken at tick t reaches PE
    (r, c) at tick t + 1 + E + r + c; row r of a tile whose last vector was taken at tick T
    leaves the output edge at tick T + 2E + 2r + C + 2 (E = ``edge_pipeline``). Results
    move up a chain shared with the next tile, so consecutive tiles must start at least
    2R ticks apart; the caller pads shorter tiles with idle ticks (see ``min_tile_ticks``).
    """

    def __init__(self, *, rows, cols, act_shape, weight_shape, acc_bits, edge_pipeline=0, dsp_pes=None):
        super().__init__(rows=rows, cols=cols, act_shape=act_shape, weight_shape=weight_shape,
                         acc_bits=acc_bits, edge_pipeline=edge_pipeline,
                         dsp_pes=rows * cols if dsp_pes is None else dsp_pes,
                         a_layout=OSActVector(act_shape, rows))
        self.min_tile_ticks = 2 * rows

    def elaborate(self, platform):
        m = Module()
        R, C, E = self.rows, self.cols, self.edge_pipeline
        results = self._result_fifo(m)
        en = self.tick

        take = Signal()
        m.d.comb += [take.eq(en & self.a.valid & self.w.valid),
                     self.a.ready.eq(take), self.w.ready.eq(take)]
        a, w = self.a.payload, self.w.payload

        pes = self._grid(m, OutputStationaryPE, en)

        # Left edge: row r skewed by r ticks (plus E edge stages), flags travel along.
        for r in range(R):
            lane = Signal(self.act_shape.width + 3, name=f"a_lane_{r}")
            m.d.comb += lane.eq(Cat(a.data[r], take, a.first, a.last))
            lane = delay(m, lane, _IN + E + r, en, name=f"a_skew_{r}")
            pe = pes[r][0]
            m.d.comb += [pe.a_in.eq(lane[:self.act_shape.width]), pe.valid_in.eq(lane[-3]),
                         pe.first_in.eq(lane[-2]), pe.last_in.eq(lane[-1])]
            for c in range(1, C):
                left, pe = pes[r][c - 1], pes[r][c]
                m.d.comb += [pe.a_in.eq(left.a_out), pe.valid_in.eq(left.valid_out),
                             pe.first_in.eq(left.first_out), pe.last_in.eq(left.last_out)]
        # Top edge: column c skewed by c ticks.
        for c in range(C):
            lane = delay(m, w[c], _IN + E + c, en, name=f"w_skew_{c}")
            m.d.comb += pes[0][c].w_in.eq(lane)
            for r in range(1, R):
                m.d.comb += pes[r][c].w_in.eq(pes[r - 1][c].w_out)
        # Output chains run up each column; the top of column c is delayed C-1-c ticks so
        # that all columns of a row line up.
        row = Signal(self.cols * self.acc_bits)
        row_valid = Signal()
        for c in range(C):
            for r in range(R - 1):
                m.d.comb += [pes[r][c].chain_in.eq(pes[r + 1][c].chain_out),
                             pes[r][c].chain_valid_in.eq(pes[r + 1][c].chain_valid_out)]
            m.d.comb += [pes[R - 1][c].chain_in.eq(0), pes[R - 1][c].chain_valid_in.eq(0)]
            top = Cat(pes[0][c].chain_out, pes[0][c].chain_valid_out)
            top = delay(m, top, C - 1 - c + E, en, name=f"c_deskew_{c}")
            m.d.comb += row[c * self.acc_bits:(c + 1) * self.acc_bits].eq(top[:self.acc_bits])
            if c == 0:
                m.d.comb += row_valid.eq(top[-1])
        m.d.comb += [results.w_data.eq(row), results.w_en.eq(en & row_valid)]
        return m


class WeightStationaryArray(_ArrayBase):
    """``rows`` x ``cols`` weight-stationary array with its accumulator buffer.

    PE (r, c) holds W[kb*R + r, j*C + c] for the current k-block ``kb``.

    Members
    -------
    a : In(stream of WSActVector). ``data[r]`` = A[m, kb*R + r].
    w : In(stream of ``cols`` weights). Blocks of R vectors, row R-1 of the block first
        (they shift down the shadow chain), one block per k-block in use order.
    c : Out(stream of ``cols`` accumulators). Row ``m`` of C (for this column block)
        after its last k-block.
    tick : Out(1).

    Behaviour: a block of weights shifts into the shadow registers while the previous
    block computes; an a-vector with ``swap`` waits until a whole block is loaded, and the
    next block may only start shifting ``R + C - 1 + E`` ticks after a swap, when the swap
    wavefront has passed every PE. Column sums leave the bottom edge, are de-skewed and
    added into a ``m_tile``-deep accumulator buffer (``first_kb`` overwrites); rows with
    ``last_kb`` go to ``c``. Latency from a-vector to its C row: 2E + R + C + 3 ticks.
    """

    def __init__(self, *, rows, cols, act_shape, weight_shape, acc_bits, m_tile, edge_pipeline=0, dsp_pes=None):
        self.m_tile = m_tile
        self.row_bits = max(1, (m_tile - 1).bit_length())
        super().__init__(rows=rows, cols=cols, act_shape=act_shape, weight_shape=weight_shape,
                         acc_bits=acc_bits, edge_pipeline=edge_pipeline,
                         dsp_pes=rows * cols if dsp_pes is None else dsp_pes,
                         a_layout=WSActVector(act_shape, rows, self.row_bits))

    def elaborate(self, platform):
        from amaranth.lib.memory import Memory
        m = Module()
        R, C, E = self.rows, self.cols, self.edge_pipeline
        results = self._result_fifo(m)
        en = self.tick
        a, w = self.a.payload, self.w.payload

        # Shadow loading and the swap barrier.
        loaded = Signal(range(R + 1))
        guard = Signal(range(R + C + E + 1))
        shift = Signal()
        m.d.comb += [self.w.ready.eq(en & (loaded < R) & (guard == 0)),
                     shift.eq(self.w.valid & self.w.ready)]
        take = Signal()
        m.d.comb += [self.a.ready.eq(en & (~a.swap | (loaded == R))),
                     take.eq(self.a.valid & self.a.ready)]
        with m.If(en & (guard != 0)):
            m.d.sync += guard.eq(guard - 1)
        with m.If(shift):
            m.d.sync += loaded.eq(loaded + 1)
        with m.If(take & a.swap):
            m.d.sync += [loaded.eq(0), guard.eq(_IN + R + C - 1 + E)]  # swaps happen at the PE inputs

        pes = self._grid(m, WeightStationaryPE, en)
        m.d.comb += [pe.shift.eq(shift) for row in pes for pe in row]
        # Shadow chains: the block's vectors enter at the top of each column.
        for c in range(C):
            m.d.comb += pes[0][c].shadow_in.eq(w[c])
            for r in range(1, R):
                m.d.comb += pes[r][c].shadow_in.eq(pes[r - 1][c].shadow_out)
        # Left edge: row r skewed by r ticks; valid and swap travel with the data.
        for r in range(R):
            lane = Signal(self.act_shape.width + 2, name=f"a_lane_{r}")
            m.d.comb += lane.eq(Cat(a.data[r], take, a.swap))
            lane = delay(m, lane, _IN + E + r, en, name=f"a_skew_{r}")
            pe = pes[r][0]
            m.d.comb += [pe.a_in.eq(lane[:self.act_shape.width]), pe.valid_in.eq(lane[-2]),
                         pe.swap_in.eq(lane[-1])]
            for c in range(1, C):
                left, pe = pes[r][c - 1], pes[r][c]
                m.d.comb += [pe.a_in.eq(left.a_out), pe.valid_in.eq(left.valid_out), pe.swap_in.eq(left.swap_out)]
        # Partial sums run down; the bottom of column c is delayed C-1-c ticks (+E).
        for c in range(C):
            m.d.comb += pes[0][c].psum_in.eq(0)
            for r in range(1, R):
                m.d.comb += pes[r][c].psum_in.eq(pes[r - 1][c].psum_out)
        psums = [delay(m, pes[R - 1][c].psum_out, C - 1 - c + E, en, name=f"psum_deskew_{c}")
                 for c in range(C)]

        # Row metadata skips the grid through a delay line of the same latency.
        latency = _IN + 2 * E + R + C  # ticks from ``take`` to the de-skewed column sums
        meta = Signal(3 + self.row_bits)
        m.d.comb += meta.eq(Cat(take, a.first_kb, a.last_kb, a.row))
        meta_early = delay(m, meta, latency - 1, en, name="meta")
        meta_now = delay(m, meta_early, 1, en, name="meta_now")

        # Accumulator buffer: read one tick ahead, add, write back.
        m.submodules.acc_mem = acc_mem = Memory(shape=self.cols * self.acc_bits, depth=self.m_tile, init=[])
        wp = acc_mem.write_port()
        rp = acc_mem.read_port(transparent_for=(wp,))
        m.d.comb += [rp.addr.eq(meta_early[3:]), rp.en.eq(en)]
        valid, first_kb, last_kb, row_idx = meta_now[0], meta_now[1], meta_now[2], meta_now[3:]
        sums = Signal(self.cols * self.acc_bits)
        for c in range(C):
            lo, hi = c * self.acc_bits, (c + 1) * self.acc_bits
            old = Signal(signed(self.acc_bits), name=f"acc_old_{c}")
            m.d.comb += [old.eq(rp.data[lo:hi]), sums[lo:hi].eq(Mux(first_kb, 0, old) + psums[c])]
        m.d.comb += [wp.addr.eq(row_idx), wp.data.eq(sums), wp.en.eq(en & valid)]
        m.d.comb += [results.w_data.eq(sums), results.w_en.eq(en & valid & last_kb)]
        return m

