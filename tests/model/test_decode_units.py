"""Integer decode units against float math: formats, bounds and exactness."""

import math

import pytest
import torch

from ref_model import decode as U
from ref_model import fixedpoint as fx
from ref_model.errors import ConfigError
from ref_model.models.weights import f16_bits, f16_value, quantize_q8_0, quantize_ternary, quantize_w2

G = torch.Generator().manual_seed(7)
F = 12


def _fix(x, frac=F):
    return torch.round(x.double() * (1 << frac)).to(torch.int64)


def test_f16_decode_all_patterns():
    bits = torch.arange(0, 1 << 16)
    finite = ((bits >> 10) & 31) != 31
    bits = bits[finite]
    m, e = U.f16_decode(bits)
    assert torch.equal(m.double() * torch.pow(2.0, e.double()), f16_value(bits).double())
    assert m.abs().max() <= 2047


@pytest.mark.parametrize("block,scale_bits", [(0, 0), (32, 0), (0, 8), (32, 8), (32, 4)])
def test_quantize_act(block, scale_bits):
    y = _fix(torch.randn(256, generator=G) * 5)
    y[40] = 3000 << F  # an outlier
    y[64:96] = 0  # an all-zero block
    a, e, m = U.quantize_act(y, F, block, 8, scale_bits)
    nb = 1 if block == 0 else 8
    assert a.abs().max() <= 127 and e.numel() == nb and m.numel() == nb
    step = (m.double() * torch.pow(2.0, e.double())).unsqueeze(-1)
    deq = a.view(nb, -1).double() * step
    err = (deq.reshape(-1) - y.double() / (1 << F)).abs().view(nb, -1)
    assert (err <= step / 2 * (1 + 2.0 ** -15) + 1e-12).all()
    top = a.view(nb, -1).abs().amax(-1)[y.view(nb, -1).abs().amax(-1) > 0]
    if scale_bits == 0:
        assert (m == 1).all() and (top >= 64).all()  # power of two: top half of the range
    else:
        assert ((m >= 1 << (scale_bits - 1)) & (m < 1 << scale_bits)).all()
        # block max lands near qmax: the scale is rounded up by < 2**(1-b) relative, then
        # the code is rounded to nearest (half a step)
        assert (top >= 127 * (1 - 2.0 ** (1 - scale_bits)) - 0.5).all()


@pytest.mark.parametrize("maker", [quantize_q8_0, quantize_w2, quantize_ternary])
def test_matvec_matches_dequantized_float(maker):
    w = torch.randn(48, 128, generator=G) * 0.05
    b = maker(w)
    d = f16_value(b.d_bits).repeat_interleave(32, 1)
    wf = d * (b.codes - b.offset).double()
    if b.m_bits is not None:
        wf = wf + f16_value(b.m_bits).repeat_interleave(32, 1)
    y = _fix(torch.randn(128, generator=G) * 3)
    for sb in (0, 8):
        a, e, m = U.quantize_act(y, F, 32, 8, sb)
        xq = a.double() * (m.double() * torch.pow(2.0, e.double())).repeat_interleave(32)
        out = U.matvec(b.codes, b.offset, b.d_bits, b.m_bits, a, e, F, a_man=m)
        ref = wf.double() @ xq
        # per group one rounding at Q.24, then one at the output: <= 1 LSB of Q.12
        assert ((out.double() / (1 << F) - ref).abs() <= 2 ** -F * 0.5 + 4 * 2 ** -24).all()
        assert torch.equal(out, U.matvec_int(b.codes, b.offset, b.d_bits, b.m_bits, a, e, F, a_man=m))


def test_matvec_fast_path_is_bit_exact():
    """The float-backed fast path equals the integer statement on wide random inputs."""
    for maker in (quantize_q8_0, quantize_w2):
        w = torch.randn(40, 256, generator=G) * torch.logspace(-4, 1, 256)
        b = maker(w)
        y = _fix(torch.randn(256, generator=G) * torch.logspace(-3, 4, 256))
        y[:32] = 0
        for sb, bits in ((0, 8), (8, 8), (12, 8), (8, 12)):
            a, e, m = U.quantize_act(y, F, 32, bits, sb)
            for acc_bits, acc_frac, of in ((48, 24, F), (32, 16, 8), (40, 30, 16)):
                fast = U.matvec(b.codes, b.offset, b.d_bits, b.m_bits, a, e, of, acc_bits, acc_frac, m)
                ref = U.matvec_int(b.codes, b.offset, b.d_bits, b.m_bits, a, e, of, acc_bits, acc_frac, m)
                assert torch.equal(fast, ref), (maker.__name__, sb, acc_bits)


def test_matvec_accumulator_wraps():
    codes = torch.full((1, 32), 127)
    d = f16_bits(torch.tensor([[60000.0]]))
    a = torch.full((32,), 127)
    out = U.matvec(codes, 0, d, None, a, torch.tensor([0]), 0, acc_bits=32, acc_frac=0)
    total = 60000 * 127 * 127 * 32
    wrapped = (total + (1 << 31)) % (1 << 32) - (1 << 31)
    assert out.item() == wrapped


def test_rmsnorm_close_to_float():
    h = torch.randn(576, generator=G) * 4
    h[3] = 2000.0
    gamma = torch.rand(576, generator=G) + 0.5
    gain = torch.round(gamma.double() * math.sqrt(576) * 4096).to(torch.int64)
    eps = 1e-5
    eps_int = round(576 * eps * 2 ** (2 * F - 10))
    y = U.rmsnorm(_fix(h), gain, eps_int, F, 12)
    ref = h.double() / torch.sqrt((h.double() ** 2).mean() + eps) * gamma.double()
    err = (y.double() / (1 << F) - ref).abs().max()
    assert err <= 2 ** -F + (gain.max() / 4096) * 2 ** -(F + 8) + ref.abs().max() * 2 ** -20


