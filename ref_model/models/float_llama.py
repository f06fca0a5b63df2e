"""Float32 llama decoder on the dequantized GGUF weights (the accuracy reference).

One token per :meth:`FloatLlama.step`, attending over a KV cache, exactly the llama
graph llama.cpp runs for ``general.architecture = llama``: RMSNorm, Q/K/V projections
with grouped-query attention, RoPE on adjacent pairs ``(x[2i], x[2i+1])`` (GGUF stores
Q/K rows permuted for this "normal" RoPE), causal softmax attention, output projection,
residual, RMSNorm, SwiGLU FFN, residual, final RMSNorm and the LM head (tied to the
embedding when ``output.weight`` is absent).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .gguf_model import LlamaGGUF

__all__ = ["FloatLlama", "FloatKVCache"]


@dataclass
class FloatKVCache:
    k: torch.Tensor  # (layers, max_len, kv_dim)
    v: torch.Tensor
    length: int = 0


class FloatLlama:
    """Float32 decode-step model."""

    def __init__(self, model: LlamaGGUF, dtype: torch.dtype = torch.float32):
        self.hp = hp = model.hparams
        self.dtype = dtype
        w = lambda n: model.weight(n).to(dtype)  # noqa: E731
        self.embed = w("token_embd.weight")
        self.lm_head = self.embed if hp.tied_embeddings else w("output.weight")
        self.out_norm = w("output_norm.weight")
        self.layers = []
        for i in range(hp.n_layers):
            p = f"blk.{i}."
            self.layers.append({k: w(p + k + ".weight") for k in (
                "attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
                "ffn_norm", "ffn_gate", "ffn_up", "ffn_down")})
        hd = hp.head_dim
        self.inv_freq = hp.rope_base ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)

    def new_cache(self, max_len: int) -> FloatKVCache:
        hp = self.hp
        z = torch.zeros(hp.n_layers, max_len, hp.kv_dim, dtype=self.dtype)
        return FloatKVCache(z, z.clone())

    def _norm(self, x, g):
        return x * torch.rsqrt((x * x).mean() + self.hp.norm_eps) * g

    def _rope(self, x, pos):  # x (heads, hd), adjacent pairs
        ang = pos * self.inv_freq
        c, s = torch.cos(ang).to(self.dtype), torch.sin(ang).to(self.dtype)
        x0, x1 = x[:, 0::2], x[:, 1::2]
        out = torch.empty_like(x)
        out[:, 0::2] = x0 * c - x1 * s
        out[:, 1::2] = x0 * s + x1 * c
        return out

    @torch.no_grad()
    def step(self, token: int, cache: FloatKVCache, trace: dict | None = None) -> torch.Tensor:
        """Run one token at position ``cache.length``; returns float32 logits ``(vocab,)``.

        ``trace``, when given, collects per-layer intermediate vectors (for range studies).
        """
        hp = self.hp
        pos = cache.length
        if pos >= cache.k.shape[1]:
            raise ValueError("KV cache is full")
        hd, nh, nkv = hp.head_dim, hp.n_heads, hp.n_kv_heads
        x = self.embed[token].clone()
        for i, L in enumerate(self.layers):
            h = self._norm(x, L["attn_norm"])
            q = self._rope((L["attn_q"] @ h).view(nh, hd), pos)
            k = self._rope((L["attn_k"] @ h).view(nkv, hd), pos)
            v = L["attn_v"] @ h
            cache.k[i, pos] = k.reshape(-1)
            cache.v[i, pos] = v
            K = cache.k[i, : pos + 1].view(pos + 1, nkv, hd)
            V = cache.v[i, : pos + 1].view(pos + 1, nkv, hd)
            rep = nh // nkv
            Kh = K.repeat_interleave(rep, dim=1)  # (T, nh, hd)
            Vh = V.repeat_interleave(rep, dim=1)
            scores = torch.einsum("hd,thd->ht", q, Kh) / hd ** 0.5
            p = torch.softmax(scores, dim=-1)
            att = torch.einsum("ht,thd->hd", p, Vh).reshape(-1)
            o = L["attn_output"] @ att
            x = x + o
            h2 = self._norm(x, L["ffn_norm"])
            g = L["ffn_gate"] @ h2
            u = L["ffn_up"] @ h2
            a = torch.nn.functional.silu(g) * u
            d = L["ffn_down"] @ a
            if trace is not None:
                for name, val in (("resid_attn", x), ("q", q), ("k", k), ("v", v), ("att", att),
                                  ("scores", scores), ("o", o), ("gate", g), ("up", u), ("ffn_act", a),
                                  ("down", d), ("norm_attn", h), ("norm_ffn", h2)):
                    trace.setdefault(name, []).append(val.detach().clone())
            x = x + d
            if trace is not None:
                trace.setdefault("resid", []).append(x.detach().clone())
        cache.length = pos + 1
        xf = self._norm(x, self.out_norm)
        return (self.lm_head @ xf).to(torch.float32)

    def logits(self, tokens: list[int]) -> torch.Tensor:
        """Logits after each token, ``(len(tokens), vocab)``."""
        cache = self.new_cache(len(tokens))
        return torch.stack([self.step(t, cache) for t in tokens])
