"""Bit-exact integer llama decoder: the decode engine's contract, one token per step.

:class:`IntLlama` composes the unit references of :mod:`ref_model.decode` in the order
the decode engine's program runs them. Construction is the host boundary (weights to
integer groups, norm gains and RoPE constants to fixed point); :meth:`IntLlama.step` is
integer-only and returns int32 ``Q.act_frac`` logits.

Per layer::

    h  = rmsnorm(x)                      int32 Q.F
    a  = quantize_act(h)                 norm_act_bits codes + scale per act_block
    q,k,v = matvec(Wq|Wk|Wv, a)          int32 Q.F
    q,k = rope(q,k, phase(pos))
    KV cache <- k, v                     KIVI codes (K per channel, V per token) + window
    o  = attention(q, K, V)              int32 Q.F
    x  = residual_add(x, matvec(Wo, quantize_act(o)))
    h  = rmsnorm(x); a = quantize_act(h)
    f  = swiglu(matvec(Wg, a), matvec(Wu, a))
    x  = residual_add(x, matvec(Wd, quantize_act(f)))

then ``logits = matvec(W_head, quantize_act(rmsnorm(x)))``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .. import decode as U
from .. import fixedpoint as fx
from .gguf_model import GROUP, LlamaGGUF
from .weights import to_blocks

__all__ = ["IntLlama", "IntKVCache", "PackedMatrix"]

_I64 = torch.int64


@dataclass
class PackedMatrix:
    """A matrix ready for the matvec unit: the stored integer groups (``kind``, f16 scale /
    min bit patterns) and their :class:`~ref_model.decode.MatvecWeights` layout."""

    kind: str
    d_bits: torch.Tensor
    m_bits: torch.Tensor | None
    w: U.MatvecWeights

    @classmethod
    def from_blocks(cls, b) -> "PackedMatrix":
        return cls(b.kind, b.d_bits, b.m_bits, U.matvec_prepare(b.codes, b.offset, b.d_bits, b.m_bits))

    @property
    def codes(self) -> torch.Tensor:
        """(rows, cols) integer values ``code - offset`` (float32)."""
        return self.w.codes.permute(2, 0, 1).reshape(self.w.shape)

    def __call__(self, a, a_exp, a_man, num: U.DecodeNumerics) -> torch.Tensor:
        return U.matvec_prepared(self.w, a, a_exp, num.act_frac, num.acc_bits, num.acc_frac, a_man)


@dataclass
class _LayerKV:
    k_raw: torch.Tensor  # (max_len, nkv, hd) int32 Q.F
    v_raw: torch.Tensor
    k_deq: torch.Tensor
    v_deq: torch.Tensor
    k_codes: torch.Tensor  # stored codes (what DRAM holds)
    v_codes: torch.Tensor
    k_min: list = field(default_factory=list)  # per K group: (1, nkv, hd) Q.F minimum
    k_sh: list = field(default_factory=list)   # per K group: (1, nkv, hd) step exponent
    k_m: list = field(default_factory=list)    # per K group: (1, nkv, hd) step mantissa
    v_min: torch.Tensor | None = None  # (max_len, nkv, 1)
    v_sh: torch.Tensor | None = None
    v_m: torch.Tensor | None = None
    kq: int = 0  # tokens whose K is quantized
    vq: int = 0  # tokens whose V is quantized


@dataclass
class IntKVCache:
    """Integer KV cache: quantized codes + minimum + shift per group, and the
    full-precision (int32 Q.F) part holding the window and the incomplete K group."""

    layers: list
    max_len: int
    length: int = 0


class IntLlama:
    """Integer decode-step model for a loaded llama GGUF."""

    def __init__(self, model: LlamaGGUF, numerics: U.DecodeNumerics | None = None,
                 max_context: int | None = None):
        self.num = num = numerics or U.DecodeNumerics()
        self.hp = hp = model.hparams
        self.shape = U.DecodeShape.from_hparams(hp, max_context)
        if hp.dim % GROUP or hp.ffn_dim % GROUP:
            raise ValueError("dim and ffn_dim must be multiples of 32")
        if num.act_block and (hp.dim % num.act_block or hp.ffn_dim % num.act_block):
            raise ValueError(f"act_block {num.act_block} does not divide dim/ffn_dim")
        F = num.act_frac
        # --- host boundary: weights and constants to integers --------------------------
        emb = to_blocks(model.tensor("token_embd.weight"), "stored")
        self.embed_codes, self.embed_d = emb.codes, emb.d_bits
        self.lm_head = PackedMatrix.from_blocks(
            emb if hp.tied_embeddings else to_blocks(model.tensor("output.weight"), "stored"))
        gain = lambda name: torch.round(  # noqa: E731
            model.weight(name).to(torch.float64) * math.sqrt(hp.dim) * (1 << num.norm_gain_frac)).to(_I64)
        self.eps_int = round(hp.dim * hp.norm_eps * 2 ** (2 * F - num.ss_shift))
        self.out_gain = gain("output_norm.weight")
        self.layers = []
        for i in range(hp.n_layers):
            p = f"blk.{i}."
            L = {n: PackedMatrix.from_blocks(to_blocks(model.tensor(p + n + ".weight"), num.weights))
                 for n in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")}
            L["attn_gain"] = gain(p + "attn_norm.weight")
            L["ffn_gain"] = gain(p + "ffn_norm.weight")
            self.layers.append(L)
        self.rope_consts = fx.rope_phase_constants(hp.head_dim, hp.rope_base)

    # ------------------------------------------------------------------------ cache ---
    def new_cache(self, max_len: int) -> IntKVCache:
        hp = self.hp
        z = lambda: torch.zeros(max_len, hp.n_kv_heads, hp.head_dim, dtype=_I64)  # noqa: E731
        layers = [_LayerKV(z(), z(), z(), z(), z(), z(),
                           v_min=torch.zeros(max_len, hp.n_kv_heads, 1, dtype=_I64),
                           v_sh=torch.zeros(max_len, hp.n_kv_heads, 1, dtype=_I64),
                           v_m=torch.zeros(max_len, hp.n_kv_heads, 1, dtype=_I64))
                  for _ in range(hp.n_layers)]
        return IntKVCache(layers, max_len)

    def _kv_update(self, c: _LayerKV, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Quantize what became eligible after ``n`` tokens; return K, V views (n, nkv, hd)."""
        num = self.num
        if num.kv_bits == 16:
            return c.k_raw[:n], c.v_raw[:n]
        old = max(n - num.kv_window, 0)
        while c.vq < old:  # V: per token, one group per KV head
            t = c.vq
            codes, mn, sh, m = U.kv_quantize(c.v_raw[t], num.kv_bits, -1, num.kv_scale_bits)
            c.v_codes[t], c.v_min[t], c.v_sh[t], c.v_m[t] = codes, mn, sh, m
            c.v_deq[t] = U.kv_dequantize(codes, mn, sh, m)
            c.vq += 1
        G = num.k_group
        while c.kq + G <= old:  # K: per channel over a complete group of G tokens
            s = slice(c.kq, c.kq + G)
            codes, mn, sh, m = U.kv_quantize(c.k_raw[s], num.kv_bits, 0, num.kv_scale_bits)
            c.k_codes[s] = codes
            c.k_min.append(mn)
            c.k_sh.append(sh)
            c.k_m.append(m)
            c.k_deq[s] = U.kv_dequantize(codes, mn, sh, m)
            c.kq += G
        K = torch.cat([c.k_deq[: c.kq], c.k_raw[c.kq: n]])
        V = torch.cat([c.v_deq[: c.vq], c.v_raw[c.vq: n]])
        return K, V

    # ------------------------------------------------------------------------- step ---
    def _act(self, y, bits=None):
        n = self.num
        return U.quantize_act(y, n.act_frac, n.act_block, bits or n.act_bits, n.act_scale_bits)

    @torch.no_grad()
    def step(self, token: int, cache: IntKVCache, trace: dict | None = None) -> torch.Tensor:
        """Decode one token at position ``cache.length``; int32 ``Q.act_frac`` logits (vocab,)."""
        hp, num = self.hp, self.num
        F = num.act_frac
        pos = cache.length
        if pos >= cache.max_len:
            raise ValueError("KV cache is full")
        nh, nkv, hd = hp.n_heads, hp.n_kv_heads, hp.head_dim
        x = U.embed_row(self.embed_codes[token], self.embed_d[token], F)
        phase = fx.rope_phase(pos, self.rope_consts)
        for i, L in enumerate(self.layers):
            h = U.rmsnorm(x, L["attn_gain"], self.eps_int, F, num.norm_gain_frac, num.ss_shift)
            a = self._act(h, num.norm_act_bits)
            q = U.rope(L["attn_q"](*a, num).view(nh, hd), phase)
            k = U.rope(L["attn_k"](*a, num).view(nkv, hd), phase)
            v = L["attn_v"](*a, num).view(nkv, hd)
            c = cache.layers[i]
            c.k_raw[pos], c.v_raw[pos] = k, v
            K, V = self._kv_update(c, pos + 1)
            o = U.attention(q, K, V, F, num.act_bits, num.score_frac, num.prob_frac).reshape(-1)
            a = self._act(o)
            x = U.residual_add(x, L["attn_output"](*a, num))
            h = U.rmsnorm(x, L["ffn_gain"], self.eps_int, F, num.norm_gain_frac, num.ss_shift)
            a = self._act(h, num.norm_act_bits)
            f = U.swiglu(L["ffn_gate"](*a, num), L["ffn_up"](*a, num), F)
            a = self._act(f)
            x = U.residual_add(x, L["ffn_down"](*a, num))
            if trace is not None:
                trace.setdefault("resid", []).append(x.clone())
        cache.length = pos + 1
        h = U.rmsnorm(x, self.out_gain, self.eps_int, F, num.norm_gain_frac, num.ss_shift)
        a = self._act(h, num.norm_act_bits)
        return self.lm_head(*a, num)

    def to_float(self, logits: torch.Tensor) -> torch.Tensor:
        """Host readout: int32 ``Q.act_frac`` logits to float32."""
        return logits.to(torch.float64).mul(2.0 ** -self.num.act_frac).to(torch.float32)

    def logits(self, tokens: list[int]) -> torch.Tensor:
        """Integer logits after each token, ``(len(tokens), vocab)`` int64."""
        cache = self.new_cache(len(tokens))
        return torch.stack([self.step(t, cache) for t in tokens])
