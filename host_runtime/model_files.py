"""Load a model for the decode engine from a GGUF, a safetensors checkpoint or a torch state dict.

The engine's packers and the integer reference read one model object
(:class:`ref_model.models.gguf_model.LlamaGGUF`: stored quantized blocks, hyper-parameters,
tokenizer). :func:`load_model` returns it for

* a GGUF file (or a model name, see :func:`ref_model.models.generate.resolve_model`);
* a Hugging Face llama checkpoint: a folder (or a file inside it) with ``config.json``,
  ``tokenizer.json`` and the weights as ``*.safetensors`` or a torch state dict
  (``*.pt`` / ``*.pth`` / ``*.bin``, loaded with ``weights_only=True``).

A checkpoint is converted the way llama.cpp's converter does it -- tensor names mapped
to GGUF's, Q and K rows permuted from Hugging Face's rotate-half RoPE layout to GGUF's
interleaved pairs -- and quantized like the shipped SmolLM2 file: embedding (and an untied
LM head) Q8_0, every layer matrix Q4_1, norms F32. The result is written to a GGUF in a
cache folder named by the checkpoint's hash and loaded from there, so the conversion
runs once. Problems with the files are :class:`ModelFileError` with one-line messages.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from ref_model.cache import cache_root
from ref_model.models.gguf_model import LlamaGGUF, ModelFileError, load_gguf

__all__ = ["load_model", "convert_checkpoint", "hf_permute"]

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
_LAYER_NAMES = {
    "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def load_model(name_or_path: str | Path | None) -> LlamaGGUF:
    """A GGUF (path or model name) or a Hugging Face llama checkpoint (folder or weight file)."""
    from ref_model.models.generate import resolve_model
    if name_or_path is not None:
        p = Path(name_or_path)
        if p.is_dir() or p.suffix.lower() in WEIGHT_SUFFIXES:
            return load_gguf(convert_checkpoint(p))
    return resolve_model(name_or_path)


def hf_permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Q/K rows from Hugging Face's rotate-half order to GGUF's interleaved RoPE pairs
    (llama.cpp ``convert_hf_to_gguf.LlamaModel.permute``)."""
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _cache_dir() -> Path:
    return cache_root() / "models"


def _weight_files(folder: Path) -> list[Path]:
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        files = sorted(f for f in folder.iterdir() if f.suffix.lower() in (".pt", ".pth", ".bin"))
    if not files:
        raise ModelFileError(f"{folder}: no weights (*.safetensors, *.pt, *.pth or *.bin)")
    return files


def _read_tensors(files: list[Path]) -> dict[str, np.ndarray]:
    import torch
    out = {}
    for f in files:
        try:
            if f.suffix == ".safetensors":
                from safetensors.torch import load_file
                sd = load_file(str(f))
            else:
                sd = torch.load(f, map_location="cpu", weights_only=True)
                sd = sd.get("state_dict", sd) if isinstance(sd, dict) else sd
                if not isinstance(sd, dict):
                    raise ValueError("not a state dict")
        except Exception as e:  # noqa: BLE001 -- any reader failure is a bad file to the user
            raise ModelFileError(f"{f}: cannot read the weights ({type(e).__name__}: {e})") from None
        for k, v in sd.items():
            if isinstance(v, torch.Tensor):
                out[k] = v.detach().to(torch.float32).numpy()
    return out


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise ModelFileError(f"{path} is missing (a Hugging Face llama checkpoint needs config.json and "
                             f"tokenizer.json beside the weights)")
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelFileError(f"{path} is not valid JSON ({e})") from None


