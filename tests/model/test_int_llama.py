"""Integer decoder on the tiny model: agreement with the float model, KV modes, determinism."""

import pytest
import torch

from ref_model.decode import DecodeNumerics, DecodeShape
from ref_model.errors import ConfigError
from ref_model.models.float_llama import FloatLlama
from ref_model.models.int_llama import IntLlama

TOKENS = [1, 262, 267, 35, 52, 53, 54, 100, 120, 140, 160, 180, 200, 2]


@pytest.fixture(scope="module")
def float_logits(tiny_model):
    return FloatLlama(tiny_model).logits(TOKENS)


# Tolerances: relative max logit error measured on this random toy model (int8
# activations dominate; KV4 over groups of 4 random tokens is coarse) with ~1.3x margin.
# The real fidelity numbers come from the real checkpoint (ref_model.models.fidelity).
@pytest.mark.parametrize("kw,tol", [
    (dict(), 0.1), (dict(kv_bits=16), 0.08), (dict(kv_bits=4, k_group=4), 0.5),
    (dict(kv_bits=4, k_group=4, kv_window=4), 0.3), (dict(act_block=0), 0.08),
])
def test_int_close_to_float(tiny_model, float_logits, kw, tol):
    im = IntLlama(tiny_model, DecodeNumerics(**kw))
    il = im.logits(TOKENS)
    assert il.dtype == torch.int64 and il.abs().max() < 2 ** 31
    lf = im.to_float(il)
    rel = (lf - float_logits).abs().max() / float_logits.abs().max()
    assert rel < tol, rel
    top1 = (lf.argmax(-1) == float_logits.argmax(-1)).float().mean()
    assert top1 >= (0.75 if kw.get("kv_bits", 8) != 4 else 0.5)  # 14 positions of flat random logits


def test_deterministic_and_cache_layout(tiny_model):
    im = IntLlama(tiny_model, DecodeNumerics(kv_bits=4, k_group=4, kv_window=2))
    a = im.logits(TOKENS)
    cache = im.new_cache(len(TOKENS))
    b = torch.stack([im.step(t, cache) for t in TOKENS])
    assert torch.equal(a, b)
    c = cache.layers[0]
    n = len(TOKENS)
    assert c.vq == n - 2 and c.kq == (n - 2) // 4 * 4
    assert c.k_codes.max() <= 15 and c.v_codes.max() <= 15 and len(c.k_min) == c.kq // 4


@pytest.mark.parametrize("mode", ["w2", "ternary"])
def test_low_bit_weights_run(tiny_model, mode):
    im = IntLlama(tiny_model, DecodeNumerics(weights=mode))
    q = im.layers[0]["attn_q"]
    vals = set(torch.unique(q.codes).tolist())
    assert vals <= ({0, 1, 2, 3} if mode == "w2" else {-1, 0, 1})
    il = im.logits(TOKENS[:4])
    assert il.shape == (4, tiny_model.hparams.vocab_size)


def test_shape_limits(tiny_model):
    shape = DecodeShape.from_hparams(tiny_model.hparams, 128)
    shape.check_fits(tiny_model.hparams, 64)
    with pytest.raises(ConfigError, match="max_context"):
        shape.check_fits(tiny_model.hparams, 512)