def test_rope_close_to_float():
    x = torch.randn(3, 64, generator=G) * 4
    consts = fx.rope_phase_constants(64, 100000.0)
    pos = 1234
    out = U.rope(_fix(x), fx.rope_phase(pos, consts)).double() / (1 << F)
    ang = pos * 100000.0 ** (-torch.arange(0, 64, 2, dtype=torch.float64) / 64)
    c, s = torch.cos(ang), torch.sin(ang)
    x0, x1 = x.double()[:, 0::2], x.double()[:, 1::2]
    ref = torch.stack([x0 * c - x1 * s, x0 * s + x1 * c], -1).reshape(3, 64)
    assert (out - ref).abs().max() <= 2 ** -F + x.abs().max() * 2 * 2 ** -16


@pytest.mark.parametrize("scale_bits", [0, 8])
def test_kv_quantize_bounds(scale_bits):
    x = _fix(torch.randn(32, 3, 64, generator=G) * 2)
    x[:, 1, 5] = 7  # a constant channel
    for bits in (2, 4, 8):
        for dim, shape in ((0, (1, 3, 64)), (-1, (32, 3, 1))):  # K per channel, V per token
            codes, mn, e, m = U.kv_quantize(x, bits, dim, scale_bits)
            assert mn.shape == shape and codes.min() >= 0 and codes.max() <= (1 << bits) - 1
            step = m.double() * torch.pow(2.0, e.double())
            rng = x.amax(dim, keepdim=True) - mn
            assert (step * ((1 << bits) - 0.5) >= rng).all()  # the step covers the range
            if scale_bits:
                assert (step * ((1 << bits) - 1) <= rng * (1 + 2.0 ** (1 - scale_bits)) + 1).all()
            err = (U.kv_dequantize(codes, mn, e, m) - x).abs()
            assert (err <= step / 2 * (1 + 2.0 ** -15) + 0.5).all()


def test_kv_dequantize_extreme_records_exact():
    """Records with any shift: the result is the exact sat32(mn + round(code*m*2**e)), with
    no int64 overflow for large ``e`` (it used to read back ``mn`` or wrap to INT32_MIN)."""
    codes = torch.tensor([0, 1, 255, 255, 255, 255, 3, 255])
    m = torch.tensor([65535, 1, 65535, 65535, 65535, 1, 65535, 65535])
    mn = torch.tensor([-1, -(1 << 31), -1, -(1 << 31), 5, 0, -1, 7])
    e = torch.tensor([127, 31, 40, 127, -128, -8, -17, -24])
    got = U.kv_dequantize(codes, mn, e, m).tolist()
    for c, mm, b, s, y in zip(codes.tolist(), m.tolist(), mn.tolist(), e.tolist(), got):
        step = c * mm * 2 ** s
        exact = b + math.floor(step + 0.5)
        assert y == max(-(1 << 31), min((1 << 31) - 1, exact)), (c, mm, b, s, y)


def test_attention_close_to_float():
    g = torch.Generator().manual_seed(11)  # own stream: independent of test order (xdist)
    T, nh, nkv, hd = 20, 6, 2, 64
    q = torch.randn(nh, hd, generator=g) * 2
    k = torch.randn(T, nkv, hd, generator=g) * 2
    v = torch.randn(T, nkv, hd, generator=g)
    out = U.attention(_fix(q), _fix(k), _fix(v), F).double() / (1 << F)
    kh = k.double().repeat_interleave(3, 1)
    vh = v.double().repeat_interleave(3, 1)
    p = torch.softmax(torch.einsum("hd,thd->ht", q.double(), kh) / 8, -1)
    ref = torch.einsum("ht,thd->hd", p, vh)
    assert (out - ref).abs().max() < 0.05  # dominated by the int8 query
    # with an exactly representable query the error is the softmax units' alone
    qi = torch.randint(-127, 128, (nh, hd), generator=g)
    out = U.attention(qi << F, _fix(k), _fix(v), F).double() / (1 << F)
    p = torch.softmax(torch.einsum("hd,thd->ht", qi.double(), torch.round(kh * 4096) / 4096) / 8, -1)
    ref = torch.einsum("ht,thd->hd", p, torch.round(vh * 4096) / 4096)
    assert (out - ref).abs().max() < 1e-3


def test_swiglu_and_residual():
    g = torch.randn(256, generator=G) * 6
    u = torch.randn(256, generator=G) * 3
    out = U.swiglu(_fix(g), _fix(u), F).double() / (1 << F)
    ref = torch.nn.functional.silu(g.double()) * u.double()
    assert (out - ref).abs().max() <= 2 ** -F + 2 ** -15 * (1 + g.abs().max()) * u.abs().max()
    big = torch.tensor([(1 << 31) - 10, -(1 << 31) + 10])
    assert U.residual_add(big, torch.tensor([100, -100])).tolist() == [(1 << 31) - 1, -(1 << 31)]
    assert U.argmax(torch.tensor([3, 9, 9, 1])) == 1


def test_numerics_validation():
    with pytest.raises(ConfigError, match="kv_bits = 3"):
        U.DecodeNumerics(kv_bits=3)
    with pytest.raises(ConfigError, match="act_block = 48"):
        U.DecodeNumerics(act_block=48)
    with pytest.raises(ConfigError, match="weights"):
        U.DecodeNumerics(weights="w3")
    n = U.DecodeNumerics(kv_bits=4, kv_window=16)
    assert U.DecodeNumerics.from_dict(n.to_dict()) == n
