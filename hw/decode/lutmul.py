"""Products built from LUTs and carry chains instead of a DSP block.

The decode engine's address and count products (token x row bytes, heads x head_dim, ...)
are used once per command, yet each ``*`` takes a whole MULT18X18D on ECP5, the part's
scarcest resource (156 on an ECP5-85). :func:`lut_mul` writes the same exact product as a
sum of shifted partial products, which Yosys maps to LUTs (its ``mul2dsp`` pass only sees
``$mul`` cells). Numerics: exact, ``a*b`` with Amaranth's signedness rules; ``width``
keeps the low ``width`` bits only (the operands are truncated first: the low bits of a
product depend only on the low bits of its operands). Combinational, no latency.

The partial products are summed as a balanced tree (``ceil(log2 n)`` adders deep, not a
chain of ``n``): a chain of 16 carry-chain adders was a 40 ns path on ECP5.
:func:`lut_mul_pipe` is the same product with a register after every adder level, for
products of operands that stay put for a few cycles (command fields): its result is
right ``latency`` cycles after the operands settle.
"""

from amaranth.hdl import Mux, Signal, Value


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
    while len(terms) > 1:
        terms = _level(terms, width)
    return terms[0][:width] if width is not None else terms[0]


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


def settled_mul(m, a, b, width: int | None = None, name: str = "smul") -> tuple[Value, Value]:
    """:func:`lut_mul_pipe` of operands that a controller holds still until the product is
    there: returns ``(product, ok)``; ``ok`` is high while ``product == lut_mul(a, b, width)``
    of the current ``a`` and ``b`` (they have not changed for the pipeline's latency).
    One such multiplier can serve several FSM states, each putting its operands on
    ``a``/``b`` and waiting for ``ok`` (a few cycles) before using the product."""
    p, lat = lut_mul_pipe(m, a, b, width, name)
    a_prev, b_prev = Signal.like(Value.cast(a), name=f"{name}_a_prev"), Signal.like(Value.cast(b), name=f"{name}_b_prev")
    m.d.sync += [a_prev.eq(a), b_prev.eq(b)]
    same = Signal(name=f"{name}_same")
    m.d.comb += same.eq((a_prev == a) & (b_prev == b))
    cnt = Signal(range(lat + 1), name=f"{name}_cnt")
    m.d.sync += cnt.eq(Mux(same, Mux(cnt == lat, lat, cnt + 1), 0))
    ok = Signal(name=f"{name}_ok")
    m.d.comb += ok.eq(same & (cnt >= lat - 1))
    return p, ok
