"""Products built from LUTs and carry chains instead of a DSP block.

The decode engine's address and count products (token x row bytes, heads x head_dim, ...)
are used once per command, yet each ``*`` takes a whole MULT18X18D on ECP5, the part's
scarcest resource (156 on an ECP5-85). :func:`lut_mul` writes the same exact product as a
sum of shifted partial products, which Yosys maps to LUTs (its ``mul2dsp`` pass only sees
``$mul`` cells). Numerics: exact, ``a*b`` with Amaranth's signedness rules; ``width``
keeps the low ``width`` bits only (the operands are truncated first: the low bits of a
product depend only on the low bits of its operands). Combinational, no latency.
"""

from amaranth.hdl import Mux, Value


def lut_mul(a, b, width: int | None = None) -> Value:
    a, b = Value.cast(a), Value.cast(b)
    if width is not None:
        a, b = a[:width], b[:width]
    if len(b) > len(a):          # fewer partial products: one per bit of the narrower operand
        a, b = b, a
    n = len(b)
    total = None
    for i in range(n):
        term = Mux(b[i], a << i, 0)
        if b.shape().signed and i == n - 1:     # a two's-complement top bit weighs -2^(n-1)
            term = -term
        total = term if total is None else total + term
    if total is None:
        total = Value.cast(0)
    return total[:width] if width is not None else total
