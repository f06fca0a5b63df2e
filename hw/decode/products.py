"""Products for the decode engine's ECP5 budget: LUT products and pipelined split products.

The ECP5-85 has 156 MULT18X18D, its scarcest resource, and Yosys' ``mul2dsp`` gives every
``$mul`` of A x B bits ``ceil(A/18) x ceil(B/18)`` of them, summed by carry chains in
the same cycle. This module is the one place that decides how a product is built:

* :func:`lut_mul`: the engine's address and count products (token x row bytes, heads x
  head_dim, ...) are used once per command, yet each ``*`` takes a whole MULT18X18D.
  ``lut_mul`` writes the same exact product as a sum of shifted partial products, which
  Yosys maps to LUTs (``mul2dsp`` only sees ``$mul`` cells). Numerics: exact, ``a*b`` with
  Amaranth's signedness rules; ``width`` keeps the low ``width`` bits only (the operands
  are truncated first: the low bits of a product depend only on the low bits of its
  operands). Combinational; the partial products are summed as a balanced tree
  (``ceil(log2 n)`` adders deep: a chain of 16 carry-chain adders was a 40 ns path).
* :func:`lut_mul_pipe`: the same with a register after every adder level, for operands
  that stay put for a few cycles (command fields); :func:`settled_mul` adds the "product
  is valid" flag for operands an FSM holds still.
* :class:`Pipe`: stage bookkeeping for fully pipelined datapaths; :meth:`Pipe.mul` cuts a
  wide product into MULT18X18D-sized pieces (narrow pieces into LUT rows), registers each
  piece product alone and sums the pieces in registered stages, so no DSP output meets a
  carry chain in its own cycle.
"""

from amaranth.hdl import ClockSignal, Const, Instance, Module, Mux, ResetSignal, Signal, Value, signed


class Ecp5Target:
    """The elaboration platform of the report flow (``lutforge report``, ``bench``): an
    ECP5 netlist for Yosys ``synth_ecp5``, without a board. Units that build vendor
    primitives (:meth:`Pipe.mul`'s registered MULT18X18D) see ``family == "ecp5"`` here
    as on an amaranth-boards ECP5 platform."""

    family = "ecp5"


def ecp5_dsp(platform) -> bool:
    """Whether products are built as ECP5 MULT18X18D instances with their own registers:
    on an ECP5 platform (an amaranth ``LatticePlatform`` of family ``ecp5``, or
    :class:`Ecp5Target`). Elsewhere (Verilator cosim, Amaranth's simulator, other
    vendors) the same pipeline is built of plain registers and ``*``."""
    return getattr(platform, "family", None) == "ecp5"


def mult18x18d(m: Module, a, b, *, signed_: bool, name: str) -> Signal:
    """One ECP5 MULT18X18D with its input and output registers (``REG_INPUTA/B_CLK``,
    ``REG_OUTPUT_CLK`` on CLK0): returns its 36-bit product ``P``, signed when
    ``signed_``; ``P`` is ``a * b`` of two cycles before. ``a`` / ``b``: at most 18 bits,
    extended to 18 by their own signedness (``signed_`` must hold when either is signed,
    and then an unsigned operand must have at most 17 bits). The registers reset (RST0)
    with the domain, synchronously, as Amaranth's ``sync`` registers do.

    Why: Yosys maps ``$mul`` to MULT18X18D without its registers, so a registered product
    is a register, a route to the DSP column, the 3-4 ns multiply and a route back; with
    122 of the ECP5-85's 156 DSPs used, the placer puts a DSP up to 100 columns from its
    logic, and that path (4.4 + 3.1 + 4.7 ns) was the engine's 79.7 MHz path at speed 8.
    With the DSP's own registers each route ends or starts at a DSP register."""
    A, B = Signal(18, name=f"{name}_a"), Signal(18, name=f"{name}_b")
    P = Signal(36, name=f"{name}_p")
    m.d.comb += [A.eq(a), B.eq(b)]
    ports = {f"i_A{i}": A[i] for i in range(18)}
    ports.update({f"i_B{i}": B[i] for i in range(18)})
    ports.update({f"i_C{i}": Const(0, 1) for i in range(18)})
    ports.update({f"o_P{i}": P[i] for i in range(36)})
    m.submodules[name] = Instance(
        "MULT18X18D",
        p_REG_INPUTA_CLK="CLK0", p_REG_INPUTA_CE="CE0", p_REG_INPUTA_RST="RST0",
        p_REG_INPUTB_CLK="CLK0", p_REG_INPUTB_CE="CE0", p_REG_INPUTB_RST="RST0",
        p_REG_OUTPUT_CLK="CLK0", p_REG_OUTPUT_CE="CE0", p_REG_OUTPUT_RST="RST0",
        p_GSR="DISABLED", p_RESETMODE="SYNC", p_SOURCEB_MODE="B_SHIFT", p_MULT_BYPASS="DISABLED",
        i_SIGNEDA=Const(int(signed_), 1), i_SIGNEDB=Const(int(signed_), 1),
        i_SOURCEA=Const(0, 1), i_SOURCEB=Const(0, 1),
        i_CLK0=ClockSignal(), i_CE0=Const(1, 1), i_RST0=ResetSignal(),
        **ports)
    return P.as_signed() if signed_ else P


