"""ref_model.formats and ref_model.gemm against first principles."""

import itertools

import pytest
import torch

from ref_model.errors import ConfigError
from ref_model.formats import IntFormat, product_format
from ref_model.gemm import systolic_gemm


@pytest.mark.parametrize("bits,signed", [(b, s) for b in (2, 3, 8, 16) for s in (True, False)])
def test_ranges_and_encoding(bits, signed):
    f = IntFormat(bits, signed)
    values = torch.arange(f.min, f.max + 1)
    assert f.contains(values) and not f.contains(torch.tensor([f.max + 1]))
    assert torch.equal(f.decode(f.encode(values)), values)
    assert int(f.encode(values).max()) < (1 << bits)
    assert torch.equal(f.wrap(values + (1 << bits)), values)
    assert torch.equal(f.saturate(torch.tensor([f.min - 5, f.max + 5])), torch.tensor([f.min, f.max]))


def test_bad_width():
    with pytest.raises(ConfigError):
        IntFormat(0)
    with pytest.raises(ConfigError):
        IntFormat(65)


@pytest.mark.parametrize("a,b", list(itertools.product([IntFormat(3, True), IntFormat(3, False),
                                                        IntFormat(4, True), IntFormat(2, False)], repeat=2)))
def test_product_format_is_tight(a, b):
    p = product_format(a, b)
    prods = [x * y for x in range(a.min, a.max + 1) for y in range(b.min, b.max + 1)]
    assert p.contains(torch.tensor(prods))
    assert p.bits == a.bits + b.bits


def test_gemm_wraps_like_a_sequential_accumulator():
    act, wt, acc = IntFormat(8), IntFormat(8), IntFormat(16)
    gen = torch.Generator().manual_seed(0)
    a, w = act.random((5, 37), gen), wt.random((37, 4), gen)
    got = systolic_gemm(a, w, act, wt, acc)
    for i in range(5):
        for j in range(4):
            s = 0
            for k in range(37):
                s = int(acc.wrap(torch.tensor(s + int(a[i, k]) * int(w[k, j]))))
            assert got[i, j] == s


def test_gemm_rejects_bad_operands():
    act = IntFormat(4)
    with pytest.raises(ValueError, match="outside int4"):
        systolic_gemm(torch.tensor([[8]]), torch.tensor([[1]]), act, act, IntFormat(16))
    with pytest.raises(TypeError):
        systolic_gemm(torch.tensor([[1.0]]), torch.tensor([[1]]), act, act, IntFormat(16))
    with pytest.raises(ValueError, match="do not form a GEMM"):
        systolic_gemm(torch.zeros((2, 3), dtype=torch.int64), torch.zeros((2, 3), dtype=torch.int64), act, act,
                      IntFormat(16))
