"""Bit-exact references of the decode engine units (``hw/decode``).

Each function mirrors one hardware unit and works on ``torch.int64`` tensors holding
integers; the docstrings state widths, rounding and saturation. The decode engine in
hardware must give the same bits for the same inputs. Floats never appear here: the host
converts weights and constants once (:mod:`ref_model.models.int_llama`), and reads the
final logits out.

Number formats (``F`` = :attr:`DecodeNumerics.act_frac`, 12 by default):

* **activations / residual**: int32 ``Q.F``, saturated on every write;
* **matvec inputs**: int8 codes with a power-of-two scale per block of
  :attr:`DecodeNumerics.act_block` elements (per token when 0): value ``a * 2**e``;
* **weights**: stored groups of 32 (:class:`~ref_model.models.gguf_model.GroupBlocks`),
  value ``f16(d) * (code - offset) + f16(m)``; an f16 is decoded into an 11-bit integer
  mantissa and a power-of-two exponent (:func:`f16_decode`), so every scale is an integer
  times a shift;
* **matvec accumulator**: ``acc_bits`` (48) two's complement ``Q.acc_frac`` (Q.24),
  wrapping like an adder;
* **attention scores**: int32 ``Q.16``; **probabilities**: unsigned ``Q0.16``;
* **KV cache**: KIVI-style asymmetric codes of ``kv_bits`` with an int32 ``Q.F`` minimum
  and a power-of-two step per group (K: per channel over ``k_group`` tokens;
  V: per token over one head's channels), plus a full-precision (``Q.F``) window.

Rounding is round-half-up by :func:`ref_model.fixedpoint.rshift_round` everywhere.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch

from . import fixedpoint as fx
from .errors import ConfigError
from .formats import IntFormat, f16_decode

__all__ = [
    "DecodeNumerics", "DecodeShape", "INT32", "f16_decode", "quantize_act", "matvec",
    "embed_row", "rmsnorm", "rope", "attention", "kv_quantize", "kv_dequantize", "swiglu",
    "residual_add", "argmax", "GROUP", "MatvecWeights", "matvec_prepare", "matvec_prepared",
    "matvec_int", "act_scale_rom",
]

INT32 = IntFormat(32)
GROUP = 32
_I64 = torch.int64


@dataclass(frozen=True)
class DecodeNumerics:
    """Numeric parameters of the integer decoder, shared by ref model, compiler and hw.

    Attributes (defaults in brackets)
    ---------------------------------
    act_frac [12] : fractional bits ``F`` of the int32 activation / residual format.
    act_bits [8] : width of matvec input codes (signed).
    norm_act_bits [12] : width of the matvec input codes that come straight from an RMSNorm
        (the Q/K/V, FFN gate/up and LM head inputs), up to 12 bits (the matvec's group
        sums stay exact: 12+8+5 bits).
    act_block [32] : elements sharing one activation scale; 0 = whole vector (per token).
        Must be 0 or a multiple of 32 (the weight group).
    act_scale_bits [8] : mantissa bits of each activation block scale (the scale is
        ``m * 2**e`` with ``m`` unsigned in ``[2**(b-1), 2**b)``, like the f16 scale of
        llama.cpp's Q8 blocks); 0 = a pure power of two (``m = 1``).
    acc_bits [48], acc_frac [24] : matvec accumulator width and fractional bits.
    norm_gain_frac [12] : fractional bits of the folded RMSNorm gain ``gamma*sqrt(dim)``.
    ss_shift [10] : the RMSNorm squares are truncated by this many bits before summing.
    score_frac [16], prob_frac [16] : attention score / probability fractional bits.
    kv_bits [8] : KV cache code width: 2, 4, 8, or 16 for no quantization (Q.F kept).
    k_group [32] : tokens per K per-channel scale group (KIVI); incomplete groups stay
        full precision.
    kv_window [0] : most recent tokens kept in full precision (KIVI residual).
    kv_scale_bits [8] : mantissa bits of each KV group's step (0 = power of two).
    weights ["stored"] : "stored" (GGUF groups as stored), "w2" (2-bit asymmetric groups
        of 32, f16 scale + min) or "ternary" ({-1,0,1} groups of 32, f16 scale); the LM
        head and embedding always stay as stored (Q8_0).
    """

    act_frac: int = 12
    act_bits: int = 8
    norm_act_bits: int = 12
    act_block: int = 32
    act_scale_bits: int = 8
    acc_bits: int = 48
    acc_frac: int = 24
    norm_gain_frac: int = 12
    ss_shift: int = 10
    score_frac: int = 16
    prob_frac: int = 16
    kv_bits: int = 8
    k_group: int = 32
    kv_window: int = 0
    kv_scale_bits: int = 8
    weights: str = "stored"

    def __post_init__(self):
        allowed = {
            "act_frac": range(4, 17), "act_bits": range(4, 9), "norm_act_bits": range(4, 13), "act_scale_bits": (0, *range(2, 13)),
            "kv_scale_bits": (0, *range(2, 13)), "acc_bits": range(32, 65),
            "acc_frac": range(8, 33), "norm_gain_frac": range(8, 17), "ss_shift": range(0, 17),
            "score_frac": (16,), "prob_frac": (16,), "kv_bits": (2, 4, 8, 16),
            "k_group": range(1, 1025), "kv_window": range(0, 1 << 14),
            "weights": ("stored", "w2", "ternary"),
        }
        for name, ok in allowed.items():
            v = getattr(self, name)
            if v not in ok:
                shown = (f"{ok.start}..{ok.stop - 1}" if isinstance(ok, range) else
                         "0, 2..12" if name.endswith("scale_bits") else ", ".join(map(str, ok)))
                raise ConfigError(f"decode numerics: {name} = {v!r} is not allowed (allowed: {shown})")
        if self.act_block < 0 or self.act_block % GROUP:
            raise ConfigError(f"decode numerics: act_block = {self.act_block} is not allowed "
                              f"(allowed: 0 for per token, or a multiple of {GROUP})")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DecodeNumerics":
        names = {f.name for f in fields(cls)}
        bad = set(d) - names
        if bad:
            raise ConfigError(f"decode numerics: unknown field(s) {', '.join(sorted(bad))}")
        return cls(**d)


def attention_lanes(head_dim: int) -> int:
    """Channels per cycle of the engine's KV read / attention path for a ``head_dim``
    limit: the largest power of two <= ``ATTENTION_LANES`` dividing it (a K/V vector never
    straddles two heads): 32 for SmolLM2's head_dim 64, 16 for the tiny llama's 16."""
    lanes = ATTENTION_LANES
    while head_dim % lanes:
        lanes //= 2
    return lanes


#: Widest K/V vector of the decode engine: 32 channels (32 KV4 codes = one 128-bit beat, so
#: KV4 rows stream at port rate; KV8 vectors span two beats). The attention unit's
#: multipliers are shared by its score and value phases, so 32 lanes cost
#: ``heads/kv_heads x 32`` multipliers (SmolLM2: 96), as many as 16 lanes did unshared.
ATTENTION_LANES = 32


@dataclass(frozen=True)
class DecodeShape:
    """Model shape limits of a decode engine (what one bitstream supports). Besides the
    sizes, the engine serves the query heads of one KV head in parallel and reads K/V in
    vectors of :func:`attention_lanes` channels: a model's ``n_heads / n_kv_heads`` must not
    exceed the limits' and its ``head_dim`` must be a multiple of the lanes."""

    n_layers: int
    dim: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn_dim: int
    vocab_size: int
    max_context: int

    @classmethod
    def from_hparams(cls, hp, max_context: int | None = None) -> "DecodeShape":
        return cls(hp.n_layers, hp.dim, hp.n_heads, hp.n_kv_heads, hp.head_dim, hp.ffn_dim,
                   hp.vocab_size, max_context or hp.context_length)

    def check_fits(self, hp, context: int) -> None:
        """Raise ConfigError when a model (hyper-parameters ``hp``) exceeds these limits."""
        need = DecodeShape.from_hparams(hp, context)
        for f in fields(self):
            if getattr(need, f.name) > getattr(self, f.name):
                raise ConfigError(f"model does not fit the decode engine: it needs {f.name} = "
                                  f"{getattr(need, f.name)}, the engine allows at most {getattr(self, f.name)} "
                                  f"(config decode.limits)")
        if need.n_heads // need.n_kv_heads > self.n_heads // self.n_kv_heads:
            raise ConfigError(f"model has {need.n_heads // need.n_kv_heads} query heads per KV head, "
                              f"engine serves at most {self.n_heads // self.n_kv_heads}")
        lanes = attention_lanes(self.head_dim)
        if need.head_dim % lanes:
            raise ConfigError(f"model head_dim = {need.head_dim} is not a multiple of the engine's "
                              f"{lanes} attention lanes")


def _sat32(x):
    return INT32.saturate(x)


# ------------------------------------------------------------------------- f16 ---
# --------------------------------------------------------------- activation quant ---
#: Fractional bits of the activation-scale computation ``amax/qmax`` (``Q.(frac+24)``).
_SCALE_FRAC = 24
_RCP_ROMS: dict[int, torch.Tensor] = {}


def act_scale_rom(scale_bits: int) -> torch.Tensor:
    """ROM of the activation quantizer: ``round(2**(scale_bits+16) / m)`` indexed by the
    scale mantissa ``m`` in ``[2**(scale_bits-1), 2**scale_bits)`` (entries ``2**scale_bits``
    long, the low half unused; each entry 17 bits). A host constant (integers)."""
    rom = _RCP_ROMS.get(scale_bits)
    if rom is None:
        n = 1 << scale_bits
        rom = torch.tensor([0] * (n // 2) + [((1 << (scale_bits + 17)) // m + 1) >> 1 for m in range(n // 2, n)],
                           dtype=_I64)
        _RCP_ROMS[scale_bits] = rom
    return rom


def _mant_scale(amax: torch.Tensor, qmax: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale ``m * 2**(s-24)`` >= ``amax/qmax`` with a ``b``-bit mantissa (shared by the
    activation and KV quantizers). Bits: in uint32 ``amax``; ``r = amax*round(2**24/qmax)``
    (<= 32x23 bits); ``s = bit_length(r) - b``; ``m = ceil(r / 2**s)`` (add ``2**s - 1``
    then shift; a left shift when ``s < 0``); a carry to ``2**b`` gives ``m = 2**(b-1)``,
    ``s += 1``. ``amax = 0`` gives ``m = 2**(b-1)``, ``s = -16``. Out ``m`` uint ``b``,
    ``s`` signed."""
    r = amax * (((1 << (_SCALE_FRAC + 1)) // qmax + 1) >> 1)
    s = fx.bit_length(r) - b
    m = torch.where(s > 0, (r + (torch.ones_like(s) << s.clamp(min=0)) - 1) >> s.clamp(min=0),
                    r << (-s).clamp(min=0))  # ceiling shift: the scale never undershoots
    carry = m >= (1 << b)
    m = torch.where(carry, m >> 1, m)
    s = s + carry.to(_I64)
    zero = amax == 0
    m = torch.where(zero, torch.full_like(m, 1 << (b - 1)), m)
    s = torch.where(zero, torch.full_like(s, -16), s)
    return m, s


def quantize_act(y: torch.Tensor, frac: int, block: int, bits: int = 8,
                 scale_bits: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Block quantizer: ``y`` (Q.frac) -> int codes and one scale ``m * 2**e`` per block.

    Bits: in int32 ``Q.frac`` (..., n). Out ``a`` int``bits`` codes (int8), and per block
    (n/block of them) the scale mantissa ``m`` (unsigned ``scale_bits`` wide, or 1) and
    exponent ``e`` (signed): value ``a * m * 2**e``. ``block = 0``: one block (per token).
    With ``qmax = 2**(bits-1)-1`` and ``amax = max|y|`` of the block:

    * ``scale_bits = 0`` (power-of-two scale): the shift ``sh`` is the smallest (possibly
      negative, a left shift) with ``rshift_round(amax, sh) <= qmax``;
      ``a = rshift_round(y, sh)`` (in range by construction), ``m = 1``, ``e = sh - frac``.
      An all-zero block gets ``sh = -16``.
    * ``scale_bits = b > 0`` (mantissa scale, the llama.cpp Q8 block idea in fixed point):
      ``r = amax * round(2**24/qmax)`` (31x18-bit product: ``amax/qmax`` in
      ``Q.(frac+24)``); ``s = bit_length(r) - b``; ``m = ceil(r / 2**s)`` (add
      ``2**s - 1``, shift; a left shift when ``s < 0``), and when it carries to ``2**b``,
      ``m = 2**(b-1)``, ``s += 1``; then
      ``a = clamp(rshift_round(y * R[m], s + b - 8), -qmax, qmax)`` with the reciprocal ROM
      ``R[m] = round(2**(b+16)/m)`` (:func:`act_scale_rom`; 31x17-bit product), i.e.
      ``a ~= y / (m * 2**(s-24))``; ``e = s - 24 - frac``. An all-zero block gets codes 0,
      ``m = 2**(b-1)`` and ``s = -16``. Since the scale is rounded up, ``|y|/scale <=
      qmax`` and the clamp never cuts more than rounding noise: the error is <= 1/2 step
      (+ 2**-15 of a step from the ROM) and the block max maps to ``qmax(1 - 2**(1-b)) - 1/2`` or
      more.
    """
    y = y.to(_I64)
    n = y.shape[-1]
    blk = n if block == 0 else block
    if n % blk:
        raise ValueError(f"vector length {n} is not a multiple of the activation block {blk}")
    yb = y.reshape(*y.shape[:-1], n // blk, blk)
    amax = yb.abs().amax(-1)
    qmax = (1 << (bits - 1)) - 1
    if scale_bits == 0:
        sh = fx.bit_length(amax) - (bits - 1)
        sh = torch.where(amax == 0, torch.full_like(sh, -16), sh)
        sh = torch.where(fx.rshift_round(amax, sh) > qmax, sh + 1, sh)
        a = fx.rshift_round(yb, sh.unsqueeze(-1))
        return a.reshape(y.shape), sh - frac, torch.ones_like(sh)
    b = scale_bits
    m, s = _mant_scale(amax, qmax, b)
    rom = act_scale_rom(b)[m]
    a = fx.rshift_round(yb * rom.unsqueeze(-1), (s + b - 8).unsqueeze(-1)).clamp(-qmax, qmax)
    return a.reshape(y.shape), s - _SCALE_FRAC - frac, m


# -------------------------------------------------------------------------- matvec ---
@dataclass(frozen=True)
class MatvecWeights:
    """A weight matrix laid out for :func:`matvec_prepared` (host side, built once).

    ``codes`` (groups, 32, rows) float32 holding the integers ``code - offset``; ``d`` and
    ``m`` (groups, rows) float64 holding the f16 group scale / minimum values exactly
    (``mant * 2**exp`` of :func:`f16_decode`); ``m`` is ``None`` for symmetric formats.
    """

    codes: torch.Tensor
    d: torch.Tensor
    m: torch.Tensor | None

    @property
    def shape(self) -> tuple[int, int]:
        ng, g, rows = self.codes.shape
        return rows, ng * g


def matvec_prepare(w_codes: torch.Tensor, w_offset: int, d_bits: torch.Tensor,
                   m_bits: torch.Tensor | None) -> MatvecWeights:
    """Host layout of a group-quantized matrix for the matvec reference (no rounding)."""
    rows, cols = w_codes.shape
    ng = cols // GROUP
    wc = w_codes if w_codes.dtype == torch.float32 else (w_codes.to(_I64) - w_offset).to(torch.float32)
    codes = wc.reshape(rows, ng, GROUP).permute(1, 2, 0).contiguous()

    def val(bits):
        mant, ex = f16_decode(bits)
        return mant.to(torch.float64) * torch.pow(2.0, ex.to(torch.float64))

    return MatvecWeights(codes, val(d_bits).T.contiguous(), None if m_bits is None else val(m_bits).T.contiguous())


def matvec(w_codes: torch.Tensor, w_offset: int, d_bits: torch.Tensor, m_bits: torch.Tensor | None,
           a: torch.Tensor, a_exp: torch.Tensor, out_frac: int, acc_bits: int = 48,
           acc_frac: int = 24, a_man: torch.Tensor | None = None) -> torch.Tensor:
    """Matrix-vector product with per-group weight dequantization (the matvec unit).

    Bits: weights ``w_codes`` (rows, cols) stored codes (or float32 ``code - offset``,
    pre-converted by the host, with ``w_offset`` 0) (uint4 for Q4_1/Q4_0/W2 with
    ``w_offset`` 0/8/0, int8 for Q8_0, {-1,0,1} ternary); ``d_bits``/``m_bits``
    (rows, cols/32) f16 patterns. Input ``a`` int8..int12 codes (cols,) with one scale
    ``a_man * 2**a_exp`` per activation block (a whole number of groups; ``a_man``
    unsigned <= 12 bits, ``None`` = 1) from :func:`quantize_act`. Per row ``r`` and
    group ``g`` (``mant``/``exp`` from :func:`f16_decode`):

    * ``P = sum_j a_j*(code_j - offset)`` exact (<= 12+8+5 = 25 bits), ``S = sum_j a_j`` (17 bits);
    * ``t = rshift_round(mant(d)*P*a_man, -(exp(d)+a_exp+acc_frac))
      + rshift_round(mant(m)*S*a_man, -(exp(m)+a_exp+acc_frac))``: 12x25x12-bit
      products (<= 49 bits), barrel shift with round half up into ``Q.acc_frac``;
    * the ``acc_bits`` accumulator sums the group terms and wraps modulo ``2**acc_bits``.

    Out int32 ``Q.out_frac``: ``rshift_round(acc, acc_frac - out_frac)`` saturated.
    """
    W = matvec_prepare(w_codes, w_offset, d_bits, m_bits)
    return matvec_prepared(W, a, a_exp, out_frac, acc_bits, acc_frac, a_man)


def _round_half_up_f64(x: torch.Tensor) -> torch.Tensor:
    # floor(x + 1/2) of a float64 holding (integer <= 2**49) * 2**k: exact as long as the
    # bits from 2**-1 to the top fit 53 bits (the terms are < 2**acc_bits <= 2**51 here).
    return torch.floor(x + 0.5).to(_I64)


def matvec_prepared(W: MatvecWeights, a: torch.Tensor, a_exp: torch.Tensor, out_frac: int,
                    acc_bits: int = 48, acc_frac: int = 24, a_man: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`matvec` on a :class:`MatvecWeights` (same bits; the fast path).

    Implementation note: the group sums are a float32 batched GEMM (each is a sum of 32
    products ``|a*code| <= 2**11 * 2**7``, so every partial sum is an exact integer
    < 2**24) and the per-group terms ``mant(d)*P*a_man*2**k`` are float64 products of
    integers with <= 49
    significant bits times powers of two, hence exact; ``floor(x + 1/2)`` is then exactly
    ``rshift_round``. Terms whose magnitude reaches ``2**51`` (outside any sane
    accumulator) are not supported.
    """
    ng, _, rows = W.codes.shape
    ab = a.reshape(ng, GROUP)
    e = a_exp.to(_I64).reshape(-1)
    e = e.repeat_interleave(ng // e.numel())
    sc = torch.pow(2.0, (e + acc_frac).to(torch.float64))
    if a_man is not None:
        am = a_man.to(_I64).reshape(-1)
        sc = sc * am.repeat_interleave(ng // am.numel()).to(torch.float64)
    sc = sc.unsqueeze(-1)
    P = torch.bmm(ab.to(torch.float32).unsqueeze(1), W.codes).squeeze(1)  # (ng, rows), exact
    t = _round_half_up_f64(P.to(torch.float64) * W.d * sc)
    if W.m is not None:
        S = ab.to(_I64).sum(-1).to(torch.float64).unsqueeze(-1)
        t = t + _round_half_up_f64(W.m * (S * sc))
    acc = IntFormat(acc_bits).wrap(t.sum(0))
    return _sat32(fx.rshift_round(acc, acc_frac - out_frac))


def matvec_int(w_codes: torch.Tensor, w_offset: int, d_bits: torch.Tensor, m_bits: torch.Tensor | None,
               a: torch.Tensor, a_exp: torch.Tensor, out_frac: int, acc_bits: int = 48,
               acc_frac: int = 24, a_man: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`matvec` written with integer operations only (slow; the bit-level statement,
    used to check the fast path). Same bits in and out as :func:`matvec`."""
    rows, cols = w_codes.shape
    ng = cols // GROUP
    wc = (w_codes.to(_I64) - w_offset) if w_codes.dtype != torch.float32 else w_codes.to(_I64)
    ab = a.to(_I64).reshape(ng, GROUP)
    e = a_exp.to(_I64).reshape(-1).repeat_interleave(ng // a_exp.numel())
    am = torch.ones_like(e) if a_man is None else a_man.to(_I64).reshape(-1).repeat_interleave(ng // a_man.numel())
    P = (wc.reshape(rows, ng, GROUP) * ab).sum(-1)
    md, ed = f16_decode(d_bits)
    t = fx.rshift_round(md * P * am, -(ed + e + acc_frac))
    if m_bits is not None:
        mm, em = f16_decode(m_bits)
        t = t + fx.rshift_round(mm * ab.sum(-1) * am, -(em + e + acc_frac))
    acc = IntFormat(acc_bits).wrap(t.sum(-1))
    return _sat32(fx.rshift_round(acc, acc_frac - out_frac))


def embed_row(codes: torch.Tensor, d_bits: torch.Tensor, out_frac: int) -> torch.Tensor:
    """Embedding lookup of one Q8_0 row into the residual format.

    Bits: in int8 codes (dim,) and f16 group scales (dim/32,). Out int32 ``Q.out_frac``:
    ``rshift_round(mant(d)*code, -(exp(d)+out_frac))`` saturated.
    """
    md, ed = f16_decode(d_bits)
    md = md.repeat_interleave(GROUP)
    ed = ed.repeat_interleave(GROUP)
    return _sat32(fx.rshift_round(md * codes.to(_I64), -(ed + out_frac)))


# ------------------------------------------------------------------------- rmsnorm ---
_NORM_EXTRA = 8  # extra fractional bits of the normalized intermediate h/rms

def rmsnorm(h: torch.Tensor, gain: torch.Tensor, eps_int: int, frac: int, gain_frac: int,
            ss_shift: int = 10) -> torch.Tensor:
    """RMSNorm with a folded gain: ``y = h / sqrt(mean(h**2) + eps) * gamma``.

    Bits: in ``h`` int32 ``Q.frac`` (n,); ``gain`` int32 ``Q.gain_frac`` holding
    ``gamma*sqrt(n)`` (host constant); ``eps_int = round(n*eps*2**(2*frac-ss_shift))``
    (host constant); ``ss_shift`` even. Steps:

    1. ``ss = sum((h*h) >> ss_shift) + eps_int``: 62-bit squares truncated, summed in a
       64-bit accumulator (no overflow for n <= 2**(ss_shift-1));
    2. ``(m, s) = rsqrt(ss)`` (Q1.23 mantissa and shift);
    3. ``t = rshift_round(h*m, s + ss_shift/2 - frac - 8)`` (56-bit product): ``h/rms``
       in Q.(frac+8) (|t| <= sqrt(n), so 26 bits for n <= 2**10);
    4. ``y = rshift_round(t*gain, gain_frac + 8)`` (<= 58-bit product), saturated to int32.

    Out int32 ``Q.frac``. Error: rsqrt's 2**-21 relative, the truncation of squares
    (relative < n*2**ss_shift/sum(h*h)), and 1 LSB per rounding.
    """
    if ss_shift % 2:
        raise ValueError("ss_shift must be even")
    h = h.to(_I64)
    ss = ((h * h) >> ss_shift).sum() + eps_int
    m, s = fx.rsqrt(ss.clamp(min=1))
    # 1/sqrt(ss_real) with ss_real = ss * 2**(ss_shift - 2*frac): m * 2**(-s + frac - ss_shift/2)
    # y_norm (Q.frac) = h * 2**-frac * m * 2**(-s+frac-ss_shift/2) * 2**frac
    t = fx.rshift_round(h * m, s + ss_shift // 2 - frac - _NORM_EXTRA)
    return _sat32(fx.rshift_round(t * gain.to(_I64), gain_frac + _NORM_EXTRA))


# ---------------------------------------------------------------------------- rope ---
def rope(x: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent pairs ``(x[2i], x[2i+1])`` of each head by angle ``2*pi*phase[i]/2**32``.

    Bits: in ``x`` int32 ``Q.F`` (heads, head_dim); ``phase`` uint32 turns (head_dim/2,)
    from :func:`ref_model.fixedpoint.rope_phase`. ``cos``/``sin`` from
    :func:`ref_model.fixedpoint.sincos` (Q1.16). Out int32 ``Q.F``:
    ``rshift_round(x0*c - x1*s, 16)`` and ``rshift_round(x0*s + x1*c, 16)``, saturated
    (50-bit products, 51-bit sums).
    """
    c, s = fx.sincos(phase)
    x = x.to(_I64)
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = fx.rshift_round(x0 * c - x1 * s, fx.TRIG_FRAC)
    out[..., 1::2] = fx.rshift_round(x0 * s + x1 * c, fx.TRIG_FRAC)
    return _sat32(out)


# -------------------------------------------------------------------------- KV quant ---
def kv_quantize(x: torch.Tensor, bits: int, dim: int, scale_bits: int = 0
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric quantizer of a KV group (KIVI layout): ``x ~= mn + codes * m * 2**e``.

    Bits: in int32 ``Q.F`` values; statistics along ``dim`` (K: the token axis of a group
    of tokens, so one scale per channel; V: the channel axis, one scale per token).
    ``qmax = 2**bits - 1``, ``mn`` = group minimum (int32 ``Q.F``), ``rng = max - mn``.
    Out ``codes`` uint``bits``, ``mn``, and the step ``m * 2**e`` (in ``Q.F`` units):

    * ``scale_bits = 0`` (power-of-two step): ``e`` is the smallest non-negative shift with
      ``rshift_round(rng, e) <= qmax``, ``m = 1``, ``codes = rshift_round(x - mn, e)``;
    * ``scale_bits = b`` (mantissa step): ``(m, s)`` from :func:`_mant_scale` on ``rng``
      (step >= ``rng/qmax``), ``codes = clamp(rshift_round((x - mn) * R[m], s + b - 8), 0,
      qmax)`` with the reciprocal ROM ``R`` of :func:`act_scale_rom` (33x17-bit product),
      ``e = s - 24``.

    Error of :func:`kv_dequantize` <= half a step (+ 1/2 LSB of ``Q.F`` rounding).
    """
    x = x.to(_I64)
    mn = x.amin(dim, keepdim=True)
    rng = x.amax(dim, keepdim=True) - mn
    qmax = (1 << bits) - 1
    if scale_bits == 0:
        sh = (fx.bit_length(rng) - bits).clamp(min=0)
        sh = torch.where(fx.rshift_round(rng, sh) > qmax, sh + 1, sh)
        return fx.rshift_round(x - mn, sh), mn, sh, torch.ones_like(sh)
    m, s = _mant_scale(rng, qmax, scale_bits)
    codes = fx.rshift_round((x - mn) * act_scale_rom(scale_bits)[m], s + scale_bits - 8).clamp(0, qmax)
    return codes, mn, s - _SCALE_FRAC, m


def kv_dequantize(codes: torch.Tensor, mn: torch.Tensor, e: torch.Tensor,
                  m: torch.Tensor | None = None) -> torch.Tensor:
    """``sat32(mn + rshift_round(codes * m, -e))``: int32 ``Q.F`` values (what the attention
    unit reads). Bits: ``codes`` uint<=8 x ``m`` uint<=12 (1 when ``None``), barrel shift
    with round half up (exact for a power-of-two step, ``e >= 0``), 33-bit add saturated
    to int32 (a rounded-up step can overshoot the group maximum by half a step).

    ``e`` is clamped to [-40, 32] first, which changes no result: the product is below
    2**24, so from ``e = 32`` on a nonzero step is 2**32 or more and saturates (``mn`` is
    at least -2**31), and from ``e = -25`` down every step rounds to 0. Unclamped, a
    record with a large ``e`` (a corrupt or host-written one) overflowed int64 here. (The
    hardware clamps at +-40 and shifts in 64 bits: the same results.)"""
    c = codes.to(_I64) if m is None else codes.to(_I64) * m
    e = torch.as_tensor(e, dtype=_I64).clamp(-40, 32)
    return _sat32(mn + fx.rshift_round(c, -e))


# ----------------------------------------------------------------------- attention ---
def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, frac: int, act_bits: int = 8,
              score_frac: int = 16, prob_frac: int = 16) -> torch.Tensor:
    """Causal attention of one query token over ``T`` cached tokens, with GQA.

    Bits: ``q`` int32 ``Q.frac`` (heads, hd) after RoPE; ``k``, ``v`` int32 ``Q.frac``
    (T, kv_heads, hd), already dequantized from the KV cache (exact integers).

    1. ``q`` is quantized per head by :func:`quantize_act` (block = hd) to int8 ``qa``
       with exponent ``e``.
    2. ``s = sum_c qa_c * k_c`` exact (<= 8+32+7 bits); scores in int32 ``Q.16``:
       ``S = rshift_round(s*C, frac - e)`` with ``C = round(2**16/sqrt(hd))``
       (Q.16 constant; 8192 for hd = 64, exact), saturated.
    3. softmax: ``D = S - max(S)`` (<= 0), ``p = exp_neg(D)`` Q0.16; ``Z = sum p``
       (>= 65536); ``(m, r) = reciprocal(Z)``; ``P = rshift_round(p*m, r - 16)`` Q0.16.
    4. ``o = rshift_round(sum_t P_t * v_t, 16)`` int32 ``Q.frac`` saturated.

    Out (heads, hd) int32 ``Q.frac``.
    """
    nh, hd = q.shape
    T, nkv, _ = k.shape
    rep = nh // nkv
    qa, qe, _ = quantize_act(q, frac, hd, act_bits)  # qe: (nh, 1), power-of-two scale
    C = round((1 << score_frac) / hd ** 0.5)  # host constant
    kh = k.to(_I64).repeat_interleave(rep, dim=1)  # (T, nh, hd)
    vh = v.to(_I64).repeat_interleave(rep, dim=1)
    s = torch.einsum("hd,thd->ht", qa, kh)
    # s real = s * 2**qe * 2**-frac ; scores Q.16 = s*C * 2**(qe - frac)
    S = _sat32(fx.rshift_round(s * C, -(qe - frac)))
    D = _sat32(S - S.amax(-1, keepdim=True))
    p = fx.exp_neg(D)  # score_frac == exp input format Q.16
    Z = p.sum(-1, keepdim=True)
    m, r = fx.reciprocal(Z)
    P = fx.rshift_round(p * m, r - prob_frac)
    o = torch.einsum("ht,thd->hd", P, vh)
    return _sat32(fx.rshift_round(o, prob_frac))


# -------------------------------------------------------------------- elementwise ---
def swiglu(g: torch.Tensor, u: torch.Tensor, frac: int) -> torch.Tensor:
    """``silu(g) * u``.

    Bits: in int32 ``Q.frac`` (frac <= 16). ``g`` is shifted to Q.16 and saturated to
    int32, ``silu`` (:func:`ref_model.fixedpoint.silu`) gives int32 Q.16, the product with
    ``u`` (<= 62 bits) is rounded back: ``rshift_round(silu*u, 16)``. Out int32 ``Q.frac``
    saturated.
    """
    g16 = _sat32(g.to(_I64) << (fx.IN_FRAC - frac))
    return _sat32(fx.rshift_round(fx.silu(g16) * u.to(_I64), fx.IN_FRAC))


def residual_add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Residual adder. Bits: int32 + int32 -> int32, saturating."""
    return _sat32(x.to(_I64) + y.to(_I64))


def argmax(x: torch.Tensor) -> int:
    """Index of the largest value; the lowest index wins ties. Bits: int32 in, uint out."""
    mx = x.max()
    return int(torch.nonzero(x == mx)[0, 0])
