"""Memory images of GEMM operands in the systolic core's layout (the host side).

Mirrors :mod:`hw.mem.gearbox` (how vectors pack into beats) and the loop order of
:mod:`hw.cores.systolic` (which vectors, in which order). Shapes are padded to the array
with zeros; C comes back as a dense sequence of c-vectors in the core's output order and
is cropped to M x N here.

Lane i of a vector sits at bits [i*width, (i+1)*width), in two's complement.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hw.mem.gearbox import beats_for, packing


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _pack_vectors(vecs: np.ndarray, width: int, data_bits: int) -> np.ndarray:
    """(segments, n, lanes) lane values -> beats as a (segments * beats, data_bits // 8) uint8 array.

    Every segment starts on a beat boundary (the rule of hw.mem.gearbox)."""
    segs, n, lanes = vecs.shape
    vbits = lanes * width
    slots, bpv = packing(vbits, data_bits)
    u = (vecs.astype(np.int64) & ((1 << width) - 1)).astype(object)
    # Build each vector's integer (lane 0 least significant), then each beat's integer.
    shifts = [i * width for i in range(lanes)]
    vec_int = np.zeros((segs, n), dtype=object)
    for i, s in enumerate(shifts):
        vec_int = vec_int + (u[:, :, i] << s)
    nbeats_seg = beats_for(n, vbits, data_bits)
    out = np.zeros((segs, nbeats_seg), dtype=object)
    if bpv == 1:
        for idx in range(n):
            out[:, idx // slots] += vec_int[:, idx] << ((idx % slots) * vbits)
    else:
        mask = (1 << data_bits) - 1
        for idx in range(n):
            for p in range(bpv):
                out[:, idx * bpv + p] = (vec_int[:, idx] >> (p * data_bits)) & mask
    nbytes = data_bits // 8
    flat = out.reshape(-1)
    return np.frombuffer(b"".join(int(x).to_bytes(nbytes, "little") for x in flat), dtype=np.uint8).reshape(-1, nbytes)


def _unpack_vectors(raw: bytes, n: int, lanes: int, width: int, data_bits: int, signed: bool) -> np.ndarray:
    """Inverse of _pack_vectors for one segment of ``n`` vectors: (n, lanes) int64."""
    vbits = lanes * width
    slots, bpv = packing(vbits, data_bits)
    nbytes = data_bits // 8
    beats = [int.from_bytes(raw[i * nbytes:(i + 1) * nbytes], "little") for i in range(len(raw) // nbytes)]
    out = np.zeros((n, lanes), dtype=np.int64)
    vmask, lmask = (1 << vbits) - 1, (1 << width) - 1
    for idx in range(n):
        if bpv == 1:
            v = (beats[idx // slots] >> ((idx % slots) * vbits)) & vmask
        else:
            v = 0
            for p in range(bpv):
                v |= beats[idx * bpv + p] << (p * data_bits)
        for i in range(lanes):
            x = (v >> (i * width)) & lmask
            if signed and x >> (width - 1):
                x -= 1 << width
            out[idx, i] = x
    return out


@dataclass(frozen=True)
class GemmImage:
    """Where a GEMM's operands sit in memory, and the bytes to put there."""

    m: int
    k: int
    n: int
    a_addr: int
    w_addr: int
    c_addr: int
    a_bytes: bytes
    w_bytes: bytes
    c_size: int        # bytes the core will write at c_addr

    @property
    def end(self) -> int:
        return self.c_addr + self.c_size


class GemmLayout:
    """Packing and unpacking for one accelerator config (``rtl_gen.config.AcceleratorConfig``)."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.R, self.C = cfg.core.rows, cfg.core.cols
        self.data_bits = cfg.memory.data_bits
        self.bpb = self.data_bits // 8
        self.dataflow = cfg.core.dataflow

    def _align(self, addr: int) -> int:
        # 4 KiB alignment keeps regions apart and bursts simple to reason about.
        return _ceil_div(addr, 4096) * 4096

    def check_shape(self, m: int, k: int, n: int) -> None:
        from ref_model.errors import LutforgeError
        limit = (1 << 16) - 1
        for name, v in (("M", m), ("K", k), ("N", n)):
            if not 1 <= v <= limit:
                raise LutforgeError(f"GEMM {name}={v} is outside 1..{limit}")
        if self.dataflow == "output_stationary" and k > self.cfg.core.k_max:
            raise LutforgeError(f"GEMM K={k} exceeds core.k_max={self.cfg.core.k_max} of the output-stationary core")

    def pack(self, a: torch.Tensor, w: torch.Tensor, base: int = 0) -> GemmImage:
        """Memory image of A (M x K) and W (K x N) from ``base``; C's region follows."""
        a, w = a.to(torch.int64).numpy(), w.to(torch.int64).numpy()
        (m, k), (k2, n) = a.shape, w.shape
        assert k == k2
        self.check_shape(m, k, n)
        R, C, cfg = self.R, self.C, self.cfg
        abits, wbits = cfg.core.act.bits, cfg.core.weight.bits
        if self.dataflow == "output_stationary":
            mt, nt = _ceil_div(m, R), _ceil_div(n, C)
            ap = np.zeros((mt * R, k), np.int64); ap[:m] = a
            wp = np.zeros((k, nt * C), np.int64); wp[:, :n] = w
            # A: block i = K vectors a[iR:iR+R, k]; W: block j = K vectors w[k, jC:jC+C].
            a_vecs = ap.reshape(mt, R, k).transpose(0, 2, 1)
            w_vecs = wp.reshape(k, nt, C).transpose(1, 0, 2)
            c_vectors = mt * nt * R
        else:
            kt, nt = _ceil_div(k, R), _ceil_div(n, C)
            ap = np.zeros((m, kt * R), np.int64); ap[:, :k] = a
            wp = np.zeros((kt * R, nt * C), np.int64); wp[:k, :n] = w
            # A: segment kb = M vectors a[m, kbR:kbR+R]; W: for j, for kb: R vectors, row R-1 first.
            a_vecs = ap.reshape(m, kt, R).transpose(1, 0, 2)
            w_vecs = wp.reshape(kt, R, nt, C)[:, ::-1].transpose(2, 0, 1, 3).reshape(nt * kt, R, C)
            c_vectors = nt * m
        a_img = _pack_vectors(np.ascontiguousarray(a_vecs), abits, self.data_bits).tobytes()
        w_img = _pack_vectors(np.ascontiguousarray(w_vecs), wbits, self.data_bits).tobytes()
        c_size = beats_for(c_vectors, cfg.c_vector_bits, self.data_bits) * self.bpb
        a_addr = self._align(base)
        w_addr = self._align(a_addr + len(a_img))
        c_addr = self._align(w_addr + len(w_img))
        return GemmImage(m, k, n, a_addr, w_addr, c_addr, a_img, w_img, c_size)

    def unpack_c(self, img: GemmImage, raw: bytes) -> torch.Tensor:
        """C (M x N, int64) from the bytes the core wrote at ``img.c_addr``."""
        R, C, cfg = self.R, self.C, self.cfg
        m, n = img.m, img.n
        nt = _ceil_div(n, C)
        if self.dataflow == "output_stationary":
            mt = _ceil_div(m, R)
            rows = _unpack_vectors(raw, mt * nt * R, C, cfg.core.acc_bits, self.data_bits, True)
            # Tiles leave in (group of row_blocks, j, block in group) order.
            full = np.zeros((mt * R, nt * C), np.int64)
            rb, pos = cfg.core.row_blocks, 0
            for g0 in range(0, mt, rb):
                for j in range(nt):
                    for i in range(g0, min(g0 + rb, mt)):
                        full[i * R:(i + 1) * R, j * C:(j + 1) * C] = rows[pos:pos + R]
                        pos += R
        else:
            rows = _unpack_vectors(raw, nt * m, C, cfg.core.acc_bits, self.data_bits, True)
            full = rows.reshape(nt, m, C).transpose(1, 0, 2).reshape(m, nt * C)
        return torch.from_numpy(np.ascontiguousarray(full[:m, :n]))
