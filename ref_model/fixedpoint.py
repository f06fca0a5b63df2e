"""Fixed-point function units: the bit-exact contract of the decode engine's math units.

Every function here works on ``torch.int64`` tensors holding plain integers and mirrors
one hardware unit. No floating point is used on the integer path; the tables are built
once from float math at import time (they are ROM contents, i.e. constants the hardware
generator will bake in) and are themselves integers.

Conventions
-----------
* ``Q.F`` means a two's-complement integer ``v`` that stands for ``v * 2**-F``.
* Rounding is **round half up** done as ``(x + 2**(s-1)) >> s`` with an arithmetic
  (floor) shift, exactly what an adder followed by a wire shift does. :func:`rshift_round`
  is the single implementation.
* "Mantissa/shift" results ``(m, s)`` stand for ``m * 2**-s``; ``m`` is normalized and
  ``s`` is a signed integer (a barrel shift in hardware).

Units and their measured/stated error bounds (tests in ``tests/model/test_fixedpoint.py``
sweep the whole input range and assert these bounds):

=================  ===================================  ==========================  ===============================
unit               in                                    out                         bound
=================  ===================================  ==========================  ===============================
rsqrt              uint, 1..2**62                        Q1.23 mant + shift           rel. err <= 2**-21
reciprocal         uint, 1..2**62                        Q1.23 mant + shift           rel. err <= 2**-21
exp_neg            Q.16 signed, <= 0 (int32)             Q0.16 unsigned (<= 65536)    abs. err <= 1 LSB (2**-16)
sincos             phase, uint32 turns (Q0.32)           Q1.16 signed, |v| <= 65536   abs. err <= 1 LSB (2**-16)
sigmoid            Q.16 signed (int32)                   Q0.16 unsigned (<= 65536)    abs. err <= 1 LSB (2**-16)
silu               Q.16 signed (int32)                   Q.16 signed (int32)          abs. err <= 2**-16 * (1 + |x|)
=================  ===================================  ==========================  ===============================
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "rshift_round", "bit_length", "normalize", "rsqrt", "reciprocal", "exp_neg", "sincos",
    "sigmoid", "silu", "rope_phase_constants", "rope_phase",
    "MANT_FRAC", "EXP_FRAC", "TRIG_FRAC", "SIG_FRAC", "IN_FRAC",
]

#: Fractional bits of rsqrt / reciprocal mantissas (Q1.23, value in [0.5, 1]).
MANT_FRAC = 23
#: Fractional bits of exp_neg outputs (Q0.16).
EXP_FRAC = 16
#: Fractional bits of sin / cos outputs (Q1.16).
TRIG_FRAC = 16
#: Fractional bits of sigmoid outputs (Q0.16).
SIG_FRAC = 16
#: Fractional bits of exp / sigmoid / silu inputs (Q.16).
IN_FRAC = 16
#: Fractional bits of internal table entries.
_TAB_FRAC = 24

_I64 = torch.int64


def _t(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        if x.dtype.is_floating_point:
            raise TypeError(f"fixed-point units take integer tensors, got {x.dtype}")
        return x.to(_I64)
    return torch.as_tensor(x, dtype=_I64)


_MAX_RSHIFT = 62


def rshift_round(x, s) -> torch.Tensor:
    """Shift right by ``s`` with round half up: ``(x + 2**(s-1)) >> s``; ``s <= 0`` shifts left.

    Bits: in int64 with ``|x| < 2**62``, out int64 (caller guarantees no overflow; a
    right shift by more than 62 gives 0, as the mathematical rounding does). ``s`` may be a
    Python int or an int64 tensor broadcast against ``x`` (a per-element barrel shift).
    """
    x = _t(x)
    # |x| < 2**62 is required anyway (the rounding half is added in int64); then any
    # shift beyond 62 rounds to 0, and clamping it keeps 1 << (s-1) from overflowing.
    if not isinstance(s, torch.Tensor):
        if s > 0:
            s = min(s, _MAX_RSHIFT)
            return (x + (1 << (s - 1))) >> s
        return x << (-s)
    s = s.to(_I64)
    pos = s.clamp(min=1, max=_MAX_RSHIFT)
    right = (x + (torch.ones_like(pos) << (pos - 1))) >> pos
    left = x << (-s).clamp(min=0)
    return torch.where(s > 0, right, left)


def bit_length(x) -> torch.Tensor:
    """Number of bits of each non-negative value (0 for 0); a priority encoder.

    Bits: in uint up to 63 bits, out 0..63.
    """
    x = _t(x)
    if (x < 0).any():
        raise ValueError("bit_length takes non-negative values")
    n = torch.zeros_like(x)
    v = x.clone()
    for step in (32, 16, 8, 4, 2, 1):
        big = v >= (1 << step)
        n = n + big.to(_I64) * step
        v = torch.where(big, v >> step, v)
    return n + (v > 0).to(_I64)


def normalize(x, bits: int, even: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Leading-one normalization: ``x = xn * 2**e`` (up to truncation) with ``xn`` in
    ``[2**(bits-1), 2**bits)`` (or ``[2**(bits-2), 2**bits)`` with an even ``e`` when
    ``even``). Right shifts truncate (drop low bits, as a wire shift does).

    Bits: in uint 1..2**62, out ``xn`` uint ``bits`` wide and shift ``e`` signed.
    """
    x = _t(x)
    if (x <= 0).any():
        raise ValueError("normalize takes positive values")
    e = bit_length(x) - bits
    if even:
        e = e + (e & 1)  # round the exponent up to even: xn keeps bits-1 or bits bits
    xn = torch.where(e >= 0, x >> e.clamp(min=0), x << (-e).clamp(min=0))
    return xn, e


