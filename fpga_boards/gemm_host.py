"""Host side of :class:`fpga_boards.gemm_engine.GemmEngine`: GEMMs over the host link.

:func:`gemm_program` lays out a batch of systolic GEMMs in device memory (operands packed
by :class:`host_runtime.gemm_layout.GemmLayout`, one region after the other, then the
descriptors); :func:`run_gemms_on_link` uploads them through a
:class:`host_runtime.protocol.Link` (WRITE_MEM), points PROGRAM_ADDR / N_INSTR at the
descriptors, RUNs, and reads every C back (READ_MEM). The same function drives a real
board (serial target) or a simulated one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from host_runtime.gemm_layout import GemmImage, GemmLayout
from host_runtime.protocol import Csr, MEM_ALIGN
from hw.cores.systolic import GemmCommand
from ref_model.errors import LutforgeError

from .gemm_engine import descriptor_bytes


@dataclass
class GemmProgram:
    images: list[GemmImage]
    regions: list[tuple[int, bytes]]    # (address, bytes) to write, descriptors included
    program_addr: int
    n_instr: int
    end: int                            # first byte past everything


def _pad(data: bytes) -> bytes:
    return data + bytes(-len(data) % MEM_ALIGN)


def gemm_program(cfg, cases, base: int = 0) -> GemmProgram:
    """Memory layout of ``cases`` (``(A, W)`` integer tensors) for the systolic core of ``cfg``."""
    if cfg.core.kind != "systolic":
        raise LutforgeError(f"GEMM programs over the host link support core.kind=systolic, not {cfg.core.kind!r}")
    layout = GemmLayout(cfg)
    layout_cmd = GemmCommand(cfg.memory.addr_bits)
    dbytes = descriptor_bytes(layout_cmd.size, cfg.memory.data_bits)
    images, regions, descs = [], [], b""
    cursor = base
    for idx, (a, w) in enumerate(cases):
        for name, x, fmt in (("activations", a, cfg.act_format), ("weights", w, cfg.weight_format)):
            if not fmt.contains(x):
                raise LutforgeError(f"GEMM {idx}: {name} outside {fmt.name} [{fmt.min}, {fmt.max}]")
        img = layout.pack(a, w, base=cursor)
        images.append(img)
        # the link moves whole MEM_ALIGN units; regions are 4 KiB apart, so padding is free
        regions += [(img.a_addr, _pad(img.a_bytes)), (img.w_addr, _pad(img.w_bytes))]
        fields = {"a_addr": img.a_addr, "w_addr": img.w_addr, "c_addr": img.c_addr,
                  "m": img.m, "k": img.k, "n": img.n}
        bits = layout_cmd.const(fields).as_bits()
        descs += bits.to_bytes(dbytes, "little")
        cursor = img.end
    prog = -(-cursor // MEM_ALIGN) * MEM_ALIGN
    regions.append((prog, descs))
    return GemmProgram(images, regions, prog, len(images), prog + len(descs))


def run_gemms_on_link(link, cfg, cases, *, base: int = 0, timeout: float = 60.0) -> tuple[list[torch.Tensor], dict]:
    """Run ``cases`` on a board whose engine is a :class:`GemmEngine` for ``cfg``.

    Returns (the C matrices, the counters: cycles, matvec_cycles (array busy), read_bytes,
    write_bytes). Raises :class:`~host_runtime.protocol.ProtocolError` when the engine
    flags an error."""
    prog = gemm_program(cfg, cases, base)
    for addr, data in prog.regions:
        link.write_mem(addr, data)
    link.write_csr(Csr.PROGRAM_ADDR, prog.program_addr)
    link.write_csr(Csr.N_INSTR, prog.n_instr)
    done, cycles = link.run(0, 0, timeout=timeout)
    if done != prog.n_instr:
        raise LutforgeError(f"the GEMM engine finished {done} of {prog.n_instr} GEMMs")
    layout = GemmLayout(cfg)
    cs = []
    for img in prog.images:
        size = -(-img.c_size // MEM_ALIGN) * MEM_ALIGN
        cs.append(layout.unpack_c(img, link.read_mem(img.c_addr, size)[:img.c_size]))
    counters = {name: link.read_csr(getattr(Csr, name.upper()))
                for name in ("cycles", "matvec_cycles", "read_bytes", "write_bytes")}
    return cs, counters


def board_gemm(link, cfg, *, m: int, k: int, n: int, seed: int = 1, timeout: float = 60.0) -> dict:
    """HELLO (the board must run ``cfg``), then one random GEMM of ``cfg``'s formats on the
    board, checked against :func:`ref_model.gemm.systolic_gemm` word for word. Returns the
    counters plus ``match`` and ``mac_utilization``; a mismatch is a :class:`LutforgeError`
    naming the first differing element and the seed."""
    from ref_model.gemm import systolic_gemm
    _, got_hash = link.hello()
    if bytes(got_hash) != cfg.hash_bytes():
        raise LutforgeError(f"the board runs config hash {bytes(got_hash).hex()}, not {cfg.name}'s "
                            f"{cfg.hash_bytes().hex()}: program the bitstream built from this config")
    gen = torch.Generator().manual_seed(seed)
    a, w = cfg.act_format.random((m, k), gen), cfg.weight_format.random((k, n), gen)
    (c,), counters = run_gemms_on_link(link, cfg, [(a, w)], timeout=timeout)
    want = systolic_gemm(a, w, cfg.act_format, cfg.weight_format, cfg.acc_format)
    if not torch.equal(c, want):
        bad = (c != want).nonzero()[0].tolist()
        raise LutforgeError(f"GEMM {m}x{k}x{n} (seed {seed}): C[{bad[0]}, {bad[1]}] = {int(c[tuple(bad)])}, "
                            f"the reference says {int(want[tuple(bad)])}")
    cycles = max(counters["cycles"], 1)
    return {**counters, "m": m, "k": k, "n": n, "seed": seed, "match": True,
            "mac_utilization": m * k * n / (cfg.pes * cycles)}
