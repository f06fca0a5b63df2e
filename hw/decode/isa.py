"""The decode engine's instruction set and memory layout (the host <-> sequencer contract).

The decode engine runs one *token program* per generated token: a straight list of coarse
instructions that ``host_runtime`` compiles from the model and config (layer count, dims,
heads and context are program data, not hardware constants). Everything here is plain
Python integers plus one Amaranth layout, so the compiler (``host_runtime``), the
instruction-level model (``sim/decode_isa.py``) and the sequencer (``hw/decode``) read the
same facts.

Instruction word (128 bits, little-endian fields, LSB first)::

    op 4 | dst 4 | src 4 | src2 4 | mode 8 | layer 8 | rows 16 | cols 16 | addr 32 | addr2 32

``dst``/``src``/``src2`` name on-chip vector buffers (:class:`Buf`); ``addr``/``addr2`` are
byte addresses in external memory. Semantics (``F`` = activation fraction bits; every unit
is the :mod:`ref_model.decode` function of the same name, bit for bit):

=========  ===========================================================================
EMBED      ``dst <- embed_row(E[TOKEN])``; E is a Q8_0 matrix (``addr`` codes, ``addr2``
           scales, ``cols`` = dim)
RMSNORM    ``dst <- rmsnorm(src, gain)``; gains int32 at ``addr`` (``cols`` of them);
           ``eps`` from register EPS
MATVEC     ``dst <- matvec(W, quantize_act(src))``; W ``rows`` x ``cols`` at ``addr`` (codes)
           / ``addr2`` (scales), weight kind ``mode & 7``; ``mode & 8``: input comes from an
           RMSNorm (``norm_act_bits`` codes, else ``act_bits``)
ROPE       ``dst <- rope(src, phase(POS))``; ``rows`` heads x ``cols`` head_dim; phase
           constants uint64 at ``addr``
KV_APPEND  raw K (``src``) and V (``src2``) of position POS into layer ``layer``'s KV
           region at ``addr``; quantize the groups that became old enough (KIVI rule)
ATTEND     ``dst <- attention(src, K[0..POS], V[0..POS])`` from the KV region at ``addr``;
           ``rows`` query heads, ``cols`` head_dim
SWIGLU     ``dst <- swiglu(src, src2)`` over ``cols`` elements
ADD        ``dst <- residual_add(src, src2)`` over ``cols`` elements
ARGMAX     register NEXT <- argmax(src[0..cols))
STORE      ``cols`` int32 words of ``src`` to memory at ``addr`` (logits and trace readout)
SET        engine register ``dst`` <- ``addr`` (model constants: heads, KV format...)
HALT       end of the token program: POS <- POS + 1, done
=========  ===========================================================================

Weights ("planar" layout, one code stream and one scale stream per matrix, so the weight
streamer reads both at full port width and every byte exactly once per token): codes row
major, ``bits`` per code packed little-endian from bit 0 of byte 0 (Q4_*: element ``2i``
in the low nibble); scales per (row, group of 32): f16 ``d`` then, for asymmetric kinds,
f16 ``m``, little-endian.

KV region of one layer (:class:`KVLayout`): raw int32 K and V rings of ``ring`` slots
(slot = position mod ring) for the tokens not yet quantized; K codes (per token, per KV
head, per channel) and per-(group, head, channel) parameters; V codes and per-(token,
head) parameters; codes little-endian from bit 0, ``kv_bits`` each. A parameter record is 8 bytes: ``mn`` int32, ``e`` int8, pad, ``m``
uint16. Every row (codes of a token, records of a K group or of a token's V) is padded
to 16 bytes. Which tokens are quantized is a function of the position alone
(:func:`kv_quantized_counts`), so the engine keeps no KV state besides memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from amaranth.lib import data

__all__ = ["Op", "Buf", "Reg", "WeightKind", "Instr", "InstrLayout", "INSTR_BITS",
           "INSTR_BYTES", "weight_bytes", "KVLayout", "kv_quantized_counts", "ALIGN", "align"]

INSTR_BITS = 128
INSTR_BYTES = INSTR_BITS // 8
#: Every region of the memory image starts on this many bytes (the widest AXI beat).
ALIGN = 64
GROUP = 32  # weights per scale group (GGUF blocks)


class Op(IntEnum):
    HALT = 0
    SET = 1
    EMBED = 2
    RMSNORM = 3
    MATVEC = 4
    ROPE = 5
    KV_APPEND = 6
    ATTEND = 7
    SWIGLU = 8
    ADD = 9
    ARGMAX = 10
    STORE = 11


class Buf(IntEnum):
    """On-chip int32 vector buffers (activations never leave the chip except by STORE)."""
    X = 0       # residual stream (dim)
    H = 1       # RMSNorm output (dim)
    Q = 2       # queries (heads x head_dim)
    K = 3       # new key (kv_heads x head_dim)
    V = 4       # new value
    O = 5       # attention output (heads x head_dim)
    G = 6       # FFN gate (ffn)
    U = 7       # FFN up (ffn)
    T = 8       # matvec result to be added to X (dim)
    LOGITS = 9  # LM head output (vocab)


class Reg(IntEnum):
    """Engine registers. TOKEN and POS are written by the host before RUN; the rest by SET."""
    TOKEN = 0        # input token id
    POS = 1          # position of TOKEN (0-based); HALT increments it
    NEXT = 2         # ARGMAX result (read by the host)
    N_HEADS = 3
    N_KV_HEADS = 4
    HEAD_DIM = 5
    EPS = 6          # RMSNorm eps_int
    KV_BITS = 7      # 2, 4, 8 or 16 (no quantization)
    K_GROUP = 8
    KV_WINDOW = 9
    MAX_CTX = 10
    KV_V_RAW = 11    # byte offsets of the KV region's parts (KVLayout.offset), k_raw is 0
    KV_K_CODES = 12
    KV_K_PARAMS = 13
    KV_V_CODES = 14
    KV_V_PARAMS = 15


class WeightKind(IntEnum):
    """Weight formats of MATVEC (``mode & 7``): code bits, code offset, asymmetric (has ``m``)."""
    Q4_1 = 0
    Q4_0 = 1
    Q8_0 = 2
    W2 = 3
    TERNARY = 4

    @property
    def code_bits(self) -> int:
        return {0: 4, 1: 4, 2: 8, 3: 2, 4: 2}[self.value]

    @property
    def offset(self) -> int:
        """Constant subtracted from each stored code (Q4_0: 8)."""
        return 8 if self is WeightKind.Q4_0 else 0

    @property
    def signed_codes(self) -> bool:
        return self in (WeightKind.Q8_0, WeightKind.TERNARY)

    @property
    def asymmetric(self) -> bool:
        return self in (WeightKind.Q4_1, WeightKind.W2)

    @property
    def scale_bytes(self) -> int:
        """Bytes of scales per group of 32: f16 d (+ f16 m)."""
        return 4 if self.asymmetric else 2


MODE_NORM_INPUT = 8   # MATVEC mode bit: the input vector comes from an RMSNorm

_FIELDS = (("op", 4), ("dst", 4), ("src", 4), ("src2", 4), ("mode", 8), ("layer", 8),
           ("rows", 16), ("cols", 16), ("addr", 32), ("addr2", 32))


class InstrLayout(data.StructLayout):
    """The 128-bit instruction word as the sequencer decodes it."""

    def __init__(self):
        super().__init__(dict(_FIELDS))


@dataclass(frozen=True)
class Instr:
    op: Op
    dst: int = 0
    src: int = 0
    src2: int = 0
    mode: int = 0
    layer: int = 0
    rows: int = 0
    cols: int = 0
    addr: int = 0
    addr2: int = 0

    def encode(self) -> int:
        """The instruction word as an integer (ValueError when a field does not fit)."""
        word, pos = 0, 0
        for name, width in _FIELDS:
            v = int(getattr(self, name))
            if not 0 <= v < (1 << width):
                raise ValueError(f"{self.op.name}: field {name}={v} does not fit {width} bits")
            word |= v << pos
            pos += width
        return word

    def to_bytes(self) -> bytes:
        return self.encode().to_bytes(INSTR_BYTES, "little")

    @classmethod
    def decode(cls, word: int | bytes) -> "Instr":
        if isinstance(word, (bytes, bytearray)):
            word = int.from_bytes(word, "little")
        vals, pos = {}, 0
        for name, width in _FIELDS:
            vals[name] = (word >> pos) & ((1 << width) - 1)
            pos += width
        try:
            vals["op"] = Op(vals["op"])
        except ValueError:
            raise ValueError(f"unknown opcode {vals['op']}") from None
        return cls(**vals)

    def __str__(self) -> str:
        f = [f"{n}={getattr(self, n)}" for n, _ in _FIELDS[1:] if getattr(self, n)]
        return f"{self.op.name:<9} " + " ".join(f)


def align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def weight_bytes(kind: WeightKind, rows: int, cols: int) -> tuple[int, int]:
    """(code bytes, scale bytes) of a ``rows x cols`` matrix in the planar layout."""
    if cols % GROUP:
        raise ValueError(f"matrix row length {cols} is not a multiple of {GROUP}")
    return rows * cols * kind.code_bits // 8, rows * (cols // GROUP) * kind.scale_bytes


KV_PARAM_BYTES = 8
#: KV rows (codes, parameter records) start on this many bytes, so every row is a whole
#: number of beats for ports up to 128 bits (the decode engine's limit).
KV_ROW_ALIGN = 16


def _pad(n: int) -> int:
    return (n + KV_ROW_ALIGN - 1) // KV_ROW_ALIGN * KV_ROW_ALIGN


def kv_quantized_counts(n: int, kv_bits: int, k_group: int, kv_window: int) -> tuple[int, int]:
    """Tokens whose K resp. V are held quantized once ``n`` tokens are cached.

    V is quantized per token as soon as it is older than the window; K per channel over
    complete groups of ``k_group`` tokens older than the window (KIVI). ``kv_bits = 16``:
    nothing is quantized."""
    if kv_bits == 16:
        return 0, 0
    old = max(n - kv_window, 0)
    return old // k_group * k_group, old


@dataclass(frozen=True)
class KVLayout:
    """Byte offsets inside one layer's KV region (see the module docstring)."""

    max_ctx: int
    n_kv_heads: int
    head_dim: int
    kv_bits: int
    k_group: int
    kv_window: int

    @property
    def ring(self) -> int:
        """Raw slots: every position when unquantized, else a power of two holding the
        window plus one incomplete K group."""
        if self.kv_bits == 16:
            return self.max_ctx
        need = self.k_group + self.kv_window
        return 1 << max(need - 1, 0).bit_length()

    @property
    def row(self) -> int:
        """Elements of one token's K (or V): kv_heads x head_dim."""
        return self.n_kv_heads * self.head_dim

    @property
    def code_row_bytes(self) -> int:
        """One token's K (or V) codes, padded to :data:`KV_ROW_ALIGN` bytes."""
        return 0 if self.kv_bits == 16 else _pad(self.row * self.kv_bits // 8)

    @property
    def k_param_row_bytes(self) -> int:
        """One K group's parameter records (one per channel), padded."""
        return _pad(self.row * KV_PARAM_BYTES)

    @property
    def v_param_row_bytes(self) -> int:
        """One token's V parameter records (one per KV head), padded."""
        return _pad(self.n_kv_heads * KV_PARAM_BYTES)

    @property
    def k_groups(self) -> int:
        return 0 if self.kv_bits == 16 else self.max_ctx // self.k_group

    def _sizes(self) -> list[tuple[str, int]]:
        q = self.kv_bits != 16
        return [("k_raw", self.ring * self.row * 4), ("v_raw", self.ring * self.row * 4),
                ("k_codes", self.max_ctx * self.code_row_bytes if q else 0),
                ("k_params", self.k_groups * self.k_param_row_bytes),
                ("v_codes", self.max_ctx * self.code_row_bytes if q else 0),
                ("v_params", (self.max_ctx * self.v_param_row_bytes) if q else 0)]

    #: KVLayout part -> the engine register the program SETs to its offset.
    OFFSET_REGS = {"v_raw": Reg.KV_V_RAW, "k_codes": Reg.KV_K_CODES, "k_params": Reg.KV_K_PARAMS,
                   "v_codes": Reg.KV_V_CODES, "v_params": Reg.KV_V_PARAMS}

    def offset(self, name: str) -> int:
        off = 0
        for n, size in self._sizes():
            if n == name:
                return off
            off += align(size)
        raise KeyError(name)

    @property
    def size(self) -> int:
        return sum(align(s) for _, s in self._sizes())
