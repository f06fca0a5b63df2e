"""Bit-exact reference of the LUT tensor core (:class:`hw.cores.lut.LutCore`).

Mixed-precision GEMM by table lookup (LUT Tensor Core / T-MAC): weights are unsigned
integer codes ``q`` of ``b`` bits (1..4) with, per group of ``G`` weights along K and per
output column, an f16 scale and an integer zero point ``z`` (asymmetric INT-b); ternary
weights are 2-bit codes ``q in {0, 1, 2}`` with ``z = 1`` fixed (value ``q - 1``).

The numerics, unit by unit (every width is exact; nothing rounds before the rescale):

* **Bit planes, +-1 coded.** ``q = sum_i 2**i q_i`` with ``q_i in {0, 1}``; the core works
  with ``s_i = 2 q_i - 1 in {-1, +1}``.
* **Tables.** For each group of ``g`` activations ``a_0..a_{g-1}`` and each g-bit pattern
  ``p``: ``T(p) = sum_j a_j * (+1 if bit j of p else -1)`` (:func:`table_entries`).
  Symmetrization: ``T(~p) = -T(p)``, so only the patterns with bit ``g-1`` set are stored
  (``2**(g-1)`` entries, index = the low ``g-1`` bits); the unsymmetric table stores all
  ``2**g``. An entry needs ``entry_bits = bit_length(g * 2**(act_bits-1)) + 1`` bits.
* **Lookup** (:func:`lookup`): with symmetrization, a pattern whose bit ``g-1`` is clear
  reads the entry of its complement and negates it.
* **Plane value** of one lane (one row, one column) for chunk ``c`` of ``K_t = g *
  k_groups`` activations and plane ``i``: ``v_i = sum_groups lookup + (1 - 2 z_i) * S``,
  where ``S`` is the chunk's activation sum and ``z_i`` bit ``i`` of the zero point. The
  ``S`` term folds the zero point in: ``sum_i 2**i v_i = 2 * sum_k a_k (q_k - z)``.
* **Plane combination** (shift-add, bit-serial over weight bits, LSB first):
  ``2P = sum_chunks sum_i v_i << i`` over the chunks of one quant group; ``P = 2P >> 1``
  is exact (``2P`` is even) and equals ``sum_{k in group} a_k (q_k - z)``.
* **Rescale** (:func:`ref_model.formats.group_rescale`): ``rshift_round(mant * P,
  -(exp + frac))``, round half up, ``(mant, exp) = f16_decode(scale)``.
* **Accumulate**: the rescaled terms add into an ``acc_bits`` two's-complement
  accumulator that wraps (``IntFormat(acc_bits).wrap``; wrap-around addition is
  associative, so the order of the groups does not change the bits).
"""

from __future__ import annotations

import torch

from .formats import IntFormat, group_rescale

#: Bits of a stored scale (IEEE f16 pattern).
SCALE_BITS = 16


def table_entries(acts: torch.Tensor, symmetric: bool) -> torch.Tensor:
    """The table of each group: ``acts`` (..., g) -> (..., entries) int64.

    Entry ``e`` of the symmetric table is ``T(p)`` for ``p = e | 2**(g-1)``; of the
    unsymmetric table ``T(e)``. ``T(p) = sum_j a_j * (2 * bit_j(p) - 1)``.
    """
    g = acts.shape[-1]
    n = 1 << (g - 1) if symmetric else 1 << g
    pats = torch.arange(n, dtype=torch.int64)
    if symmetric:
        pats = pats | (1 << (g - 1))
    bits = (pats[:, None] >> torch.arange(g)) & 1          # (entries, g)
    signs = 2 * bits - 1
    return (acts.to(torch.int64)[..., None, :] * signs).sum(-1)


def lookup(table: torch.Tensor, pattern: torch.Tensor, g: int, symmetric: bool) -> torch.Tensor:
    """``T(pattern)`` from a table of :func:`table_entries`; ``table`` (..., entries),
    ``pattern`` (..., ) g-bit ints broadcast against ``table[..., 0]``."""
    pattern = pattern.to(torch.int64)
    if not symmetric:
        return torch.gather(table, -1, pattern[..., None].expand(*table.shape[:-1], 1))[..., 0]
    top = (pattern >> (g - 1)) & 1
    low_mask = (1 << (g - 1)) - 1
    idx = torch.where(top == 1, pattern & low_mask, ~pattern & low_mask)
    val = torch.gather(table, -1, idx[..., None].expand(*table.shape[:-1], 1))[..., 0]
    return torch.where(top == 1, val, -val)


def weight_values(q: torch.Tensor, zeros: torch.Tensor, group_size: int) -> torch.Tensor:
    """``q - z`` per weight: ``q`` (K, N) codes, ``zeros`` (K / G, N)."""
    return q.to(torch.int64) - zeros.to(torch.int64).repeat_interleave(group_size, dim=0)


