"""A tiny random llama GGUF, written with ``gguf.GGUFWriter``, for fast tests.

It has the real model's structure at toy size, every supported tensor type
(Q4_1, Q4_0, Q8_0, F16, F32) and a small byte-level BPE tokenizer in its metadata.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["write_tiny_llama", "TINY_MERGES"]

#: Merges of the tiny tokenizer (byte-level symbols; "Ġ" is a space).
TINY_MERGES = ["h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "Ġwor l", "Ġworl d", "1 2"]


def _byte_alphabet() -> list[str]:
    """GPT-2's byte-to-unicode table, in byte order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    table = dict(zip(bs, cs))
    return [chr(table[b]) for b in range(256)]


def write_tiny_llama(path, seed: int = 0, arch: str = "llama", layers: int = 2, dim: int = 64,
                     heads: int = 4, kv_heads: int = 2, ffn: int = 96, bad_type: bool = False) -> Path:
    """Write a random llama GGUF and return its path.

    Tensor types: embedding Q8_0 (tied LM head), Q/K/V Q4_1, attn_output Q4_0, FFN gate/up
    Q4_1, FFN down F16 in layer 0 and Q8_0 after, norms F32. ``bad_type`` stores one
    tensor as Q5_0 (unsupported) to test the loader's error.
    """
    import gguf
    from gguf import GGMLQuantizationType as T

    path = Path(path)
    rng = np.random.default_rng(seed)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tokens = specials + _byte_alphabet() + [m.replace(" ", "") for m in TINY_MERGES]
    types = [3] * len(specials) + [1] * (len(tokens) - len(specials))
    vocab = len(tokens)

    w = gguf.GGUFWriter(path, arch)
    w.add_block_count(layers)
    w.add_context_length(256)
    w.add_embedding_length(dim)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(dim // heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(vocab)
    w.add_file_type(3)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(TINY_MERGES)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)

    def add(name, shape, qtype, scale=0.1):
        x = (rng.standard_normal(shape) * scale).astype(np.float32)
        if qtype == T.F32:
            w.add_tensor(name, x)
        elif qtype == T.F16:
            w.add_tensor(name, x.astype(np.float16))
        else:
            w.add_tensor(name, gguf.quants.quantize(x, qtype), raw_dtype=qtype)

    add("token_embd.weight", (vocab, dim), T.Q8_0, 1.0)
    add("output_norm.weight", (dim,), T.F32, 1.0)
    hd = dim // heads
    for i in range(layers):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", (1 + 0.2 * rng.standard_normal(dim)).astype(np.float32))
        w.add_tensor(p + "ffn_norm.weight", (1 + 0.2 * rng.standard_normal(dim)).astype(np.float32))
        add(p + "attn_q.weight", (dim, dim), T.Q4_1, 0.3)
        add(p + "attn_k.weight", (kv_heads * hd, dim), T.Q4_1, 0.3)
        add(p + "attn_v.weight", (kv_heads * hd, dim), T.Q4_1, 0.3)
        add(p + "attn_output.weight", (dim, dim), T.Q5_0 if bad_type and i == 0 else T.Q4_0, 0.1)
        add(p + "ffn_gate.weight", (ffn, dim), T.Q4_1, 0.2)
        add(p + "ffn_up.weight", (ffn, dim), T.Q4_1, 0.2)
        add(p + "ffn_down.weight", (dim, ffn), T.F16 if i == 0 else T.Q8_0, 0.1)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
