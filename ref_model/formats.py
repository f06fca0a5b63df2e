"""Number formats shared by the reference model, operand packing and tests.

One place per fact: the range, wrap-around, saturation and bit encoding of every
integer format that the hardware stores or computes with live here.

All functions work on integer torch tensors (``torch.int64``); values are plain
mathematical integers, and encodings are the unsigned bit patterns stored in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import ConfigError
from .fixedpoint import rshift_round

#: Widths the integer formats accept (2..16 for operands; accumulators up to 64).
MIN_BITS = 1
MAX_BITS = 64


@dataclass(frozen=True)
class IntFormat:
    """A two's-complement (``signed``) or unsigned integer of ``bits`` bits.

    Attributes
    ----------
    bits : int
        Width in bits, 1..64.
    signed : bool
        Two's complement when true, plain binary when false.
    """

    bits: int
    signed: bool = True

    def __post_init__(self):
        if not MIN_BITS <= self.bits <= MAX_BITS:
            raise ConfigError(f"integer format width {self.bits} is outside {MIN_BITS}..{MAX_BITS}")

    @property
    def min(self) -> int:
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def max(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    @property
    def name(self) -> str:
        return f"{'int' if self.signed else 'uint'}{self.bits}"

    def contains(self, x: torch.Tensor) -> bool:
        """True when every element of ``x`` is representable."""
        return bool(((x >= self.min) & (x <= self.max)).all())

    def wrap(self, x: torch.Tensor) -> torch.Tensor:
        """Reduce ``x`` modulo 2**bits into the format's range (what an adder does)."""
        x = x.to(torch.int64)
        if self.bits >= 64:
            return x  # int64 arithmetic already wraps at 64 bits
        mask = (1 << self.bits) - 1
        u = x & mask
        if self.signed:
            u = torch.where(u > self.max, u - (1 << self.bits), u)
        return u

    def saturate(self, x: torch.Tensor) -> torch.Tensor:
        """Clamp ``x`` into the format's range."""
        return x.to(torch.int64).clamp(self.min, self.max)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Bit pattern of each (in-range) value, as a non-negative int64."""
        if not self.contains(x):
            raise ValueError(f"values outside {self.name} range [{self.min}, {self.max}]")
        if self.bits >= 64:
            raise ValueError("encode supports widths below 64 bits")
        return x.to(torch.int64) & ((1 << self.bits) - 1)

    def decode(self, u: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`encode`: the value of each bit pattern."""
        return self.wrap(u.to(torch.int64))

    def random(self, shape, generator: torch.Generator) -> torch.Tensor:
        """Uniform random values over the whole range."""
        return torch.randint(self.min, self.max + 1, shape, generator=generator, dtype=torch.int64)

    def extremes(self) -> list[int]:
        """Edge values worth testing: min, max and their neighbours, zero, +-1."""
        vals = {self.min, self.max, 0, self.min + 1, self.max - 1}
        if self.signed:
            vals |= {1, -1}
        return sorted(v for v in vals if self.min <= v <= self.max)


def product_format(a: IntFormat, b: IntFormat) -> IntFormat:
    """Smallest format that holds every product of an ``a`` value and a ``b`` value."""
    # n + m bits always suffice: unsigned x unsigned < 2^(n+m); signed x unsigned lies in
    # [-2^(n-1)(2^m-1), (2^(n-1)-1)(2^m-1)]; signed x signed peaks at the
    # -2^(n-1) * -2^(m-1) = 2^(n+m-2) corner.
    return IntFormat(a.bits + b.bits, signed=a.signed or b.signed)


# ------------------------------------------------------------- group scales ----------
#: Width of a group scale as stored in memory: an IEEE-754 binary16 bit pattern.
SCALE_BITS = 16
#: Width of the signed mantissa :func:`f16_decode` yields (implicit one restored, sign applied).
SCALE_MANT_BITS = 12


def f16_decode(bits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """IEEE half bit patterns to ``(mant, exp)`` with value ``mant * 2**exp``.

    The one scale format of the hardware: group scales of the bit-serial, LUT and decode
    matvec units are stored as f16 patterns and decoded by this rule. Bits: in uint16
    patterns (finite values; the host rejects inf/NaN). Out ``mant`` signed 12-bit
    (|mant| <= 2047, implicit one restored, subnormals kept), ``exp`` signed in -24..5.
    Exact (no rounding).
    """
    bits = bits.to(torch.int64)
    e = (bits >> 10) & 31
    f = bits & 1023
    mant = torch.where(e == 0, f, f | 1024)
    mant = torch.where((bits >> 15) & 1 == 1, -mant, mant)
    return mant, torch.where(e == 0, torch.ones_like(e), e) - 25


def f16_encode(x: torch.Tensor) -> torch.Tensor:
    """Float values to IEEE half bit patterns (int64, 0..65535), round to nearest even.
    Raises ValueError for values that are not finite in f16 (a scale must be)."""
    h = x.to(torch.float16)
    if not torch.isfinite(h).all():
        raise ValueError("scale outside the finite f16 range (|x| <= 65504)")
    return h.view(torch.int16).to(torch.int64) & 0xFFFF


def group_rescale(partial: torch.Tensor, scale_bits: torch.Tensor, frac: int) -> torch.Tensor:
    """One group's contribution to a group-scaled dot product, in ``Q.frac``.

    ``partial`` is the exact integer sum over the group of ``activation * weight value``;
    ``scale_bits`` the group's f16 scale. The result is
    ``rshift_round(mant * partial, -(exp + frac))`` (:func:`ref_model.fixedpoint.rshift_round`) with ``(mant, exp) = f16_decode(scale)``:
    one ``12 x P``-bit product and a barrel shift with round half up (the dequantization
    step of the tensor cores; the matvec unit of the decode engine uses the same rule).
    """
    mant, exp = f16_decode(scale_bits)
    return rshift_round(mant * partial.to(torch.int64), -(exp + frac))
