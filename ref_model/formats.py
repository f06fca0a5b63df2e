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


# ------------------------------------------------------- low-bit weight data types ----------
# The unified weight representation of the bit-serial core (BitMoD): every data type's
# values are signed integers on one grid; a weight is stored as a sign bit and a
# ``planes``-bit magnitude, and the core processes one magnitude bit-plane per cycle.
# The group's real scale is ``f16(scale) * 2**-grid_shift``; the grid shift of the float
# types is folded into the f16 scale by the quantizer, so the hardware only ever sees the
# integers and one f16 scale per group (:func:`group_rescale`).

#: Group sizes the low-bit quantizers and cores use.
GROUP_SIZES = (32, 64, 128)


@dataclass(frozen=True)
class WeightType:
    """One weight data type on the integer grid.

    Attributes
    ----------
    name : str
        ``int4``, ``int4a`` (asymmetric), ``ternary``, ``fp4+5`` ...
    bits : int
        Width of the stored code (what the type costs per weight in a code book format).
    values : tuple[int, ...]
        The integer values a code may take, for symmetric types (asymmetric INT: empty).
    asymmetric : bool
        INT-n with an integer zero point per group: value ``q - z``, ``q`` in 0..2**n-1.
    """

    name: str
    bits: int
    values: tuple[int, ...] = ()
    asymmetric: bool = False

    @property
    def max_abs(self) -> int:
        return (1 << self.bits) - 1 if self.asymmetric else max(abs(v) for v in self.values)

    @property
    def planes(self) -> int:
        """Magnitude bit-planes a value of this type needs (cycles per weight in the core)."""
        return max(1, self.max_abs.bit_length())


def _sym(n: int) -> tuple[int, ...]:
    q = (1 << (n - 1)) - 1
    return tuple(range(-q, q + 1))


def _signed(mags) -> tuple[int, ...]:
    return tuple(sorted({s * m for m in mags for s in (1, -1)}))


#: E2M1 (FP4) magnitudes {0, .5, 1, 1.5, 2, 3, 4, 6} times 2 (grid shift 1), and E2M0-style
#: FP3 magnitudes {0, 1, 2, 4}. Sign-magnitude codes hold -0 twice; BitMoD re-assigns that
#: code to one extra value per group (the ``+x``/``-x`` variants below), chosen per group
#: with the type. Specials stay inside the type's magnitude planes (FP4: <= 15, FP3: <= 7).
_FP4 = (0, 1, 2, 3, 4, 6, 8, 12)
_FP3 = (0, 1, 2, 4)
FP4_SPECIALS = (5, -5, 10, -10)
FP3_SPECIALS = (3, -3, 6, -6)


def weight_type(name: str) -> WeightType:
    """The data type called ``name``: ``intN`` (N = 2..8, symmetric), ``intNa`` (asymmetric,
    integer zero point), ``ternary``, ``fp4``/``fp3`` and their special-value variants
    ``fp4+5``, ``fp4-5``, ``fp4+10``, ``fp4-10``, ``fp3+3``, ``fp3-3``, ``fp3+6``, ``fp3-6``."""
    if name == "ternary":
        return WeightType(name, 2, (-1, 0, 1))
    if name.startswith("int"):
        body = name[3:]
        asym = body.endswith("a")
        digits = body[:-1] if asym else body
        if digits.isdigit() and 2 <= int(digits) <= 8:
            n = int(digits)
            return WeightType(name, n, () if asym else _sym(n), asym)
    for base, mags, specials, bits in (("fp4", _FP4, FP4_SPECIALS, 4), ("fp3", _FP3, FP3_SPECIALS, 3)):
        if name == base:
            return WeightType(name, bits, _signed(mags))
        if name.startswith(base) and name[len(base):].lstrip("+-").isdigit():
            special = int(name[len(base):])
            if special in specials:
                return WeightType(name, bits, tuple(sorted(set(_signed(mags)) | {special})))
    raise ConfigError(f"weight data type {name!r} unknown; allowed: int2..int8, int2a..int8a, ternary, "
                      f"fp4, fp4{{+5,-5,+10,-10}}, fp3, fp3{{+3,-3,+6,-6}}")


#: Data-type sets of the quantizer (``name -> type names``): the BitMoD mixtures and the
#: INT-only baselines at the same code width.
TYPE_SETS = {
    "int4": ("int4",),
    "int4a": ("int4a",),
    "int4+fp4": ("int4", "fp4+5", "fp4-5", "fp4+10", "fp4-10"),
    "int3": ("int3",),
    "int3a": ("int3a",),
    "int3+fp3": ("int3", "fp3+3", "fp3-3", "fp3+6", "fp3-6"),
    "int2a": ("int2a",),
    "ternary": ("ternary",),
    "int8": ("int8",),
}


