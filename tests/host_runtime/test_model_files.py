"""Hugging Face checkpoints (safetensors, torch state dict) to the engine's model object:
names, the Q/K RoPE permutation, quantization, tokenizer; and the errors for bad files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from host_runtime.model_files import hf_permute, load_model
from ref_model.models.gguf_model import ModelFileError, load_gguf
from ref_model.models.tiny import write_tiny_llama

NAMES = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm", "attn_q": "self_attn.q_proj",
         "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
         "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}


def _unpermute(w: np.ndarray, n_heads: int) -> np.ndarray:
    return w.reshape(n_heads, w.shape[0] // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return load_gguf(write_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny.gguf", seed=5))


def _hf_checkpoint(model, folder, fmt: str):
    """The tiny GGUF as a Hugging Face llama folder (float weights, rotate-half Q/K)."""
    hp = model.hparams
    sd = {"model.embed_tokens.weight": model.weight("token_embd.weight"),
          "model.norm.weight": model.weight("output_norm.weight")}
    for i in range(hp.n_layers):
        for gg, hf in NAMES.items():
            x = model.weight(f"blk.{i}.{gg}.weight").numpy()
            if gg == "attn_q":
                x = _unpermute(x, hp.n_heads)
            elif gg == "attn_k":
                x = _unpermute(x, hp.n_kv_heads)
            sd[f"model.layers.{i}.{hf}.weight"] = torch.from_numpy(np.ascontiguousarray(x))
    sd = {k: v.contiguous().to(torch.float32) for k, v in sd.items()}
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "safetensors":
        from safetensors.torch import save_file
        save_file(sd, str(folder / "model.safetensors"))
    else:
        torch.save(sd, folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps({
        "model_type": "llama", "hidden_size": hp.dim, "intermediate_size": hp.ffn_dim,
        "num_hidden_layers": hp.n_layers, "num_attention_heads": hp.n_heads, "num_key_value_heads": hp.n_kv_heads,
        "rms_norm_eps": hp.norm_eps, "rope_theta": hp.rope_base, "max_position_embeddings": hp.context_length,
        "vocab_size": hp.vocab_size, "tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": 2}))
    model.tokenizer.save(str(folder / "tokenizer.json"))
    return folder


def test_permutation_round_trip():
    w = np.arange(8 * 3 * 4, dtype=np.float32).reshape(8 * 3, 4)
    assert np.array_equal(hf_permute(_unpermute(w, 3), 3), w)


@pytest.mark.parametrize("fmt", ["safetensors", "torch"])
def test_checkpoint_converts_to_the_same_model(tiny, tmp_path, monkeypatch, fmt):
    monkeypatch.setenv("LUTFORGE_CACHE", str(tmp_path / "cache"))
    got = load_model(_hf_checkpoint(tiny, tmp_path / "hf", fmt))
    assert got.hparams == tiny.hparams
    text = "hello world 1234 <|im_end|>"
    assert got.tokenizer.encode(text).ids == tiny.tokenizer.encode(text).ids
    assert (got.bos_id, got.eos_id) == (tiny.bos_id, tiny.eos_id)
    for name in ("blk.0.attn_q.weight", "blk.1.attn_k.weight", "blk.0.attn_v.weight", "blk.1.ffn_gate.weight"):
        # Q4_1 groups re-quantized from their own dequantized values come back unchanged
        # (up to f16 rounding of the scale): this checks names, permutation and layout
        a, b = got.tensor(name).dequantize(), tiny.tensor(name).dequantize()
        assert got.tensor(name).kind == "Q4_1"
        assert torch.allclose(a, b, atol=2e-3), f"{name}: max diff {(a - b).abs().max():.4g}"
    e = got.tensor("token_embd.weight")
    assert e.kind == "Q8_0" and torch.allclose(e.dequantize(), tiny.weight("token_embd.weight"), atol=2e-2)


def test_bad_checkpoints(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("LUTFORGE_CACHE", str(tmp_path / "cache"))
    folder = _hf_checkpoint(tiny, tmp_path / "hf", "safetensors")
    (folder / "config.json").unlink()
    with pytest.raises(ModelFileError, match="config.json is missing"):
        load_model(folder)
    folder = _hf_checkpoint(tiny, tmp_path / "hf2", "torch")
    (folder / "pytorch_model.bin").write_bytes(b"not a state dict")
    with pytest.raises(ModelFileError, match="cannot read the weights"):
        load_model(folder)
    folder = _hf_checkpoint(tiny, tmp_path / "hf3", "safetensors")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["num_hidden_layers"] = 3
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFileError, match="'model.layers.2.input_layernorm.weight' is missing"):
        load_model(folder)
    with pytest.raises(ModelFileError, match="does not exist"):
        load_model(tmp_path / "nowhere.safetensors")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelFileError, match="no weights"):
        load_model(empty)