def convert_checkpoint(path: Path, out: Path | None = None) -> Path:
    """Convert a Hugging Face llama checkpoint to a GGUF (cached); return the GGUF's path."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"model path {path} does not exist")
    folder = path if path.is_dir() else path.parent
    files = [path] if path.is_file() else _weight_files(folder)
    config = _read_json(folder / "config.json")
    tok_file = folder / "tokenizer.json"
    tok = _read_json(tok_file)
    h = hashlib.sha256()
    for f in [folder / "config.json", tok_file, *files]:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    out = out or _cache_dir() / f"{h.hexdigest()[:16]}.gguf"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    _write_gguf(tmp, config, tok, _read_tensors(files), str(folder))
    tmp.replace(out)
    return out


def _hparam(config: dict, key: str, where: str, default=None):
    if key in config:
        return config[key]
    if default is not None:
        return default
    raise ModelFileError(f"{where}/config.json has no {key!r}")


def _write_gguf(out: Path, config: dict, tok: dict, sd: dict[str, np.ndarray], where: str) -> None:
    import gguf
    from gguf import GGMLQuantizationType as T

    if config.get("model_type") not in ("llama", "mistral", None):
        raise ModelFileError(f"{where}: model_type {config.get('model_type')!r} is not llama-shaped "
                             f"(supported: llama)")
    n_layers = int(_hparam(config, "num_hidden_layers", where))
    dim = int(_hparam(config, "hidden_size", where))
    n_heads = int(_hparam(config, "num_attention_heads", where))
    n_kv = int(_hparam(config, "num_key_value_heads", where, n_heads))
    ffn = int(_hparam(config, "intermediate_size", where))
    tied = bool(config.get("tie_word_embeddings", "lm_head.weight" not in sd))

    def tensor(name: str) -> np.ndarray:
        if name not in sd:
            raise ModelFileError(f"{where}: tensor {name!r} is missing from the checkpoint")
        return sd[name]

    model = tok.get("model", {})
    if model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
        raise ModelFileError(f"{where}/tokenizer.json: only byte-level BPE tokenizers are supported")
    vocab = dict(model["vocab"])
    for t in tok.get("added_tokens", []):
        vocab.setdefault(t["content"], t["id"])
    n_vocab = max(vocab.values()) + 1
    tokens = [f"[PAD{i}]" for i in range(n_vocab)]
    for t, i in vocab.items():
        tokens[i] = t
    special = {t["id"] for t in tok.get("added_tokens", []) if t.get("special")}
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    digits = "Digits" in json.dumps(tok.get("pre_tokenizer"))

    w = gguf.GGUFWriter(out, "llama")
    w.add_block_count(n_layers)
    w.add_context_length(int(_hparam(config, "max_position_embeddings", where, 2048)))
    w.add_embedding_length(dim)
    w.add_feed_forward_length(ffn)
    w.add_head_count(n_heads)
    w.add_head_count_kv(n_kv)
    w.add_rope_freq_base(float(config.get("rope_theta", 10000.0)))
    w.add_rope_dimension_count(dim // n_heads)
    w.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-5)))
    w.add_vocab_size(n_vocab)
    w.add_file_type(3)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm" if digits else "default")
    w.add_token_list(tokens)
    w.add_token_types([3 if i in special else 1 for i in range(n_vocab)])
    w.add_token_merges(merges)
    for key, add in (("bos_token_id", w.add_bos_token_id), ("eos_token_id", w.add_eos_token_id)):
        if isinstance(config.get(key), int):
            add(config[key])

    def quant(name: str, x: np.ndarray, qtype) -> None:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim == 2 and x.shape[1] % 32:
            raise ModelFileError(f"{where}: {name} has {x.shape[1]} columns, not a multiple of 32 (the group size)")
        w.add_tensor(name, gguf.quants.quantize(x, qtype), raw_dtype=qtype)

    quant("token_embd.weight", tensor("model.embed_tokens.weight"), T.Q8_0)
    w.add_tensor("output_norm.weight", tensor("model.norm.weight").astype(np.float32))
    if not tied:
        quant("output.weight", tensor("lm_head.weight"), T.Q8_0)
    for i in range(n_layers):
        for hf, gg in _LAYER_NAMES.items():
            x = tensor(f"model.layers.{i}.{hf}.weight")
            if gg == "attn_q":
                x = hf_permute(x, n_heads)
            elif gg == "attn_k":
                x = hf_permute(x, n_kv)
            name = f"blk.{i}.{gg}.weight"
            if x.ndim == 1:
                w.add_tensor(name, x.astype(np.float32))
            else:
                quant(name, x, T.Q4_1)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