# --------------------------------------------------------------------------- rsqrt ---
_RSQ_IDX = 6  # table step 2**-6 over m in [1, 4): 192 segments
_RSQ_TAB = torch.tensor(
    [round((1 + i / (1 << _RSQ_IDX)) ** -0.5 * (1 << _TAB_FRAC)) for i in range(3 * (1 << _RSQ_IDX) + 1)],
    dtype=_I64)


def rsqrt(x) -> tuple[torch.Tensor, torch.Tensor]:
    """``1/sqrt(x)`` as ``(m, s)`` with ``1/sqrt(x) ~= m * 2**-s``.

    Bits: in uint 1..2**62 (a sum of squares). Out ``m`` is Q1.23 in ``[2**22, 2**23]``
    (value 0.5..1), ``s`` a signed shift. Method: normalize to ``xn`` in ``[2**22, 2**24)``
    with an even shift (24 bits kept, rest truncated), 193-entry table of ``m**-0.5`` in
    Q0.24 with linear interpolation on the 16 low bits, then one Newton step
    ``y*(3 - m*y*y)/2`` with round-half-up shifts. Relative error <= 2**-21 over the
    whole range (measured 2**-21.8).
    """
    xn, e = normalize(x, 24, even=True)  # xn = m * 2**22, m in [1, 4)
    off = xn - (1 << 22)
    lo_bits = 22 - _RSQ_IDX
    idx = off >> lo_bits
    frac = off & ((1 << lo_bits) - 1)
    a, b = _RSQ_TAB[idx], _RSQ_TAB[idx + 1]
    y = a + rshift_round((b - a) * frac, lo_bits)  # Q0.24
    y = rshift_round(y, _TAB_FRAC - MANT_FRAC)  # Q.23
    # Newton: y' = y * (3 - m*y^2) / 2 ; m = xn * 2**-22
    y2 = rshift_round(y * y, MANT_FRAC)  # Q.23
    my2 = rshift_round(xn * y2, 22)  # Q.23
    y = rshift_round(y * ((3 << MANT_FRAC) - my2), MANT_FRAC + 1)
    y = y.clamp(1 << (MANT_FRAC - 1), 1 << MANT_FRAC)
    # 1/sqrt(x) = 1/sqrt(m * 2**(22 + e)) = y * 2**-23 * 2**(-11 - e/2)
    return y, MANT_FRAC + 11 + (e >> 1)


# ---------------------------------------------------------------------- reciprocal ---
_REC_IDX = 6
_REC_TAB = torch.tensor(
    [round(1 / (1 + i / (1 << _REC_IDX)) * (1 << _TAB_FRAC)) for i in range((1 << _REC_IDX) + 1)],
    dtype=_I64)


