"""Each fixed-point unit swept over its whole input range against its stated bound."""

import math

import pytest
import torch

from ref_model import fixedpoint as fx

G = torch.Generator().manual_seed(1)


def _wide_uints(n=100_000):
    x = torch.randint(1, 1 << 62, (n,), generator=G) >> torch.randint(0, 62, (n,), generator=G)
    return torch.cat([x.clamp(min=1), torch.tensor([1, 2, 3, 4, (1 << 62) - 1, 1 << 61, (1 << 24) - 1])])


def _val(m, s):
    return m.double() * torch.pow(2.0, -s.double())


def test_rshift_round_half_up():
    x = torch.tensor([-3, -2, -1, 0, 1, 2, 3, 5, -5])
    assert fx.rshift_round(x, 1).tolist() == [-1, -1, 0, 0, 1, 1, 2, 3, -2]
    assert fx.rshift_round(x, 0).tolist() == x.tolist()
    assert fx.rshift_round(torch.tensor([3, 3]), torch.tensor([-2, 1])).tolist() == [12, 2]


def test_bit_length():
    x = torch.tensor([0, 1, 2, 3, 255, 256, (1 << 62) + 5])
    assert fx.bit_length(x).tolist() == [int(v).bit_length() for v in x.tolist()]


@pytest.mark.parametrize("lo,hi", [(1 << 22, 1 << 24)])
def test_rsqrt_bound(lo, hi):
    xn = torch.arange(lo, hi, 3)  # every third normalized mantissa: the whole table range
    for x in (xn, _wide_uints()):
        m, s = fx.rsqrt(x)
        assert ((m >= 1 << 22) & (m <= 1 << 23)).all()
        rel = (_val(m, s) * x.double().sqrt() - 1).abs().max().item()
        assert rel <= 2 ** -21


def test_reciprocal_bound():
    xn = torch.arange(1 << 23, 1 << 24, 2)
    for x in (xn, _wide_uints()):
        m, s = fx.reciprocal(x)
        rel = (_val(m, s) * x.double() - 1).abs().max().item()
        assert rel <= 2 ** -21


def test_exp_neg_bound():
    x = torch.cat([torch.arange(-(1 << 21), 1), torch.tensor([-(1 << 31), -(1 << 24)])])
    y = fx.exp_neg(x)
    err = (y.double() - torch.exp(x.double() / 65536) * 65536).abs().max().item()
    assert err <= 1.0
    assert y[-3].item() == 65536  # exp(0) = 1 exactly
    with pytest.raises(ValueError):
        fx.exp_neg(torch.tensor([1]))


def test_sincos_bound():
    p = torch.cat([torch.arange(0, 1 << 32, 1 << 9) + 131, torch.tensor([0, (1 << 32) - 1, 1 << 30, 1 << 31])])
    c, s = fx.sincos(p)
    ang = p.double() * (2 * math.pi / 2 ** 32)
    assert (c.double() - torch.cos(ang) * 65536).abs().max().item() <= 1.0
    assert (s.double() - torch.sin(ang) * 65536).abs().max().item() <= 1.0
    assert c.abs().max() <= 65536 and s.abs().max() <= 65536


def test_rope_phase_accuracy():
    consts = fx.rope_phase_constants(64, 100000.0)
    for pos in (0, 1, 777, 8191):
        ph = fx.rope_phase(pos, consts).double() / 2 ** 32
        exact = torch.tensor([(pos * 100000.0 ** (-2 * i / 64) / (2 * math.pi)) % 1 for i in range(32)], dtype=torch.float64)
        d = (ph - exact).abs()
        d = torch.minimum(d, 1 - d)
        assert d.max().item() <= pos * 2 ** -49 + 2 ** -32


def test_sigmoid_and_silu_bound():
    x = torch.cat([torch.arange(-(1 << 21), 1 << 21), torch.tensor([-(1 << 31), (1 << 31) - 1])])
    xf = x.double() / 65536
    sg = fx.sigmoid(x)
    assert (sg.double() - torch.sigmoid(xf) * 65536).abs().max().item() <= 1.0
    sl = fx.silu(x)
    err = (sl.double() / 65536 - xf * torch.sigmoid(xf)).abs()
    assert (err <= 2 ** -16 * (1 + xf.abs())).all()
