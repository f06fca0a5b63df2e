"""Compile a llama model into a decode-engine token program and a memory image.

The compiler is the host side of the decode-engine contract (:mod:`hw.decode.isa`): it
takes the integer model of :class:`ref_model.models.int_llama.IntLlama` (so the host
constants -- quantized weight groups, folded RMSNorm gains, eps, RoPE phase constants --
are the very integers the reference uses) and lays out

* the **memory image**: the Q8_0 embedding (also the tied LM head),
  per layer the RMSNorm gains and the seven weight matrices in the planar layout, the
  RoPE constants, one KV region per layer (:class:`hw.decode.isa.KVLayout`), and the
  readout areas for logits and the per-layer residual trace, then the program words;
* the **token program**: one list of coarse instructions run once per token, with the
  model's shape as data (layer count, dims, heads, context), so one engine runs any
  llama-shaped model within its limits (:class:`ref_model.decode.DecodeShape`).

Every weight byte is placed once and read once per token; nothing is duplicated for the
tied LM head.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from hw.decode.isa import (MODE_NORM_INPUT, Buf, Instr, KVLayout, Op, Reg,
                           WeightKind, align, weight_bytes)
from ref_model.decode import DecodeNumerics, DecodeShape
from ref_model.errors import ConfigError

__all__ = ["MemoryImage", "DecodeProgram", "compile_decode", "pack_codes", "pack_scales",
           "LAYER_MATRICES"]

#: The seven matrices of a layer, in program order, with the buffer they read and write.
LAYER_MATRICES = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


@dataclass
class MemoryImage:
    """A byte image of external memory with named regions (host view)."""

    data: bytearray = field(default_factory=bytearray)
    regions: dict[str, tuple[int, int]] = field(default_factory=dict)

    def reserve(self, name: str, size: int) -> int:
        """Append a zero-filled region of ``size`` bytes; return its address."""
        if name in self.regions:
            raise ValueError(f"region {name!r} placed twice")
        addr = align(len(self.data))
        self.data.extend(bytes(addr - len(self.data) + align(size)))
        self.regions[name] = (addr, size)
        return addr

    def place(self, name: str, payload: bytes) -> int:
        addr = self.reserve(name, len(payload))
        self.data[addr:addr + len(payload)] = payload
        return addr

    def addr(self, name: str) -> int:
        return self.regions[name][0]

    def read(self, addr: int, size: int) -> bytes:
        return bytes(self.data[addr:addr + size])

    @property
    def size(self) -> int:
        return len(self.data)


def pack_codes(codes: torch.Tensor, kind: WeightKind) -> bytes:
    """Stored codes (rows, cols) to the planar code stream: row major, ``code_bits`` each,
    little-endian within a byte (two's complement for signed kinds)."""
    bits = kind.code_bits
    c = codes.to(torch.int64).numpy().astype(np.int64) & ((1 << bits) - 1)
    flat = c.reshape(-1)
    per = 8 // bits
    if flat.size % per:
        raise ValueError("code stream is not a whole number of bytes")
    lanes = flat.reshape(-1, per)
    out = np.zeros(lanes.shape[0], dtype=np.int64)
    for i in range(per):
        out |= lanes[:, i] << (i * bits)
    return out.astype(np.uint8).tobytes()


def pack_scales(d_bits: torch.Tensor, m_bits: torch.Tensor | None) -> bytes:
    """Per (row, group) f16 ``d`` (then ``m`` for asymmetric kinds), little-endian."""
    d = d_bits.to(torch.int64).numpy().astype(np.uint16)
    if m_bits is None:
        return d.astype("<u2").tobytes()
    m = m_bits.to(torch.int64).numpy().astype(np.uint16)
    return np.stack([d, m], axis=-1).astype("<u2").tobytes()


@dataclass
class DecodeProgram:
    """A compiled model: token program, memory image and where things are."""

    instrs: list[Instr]
    image: MemoryImage
    shape: DecodeShape          # the model's own shape (within the engine's limits)
    numerics: DecodeNumerics
    kv: KVLayout
    kv_addrs: list[int]
    logits_addr: int
    trace_addr: int | None      # per-layer residual X (n_layers x dim int32), or None
    weight_bytes: int           # bytes every token streams (weights, gains, constants)

    @property
    def program_addr(self) -> int:
        return self.image.addr("program")

    def listing(self) -> str:
        return "\n".join(f"{i:4d}  {ins}" for i, ins in enumerate(self.instrs))


def _kind(name: str) -> WeightKind:
    try:
        return WeightKind[name]
    except KeyError:
        raise ConfigError(f"weight kind {name!r} has no decode-engine layout; allowed: "
                          f"{', '.join(k.name for k in WeightKind)}") from None


def _stored_codes(pm) -> torch.Tensor:
    """Stored codes of a PackedMatrix (its float view holds ``code - offset``)."""
    kind = _kind(pm.kind)
    return pm.codes.to(torch.int64) + kind.offset


def _i32(t: torch.Tensor) -> bytes:
    return t.to(torch.int64).numpy().astype("<i4").tobytes()


def compile_decode(model, limits: DecodeShape | None = None, *, trace: bool = False,
                   context: int | None = None) -> DecodeProgram:
    """Compile an :class:`~ref_model.models.int_llama.IntLlama` into a program + image.

    ``limits``: the engine's shape limits (the config's decode section); a model that
    exceeds them is a ConfigError naming the field. ``context``: KV capacity to lay out
    (default: the limits' max_context, else the model's own). ``trace``: also STORE the
    residual after every layer (for per-layer bit-exact checks)."""
    hp, num = model.hp, model.num
    ctx = context or (limits.max_context if limits else model.shape.max_context)
    if limits is not None:
        limits.check_fits(hp, ctx)
    if ctx < 1 or ctx >= (1 << 14):
        raise ConfigError(f"context {ctx} is outside 1..16383 (the RoPE position range)")
    if num.k_group & (num.k_group - 1):
        raise ConfigError(f"k_group {num.k_group} is not a power of two (the engine indexes K groups by shifts); "
                          f"allowed: 1, 2, 4, ... 1024")
    shape = DecodeShape.from_hparams(hp, ctx)
    img = MemoryImage()

    streamed = 0
    emb_kind = WeightKind.Q8_0
    emb_codes = img.place("embed.codes", pack_codes(model.embed_codes, emb_kind))
    emb_scales = img.place("embed.scales", pack_scales(model.embed_d, None))

    def place_matrix(name: str, pm) -> tuple[WeightKind, int, int, int, int]:
        nonlocal streamed
        kind = _kind(pm.kind)
        rows, cols = pm.w.shape
        codes = pack_codes(_stored_codes(pm), kind)
        scales = pack_scales(pm.d_bits, pm.m_bits)
        assert (len(codes), len(scales)) == weight_bytes(kind, rows, cols)
        streamed += len(codes) + len(scales)
        return kind, rows, cols, img.place(name + ".codes", codes), img.place(name + ".scales", scales)

    def place_gain(name: str, gain: torch.Tensor) -> int:
        nonlocal streamed
        streamed += gain.numel() * 4
        return img.place(name, _i32(gain))

    layers = []
    for i, L in enumerate(model.layers):
        p = f"blk.{i}."
        layers.append({"attn_gain": place_gain(p + "attn_gain", L["attn_gain"]),
                       "ffn_gain": place_gain(p + "ffn_gain", L["ffn_gain"]),
                       **{n: place_matrix(p + n, L[n]) for n in LAYER_MATRICES}})
    out_gain = place_gain("output_gain", model.out_gain)
    head = model.lm_head
    if head.kind == "Q8_0" and hp.tied_embeddings:
        rows, cols = head.w.shape
        head_m = (WeightKind.Q8_0, rows, cols, emb_codes, emb_scales)
        streamed += sum(weight_bytes(WeightKind.Q8_0, rows, cols))
    else:
        head_m = place_matrix("output", head)
    rope = img.place("rope_consts", model.rope_consts.numpy().astype("<u8").tobytes())
    streamed += model.rope_consts.numel() * 8

    kv = KVLayout(ctx, hp.n_kv_heads, hp.head_dim, num.kv_bits, num.k_group, num.kv_window)
    kv_addrs = [img.reserve(f"blk.{i}.kv", kv.size) for i in range(hp.n_layers)]
    logits_addr = img.reserve("logits", hp.vocab_size * 4)
    trace_addr = img.reserve("trace", hp.n_layers * hp.dim * 4) if trace else None

    # ---------------------------------------------------------------- the program ---
    nh, nkv, hd = hp.n_heads, hp.n_kv_heads, hp.head_dim
    P: list[Instr] = []
    for reg, val in ((Reg.N_HEADS, nh), (Reg.N_KV_HEADS, nkv), (Reg.HEAD_DIM, hd),
                     (Reg.EPS, model.eps_int), (Reg.KV_BITS, num.kv_bits), (Reg.K_GROUP, num.k_group),
                     (Reg.KV_WINDOW, num.kv_window), (Reg.MAX_CTX, ctx)):
        P.append(Instr(Op.SET, dst=reg, addr=val))
    for part, reg in KVLayout.OFFSET_REGS.items():
        P.append(Instr(Op.SET, dst=reg, addr=kv.offset(part)))
    P.append(Instr(Op.EMBED, dst=Buf.X, cols=hp.dim, addr=emb_codes, addr2=emb_scales))

    def mv(dst, src, m, norm_input):
        kind, rows, cols, a, a2 = m
        return Instr(Op.MATVEC, dst=dst, src=src, mode=kind | (MODE_NORM_INPUT if norm_input else 0),
                     rows=rows, cols=cols, addr=a, addr2=a2)

    for i, L in enumerate(layers):
        P += [Instr(Op.RMSNORM, dst=Buf.H, src=Buf.X, cols=hp.dim, addr=L["attn_gain"]),
              mv(Buf.Q, Buf.H, L["attn_q"], True),
              mv(Buf.K, Buf.H, L["attn_k"], True),
              mv(Buf.V, Buf.H, L["attn_v"], True),
              Instr(Op.ROPE, dst=Buf.Q, src=Buf.Q, rows=nh, cols=hd, addr=rope),
              Instr(Op.ROPE, dst=Buf.K, src=Buf.K, rows=nkv, cols=hd, addr=rope),
              Instr(Op.KV_APPEND, src=Buf.K, src2=Buf.V, layer=i, addr=kv_addrs[i]),
              Instr(Op.ATTEND, dst=Buf.O, src=Buf.Q, layer=i, rows=nh, cols=hd, addr=kv_addrs[i]),
              mv(Buf.T, Buf.O, L["attn_output"], False),
              Instr(Op.ADD, dst=Buf.X, src=Buf.X, src2=Buf.T, cols=hp.dim),
              Instr(Op.RMSNORM, dst=Buf.H, src=Buf.X, cols=hp.dim, addr=L["ffn_gain"]),
              mv(Buf.G, Buf.H, L["ffn_gate"], True),
              mv(Buf.U, Buf.H, L["ffn_up"], True),
              Instr(Op.SWIGLU, dst=Buf.G, src=Buf.G, src2=Buf.U, cols=hp.ffn_dim),
              mv(Buf.T, Buf.G, L["ffn_down"], False),
              Instr(Op.ADD, dst=Buf.X, src=Buf.X, src2=Buf.T, cols=hp.dim)]
        if trace_addr is not None:
            P.append(Instr(Op.STORE, src=Buf.X, cols=hp.dim, addr=trace_addr + i * hp.dim * 4))
    P += [Instr(Op.RMSNORM, dst=Buf.H, src=Buf.X, cols=hp.dim, addr=out_gain),
          mv(Buf.LOGITS, Buf.H, head_m, True),
          Instr(Op.STORE, src=Buf.LOGITS, cols=hp.vocab_size, addr=logits_addr),
          Instr(Op.ARGMAX, src=Buf.LOGITS, cols=hp.vocab_size),
          Instr(Op.HALT)]

    img.place("program", b"".join(ins.to_bytes() for ins in P))
    return DecodeProgram(P, img, shape, num, kv, kv_addrs, logits_addr, trace_addr, streamed)
