"""Memory images of group-scaled GEMM operands in the bit-serial core's layout (host side).

Mirrors :mod:`hw.cores.bitserial` (loop order) and :mod:`hw.mem.gearbox` (packing):

* A: per row m, ceil(K/G)*G/R a-vectors of R activations (k = kb*R + r in lane r), the
  row padded with zeros to whole groups; every row starts on a beat.
* W: per column block j, per k-block kb: the sign plane, then the magnitude planes from
  ``planes-1`` down to 0. A plane vector has R*C one-bit lanes, lane ``c*R + r`` is the
  weight (k = kb*R + r, n = j*C + c). One segment per column block.
* Scales: per column block j, ceil(K/G) vectors of C f16 patterns (lane c = column j*C + c).
* C: rows in (j, m) order, C lanes of ``acc_bits`` each.

Padding weights are zero; padding scales are zero (they multiply a zero partial sum).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hw.mem.gearbox import beats_for
from ref_model.errors import LutforgeError
from ref_model.formats import GroupQuantized, sign_magnitude_planes

from .gemm_layout import _ceil_div, _pack_vectors, _unpack_vectors


@dataclass(frozen=True)
class BitSerialWeights:
    """Weights for the bit-serial core: ``values`` (K, N) integers with |v| < 2**planes,
    ``scale_bits`` (ceil(K/G), N) f16 patterns, the group size and the planes to run."""

    values: torch.Tensor
    scale_bits: torch.Tensor
    group_size: int
    planes: int

    @classmethod
    def from_quantized(cls, q: GroupQuantized) -> "BitSerialWeights":
        return cls(q.values, q.scale_bits, q.group_size, q.planes)


@dataclass(frozen=True)
class BitSerialImage:
    m: int
    k: int
    n: int
    planes: int
    group_size: int
    a_addr: int
    w_addr: int
    s_addr: int
    c_addr: int
    a_bytes: bytes
    w_bytes: bytes
    s_bytes: bytes
    c_size: int

    @property
    def end(self) -> int:
        return self.c_addr + self.c_size

    def regions(self) -> list[tuple[int, bytes]]:
        return [(self.a_addr, self.a_bytes), (self.w_addr, self.w_bytes), (self.s_addr, self.s_bytes)]

    def command(self) -> dict:
        return {"a_addr": self.a_addr, "w_addr": self.w_addr, "s_addr": self.s_addr, "c_addr": self.c_addr,
                "m": self.m, "k": self.k, "n": self.n, "planes": self.planes,
                "group_log2": self.group_size.bit_length() - 1}


class BitSerialLayout:
    """Packing and unpacking for one bit-serial accelerator config."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.R, self.C = cfg.core.rows, cfg.core.cols
        self.data_bits = cfg.memory.data_bits
        self.bpb = self.data_bits // 8

    @staticmethod
    def _align(addr: int) -> int:
        return _ceil_div(addr, 4096) * 4096

    def check(self, idx: int, a: torch.Tensor, w: BitSerialWeights) -> None:
        """One clear error for operands the core cannot run."""
        core = self.cfg.core
        where = f"GEMM {idx}"
        if a.dim() != 2 or w.values.dim() != 2 or a.shape[1] != w.values.shape[0]:
            raise LutforgeError(f"{where}: A {tuple(a.shape)} and W {tuple(w.values.shape)} do not chain")
        (m, k), n = a.shape, w.values.shape[1]
        limit = (1 << 16) - 1
        for name, v in (("M", m), ("K", k), ("N", n)):
            if not 1 <= v <= limit:
                raise LutforgeError(f"{where}: {name}={v} is outside 1..{limit}")
        if k > core.k_max:
            raise LutforgeError(f"{where}: K={k} exceeds core.k_max={core.k_max}")
        if w.group_size not in core.group_sizes:
            raise LutforgeError(f"{where}: group size {w.group_size}; allowed: {core.group_sizes}")
        if not 1 <= w.planes <= core.max_planes:
            raise LutforgeError(f"{where}: planes={w.planes}; allowed: 1..{core.max_planes}")
        if bool((w.values.abs() >= (1 << w.planes)).any()):
            raise LutforgeError(f"{where}: weight values outside +-{(1 << w.planes) - 1} ({w.planes} planes)")
        if tuple(w.scale_bits.shape) != (_ceil_div(k, w.group_size), n):
            raise LutforgeError(f"{where}: scales {tuple(w.scale_bits.shape)}, expected {(_ceil_div(k, w.group_size), n)}")
        if not self.cfg.act_format.contains(a):
            f = self.cfg.act_format
            raise LutforgeError(f"{where}: activations outside {f.name} [{f.min}, {f.max}]")

    def pack(self, a: torch.Tensor, w: BitSerialWeights, base: int = 0) -> BitSerialImage:
        R, C, cfg = self.R, self.C, self.cfg
        G, planes = w.group_size, w.planes
        (m, k), n = a.shape, w.values.shape[1]
        groups = _ceil_div(k, G)
        kp, nt = groups * G, _ceil_div(n, C)
        kb = kp // R
        ap = np.zeros((m, kp), np.int64)
        ap[:, :k] = a.to(torch.int64).numpy()
        vp = torch.zeros((kp, nt * C), dtype=torch.int64)
        vp[:k, :n] = w.values.to(torch.int64)
        sign, mags = sign_magnitude_planes(vp, planes)
        # (planes+1, kp, nt*C) with the sign first, then planes most significant first.
        stack = torch.cat([sign.unsqueeze(0), mags.flip(0)]).numpy()
        # -> (nt, kb, planes+1, C, R) -> vectors of C*R lanes, lane c*R + r.
        w_vecs = stack.reshape(planes + 1, kb, R, nt, C).transpose(3, 1, 0, 4, 2).reshape(nt, kb * (planes + 1), C * R)
        sp = np.zeros((groups, nt * C), np.int64)
        sp[:, :n] = w.scale_bits.to(torch.int64).numpy()
        s_vecs = sp.reshape(groups, nt, C).transpose(1, 0, 2)
        a_img = _pack_vectors(ap.reshape(m, kb, R), cfg.core.act.bits, self.data_bits).tobytes()
        w_img = _pack_vectors(np.ascontiguousarray(w_vecs), 1, self.data_bits).tobytes()
        s_img = _pack_vectors(np.ascontiguousarray(s_vecs), 16, self.data_bits).tobytes()
        c_size = beats_for(nt * m, C * cfg.core.acc_bits, self.data_bits) * self.bpb
        a_addr = self._align(base)
        w_addr = self._align(a_addr + len(a_img))
        s_addr = self._align(w_addr + len(w_img))
        c_addr = self._align(s_addr + len(s_img))
        return BitSerialImage(m, k, n, planes, G, a_addr, w_addr, s_addr, c_addr, a_img, w_img, s_img, c_size)

    def unpack_c(self, img: BitSerialImage, raw: bytes) -> torch.Tensor:
        C, m, n = self.C, img.m, img.n
        nt = _ceil_div(n, C)
        rows = _unpack_vectors(raw, nt * m, C, self.cfg.core.acc_bits, self.data_bits, True)
        full = rows.reshape(nt, m, C).transpose(1, 0, 2).reshape(m, nt * C)
        return torch.from_numpy(np.ascontiguousarray(full[:, :n]))

    def timeout_cycles(self, img: BitSerialImage) -> int:
        """A generous bound: compute plus every byte at a quarter of the port rate."""
        nt = _ceil_div(img.n, self.C)
        kb = _ceil_div(img.k, img.group_size) * img.group_size // self.R
        compute = nt * img.m * kb * img.planes
        traffic = (nt * len(img.a_bytes) + len(img.w_bytes) + len(img.s_bytes) + img.c_size) // self.bpb
        sim = self.cfg.memory.sim
        rate = min(sim.read_beats_per_cycle, sim.write_beats_per_cycle)
        return 4 * (compute + int(traffic / rate)) + 100 * sim.latency * (nt + 1) + 20000
