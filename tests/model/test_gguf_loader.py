"""GGUF loader on a tiny random model: hyper-parameters, dequantization, tokenizer, errors."""

import shutil

import gguf
import numpy as np
import pytest
import torch

from ref_model.errors import LutforgeError
from ref_model.models.gguf_model import ModelFileError, load_gguf
from ref_model.models.tiny import write_tiny_llama


def test_hparams(tiny_model):
    hp = tiny_model.hparams
    assert (hp.n_layers, hp.dim, hp.n_heads, hp.n_kv_heads, hp.ffn_dim) == (2, 64, 4, 2, 96)
    assert hp.head_dim == 16 and hp.kv_dim == 32 and hp.tied_embeddings
    assert hp.rope_base == 10000.0 and hp.context_length == 256
    assert abs(hp.norm_eps - 1e-5) < 1e-9
    kinds = {t.kind for t in tiny_model.tensors.values()}
    assert kinds == {"Q8_0", "Q4_1", "Q4_0", "F16", "F32"}


def test_dequantize_matches_gguf_package(tiny_model):
    for t in tiny_model.tensors.values():
        ref = gguf.quants.dequantize(np.asarray(t.raw), gguf.GGMLQuantizationType[t.kind])
        ours = t.dequantize()
        assert ours.shape == torch.Size(t.shape)
        assert torch.equal(ours, torch.from_numpy(np.ascontiguousarray(ref).reshape(t.shape)))


def test_blocks_fields(tiny_model):
    b = tiny_model.tensor("blk.0.attn_q.weight").blocks()
    assert b.kind == "Q4_1" and b.codes.min() >= 0 and b.codes.max() <= 15 and b.m_bits is not None
    b = tiny_model.tensor("blk.0.attn_output.weight").blocks()
    assert b.offset == 8 and b.m_bits is None
    b = tiny_model.tensor("token_embd.weight").blocks()
    assert b.codes.min() >= -128 and b.codes.max() <= 127


def test_tokenizer(tiny_model):
    tk = tiny_model.tokenizer
    enc = tk.encode("hello world 12<|im_end|>")
    assert enc.tokens == ["hello", "Ġworld", "Ġ", "1", "2", "<|im_end|>"]
    assert tk.decode(enc.ids, skip_special_tokens=False) == "hello world 12<|im_end|>"
    assert tiny_model.bos_id == 1 and tiny_model.eos_id == 2


def _one_line_error(path, match):
    with pytest.raises(ModelFileError, match=match) as ei:
        load_gguf(path)
    assert isinstance(ei.value, LutforgeError)
    assert "\n" not in str(ei.value)


def test_missing_file(tmp_path):
    _one_line_error(tmp_path / "nope.gguf", "does not exist")


def test_truncated_file(tiny_path, tmp_path):
    data = tiny_path.read_bytes()
    for cut in (len(data) - 100, len(data) // 2, 200, 10):
        p = tmp_path / f"cut{cut}.gguf"
        p.write_bytes(data[:cut])
        _one_line_error(p, "truncated|corrupt")


def test_corrupt_magic(tiny_path, tmp_path):
    p = tmp_path / "bad.gguf"
    shutil.copy(tiny_path, p)
    with open(p, "r+b") as fh:
        fh.write(b"GGML")
    _one_line_error(p, "not a GGUF file")
    (tmp_path / "empty.gguf").write_bytes(b"")
    _one_line_error(tmp_path / "empty.gguf", "not a GGUF file")


def test_unsupported_architecture(tmp_path):
    p = write_tiny_llama(tmp_path / "gpt2.gguf", arch="gpt2")
    _one_line_error(p, "architecture 'gpt2' is not supported")


def test_unsupported_tensor_type(tmp_path):
    p = write_tiny_llama(tmp_path / "q5.gguf", bad_type=True)
    _one_line_error(p, "type Q5_0, not supported")


def test_missing_tensor_and_bad_shape(tiny_path, tmp_path):
    m = load_gguf(tiny_path)
    with pytest.raises(ModelFileError, match="missing"):
        m.tensor("blk.9.attn_q.weight")
