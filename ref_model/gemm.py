"""Bit-exact GEMM references for the tensor cores.

``systolic_gemm`` mirrors :class:`hw.cores.systolic.SystolicCore` for both dataflows:
products are exact, the running sum is kept in an ``acc_bits`` two's-complement register
that wraps on overflow (the adder simply drops the carry out). Because wrap-around
addition is associative modulo 2**acc_bits, the order in which the hardware adds the
products (by k in output-stationary, by k-block then row in weight-stationary) does not
change the bits, so the reference sums in int64 and wraps once.
"""

from __future__ import annotations

import torch

from .formats import IntFormat, product_format


def _check_operand(name: str, x: torch.Tensor, fmt: IntFormat) -> torch.Tensor:
    if x.dtype.is_floating_point:
        raise TypeError(f"{name} must be an integer tensor, got {x.dtype}")
    if not fmt.contains(x):
        raise ValueError(f"{name} has values outside {fmt.name} [{fmt.min}, {fmt.max}]")
    return x.to(torch.int64)


def systolic_gemm(a: torch.Tensor, w: torch.Tensor, act: IntFormat, weight: IntFormat,
                  acc: IntFormat) -> torch.Tensor:
    """C = A @ W with exact products and a wrapping ``acc`` accumulator.

    Parameters
    ----------
    a : (M, K) integer tensor in format ``act``.
    w : (K, N) integer tensor in format ``weight``.
    acc : accumulator format (signed, ``acc_bits`` wide); the sum wraps modulo 2**acc_bits.

    Returns
    -------
    (M, N) int64 tensor of accumulator values in ``acc``'s range.
    """
    a = _check_operand("activations", a, act)
    w = _check_operand("weights", w, weight)
    if a.dim() != 2 or w.dim() != 2 or a.shape[1] != w.shape[0]:
        raise ValueError(f"shapes {tuple(a.shape)} and {tuple(w.shape)} do not form a GEMM")
    prod = product_format(act, weight)
    k = a.shape[1]
    # int64 holds the exact sum while |sum| < 2^63: prod.bits + log2(K) must stay below 63.
    if prod.bits + max(k, 1).bit_length() >= 63:
        raise ValueError(f"K={k} with {prod.bits}-bit products overflows the int64 reference")
    return acc.wrap(a @ w)
