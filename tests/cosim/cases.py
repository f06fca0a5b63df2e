"""GEMM operand generators for cosim: seeded random shapes and values, and edge cases."""

from __future__ import annotations

import torch

from ref_model.formats import IntFormat


def random_gemm(m: int, k: int, n: int, act: IntFormat, weight: IntFormat, gen: torch.Generator):
    return act.random((m, k), gen), weight.random((k, n), gen)


def extreme_gemm(m: int, k: int, n: int, act: IntFormat, weight: IntFormat, gen: torch.Generator):
    """Operands drawn only from each format's edge values (min, max, 0, +-1...)."""
    av = torch.tensor(act.extremes())
    wv = torch.tensor(weight.extremes())
    a = av[torch.randint(len(av), (m, k), generator=gen)]
    w = wv[torch.randint(len(wv), (k, n), generator=gen)]
    return a, w


def corner_products(k: int, act: IntFormat, weight: IntFormat):
    """Rows and columns that produce the largest and smallest sums over K: all-min x all-min,
    all-max x all-max, all-min x all-max (the accumulator-overflow corners)."""
    a = torch.tensor([[act.min] * k, [act.max] * k, [act.min] * k])
    w = torch.tensor([[weight.min, weight.max, 0]] * k)
    return a, w


def standard_cases(cfg, seed: int, *, sizes=None):
    """The cosim case list for one config: list of (label, A, W)."""
    R, C = cfg.core.rows, cfg.core.cols
    act, weight = cfg.act_format, cfg.weight_format
    gen = torch.Generator().manual_seed(seed)
    k_cap = cfg.core.k_max if cfg.core.dataflow == "output_stationary" else 4 * R + 3
    k_cap = min(k_cap, 4 * R + 3)
    shapes = sizes or [
        (1, 1, 1),
        (R, R, C),                               # exactly one tile
        (R + 1, 2 * R - 1, C + 1),               # just past the array, K below 2R
        (3 * R - 1, k_cap, 2 * C + 3),           # several tiles, odd sizes
        (int(torch.randint(1, 3 * R + 2, (1,), generator=gen)), int(torch.randint(1, k_cap + 1, (1,), generator=gen)),
         int(torch.randint(1, 3 * C + 2, (1,), generator=gen))),
    ]
    cases = []
    for m, k, n in shapes:
        cases.append((f"random {m}x{k}x{n}", *random_gemm(m, k, n, act, weight, gen)))
    m, k, n = shapes[3]
    cases.append((f"extremes {m}x{k}x{n}", *extreme_gemm(m, k, n, act, weight, gen)))
    cases.append((f"corners K={k_cap}", *corner_products(k_cap, act, weight)))
    cases.append(("1x1x1 min*min", torch.tensor([[act.min]]), torch.tensor([[weight.min]])))
    cases.append(("1x1x1 max*max", torch.tensor([[act.max]]), torch.tensor([[weight.max]])))
    cases.append(("zeros", torch.zeros((R + 2, 3), dtype=torch.int64), weight.random((3, C + 2), gen)))
    return cases