def reciprocal(x) -> tuple[torch.Tensor, torch.Tensor]:
    """``1/x`` as ``(m, s)`` with ``1/x ~= m * 2**-s``.

    Bits: in uint 1..2**62. Out ``m`` Q1.23 in ``[2**22, 2**23]`` (value 0.5..1), ``s`` a
    signed shift. Method: normalize to ``xn`` in ``[2**23, 2**24)`` (24 bits kept, rest
    truncated), 65-entry table of ``1/m`` in Q0.24 with linear interpolation on the 17
    low bits, one Newton step ``y*(2 - m*y)``, round-half-up shifts. Relative error
    <= 2**-21 over the whole range (measured 2**-22.0).
    """
    xn, e = normalize(x, 24)  # xn = m * 2**23, m in [1, 2)
    off = xn - (1 << 23)
    lo_bits = 23 - _REC_IDX
    idx = off >> lo_bits
    frac = off & ((1 << lo_bits) - 1)
    a, b = _REC_TAB[idx], _REC_TAB[idx + 1]
    y = a + rshift_round((b - a) * frac, lo_bits)
    y = rshift_round(y, _TAB_FRAC - MANT_FRAC)  # Q.23
    my = rshift_round(xn * y, 23)  # Q.23, ~1.0
    y = rshift_round(y * ((2 << MANT_FRAC) - my), MANT_FRAC)
    y = y.clamp(1 << (MANT_FRAC - 1), 1 << MANT_FRAC)
    # 1/x = 1/(m * 2**(23 + e)) = y * 2**-23 * 2**(-23 - e)
    return y, MANT_FRAC + 23 + e


# ------------------------------------------------------------------------------ exp ---
_EXP_IDX = 8
_EXP_TAB = torch.tensor(
    [round(2.0 ** (-i / (1 << _EXP_IDX)) * (1 << _TAB_FRAC)) for i in range((1 << _EXP_IDX) + 1)],
    dtype=_I64)
#: log2(e) in Q2.30.
_LOG2E_Q30 = round(math.log2(math.e) * (1 << 30))


def exp_neg(x) -> torch.Tensor:
    """``exp(x)`` for ``x <= 0``.

    Bits: in Q.16 signed int32, must be ``<= 0``. Out Q0.16 unsigned in ``[0, 65536]``.
    Method: ``t = x*log2(e)`` (constant Q2.30, product rounded to Q.24), split ``-t``
    into integer ``n`` and 24-bit fraction ``f``; ``2**-f`` from a 257-entry Q0.24 table
    with linear interpolation on the 16 low bits of ``f``; shift right by ``n`` with
    rounding into Q0.16. Absolute error <= 1 LSB (2**-16) over the whole input range.
    """
    x = _t(x)
    if (x > 0).any():
        raise ValueError("exp_neg takes x <= 0")
    t = rshift_round(-x * _LOG2E_Q30, 30 + IN_FRAC - 24)  # -x*log2(e) in Q.24, >= 0
    n = t >> 24
    f = t & ((1 << 24) - 1)
    lo_bits = 24 - _EXP_IDX
    idx = f >> lo_bits
    fr = f & ((1 << lo_bits) - 1)
    a, b = _EXP_TAB[idx], _EXP_TAB[idx + 1]
    y = a + rshift_round((b - a) * fr, lo_bits)  # 2**-f in Q0.24, (0.5, 1]
    sh = (n + _TAB_FRAC - EXP_FRAC).clamp(max=62)
    return rshift_round(y, sh)


# -------------------------------------------------------------------------- sin/cos ---
_TRIG_IDX = 8  # quarter wave in 256 segments
_SIN_TAB = torch.tensor(
    [round(math.sin(math.pi / 2 * i / (1 << _TRIG_IDX)) * (1 << _TAB_FRAC)) for i in range((1 << _TRIG_IDX) + 1)],
    dtype=_I64)


def _quarter_sin(p) -> torch.Tensor:
    """sin(pi/2 * p / 2**30) for p in [0, 2**30] (Q0.24 out), table + interpolation."""
    lo_bits = 30 - _TRIG_IDX
    idx = p >> lo_bits
    fr = p & ((1 << lo_bits) - 1)
    a = _SIN_TAB[idx.clamp(max=1 << _TRIG_IDX)]
    b = _SIN_TAB[(idx + 1).clamp(max=1 << _TRIG_IDX)]
    return a + rshift_round((b - a) * fr, lo_bits)