@dataclass(frozen=True)
class GroupQuantized:
    """A K x N weight matrix quantized in groups of ``group_size`` along K.

    ``values``: (K, N) int64 integers on the common grid (what the core multiplies);
    ``scale_bits``: (ceil(K/G), N) f16 bit patterns; ``type_ids``: (ceil(K/G), N) index
    into ``types`` chosen per group; ``zero_points``: (ceil(K/G), N) (0 for symmetric
    types); ``planes``: magnitude bit-planes the core runs (max over ``types``).
    Real weight ~= f16(scale) * value.
    """

    values: torch.Tensor
    scale_bits: torch.Tensor
    type_ids: torch.Tensor
    zero_points: torch.Tensor
    types: tuple[WeightType, ...]
    group_size: int

    @property
    def planes(self) -> int:
        return max(t.planes for t in self.types)

    def dequantize(self) -> torch.Tensor:
        """Float32 (K, N): value * f16 scale."""
        mant, exp = f16_decode(self.scale_bits)
        scale = (mant.to(torch.float64) * torch.pow(2.0, exp.to(torch.float64))).repeat_interleave(self.group_size, 0)
        return (self.values.to(torch.float64) * scale[: self.values.shape[0]]).to(torch.float32)

    def type_counts(self) -> dict[str, int]:
        counts = torch.bincount(self.type_ids.reshape(-1), minlength=len(self.types))
        return {t.name: int(c) for t, c in zip(self.types, counts)}


def _f16_value(bits: torch.Tensor) -> torch.Tensor:
    mant, exp = f16_decode(bits)
    return mant.to(torch.float64) * torch.pow(2.0, exp.to(torch.float64))


def _quantize_type(g: torch.Tensor, t: WeightType):
    """Groups ``g`` (groups, G) float64 to one type: (values, scale_bits, zero_points, sq error)."""
    if t.asymmetric:
        top = (1 << t.bits) - 1
        lo, hi = g.amin(-1).clamp(max=0), g.amax(-1).clamp(min=0)
        sb = f16_encode(((hi - lo) / top).clamp(min=2.0 ** -24))
        s = _f16_value(sb).unsqueeze(-1)
        z = torch.round(-lo.unsqueeze(-1) / s).clamp(0, top)
        q = torch.round(g / s + z).clamp(0, top)
        v = q - z
        zp = z.squeeze(-1)
    else:
        grid = torch.tensor(t.values, dtype=torch.float64)
        sb = f16_encode((g.abs().amax(-1) / t.max_abs).clamp(min=2.0 ** -24))
        s = _f16_value(sb).unsqueeze(-1)
        # nearest grid value (ties to the smaller magnitude: grid is sorted, argmin takes the first)
        idx = (g.unsqueeze(-1) / s.unsqueeze(-1) - grid).abs().argmin(-1)
        v = grid[idx]
        zp = torch.zeros(g.shape[0], dtype=torch.float64)
    err = ((g - v * s) ** 2).sum(-1)
    return v.to(torch.int64), sb, zp.to(torch.int64), err


def quantize_groups(w: torch.Tensor, group_size: int, types) -> GroupQuantized:
    """Quantize a float (K, N) matrix in groups of ``group_size`` consecutive k, per column,
    choosing for every group the data type of ``types`` (names or :class:`WeightType`) with
    the smallest squared error (BitMoD's fine-grained data-type adaptation).

    Scales are absmax / max|value| (asymmetric INT: (max - min) / (2**n - 1) and an integer
    zero point), rounded to f16 before the values are chosen, so the error is the error of
    what the hardware computes with. K is padded with zeros to a multiple of the group.
    """
    if group_size not in GROUP_SIZES:
        raise ConfigError(f"group_size={group_size}: allowed: {', '.join(map(str, GROUP_SIZES))}")
    types = tuple(weight_type(t) if isinstance(t, str) else t for t in types)
    if not types:
        raise ConfigError("quantize_groups: empty data-type set")
    k, n = w.shape
    kg = -(-k // group_size)
    wp = torch.zeros((kg * group_size, n), dtype=torch.float64)
    wp[:k] = w.to(torch.float64)
    g = wp.reshape(kg, group_size, n).permute(0, 2, 1).reshape(kg * n, group_size)
    best = None
    for i, t in enumerate(types):
        v, sb, zp, err = _quantize_type(g, t)
        if best is None:
            best = [v, sb, zp, err, torch.zeros_like(err, dtype=torch.int64)]
            continue
        better = err < best[3]
        best[0] = torch.where(better.unsqueeze(-1), v, best[0])
        best[1] = torch.where(better, sb, best[1])
        best[2] = torch.where(better, zp, best[2])
        best[3] = torch.where(better, err, best[3])
        best[4] = torch.where(better, torch.full_like(best[4], i), best[4])
    v, sb, zp, _, tid = best
    values = v.reshape(kg, n, group_size).permute(0, 2, 1).reshape(kg * group_size, n)[:k]
    return GroupQuantized(values.contiguous(), sb.reshape(kg, n), tid.reshape(kg, n), zp.reshape(kg, n),
                          types, group_size)


def relative_rms_error(w: torch.Tensor, wq: torch.Tensor) -> float:
    """||w - wq|| / ||w|| (Frobenius)."""
    w = w.to(torch.float64)
    return float(torch.linalg.vector_norm(w - wq.to(torch.float64)) / torch.linalg.vector_norm(w))


def sign_magnitude_planes(values: torch.Tensor, planes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The unified representation of integer weights: ``(sign, mag_planes)`` with
    ``sign`` (shape of ``values``) 1 for negative values and ``mag_planes[p]`` bit ``p`` of
    ``|value|`` (p = 0..planes-1). Raises ValueError when some ``|value| >= 2**planes``."""
    v = values.to(torch.int64)
    if bool((v.abs() >= (1 << planes)).any()):
        raise ValueError(f"weight values outside +-{(1 << planes) - 1} (sign + {planes} magnitude planes)")
    mag = v.abs()
    return (v < 0).to(torch.int64), torch.stack([(mag >> p) & 1 for p in range(planes)])
