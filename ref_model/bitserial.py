"""Bit-exact reference of the bit-serial tensor core (:class:`hw.cores.bitserial.BitSerialCore`).

C[m, n] = wrap_acc( sum over groups g of group_rescale(P[m, g, n], scale[g, n], frac) ),
P[m, g, n] = sum over k in group g of A[m, k] * V[k, n]

* ``A``: (M, K) signed activations (``act_bits``, two's complement).
* ``V``: (K, N) weights as integers on the common grid (:mod:`ref_model.formats`: INT-n
  symmetric q, asymmetric q - z, ternary t, FP types value * 2**shift), ``|V| < 2**planes``;
  the core sees each as a sign and ``planes`` magnitude bit-planes.
* ``scale_bits``: (ceil(K/G), N) f16 bit patterns, one per group of ``G`` consecutive k
  and column.
* ``P`` is exact (the PE's adder tree, Horner register and group accumulator are wide
  enough: :meth:`rtl_gen.config.BitSerialCoreConfig.partial_bits`).
* ``group_rescale``: f16 scale -> 12-bit signed mantissa x 2**exp, product with P exact,
  then a shift by ``-(exp + frac)`` with round half up into ``Q.frac``
  (:func:`ref_model.formats.group_rescale`).
* The sum over groups is two's complement of ``acc_bits`` bits that wraps (no saturation).
"""

from __future__ import annotations

import torch

from .formats import IntFormat, group_rescale


def group_partials(a: torch.Tensor, values: torch.Tensor, group_size: int) -> torch.Tensor:
    """Exact integer partial sums P, shape (M, groups, N); K is padded with zeros."""
    a, v = a.to(torch.int64), values.to(torch.int64)
    (m, k), n = a.shape, v.shape[1]
    kg = -(-k // group_size)
    ap = torch.zeros((m, kg * group_size), dtype=torch.int64)
    ap[:, :k] = a
    vp = torch.zeros((kg * group_size, n), dtype=torch.int64)
    vp[:k] = v
    return torch.einsum("mgk,gkn->mgn", ap.reshape(m, kg, group_size), vp.reshape(kg, group_size, n))


def bitserial_gemm(a: torch.Tensor, values: torch.Tensor, scale_bits: torch.Tensor, group_size: int,
                   frac: int, acc_bits: int) -> torch.Tensor:
    """C (M, N) int64 in ``Q.frac``, wrapped to ``acc_bits`` (see the module docstring)."""
    p = group_partials(a, values, group_size)
    terms = group_rescale(p, scale_bits.to(torch.int64).unsqueeze(0), frac)
    return IntFormat(acc_bits, signed=True).wrap(terms.sum(1))