def sincos(phase) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cos, sin)`` of ``2*pi*phase/2**32``.

    Bits: in uint32 phase in turns (Q0.32; callers wrap it modulo 2**32, which is free
    in hardware). Out Q1.16 signed, in ``[-65536, 65536]`` (18-bit). Method: quadrant
    from the 2 top bits, quarter-wave table (257 entries, Q0.24) indexed by the next 8
    bits with linear interpolation on the low 22 bits, rounded to Q1.16.
    Absolute error <= 1 LSB (2**-16).
    """
    p = _t(phase)
    if ((p < 0) | (p >= (1 << 32))).any():
        raise ValueError("phase must be uint32")
    quad = p >> 30
    r = p & ((1 << 30) - 1)
    s_q = _quarter_sin(r)
    c_q = _quarter_sin((1 << 30) - r)
    # quadrant q: angle = q*pi/2 + a; sin = [s, c, -s, -c][q], cos = [c, -s, -c, s][q]
    sin = torch.where(quad == 0, s_q, torch.where(quad == 1, c_q, torch.where(quad == 2, -s_q, -c_q)))
    cos = torch.where(quad == 0, c_q, torch.where(quad == 1, -s_q, torch.where(quad == 2, -c_q, s_q)))
    sh = _TAB_FRAC - TRIG_FRAC
    return rshift_round(cos, sh), rshift_round(sin, sh)


def rope_phase_constants(head_dim: int, base: float, frac: int = 48) -> torch.Tensor:
    """Host-side constants: per rotated pair ``i``, ``base**(-2i/head_dim) / (2*pi)`` turns
    per position in Q0.``frac`` (default Q0.48). This is the only float step of RoPE; the
    result is a ROM of ``head_dim/2`` unsigned integers."""
    return torch.tensor(
        [round(base ** (-2 * i / head_dim) / (2 * math.pi) * (1 << frac)) for i in range(head_dim // 2)],
        dtype=_I64)


def rope_phase(pos: int, consts: torch.Tensor, frac: int = 48) -> torch.Tensor:
    """Phase of each rotated pair at position ``pos``: ``(pos * c) >> (frac - 32)`` modulo
    2**32 (uint32 turns, truncating shift). Bits: ``pos`` uint up to 14 bits, constants
    Q0.48; the product fits 62 bits. Angle error <= pos * 2**-49 turns + 2**-32 turns."""
    if pos < 0 or pos >= (1 << 14):
        raise ValueError("position must be in 0..16383")
    return ((pos * consts) >> (frac - 32)) & ((1 << 32) - 1)


# -------------------------------------------------------------------- sigmoid / silu ---
_SIG_IDX = 6  # table step 2**-6 over [0, 16): 1024 segments
_SIG_RANGE = 16
_SIG_TAB = torch.tensor(
    [round(1 / (1 + math.exp(-i / (1 << _SIG_IDX))) * (1 << _TAB_FRAC))
     for i in range(_SIG_RANGE * (1 << _SIG_IDX) + 1)],
    dtype=_I64)


def sigmoid(x) -> torch.Tensor:
    """Logistic function.

    Bits: in Q.16 signed int32. Out Q0.16 unsigned in ``[0, 65536]``. Method: on ``|x|``,
    a 1025-entry Q0.24 table over ``[0, 16]`` (step 1/64) with linear interpolation on
    the 10 low bits; ``|x| >= 16`` gives 1.0; negative inputs use ``1 - sigmoid(|x|)``.
    Absolute error <= 1 LSB (2**-16).
    """
    x = _t(x)
    ax = x.abs()
    lo_bits = IN_FRAC - _SIG_IDX
    last = _SIG_RANGE << _SIG_IDX
    idx = (ax >> lo_bits).clamp(max=last)
    fr = torch.where(idx >= last, torch.zeros_like(ax), ax & ((1 << lo_bits) - 1))
    a = _SIG_TAB[idx]
    b = _SIG_TAB[(idx + 1).clamp(max=last)]
    y = a + rshift_round((b - a) * fr, lo_bits)  # Q0.24
    y = torch.where(x < 0, (1 << _TAB_FRAC) - y, y)
    return rshift_round(y, _TAB_FRAC - SIG_FRAC)


def silu(x) -> torch.Tensor:
    """``x * sigmoid(x)``.

    Bits: in Q.16 signed int32. Out Q.16 signed int32: ``(x * sigmoid(x) + 2**15) >> 16``
    (48-bit product). Absolute error <= 2**-16 * (1 + |x|) (sigmoid's LSB scaled by
    ``|x|`` plus the output rounding).
    """
    x = _t(x)
    return rshift_round(x * sigmoid(x), SIG_FRAC)


def rom_tables() -> dict[str, list[int]]:
    """The ROM contents of the function units (the generator bakes them into ``hw``):
    ``rsqrt`` (193 x Q0.24), ``reciprocal`` (65), ``exp2`` (257), ``sin`` (257 quarter
    wave), ``sigmoid`` (1025)."""
    return {"rsqrt": _RSQ_TAB.tolist(), "reciprocal": _REC_TAB.tolist(), "exp2": _EXP_TAB.tolist(),
            "sin": _SIN_TAB.tolist(), "sigmoid": _SIG_TAB.tolist(), "log2e_q30": [_LOG2E_Q30]}
