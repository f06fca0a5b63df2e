"""The LUT reference: tables, symmetrization, lookups and the table path == the definition."""

import pytest
import torch

from ref_model.formats import IntFormat, f16_encode
from ref_model.lut import direct_gemm, lookup, lut_gemm, table_entries


@pytest.mark.parametrize("g", [2, 3, 4])
def test_symmetric_table_is_the_upper_half_and_odd(g):
    gen = torch.Generator().manual_seed(g)
    acts = IntFormat(8).random((5, g), gen)
    full = table_entries(acts, symmetric=False)
    half = table_entries(acts, symmetric=True)
    assert half.shape[-1] == full.shape[-1] // 2
    assert torch.equal(half, full[:, 1 << (g - 1):])
    pats = torch.arange(1 << g)
    assert torch.equal(full[:, pats], -full[:, (~pats) & ((1 << g) - 1)])   # T(~p) = -T(p)
    for p in range(1 << g):   # a symmetric lookup returns the full table's entry for every pattern
        pt = torch.full((5,), p)
        assert torch.equal(lookup(half, pt, g, True), full[:, p])
        assert torch.equal(lookup(full, pt, g, False), full[:, p])


@pytest.mark.parametrize("g,kg,G,wbits,ternary,sym,abits,k", [
    (4, 2, 32, 2, False, True, 8, 96), (2, 2, 16, 4, False, False, 16, 40), (3, 1, 12, 3, False, True, 8, 36),
    (4, 1, 8, 2, True, True, 16, 24), (2, 3, 12, 1, False, True, 8, 13), (4, 4, 64, 4, False, True, 8, 200),
])
def test_table_path_equals_definition(g, kg, G, wbits, ternary, sym, abits, k):
    gen = torch.Generator().manual_seed(k)
    act, acc = IntFormat(abits), IntFormat(24)
    m, n = 3, 7
    groups = -(-k // G)
    qmax = 2 if ternary else (1 << wbits) - 1
    a = act.random((m, k), gen)
    q = torch.randint(0, qmax + 1, (k, n), generator=gen)
    z = torch.ones((groups, n), dtype=torch.int64) if ternary else torch.randint(0, qmax + 1, (groups, n), generator=gen)
    s = f16_encode(torch.randn((groups, n), generator=gen) * 0.3)
    c = lut_gemm(a, q, s, z, act=act, acc=acc, g=g, k_tile=g * kg, group_size=G, frac=10, wbits=wbits,
                 ternary=ternary, symmetric=sym)
    assert torch.equal(c, direct_gemm(a, q, s, z, acc=acc, group_size=G, frac=10))
    # and the definition in floats, before rounding, is close (scale * sum a (q - z) in Q.10)
    w = (q - z.repeat_interleave(G, 0)[:k]).double() * s.to(torch.int16).view(torch.float16).double().repeat_interleave(G, 0)[:k]
    exact = (a.double() @ w) * 1024
    if exact.abs().max() < (1 << 23) - groups:
        assert (c.double() - exact).abs().max() <= groups * 0.5 + 1e-6


def test_bad_operands_are_named():
    act, acc = IntFormat(8), IntFormat(32)
    a = torch.zeros((2, 8), dtype=torch.int64)
    q = torch.zeros((8, 3), dtype=torch.int64)
    ok = dict(act=act, acc=acc, g=2, k_tile=4, group_size=8, frac=4, wbits=2)
    s, z = torch.zeros((1, 3), dtype=torch.int64), torch.zeros((1, 3), dtype=torch.int64)
    with pytest.raises(ValueError, match="weight codes outside 0..3"):
        lut_gemm(a, q + 4, s, z, **ok)
    with pytest.raises(ValueError, match="zero points"):
        lut_gemm(a, q, s, z, **dict(ok, ternary=True))
    with pytest.raises(ValueError, match=r"scales/zeros must be \(1, 3\)"):
        lut_gemm(a, q, s[:, :2], z, **ok)
    with pytest.raises(ValueError, match="activations outside int8"):
        lut_gemm(a + 200, q, s, z, **ok)
