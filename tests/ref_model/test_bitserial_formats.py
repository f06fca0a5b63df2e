"""Weight data types, the per-group type choice, the unified sign-magnitude planes and the
bit-serial GEMM reference (ref_model.formats, ref_model.bitserial)."""

import pytest
import torch

from ref_model.bitserial import bitserial_gemm, group_partials
from ref_model.errors import ConfigError
from ref_model.formats import (
    TYPE_SETS, f16_encode, group_rescale, quantize_groups, relative_rms_error, sign_magnitude_planes, weight_type,
)


@pytest.mark.parametrize("name,bits,planes,values", [
    ("int2", 2, 1, [-1, 0, 1]), ("int4", 4, 3, list(range(-7, 8))), ("int8", 8, 7, list(range(-127, 128))),
    ("ternary", 2, 1, [-1, 0, 1]), ("fp4", 4, 4, [-12, -8, -6, -4, -3, -2, -1, 0, 1, 2, 3, 4, 6, 8, 12]),
    ("fp4+10", 4, 4, [-12, -8, -6, -4, -3, -2, -1, 0, 1, 2, 3, 4, 6, 8, 10, 12]),
    ("fp3-6", 3, 3, [-6, -4, -2, -1, 0, 1, 2, 4]),
])
def test_type_grids(name, bits, planes, values):
    t = weight_type(name)
    assert (t.bits, t.planes, list(t.values)) == (bits, planes, values)
    # A code of ``bits`` bits holds every value: at most 2**bits of them.
    assert len(t.values) <= 1 << bits


def test_asymmetric_types_use_all_planes():
    for n in range(2, 9):
        t = weight_type(f"int{n}a")
        assert t.asymmetric and t.planes == n and t.max_abs == (1 << n) - 1


@pytest.mark.parametrize("bad", ["int1", "int9", "fp4+7", "fp5", "float", "int4b"])
def test_unknown_type_is_one_line_error(bad):
    with pytest.raises(ConfigError, match="allowed"):
        weight_type(bad)


def test_group_size_checked():
    with pytest.raises(ConfigError, match="group_size=48"):
        quantize_groups(torch.randn(64, 4), 48, ["int4"])


def test_mixture_picks_the_best_type_per_group():
    """Per group the mixture's squared error equals the minimum over its types, and the
    mixture's matrix error is never above any single type of the set."""
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(256, 24, generator=gen) * torch.rand(1, 24, generator=gen)
    w[:, 3] = torch.randn(256, generator=gen).abs()  # skewed columns favour the +/- special values
    for set_name in ("int4+fp4", "int3+fp3"):
        types = TYPE_SETS[set_name]
        mix = quantize_groups(w, 64, types)
        err_mix = ((w - mix.dequantize()) ** 2).reshape(4, 64, 24).sum(1)
        singles = torch.stack([((w - quantize_groups(w, 64, [t]).dequantize()) ** 2).reshape(4, 64, 24).sum(1)
                               for t in types])
        assert torch.allclose(err_mix, singles.min(0).values, rtol=1e-6, atol=1e-12)
        assert len(set(mix.type_ids.reshape(-1).tolist())) > 1
        assert relative_rms_error(w, mix.dequantize()) <= min(
            relative_rms_error(w, quantize_groups(w, 64, [t]).dequantize()) for t in types) + 1e-12


def test_quantized_values_on_grid_and_scales_exact():
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(100, 7, generator=gen)  # K not a multiple of the group: padded
    q = quantize_groups(w, 32, TYPE_SETS["int4+fp4"])
    assert q.values.shape == (100, 7) and q.scale_bits.shape == (4, 7)
    for g in range(4):
        for n in range(7):
            grid = set(q.types[int(q.type_ids[g, n])].values)
            assert set(q.values[g * 32:(g + 1) * 32, n].tolist()) <= grid
    asym = quantize_groups(w, 32, ["int4a"])
    assert int(asym.values.abs().max()) <= 15 and bool((asym.zero_points >= 0).all())
    # Real value = f16(scale) * value, with values exactly the integers the core sees.
    assert relative_rms_error(w, q.dequantize()) < 0.15


def test_all_zero_group_quantizes_to_zero():
    w = torch.zeros(64, 2)
    w[32:, 1] = 1.0
    q = quantize_groups(w, 32, TYPE_SETS["int3+fp3"])
    assert bool((q.values[:32] == 0).all()) and bool((q.dequantize()[:32] == 0).all())


def test_sign_magnitude_planes_round_trip():
    v = torch.arange(-15, 16).reshape(31, 1)
    sign, planes = sign_magnitude_planes(v, 4)
    back = (planes * (1 << torch.arange(4)).reshape(4, 1, 1)).sum(0) * (1 - 2 * sign)
    assert torch.equal(back, v)
    with pytest.raises(ValueError, match="planes"):
        sign_magnitude_planes(torch.tensor([16]), 4)


def test_bitserial_gemm_is_the_group_rule():
    """C = wrap(sum_g group_rescale(P_g)): checked against an explicit loop, and close to
    the float product of the dequantized operands."""
    gen = torch.Generator().manual_seed(2)
    a = torch.randint(-128, 128, (5, 150), generator=gen)
    w = torch.randn(150, 6, generator=gen)
    q = quantize_groups(w, 64, TYPE_SETS["int4+fp4"])
    frac = 10
    c = bitserial_gemm(a, q.values, q.scale_bits, 64, frac, 32)
    p = group_partials(a, q.values, 64)
    loop = sum(group_rescale(p[:, g], q.scale_bits[g], frac) for g in range(p.shape[1]))
    assert torch.equal(c, loop)
    ref = a.double() @ q.dequantize().double() * 2 ** frac
    assert float((c.double() - ref).abs().max()) <= p.shape[1] * 0.5 + 1e-6  # one half-ulp per group


def test_bitserial_gemm_wraps_at_acc_bits():
    a = torch.full((1, 128), -128)
    v = torch.full((128, 1), -255)
    s = f16_encode(torch.tensor([[65504.0]]))
    c = bitserial_gemm(a, v, s, 128, 8, 16)
    assert -(1 << 15) <= int(c) < (1 << 15)
    exact = group_rescale(torch.tensor(128 * 128 * 255), s[0, 0], 8)
    assert int(c) == ((int(exact) + (1 << 15)) % (1 << 16)) - (1 << 15)