def _terms(a, b, width):
    a, b = Value.cast(a), Value.cast(b)
    if width is not None:
        a, b = a[:width], b[:width]
    if len(b) > len(a):          # fewer partial products: one per bit of the narrower operand
        a, b = b, a
    n = len(b)
    terms = []
    for i in range(n):
        term = Mux(b[i], a << i, 0)
        if b.shape().signed and i == n - 1:     # a two's-complement top bit weighs -2^(n-1)
            term = -term
        terms.append(term[:width] if width is not None else term)
    return terms


def _level(terms, width):
    nxt = []
    for k in range(0, len(terms) - 1, 2):
        s = terms[k] + terms[k + 1]
        nxt.append(s[:width] if width is not None else s)
    if len(terms) % 2:
        nxt.append(terms[-1])
    return nxt


def lut_mul(a, b, width: int | None = None) -> Value:
    terms = _terms(a, b, width)
    if not terms:
        return Value.cast(0)
    total = _sum(terms, width)
    return total[:width] if width is not None else total


def lut_mul_pipe(m, a, b, width: int | None = None, name: str = "pmul") -> tuple[Value, int]:
    """``lut_mul(a, b, width)`` with a register after every adder level of the tree
    (``ceil(log2 n)`` levels, at least 1): returns ``(product, latency)``; the product is
    that of the operands of ``latency`` cycles before."""
    terms = _terms(a, b, width)
    if not terms:
        return Value.cast(0), 0
    latency = 0
    while True:
        regs = []
        for k, t in enumerate(terms if len(terms) == 1 else _level(terms, width)):
            r = Signal(t.shape(), name=f"{name}_l{latency}_{k}")
            m.d.sync += r.eq(t)
            regs.append(r)
        terms, latency = regs, latency + 1
        if len(terms) == 1:
            break
    out = terms[0]
    return (out[:width] if width is not None else out), latency


def settled_mul(m, a, b, width: int | None = None, name: str = "smul", *, key=None) -> tuple[Value, Value]:
    """:func:`lut_mul_pipe` of operands that a controller holds still until the product is
    there: returns ``(product, ok)``; ``ok`` is high only while ``product ==
    lut_mul(a, b, width)`` of the current ``a`` and ``b``. One such multiplier can serve
    several FSM states, each putting its operands on ``a``/``b`` and waiting for ``ok`` (a
    few cycles) before using the product.

    Without ``key``, ``ok`` compares the operands with those of the cycle before (they have
    not changed for the pipeline's latency): exact for any controller, but the operand
    muxes then run through a wide compare into ``ok`` and on into whatever acts on it.
    With ``key`` (a small signal: which site drives the operands), ``ok`` waits until
    ``key`` has not changed for the latency plus one cycle, and compares only ``key``. The
    caller guarantees that the operands are a function of ``key`` and of registers that
    do not change while ``key`` stays the same, except registers loaded in the cycle
    ``key`` changed (their registered derivatives, one cycle late, are allowed: hence
    the extra cycle). A site that changes its operands while it stays must change
    ``key``.

    The operands are registered before the multiplier (one cycle more latency): the sites'
    operand muxes (state decode, segment kind) chained into the first adder level of the
    product were the KV unit's 81 MHz path."""
    a_in = Signal.like(Value.cast(a), name=f"{name}_a_in")
    b_in = Signal.like(Value.cast(b), name=f"{name}_b_in")
    m.d.sync += [a_in.eq(a), b_in.eq(b)]
    p, lat = lut_mul_pipe(m, a_in, b_in, width, name)
    lat += 1
    same = Signal(name=f"{name}_same")
    if key is None:
        m.d.comb += same.eq((a_in == a) & (b_in == b))   # the input registers: last cycle's
        need = lat - 1
    else:
        k_prev = Signal.like(Value.cast(key), name=f"{name}_key_prev")
        m.d.sync += k_prev.eq(key)
        m.d.comb += same.eq(k_prev == key)
        need = lat
    cnt = Signal(range(need + 2), name=f"{name}_cnt")
    m.d.sync += cnt.eq(Mux(same, Mux(cnt >= need, need, cnt + 1), 0))
    ok = Signal(name=f"{name}_ok")
    m.d.comb += ok.eq(same & (cnt >= need))
    return p, ok


