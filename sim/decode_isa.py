"""Instruction-level model of the decode engine: runs a token program on a memory image.

:class:`DecodeISAModel` is what the sequencer in ``hw/decode`` must do, one instruction
at a time, with nothing but the program words, the engine registers and external memory
(it never sees the model object): weights, gains, constants and the KV cache are read
from and written to the byte image exactly as :mod:`hw.decode.isa` lays them out, and
every unit is the :mod:`ref_model.decode` reference of the same name. Its results must
equal :class:`ref_model.models.int_llama.IntLlama` bit for bit (tests/host_runtime), so
it closes the loop "compiler + layout + program = reference" before any gateware, and
it is the golden model for the sequencer's cosim and counters (bytes each instruction
moves: :attr:`DecodeISAModel.traffic`).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from hw.decode.isa import (GROUP, INSTR_BYTES, KV_PARAM_BYTES, MODE_NORM_INPUT, Instr,
                           KVLayout, Op, Reg, WeightKind, kv_quantized_counts, weight_bytes)
from ref_model import decode as U
from ref_model import fixedpoint as fx
from ref_model.errors import SimulationError

__all__ = ["DecodeISAModel"]

_I64 = torch.int64


class DecodeISAModel:
    """Executes token programs. ``numerics`` are the engine's hardware constants
    (:class:`ref_model.decode.DecodeNumerics`); KV format fields come from the program's
    SET registers. ``memory`` is the byte image (modified in place: KV, logits, trace)."""

    def __init__(self, memory: bytearray, numerics: U.DecodeNumerics):
        self.mem = memory
        self.num = numerics
        self.regs = {r: 0 for r in Reg}
        self.bufs: dict[int, torch.Tensor] = {}
        self.traffic = {"read": 0, "write": 0}

    # ------------------------------------------------------------------ memory ---
    def _read(self, addr: int, size: int) -> bytes:
        if addr < 0 or addr + size > len(self.mem):
            raise SimulationError(f"read of {size} bytes at {addr:#x} is outside the {len(self.mem)}-byte memory")
        self.traffic["read"] += size
        return bytes(self.mem[addr:addr + size])

    def _write(self, addr: int, payload: bytes) -> None:
        if addr < 0 or addr + len(payload) > len(self.mem):
            raise SimulationError(f"write of {len(payload)} bytes at {addr:#x} is outside memory")
        self.traffic["write"] += len(payload)
        self.mem[addr:addr + len(payload)] = payload

    def _ints(self, addr: int, n: int, dtype: str) -> torch.Tensor:
        raw = self._read(addr, n * np.dtype(dtype).itemsize)
        return torch.from_numpy(np.frombuffer(raw, dtype=dtype).astype(np.int64))

    def peek_i32(self, addr: int, n: int) -> torch.Tensor:
        """Host readout of ``n`` int32 words (not engine traffic): logits, trace."""
        return torch.from_numpy(np.frombuffer(bytes(self.mem[addr:addr + 4 * n]), dtype="<i4").astype(np.int64))

    def _codes(self, addr: int, rows: int, cols: int, kind: WeightKind) -> torch.Tensor:
        bits = kind.code_bits
        raw = np.frombuffer(self._read(addr, rows * cols * bits // 8), dtype=np.uint8).astype(np.int64)
        per = 8 // bits
        c = np.stack([(raw >> (i * bits)) & ((1 << bits) - 1) for i in range(per)], axis=-1).reshape(rows, cols)
        if kind.signed_codes:
            c = np.where(c >= 1 << (bits - 1), c - (1 << bits), c)
        return torch.from_numpy(c)

    def _matrix(self, ins: Instr):
        kind = WeightKind(ins.mode & 7)
        rows, cols = ins.rows, ins.cols
        cb, sb = weight_bytes(kind, rows, cols)
        codes = self._codes(ins.addr, rows, cols, kind)
        sc = self._ints(ins.addr2, sb // 2, "<u2").reshape(rows, cols // GROUP, -1)
        d = sc[..., 0]
        m = sc[..., 1] if kind.asymmetric else None
        return codes, kind.offset, d, m

    # --------------------------------------------------------------------- KV ---
    def _kv(self, layer_addr: int) -> KVLayout:
        r = self.regs
        return KVLayout(r[Reg.MAX_CTX], r[Reg.N_KV_HEADS], r[Reg.HEAD_DIM], r[Reg.KV_BITS],
                        r[Reg.K_GROUP], r[Reg.KV_WINDOW])

    def _off(self, part: str) -> int:
        """A KV part's offset as the engine knows it: from its SET register."""
        return 0 if part == "k_raw" else self.regs[KVLayout.OFFSET_REGS[part]]

    def _raw(self, base: int, L: KVLayout, which: str, t: int) -> torch.Tensor:
        addr = base + self._off(which) + (t % L.ring) * L.row * 4
        return self._ints(addr, L.row, "<i4").reshape(L.n_kv_heads, L.head_dim)

    def _params(self, addr: int, n: int):
        raw = np.frombuffer(self._read(addr, n * KV_PARAM_BYTES), dtype=np.uint8).reshape(n, KV_PARAM_BYTES)
        mn = raw[:, 0:4].copy().view("<i4").reshape(n).astype(np.int64)
        e = raw[:, 4].astype(np.int8).astype(np.int64)
        m = raw[:, 6:8].copy().view("<u2").reshape(n).astype(np.int64)
        return torch.from_numpy(mn), torch.from_numpy(e), torch.from_numpy(m)

    @staticmethod
    def _param_bytes(mn: torch.Tensor, e: torch.Tensor, m: torch.Tensor) -> bytes:
        n = mn.numel()
        rec = np.zeros((n, KV_PARAM_BYTES), dtype=np.uint8)
        rec[:, 0:4] = mn.reshape(-1).numpy().astype("<i4").view(np.uint8).reshape(n, 4)
        rec[:, 4] = e.reshape(-1).numpy().astype(np.int8).view(np.uint8)
        rec[:, 6:8] = m.reshape(-1).numpy().astype("<u2").view(np.uint8).reshape(n, 2)
        return rec.tobytes()

    def _pack_kv_codes(self, codes: torch.Tensor, bits: int) -> bytes:
        c = codes.reshape(-1).numpy().astype(np.int64)
        per = 8 // bits
        c = np.concatenate([c, np.zeros((-len(c)) % per, dtype=np.int64)])
        lanes = c.reshape(-1, per)
        out = np.zeros(lanes.shape[0], dtype=np.int64)
        for i in range(per):
            out |= lanes[:, i] << (i * bits)
        return out.astype(np.uint8).tobytes()

    def _unpack_kv_codes(self, raw: bytes, bits: int, n: int) -> torch.Tensor:
        b = np.frombuffer(raw, dtype=np.uint8).astype(np.int64)
        per = 8 // bits
        c = np.stack([(b >> (i * bits)) & ((1 << bits) - 1) for i in range(per)], axis=-1).reshape(-1)[:n]
        return torch.from_numpy(c)

    def _kv_append(self, ins: Instr) -> None:
        L = self._kv(ins.addr)
        base, pos = ins.addr, self.regs[Reg.POS]
        bits, G = L.kv_bits, L.k_group
        for which, buf in (("k_raw", ins.src), ("v_raw", ins.src2)):
            addr = base + self._off(which) + (pos % L.ring) * L.row * 4
            self._write(addr, self.bufs[buf].numpy().astype("<i4").tobytes())
        if bits == 16:
            return
        kq0, vq0 = kv_quantized_counts(pos, bits, G, L.kv_window)
        kq1, vq1 = kv_quantized_counts(pos + 1, bits, G, L.kv_window)
        sb = self.num.kv_scale_bits
        for t in range(vq0, vq1):  # V: per token, one group per KV head
            codes, mn, e, m = U.kv_quantize(self._raw(base, L, "v_raw", t), bits, -1, sb)
            self._write(base + self._off("v_codes") + t * L.code_row_bytes, self._pack_kv_codes(codes, bits))
            self._write(base + self._off("v_params") + t * L.v_param_row_bytes, self._param_bytes(mn, e, m))
        for g0 in range(kq0, kq1, G):  # K: per channel over a complete group of G tokens
            raw = torch.stack([self._raw(base, L, "k_raw", t) for t in range(g0, g0 + G)])
            codes, mn, e, m = U.kv_quantize(raw, bits, 0, sb)
            for j in range(G):
                self._write(base + self._off("k_codes") + (g0 + j) * L.code_row_bytes,
                            self._pack_kv_codes(codes[j], bits))
            self._write(base + self._off("k_params") + (g0 // G) * L.k_param_row_bytes, self._param_bytes(mn, e, m))

    def _kv_read(self, base: int, L: KVLayout, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        kq, vq = kv_quantized_counts(n, L.kv_bits, L.k_group, L.kv_window)
        shape = (L.n_kv_heads, L.head_dim)
        K, V = [], []
        for t in range(n):
            if t < kq:
                codes = self._unpack_kv_codes(self._read(base + self._off("k_codes") + t * L.code_row_bytes,
                                                         L.code_row_bytes), L.kv_bits, L.row)
                g = t // L.k_group
                mn, e, m = self._params(base + self._off("k_params") + g * L.k_param_row_bytes, L.row)
                K.append(U.kv_dequantize(codes, mn, e, m).reshape(shape))
            else:
                K.append(self._raw(base, L, "k_raw", t))
            if t < vq:
                codes = self._unpack_kv_codes(self._read(base + self._off("v_codes") + t * L.code_row_bytes,
                                                         L.code_row_bytes), L.kv_bits, L.row).reshape(shape)
                mn, e, m = self._params(base + self._off("v_params") + t * L.v_param_row_bytes, L.n_kv_heads)
                V.append(U.kv_dequantize(codes, mn.unsqueeze(-1), e.unsqueeze(-1), m.unsqueeze(-1)))
            else:
                V.append(self._raw(base, L, "v_raw", t))
        return torch.stack(K), torch.stack(V)

    # -------------------------------------------------------------------- run ---
    def _act(self, y: torch.Tensor, bits: int):
        n = self.num
        return U.quantize_act(y, n.act_frac, n.act_block, bits, n.act_scale_bits)

    def step(self, program_addr: int, n_instr: int, token: int, pos: int) -> int:
        """Run the token program at ``program_addr`` for ``token`` at position ``pos``;
        return the ARGMAX result (register NEXT)."""
        self.regs[Reg.TOKEN], self.regs[Reg.POS] = token, pos
        for i in range(n_instr):
            ins = Instr.decode(self._read(program_addr + i * INSTR_BYTES, INSTR_BYTES))
            if ins.op == Op.HALT:
                self.regs[Reg.POS] += 1
                return self.regs[Reg.NEXT]
            self.execute(ins)
        raise SimulationError(f"token program ran {n_instr} instructions without HALT")

    def execute(self, ins: Instr) -> None:
        num, F, B = self.num, self.num.act_frac, self.bufs
        op = ins.op
        if op == Op.SET:
            self.regs[Reg(ins.dst)] = ins.addr
        elif op == Op.EMBED:
            tok = self.regs[Reg.TOKEN]
            codes = self._codes(ins.addr + tok * ins.cols, 1, ins.cols, WeightKind.Q8_0)[0]
            d = self._ints(ins.addr2 + tok * (ins.cols // GROUP) * 2, ins.cols // GROUP, "<u2")
            B[ins.dst] = U.embed_row(codes, d, F)
        elif op == Op.RMSNORM:
            gain = self._ints(ins.addr, ins.cols, "<i4")
            B[ins.dst] = U.rmsnorm(B[ins.src], gain, self.regs[Reg.EPS], F, num.norm_gain_frac, num.ss_shift)
        elif op == Op.MATVEC:
            codes, offset, d, m = self._matrix(ins)
            bits = num.norm_act_bits if ins.mode & MODE_NORM_INPUT else num.act_bits
            a, e, man = self._act(B[ins.src], bits)
            B[ins.dst] = U.matvec(codes, offset, d, m, a, e, F, num.acc_bits, num.acc_frac, man)
        elif op == Op.ROPE:
            consts = self._ints(ins.addr, ins.cols // 2, "<u8")
            phase = fx.rope_phase(self.regs[Reg.POS], consts)
            B[ins.dst] = U.rope(B[ins.src].view(ins.rows, ins.cols), phase).reshape(-1)
        elif op == Op.KV_APPEND:
            self._kv_append(ins)
        elif op == Op.ATTEND:
            L = self._kv(ins.addr)
            K, V = self._kv_read(ins.addr, L, self.regs[Reg.POS] + 1)
            q = B[ins.src].view(ins.rows, ins.cols)
            B[ins.dst] = U.attention(q, K, V, F, num.act_bits, num.score_frac, num.prob_frac).reshape(-1)
        elif op == Op.SWIGLU:
            B[ins.dst] = U.swiglu(B[ins.src][:ins.cols], B[ins.src2][:ins.cols], F)
        elif op == Op.ADD:
            B[ins.dst] = U.residual_add(B[ins.src][:ins.cols], B[ins.src2][:ins.cols])
        elif op == Op.ARGMAX:
            self.regs[Reg.NEXT] = U.argmax(B[ins.src][:ins.cols])
        elif op == Op.STORE:
            self._write(ins.addr, B[ins.src][:ins.cols].numpy().astype("<i4").tobytes())
        else:  # pragma: no cover (decode() rejects unknown opcodes)
            raise SimulationError(f"opcode {op!r} not executable")

    def numerics_with_kv(self) -> U.DecodeNumerics:
        """The numerics the program's KV registers select (for reporting)."""
        r = self.regs
        return replace(self.num, kv_bits=r[Reg.KV_BITS], k_group=r[Reg.K_GROUP], kv_window=r[Reg.KV_WINDOW])