def check_operands(a, q, scales, zeros, *, act: IntFormat, wbits: int, ternary: bool, group_size: int) -> None:
    """Raise ValueError naming the first operand out of range or of the wrong shape."""
    if a.dim() != 2 or q.dim() != 2 or a.shape[1] != q.shape[0]:
        raise ValueError(f"shapes {tuple(a.shape)} and {tuple(q.shape)} do not form a GEMM")
    k, n = q.shape
    groups = -(-k // group_size)
    if tuple(scales.shape) != (groups, n) or tuple(zeros.shape) != (groups, n):
        raise ValueError(f"scales/zeros must be ({groups}, {n}) for K={k}, N={n}, G={group_size}")
    if not act.contains(a):
        raise ValueError(f"activations outside {act.name} [{act.min}, {act.max}]")
    qmax = 2 if ternary else (1 << wbits) - 1
    if ((q < 0) | (q > qmax)).any():
        raise ValueError(f"weight codes outside 0..{qmax}")
    zmax = 1 if ternary else qmax
    if ((zeros < 0) | (zeros > zmax)).any() or (ternary and (zeros != 1).any()):
        raise ValueError(f"zero points outside {'1 (ternary)' if ternary else f'0..{zmax}'}")
    if ((scales < 0) | (scales > 0xFFFF)).any():
        raise ValueError("scales must be f16 bit patterns 0..65535")


def _pad_k(a: torch.Tensor, q: torch.Tensor, group_size: int):
    """K padded to a multiple of ``group_size`` with zero activations (which add nothing)."""
    k = a.shape[1]
    extra = -k % group_size
    if not extra:
        return a.to(torch.int64), q.to(torch.int64)
    return (torch.nn.functional.pad(a.to(torch.int64), (0, extra)),
            torch.nn.functional.pad(q.to(torch.int64), (0, 0, 0, extra)))


def plane_values(a_chunk: torch.Tensor, q_chunk: torch.Tensor, z: torch.Tensor, *, g: int, wbits: int,
                 symmetric: bool) -> torch.Tensor:
    """``v_i`` for one chunk: ``a_chunk`` (M, K_t), ``q_chunk`` (K_t, N), ``z`` (N,) ->
    (wbits, M, N), through tables and lookups exactly as the core does."""
    m, kt = a_chunk.shape
    groups = kt // g
    tables = table_entries(a_chunk.reshape(m, groups, g), symmetric)            # (M, groups, E)
    s = a_chunk.sum(-1)                                                          # (M,)
    out = []
    for i in range(wbits):
        plane = (q_chunk.to(torch.int64) >> i) & 1                               # (K_t, N)
        pats = (plane.reshape(groups, g, -1) << torch.arange(g)[None, :, None]).sum(1)  # (groups, N)
        look = lookup(tables[:, :, None, :].expand(m, groups, pats.shape[1], tables.shape[-1]),
                      pats[None].expand(m, groups, pats.shape[1]), g, symmetric)  # (M, groups, N)
        zi = (z.to(torch.int64) >> i) & 1
        out.append(look.sum(1) + (1 - 2 * zi)[None, :] * s[:, None])
    return torch.stack(out)


def lut_gemm(a, q, scales, zeros, *, act: IntFormat, acc: IntFormat, g: int, k_tile: int, group_size: int,
             frac: int, wbits: int, ternary: bool = False, symmetric: bool = True) -> torch.Tensor:
    """C (M, N) int64 = sum over quant groups of ``group_rescale(P, scale, frac)``, wrapped
    to ``acc``; ``P`` computed through tables, lookups and plane shift-add (see module).

    ``a`` (M, K) activations; ``q`` (K, N) codes; ``scales`` / ``zeros`` (ceil(K / G), N);
    K is padded to a multiple of G with zero activations. For
    ternary, ``wbits`` must be 2 and every zero point 1. ``k_tile`` = activations per
    chunk (``g * k_groups``); ``group_size`` a multiple of it.
    """
    check_operands(a, q, scales, zeros, act=act, wbits=wbits, ternary=ternary, group_size=group_size)
    if group_size % k_tile or k_tile % g:
        raise ValueError(f"group_size={group_size} must be a multiple of k_tile={k_tile}, itself of g={g}")
    a, q = _pad_k(a, q, group_size)
    m, k = a.shape
    n = q.shape[1]
    c = torch.zeros((m, n), dtype=torch.int64)
    for grp in range(k // group_size):
        two_p = torch.zeros((m, n), dtype=torch.int64)
        z = zeros[grp].to(torch.int64)
        for k0 in range(grp * group_size, (grp + 1) * group_size, k_tile):
            v = plane_values(a[:, k0:k0 + k_tile], q[k0:k0 + k_tile], z, g=g, wbits=wbits, symmetric=symmetric)
            for i in range(wbits):
                two_p = two_p + (v[i] << i)
        p = two_p >> 1
        c = acc.wrap(c + acc.wrap(group_rescale(p, scales[grp][None, :].expand(m, n), frac)))
    return c


def direct_gemm(a, q, scales, zeros, *, acc: IntFormat, group_size: int, frac: int) -> torch.Tensor:
    """The same C by the definition ``P = sum a (q - z)`` (no tables): the check that the
    table path is only a different way to compute the same integers."""
    a, q = _pad_k(a, q, group_size)
    w = weight_values(q, zeros, group_size)
    m, k = a.shape
    c = torch.zeros((m, w.shape[1]), dtype=torch.int64)
    for grp in range(k // group_size):
        sl = slice(grp * group_size, (grp + 1) * group_size)
        p = a[:, sl] @ w[sl]
        c = acc.wrap(c + acc.wrap(group_rescale(p, scales[grp][None, :].expand_as(p), frac)))
    return c