def registered_product(m: Module, a, b, *, platform, name: str) -> Signal:
    """``a * b`` as a two-stage pipeline: the operands registered, then their product
    registered; returns the product of the operands of two cycles before (full width:
    ``len(a) + len(b)`` bits, signed if either is). Nothing but the multiplier lies between
    the two registers. ``a`` and ``b`` must fit one MULT18X18D: at most 18 bits each, an
    unsigned one at most 17 bits when the other is signed. On an ECP5 platform
    (:func:`ecp5_dsp`) the registers are the DSP's own (:func:`mult18x18d`); elsewhere plain
    registers and ``*``. Free-running: call it outside any ``m.If`` (no clock enable)."""
    a, b = Value.cast(a), Value.cast(b)
    sa, sb = a.shape().signed, b.shape().signed
    signed_ = sa or sb
    if len(a) > 18 or len(b) > 18 or (signed_ and ((not sa and len(a) > 17) or (not sb and len(b) > 17))):
        raise ValueError(f"{name}: a {a.shape()} x {b.shape()} product does not fit one MULT18X18D")
    width = len(a) + len(b)
    out = Signal(signed(width) if signed_ else width, name=name)
    if ecp5_dsp(platform):
        m.d.comb += out.eq(mult18x18d(m, a, b, signed_=signed_, name=f"{name}_dsp"))
    else:
        ra, rb = Signal(a.shape(), name=f"{name}_ra"), Signal(b.shape(), name=f"{name}_rb")
        m.d.sync += [ra.eq(a), rb.eq(b), out.eq(ra * rb)]
    return out


