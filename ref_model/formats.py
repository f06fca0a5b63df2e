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
