"""Operand generators for the bit-serial core cosim: every data type and plane count,
group sizes, random and edge cases (all-zero groups, largest scales, negative extremes,
subnormal and negative scales), shapes that are not multiples of the array."""

from __future__ import annotations

import torch

from host_runtime.bitserial_layout import BitSerialWeights
from ref_model.formats import TYPE_SETS, f16_encode, quantize_groups, weight_type

#: f16 patterns worth hitting: largest finite, smallest subnormal, 1.0, -1.0, -largest, 0, -0.
SCALE_EDGES = [0x7BFF, 0x0001, 0x3C00, 0xBC00, 0xFBFF, 0x0000, 0x8000, 0x03FF, 0x0400]


def _scales(groups: int, n: int, gen) -> torch.Tensor:
    mag = torch.exp2(torch.randint(-12, 4, (groups, n), generator=gen).to(torch.float32))
    sign = torch.where(torch.rand((groups, n), generator=gen) < 0.2, -1.0, 1.0)
    return f16_encode(mag * (0.5 + torch.rand((groups, n), generator=gen)) * sign)


def random_weights(k: int, n: int, planes: int, group: int, gen) -> BitSerialWeights:
    top = (1 << planes) - 1
    v = torch.randint(-top, top + 1, (k, n), generator=gen)
    return BitSerialWeights(v, _scales(-(-k // group), n, gen), group, planes)


def acts(m: int, k: int, cfg, gen) -> torch.Tensor:
    return cfg.act_format.random((m, k), gen)


def type_cases(cfg, gen, m: int, k: int, n: int, group: int):
    """One GEMM per data type and per BitMoD mixture: float weights quantized by
    :func:`ref_model.formats.quantize_groups` (mixtures put several types in one matrix)."""
    names = ["int2", "int3", "int4", "int5", "int6", "int7", "int8", "int2a", "int3a", "int4a", "int5a",
             "int6a", "int7a", "int8a", "ternary", "fp3", "fp4"]
    sets = [(nm, (nm,)) for nm in names] + [(s, TYPE_SETS[s]) for s in ("int4+fp4", "int3+fp3")]
    out = []
    for label, types in sets:
        if max(weight_type(t).planes for t in types) > cfg.core.max_planes:
            continue
        w = torch.randn((k, n), generator=gen) * (1 + 3 * torch.rand((1, n), generator=gen))
        q = quantize_groups(w, group, types)
        if len(types) > 1:
            assert len(set(q.type_ids.reshape(-1).tolist())) > 1, f"{label}: the mixture chose one type only"
        out.append((f"type {label} G={group} {m}x{k}x{n}", acts(m, k, cfg, gen), BitSerialWeights.from_quantized(q)))
    return out


def edge_cases(cfg, gen, group: int):
    """Extremes: all-zero groups, largest scales, -128 activations against -max weights,
    scale patterns of every kind, one-plane and most-plane runs."""
    R, C, P = cfg.core.rows, cfg.core.cols, cfg.core.max_planes
    amin = cfg.act_format.min
    out = []
    k, n = 2 * group + 5, C + 1
    top = (1 << P) - 1
    # Negative extremes with the largest scale: |P| and the product at their widest; wraps.
    v = torch.full((k, n), -top)
    v[:, 1::2] = top
    s = torch.full((-(-k // group), n), 0x7BFF)
    s[:, 2::3] = 0xFBFF
    out.append((f"extremes planes={P} max scales", torch.full((3, k), amin), BitSerialWeights(v, s, group, P)))
    # All-zero groups (weights), all-zero activations rows, and every scale edge pattern.
    w = random_weights(k, n, P, group, gen)
    vals = w.values.clone()
    vals[:group] = 0
    edges = torch.tensor(SCALE_EDGES)
    sc = edges[torch.randint(len(edges), w.scale_bits.shape, generator=gen)]
    a = acts(R + 1, k, cfg, gen)
    a[1] = 0
    out.append(("zero groups, scale edges", a, BitSerialWeights(vals, sc, group, P)))
    # One plane (ternary-like values) and a shape smaller than the array.
    out.append(("1 plane 1x1x1", acts(1, 1, cfg, gen), random_weights(1, 1, 1, group, gen)))
    return out


def plane_cases(cfg, gen, group: int):
    """Every plane count 1..max_planes with random values over the full magnitude range,
    shapes off the array's multiples."""
    R, C = cfg.core.rows, cfg.core.cols
    out = []
    for planes in range(1, cfg.core.max_planes + 1):
        m = int(torch.randint(1, 2 * R + 2, (1,), generator=gen))
        k = int(torch.randint(1, 3 * group, (1,), generator=gen))
        n = int(torch.randint(1, 2 * C + 3, (1,), generator=gen))
        out.append((f"planes={planes} {m}x{k}x{n}", acts(m, k, cfg, gen), random_weights(k, n, planes, group, gen)))
    return out
