"""Memory images of LUT-core GEMMs (the host side of :mod:`hw.cores.lut`).

Mirrors the core's streams (vectors pack into beats by :mod:`hw.mem.gearbox`):

* **A**: per row block i (R rows), ``K / K_t`` vectors of ``R x K_t`` activations; lane
  ``r * K_t + k`` holds ``a[i R + r, c K_t + k]`` (``act_bits`` two's complement).
* **W**: per column block j (C columns), per quant group: ``param_vectors`` vectors, then
  per chunk of the group ``wbits`` plane vectors (plane 0 first). A vector has ``C x K_t``
  one-bit lanes, lane ``n * K_t + k``: in a plane vector bit ``i`` of code ``q[c K_t + k,
  j C + n]``; in parameter vector ``v`` bit ``v K_t + k`` of column n's parameter word
  ``scale | zero << 16`` (zero ignored for ternary).
* **C**: per tile (i, j), i outer, R vectors of C ``acc_bits`` lanes.

M and N are padded to the tile with zeros; K to a multiple of ``group_size`` with zero
activations (a zero activation adds nothing whatever the weight), the extra groups'
scales and zero points with 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hw.mem.gearbox import beats_for
from ref_model.errors import LutforgeError
from ref_model.lut import check_operands

from .gemm_layout import GemmImage, _ceil_div, _pack_vectors, _unpack_vectors


@dataclass(frozen=True)
class LutGemm:
    """One LUT-core GEMM: activations (M, K), weight codes (K, N), per-group f16 scale
    patterns and zero points (ceil(K / G), N), the weight precision."""

    a: torch.Tensor
    q: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor
    wbits: int
    ternary: bool = False

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.a.shape[0], self.a.shape[1], self.q.shape[1]


def pad_k(x: LutGemm, group_size: int) -> LutGemm:
    """The same GEMM with K padded to a multiple of ``group_size`` (zero activations)."""
    m, k, n = x.shape
    kp = _ceil_div(k, group_size) * group_size
    if kp == k:
        return x
    a = torch.zeros((m, kp), dtype=torch.int64); a[:, :k] = x.a
    q = torch.zeros((kp, n), dtype=torch.int64); q[:k] = x.q
    return LutGemm(a, q, x.scales, x.zeros, x.wbits, x.ternary)


class LutLayout:
    """Packing and unpacking for one LUT-core config (``core.kind: lut``)."""

    def __init__(self, cfg):
        self.cfg, self.core = cfg, cfg.core
        self.R, self.C, self.Kt = cfg.core.rows, cfg.core.cols, cfg.core.k_tile
        self.data_bits = cfg.memory.data_bits
        self.bpb = self.data_bits // 8

    def check(self, idx: int, x: LutGemm) -> LutGemm:
        """The GEMM with K padded, or a LutforgeError naming what is wrong."""
        core = self.core
        m, k, n = x.shape
        limit = (1 << 16) - 1
        for name, v in (("M", m), ("K", k), ("N", n)):
            if not 1 <= v <= limit:
                raise LutforgeError(f"GEMM {idx}: {name}={v} is outside 1..{limit}")
        if x.ternary and x.wbits != 2:
            raise LutforgeError(f"GEMM {idx}: ternary weights use wbits=2, got {x.wbits}")
        if not 1 <= x.wbits <= core.weight_bits:
            raise LutforgeError(f"GEMM {idx}: wbits={x.wbits} outside 1..core.weight_bits={core.weight_bits}")
        x = pad_k(x, core.group_size)
        if x.shape[1] > limit:
            raise LutforgeError(f"GEMM {idx}: K padded to the group size exceeds {limit}")
        try:
            check_operands(x.a, x.q, x.scales, x.zeros, act=self.cfg.act_format, wbits=x.wbits,
                           ternary=x.ternary, group_size=core.group_size)
        except ValueError as e:
            raise LutforgeError(f"GEMM {idx}: {e}") from None
        return x

    def pack(self, x: LutGemm, base: int = 0) -> GemmImage:
        """Memory image of a checked (K-padded) GEMM from ``base``; C's region follows."""
        core, R, C, Kt = self.core, self.R, self.C, self.Kt
        m, k, n = x.shape
        mt, nt, G = _ceil_div(m, R), _ceil_div(n, C), core.group_size
        chunks, groups, cpg = k // Kt, k // G, G // Kt
        ap = np.zeros((mt * R, k), np.int64); ap[:m] = x.a.numpy()
        a_vecs = ap.reshape(mt, R, chunks, Kt).transpose(0, 2, 1, 3).reshape(mt, chunks, R * Kt)
        qp = np.zeros((k, nt * C), np.int64); qp[:, :n] = x.q.numpy()
        words = np.zeros((groups, nt * C), np.int64)
        zeros = x.zeros.numpy() if not x.ternary else np.zeros_like(x.zeros.numpy())
        words[:, :n] = x.scales.numpy() | (zeros << 16)
        pv = core.param_vectors
        per_group = pv + cpg * x.wbits
        w_vecs = np.zeros((nt, groups * per_group, C * Kt), np.int64)
        bit_k = np.arange(Kt)
        for j in range(nt):
            cols = slice(j * C, (j + 1) * C)
            for grp in range(groups):
                base_v = grp * per_group
                for v in range(pv):
                    bits = (words[grp, cols][:, None] >> (v * Kt + bit_k)[None, :]) & 1        # (C, Kt)
                    w_vecs[j, base_v + v] = bits.reshape(-1)
                for c in range(cpg):
                    rows = slice((grp * cpg + c) * Kt, (grp * cpg + c + 1) * Kt)
                    for i in range(x.wbits):
                        bits = (qp[rows, cols].T >> i) & 1                                        # (C, Kt)
                        w_vecs[j, base_v + pv + c * x.wbits + i] = bits.reshape(-1)
        a_img = _pack_vectors(np.ascontiguousarray(a_vecs), core.act.bits, self.data_bits).tobytes()
        w_img = _pack_vectors(w_vecs, 1, self.data_bits).tobytes()
        c_size = beats_for(mt * nt * R, C * core.acc_bits, self.data_bits) * self.bpb
        align = lambda v: _ceil_div(v, 4096) * 4096  # noqa: E731 (4 KiB apart, as GemmLayout)
        a_addr = align(base)
        w_addr = align(a_addr + len(a_img))
        c_addr = align(w_addr + len(w_img))
        return GemmImage(m, k, n, a_addr, w_addr, c_addr, a_img, w_img, c_size)

    def command(self, x: LutGemm, img: GemmImage) -> int:
        from hw.cores.lut import LutCommand
        return LutCommand(self.cfg.memory.addr_bits).const({
            "a_addr": img.a_addr, "w_addr": img.w_addr, "c_addr": img.c_addr,
            "m": img.m, "k": img.k, "n": img.n, "wbits": x.wbits, "ternary": int(x.ternary)}).as_bits()

    def unpack_c(self, img: GemmImage, raw: bytes) -> torch.Tensor:
        """C (M x N, int64, acc_bits two's complement) from the bytes at ``img.c_addr``."""
        R, C = self.R, self.C
        mt, nt = _ceil_div(img.m, R), _ceil_div(img.n, C)
        rows = _unpack_vectors(raw, mt * nt * R, C, self.core.acc_bits, self.data_bits, True)
        full = rows.reshape(mt, nt, R, C).transpose(0, 2, 1, 3).reshape(mt * R, nt * C)
        return torch.from_numpy(np.ascontiguousarray(full[:img.m, :img.n]))

    def timeout_cycles(self, x: LutGemm, img: GemmImage) -> int:
        """A generous bound on the GEMM's cycles (4x the slower of compute and memory)."""
        core, sim = self.core, self.cfg.memory.sim
        tiles = _ceil_div(img.m, self.R) * _ceil_div(img.n, self.C)
        chunks = img.k // self.Kt
        compute = tiles * (chunks * (core.chunk_cycles(x.wbits) + 2) + (img.k // core.group_size) * core.param_vectors
                           + self.R + 16)
        traffic = tiles * (len(img.a_bytes) // max(1, _ceil_div(img.m, self.R))
                           + len(img.w_bytes) // max(1, _ceil_div(img.n, self.C))) // self.bpb
        rate = min(sim.read_beats_per_cycle, sim.write_beats_per_cycle)
        return 4 * (compute + int(traffic / rate)) + 100 * sim.latency + 20000
