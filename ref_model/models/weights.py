"""Host-side weight formats for the integer decoder: stored GGUF groups, W2 and ternary.

This is the host boundary where floats end: every matrix becomes groups of 32 integer
codes with an f16 scale (and an f16 minimum for asymmetric formats), i.e. a
:class:`~ref_model.models.gguf_model.GroupBlocks`. The matvec unit
(:func:`ref_model.decode.matvec`) consumes exactly these fields.

Formats
-------
* ``stored``: the GGUF bits as they are (Q4_1, Q4_0, Q8_0); F16/F32 matrices are
  quantized to Q8_0 (``d = amax/127`` per group, f16; codes rounded half away from 0).
* ``w2``: 2-bit asymmetric, ``w = d*code + m`` with code 0..3 and f16 ``d``/``m`` per
  group of 32 (the Q4_1 structure at 2 bits). ``d``/``m`` are chosen by a clipping grid
  search minimizing the group's squared error (with f16-rounded ``d``/``m``).
* ``ternary``: ``w = d*t`` with ``t`` in {-1, 0, 1} and f16 ``d`` per group of 32
  (BitNet b1.58 / MatMul-free style absmean scale, refined by a grid search on MSE).

W2 and ternary are post-training round-to-nearest requantizations of the dequantized
Q4_1 weights; they exercise the LUT / bit-serial cores' data layouts and measure how much
a plain (untrained) low-bit conversion costs -- not a claim of a good 2-bit model.
"""

from __future__ import annotations

import torch

from ..formats import f16_encode
from .gguf_model import GROUP, GGUFTensor, GroupBlocks

__all__ = ["f16_bits", "f16_value", "quantize_q8_0", "quantize_w2", "quantize_ternary",
           "to_blocks", "blocks_dequantize"]


def f16_bits(x: torch.Tensor) -> torch.Tensor:
    """Float values to IEEE half bit patterns (int64, 0..65535), round to nearest even
    (:func:`ref_model.formats.f16_encode`)."""
    return f16_encode(x)


def f16_value(bits: torch.Tensor) -> torch.Tensor:
    """IEEE half bit patterns to float32 values."""
    b = bits.to(torch.int64)
    b = torch.where(b >= 1 << 15, b - (1 << 16), b)
    return b.to(torch.int16).view(torch.float16).to(torch.float32)


def _groups(w: torch.Tensor) -> torch.Tensor:
    rows, cols = w.shape
    if cols % GROUP:
        raise ValueError(f"row length {cols} is not a multiple of {GROUP}")
    return w.to(torch.float32).reshape(rows, cols // GROUP, GROUP)


def quantize_q8_0(w: torch.Tensor) -> GroupBlocks:
    """Symmetric int8 groups of 32 (llama.cpp Q8_0): ``d = amax/127`` (f16), ``q = round(w/d)``."""
    g = _groups(w)
    d = g.abs().amax(-1) / 127
    db = f16_bits(d)
    dv = f16_value(db).unsqueeze(-1)
    inv = torch.where(dv > 0, 1 / dv, torch.zeros_like(dv))
    q = torch.round(g * inv).clamp(-127, 127)  # exact .5 ties are measure-zero here
    return GroupBlocks("Q8_0", q.to(torch.int64).reshape(w.shape), db, None, 0)


def quantize_w2(w: torch.Tensor, grid: int = 5) -> GroupBlocks:
    """2-bit asymmetric groups of 32 (``w = d*code + m``, code 0..3), f16 ``d`` and ``m``."""
    g = _groups(w)
    lo, hi = g.amin(-1, keepdim=True), g.amax(-1, keepdim=True)
    best_err = torch.full(lo.shape, float("inf"))
    best_d = torch.zeros_like(lo)
    best_m = torch.zeros_like(lo)
    fr = torch.linspace(0.6, 1.0, grid)
    for a in fr:
        for b in fr:
            m = f16_value(f16_bits(lo * a))
            d = f16_value(f16_bits((hi * b - m) / 3))
            dd = torch.where(d > 0, d, torch.ones_like(d))
            c = torch.round((g - m) / dd).clamp(0, 3)
            err = ((c * d + m - g) ** 2).sum(-1, keepdim=True)
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_d = torch.where(better, d, best_d)
            best_m = torch.where(better, m, best_m)
    dd = torch.where(best_d > 0, best_d, torch.ones_like(best_d))
    codes = torch.round((g - best_m) / dd).clamp(0, 3).to(torch.int64)
    return GroupBlocks("W2", codes.reshape(w.shape), f16_bits(best_d.squeeze(-1)),
                       f16_bits(best_m.squeeze(-1)), 0)


def quantize_ternary(w: torch.Tensor, grid: int = 8) -> GroupBlocks:
    """Ternary groups of 32 (``w = d*t``, t in {-1,0,1}), f16 ``d`` (absmean x best factor)."""
    g = _groups(w)
    am = g.abs().mean(-1, keepdim=True)
    best_err = torch.full(am.shape, float("inf"))
    best_d = torch.zeros_like(am)
    for a in torch.linspace(0.5, 2.0, grid):
        d = f16_value(f16_bits(am * a))
        dd = torch.where(d > 0, d, torch.ones_like(d))
        t = torch.round(g / dd).clamp(-1, 1)
        err = ((t * d - g) ** 2).sum(-1, keepdim=True)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_d = torch.where(better, d, best_d)
    dd = torch.where(best_d > 0, best_d, torch.ones_like(best_d))
    t = torch.round(g / dd).clamp(-1, 1).to(torch.int64)
    return GroupBlocks("TERNARY", t.reshape(w.shape), f16_bits(best_d.squeeze(-1)), None, 0)


def to_blocks(t: GGUFTensor, mode: str = "stored") -> GroupBlocks:
    """Integer groups of a stored matrix in the chosen weight format."""
    if mode == "stored":
        if t.kind in ("F32", "F16"):
            return quantize_q8_0(t.dequantize())
        return t.blocks()
    if mode == "w2":
        return quantize_w2(t.dequantize())
    if mode == "ternary":
        return quantize_ternary(t.dequantize())
    raise ValueError(f"unknown weight format {mode!r}")


def blocks_dequantize(b: GroupBlocks) -> torch.Tensor:
    """Float32 values of integer groups (for the float model at the same weights)."""
    d = f16_value(b.d_bits).repeat_interleave(GROUP, dim=1)
    v = d * (b.codes - b.offset).to(torch.float32)
    if b.m_bits is not None:
        v = v + f16_value(b.m_bits).repeat_interleave(GROUP, dim=1)
    return v