def _chunks(v, size: int):
    """``v`` as ``[(chunk, offset)]`` of ``size``-bit unsigned pieces; a signed ``v``'s top
    piece is signed and up to ``size + 1`` bits (it carries the sign)."""
    v = Value.cast(v)
    w, signed_ = len(v), v.shape().signed
    n = max(1, -(-(w - 1) // size) if signed_ else -(-w // size))
    out = []
    for i in range(n):
        lo = i * size
        piece = v[lo:] if i == n - 1 else v[lo:lo + size]
        out.append((piece.as_signed() if signed_ and i == n - 1 else piece, lo))
    return out


class Pipe:
    """Stage bookkeeping for a fully pipelined unit: every value made by :meth:`reg` knows its
    stage (cycles after the unit's input), :meth:`at` delays it to a later stage, and
    :meth:`mul` is a registered, split product (see its docstring)."""

    def __init__(self, m: Module, prefix: str = "", *, platform=None):
        self.m, self.prefix, self._st, self.platform = m, prefix, {}, platform

    def reg(self, value, k: int, name: str, shape=None) -> Signal:
        """``value`` (combinational in stage ``k``'s values) registered: stage ``k + 1``."""
        s = Signal(shape if shape is not None else Value.cast(value).shape(), name=self.prefix + name)
        self.m.d.sync += s.eq(value)
        self._st[id(s)] = (s, k + 1, {k + 1: s})
        return s

    def _track(self, value, k: int, name: str, shape) -> Signal:
        """``value`` (already a stage-``k`` value, e.g. a DSP's registered output) as a
        tracked stage-``k`` signal (a wire, no register)."""
        s = Signal(shape, name=self.prefix + name)
        self.m.d.comb += s.eq(value)
        self._st[id(s)] = (s, k, {k: s})
        return s

    def stage(self, s) -> int:
        return self._st[id(s)][1]

    def at(self, s, k: int):
        """``s`` delayed to stage ``k`` (shift registers made once, shared)."""
        sig, base, cache = self._st[id(s)]
        assert k >= base, (sig.name, k, base)
        for j in range(base + 1, k + 1):
            if j not in cache:
                d = Signal.like(sig, name=f"{sig.name}_p{j}")
                self.m.d.sync += d.eq(cache[j - 1])
                cache[j] = d
        return cache[k]

    def mul(self, a, b, k: int, name: str, shape, lut_bits: int = 0):
        """``a * b`` (stage-``k`` values) as a registered pipeline: returns ``(product, stage)``.

        The operands are cut into pieces that each fit a MULT18X18D (18 x 18 bits unsigned,
        17-bit unsigned pieces and an 18-bit signed top piece when an operand is signed);
        a piece product whose narrower side has at most ``lut_bits`` bits is built from
        LUT rows instead of a DSP. When there is a DSP piece, the (non-constant) operands are
        registered first (one stage, nothing before the DSP in its cycle). The next stage
        registers each DSP product alone (nothing after the DSP in its cycle) and LUT rows
        summed 4 at a time; each further stage sums up to
        4 registered terms (two adder levels), until one term is left. Exact: the sum of the
        shifted piece products is ``a * b``. On an ECP5 platform (:func:`ecp5_dsp`) each DSP
        piece is a :func:`mult18x18d` whose own input and output registers are those two
        stages (same latency, same bits)."""
        a, b = Value.cast(a), Value.cast(b)
        mixed = a.shape().signed or b.shape().signed
        size = 17 if mixed else 18
        ca, cb = _chunks(a, size), _chunks(b, size)
        ca0, cb0 = ca, cb       # the stage-k pieces: a MULT18X18D's own input registers take these
        if any(min(len(pa), len(pb)) > lut_bits for pa, _ in ca for pb, _ in cb):
            # a DSP piece: the operands are registered first, so that the placer can put
            # registers next to the MULT18X18D on both sides (the DSP columns are few and
            # far from the logic that feeds them: source register -> route -> DSP -> route
            # -> register was 10 ns of routing alone in the whole engine)
            a = a if isinstance(a, Const) else self.reg(a, k, f"{name}_ia")
            b = b if isinstance(b, Const) else self.reg(b, k, f"{name}_ib")
            k += 1
            ca, cb = _chunks(a, size), _chunks(b, size)
        dsp_terms, rows = [], []
        for (pa, oa), (pa0, _) in zip(ca, ca0):
            for (pb, ob), (pb0, _) in zip(cb, cb0):
                na, nb = len(pa), len(pb)
                if min(na, nb) <= lut_bits:
                    rows += [r << (oa + ob) for r in _terms(pa, pb, None)]
                else:
                    dsp_terms.append((pa0, pb0, oa + ob))
        terms, j = [], 0
        for pa0, pb0, sh in dsp_terms:
            # the same two stages (operand pieces, product) as a registered_product of the
            # stage-k pieces: on an ECP5 the DSP's own registers
            p = registered_product(self.m, pa0, pb0, platform=self.platform, name=f"{self.prefix}{name}_dsp{j}")
            terms.append(self._track(p << sh, k + 1, f"{name}_d{j}", shape))
            j += 1
        for g in range(0, len(rows), 4):
            terms.append(self.reg(_sum(rows[g:g + 4]), k, f"{name}_l{j}", shape))
            j += 1
        k += 1
        level = 0
        while len(terms) > 1:
            terms = [self.reg(_sum(terms[g:g + 4]), k, f"{name}_s{level}_{g // 4}", shape)
                     for g in range(0, len(terms), 4)]
            k += 1
            level += 1
        return terms[0], k


def _sum(vals, width: int | None = None):
    """Balanced sum (``ceil(log2 n)`` adders deep), each sum truncated to ``width`` bits."""
    terms = list(vals)
    while len(terms) > 1:
        terms = _level(terms, width)
    return terms[0]
