"""``lutforge demo``: generate an accelerator, run one GEMM on it under Verilator, check it.

The main job of the README's first command: it shows the whole spine working on this
machine — config -> Amaranth -> Verilog (+ manifest, lint) -> Verilator + cocotb with the
AXI memory model -> C compared word for word with ``ref_model`` -> counters.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from ref_model.gemm import systolic_gemm
from rtl_gen.generate import generate_verilog

from . import verilator
from .gemm_runner import run_gemms


def run_demo(cfg, *, m: int, k: int, n: int, seed: int, outdir: Path = Path("build")) -> int:
    if cfg.core.kind == "bitserial":
        return run_bitserial_demo(cfg, m=m, k=k, n=n, seed=seed, outdir=outdir)
    if cfg.core.kind == "lut":
        return run_lut_demo(cfg, m=m, k=k, n=n, seed=seed, outdir=outdir)
    t0 = time.perf_counter()
    print(f"config   {cfg.name} (hash {cfg.hash()}): {cfg.core.rows}x{cfg.core.cols} {cfg.core.dataflow}, "
          f"{cfg.act_format.name} activations x {cfg.weight_format.name} weights, {cfg.core.acc_bits}-bit accumulators, "
          f"{cfg.memory.data_bits}-bit AXI4 port")
    manifest = generate_verilog(cfg, outdir / cfg.name)
    warnings = verilator.lint(Path(manifest["verilog"]), manifest["top"])
    print(f"verilog  {manifest['verilog']} ({len(manifest['ports'])} ports); verilator --lint-only -Wall: "
          f"{'clean' if not warnings else f'{len(warnings)} warnings'}")
    for w in warnings[:5]:
        print(f"         {w}")
    gen = torch.Generator().manual_seed(seed)
    a = cfg.act_format.random((m, k), gen)
    w = cfg.weight_format.random((k, n), gen)
    print(f"gemm     C[{m}x{n}] = A[{m}x{k}] @ W[{k}x{n}], seed {seed}; building and simulating (Verilator, cached)...")
    run = run_gemms(cfg, [(a, w)])[0]
    ref = systolic_gemm(a, w, cfg.act_format, cfg.weight_format, cfg.acc_format)
    exact = torch.equal(run.c, ref)
    mism = int((run.c != ref).sum())
    met = run.metrics(cfg)
    print(f"result   C[0, :6] = {run.c[0, :6].tolist()}")
    print(f"check    {'bit-exact' if exact else f'MISMATCH in {mism} of {ref.numel()} words'} against "
          f"ref_model.gemm.systolic_gemm ({ref.numel()} words)")
    print(f"counters cycles {met['cycles']}, array busy {met['array_busy']:.1%}, MAC utilization "
          f"{met['mac_utilization']:.1%} ({met['useful_macs']} MACs on {cfg.pes} PEs), read {met['read_bytes']} B "
          f"({met['read_port_utilization']:.1%} of the port), wrote {met['write_bytes']} B")
    print(f"speed    {met['sim_cycles_per_second']:,.0f} simulated cycles/s; total {time.perf_counter() - t0:.1f} s")
    return 0 if exact else 1


def run_bitserial_demo(cfg, *, m: int, k: int, n: int, seed: int, outdir: Path = Path("build"),
                       type_set: str = "int4+fp4") -> int:
    """The demo on a bit-serial core: random float weights quantized per group with a
    BitMoD type mixture, one GEMM, checked against ref_model.bitserial.bitserial_gemm."""
    from host_runtime.bitserial_layout import BitSerialWeights
    from ref_model.bitserial import bitserial_gemm
    from ref_model.formats import TYPE_SETS, quantize_groups

    t0 = time.perf_counter()
    core = cfg.core
    print(f"config   {cfg.name} (hash {cfg.hash()}): bit-serial {core.rows} k-lanes x {core.cols} columns, "
          f"{cfg.act_format.name} activations, weights as sign + 1..{core.max_planes} planes, f16 group scales, "
          f"Q.{core.out_frac} outputs in {core.acc_bits} bits, {cfg.memory.data_bits}-bit AXI4 port")
    manifest = generate_verilog(cfg, outdir / cfg.name)
    warnings = verilator.lint(Path(manifest["verilog"]), manifest["top"])
    print(f"verilog  {manifest['verilog']} ({len(manifest['ports'])} ports); verilator --lint-only -Wall: "
          f"{'clean' if not warnings else f'{len(warnings)} warnings'}")
    gen = torch.Generator().manual_seed(seed)
    group = max(core.group_sizes)
    q = quantize_groups(torch.randn((k, n), generator=gen), group, TYPE_SETS[type_set])
    a = cfg.act_format.random((m, k), gen)
    counts = ", ".join(f"{t} {c}" for t, c in q.type_counts().items() if c)
    print(f"weights  {type_set} mixture, groups of {group}: {counts}; {q.planes} planes")
    print(f"gemm     C[{m}x{n}] = A[{m}x{k}] @ W[{k}x{n}], seed {seed}; building and simulating (Verilator, cached)...")
    run = run_gemms(cfg, [(a, BitSerialWeights.from_quantized(q))])[0]
    ref = bitserial_gemm(a, q.values, q.scale_bits, group, core.out_frac, core.acc_bits)
    exact = torch.equal(run.c, ref)
    c = run.counters
    print(f"result   C[0, :6] = {run.c[0, :6].tolist()} (Q.{core.out_frac})")
    print(f"check    {'bit-exact' if exact else f'MISMATCH in {int((run.c != ref).sum())} of {ref.numel()} words'} "
          f"against ref_model.bitserial.bitserial_gemm ({ref.numel()} words)")
    print(f"counters cycles {c['cycles']}, plane steps {c['busy']} ({c['busy'] / max(c['cycles'], 1):.1%}), "
          f"read {c['read_bytes']} B, wrote {c['write_bytes']} B; total {time.perf_counter() - t0:.1f} s")
    return 0 if exact else 1


def run_lut_demo(cfg, *, m: int, k: int, n: int, seed: int, outdir: Path = Path("build")) -> int:
    """The demo on a LUT core: one GEMM per weight precision the core serves."""
    from host_runtime.lut_layout import LutGemm
    from ref_model.formats import IntFormat, f16_encode
    from ref_model.lut import lut_gemm
    t0 = time.perf_counter()
    core = cfg.core
    print(f"config   {cfg.name} (hash {cfg.hash()}): LUT core {core.rows}x{core.cols}, {core.k_groups} tables of "
          f"g={core.g} per row ({'symmetric' if core.symmetric else 'full'}, {core.table_entries} entries), "
          f"{cfg.act_format.name} activations x W1..W{core.weight_bits}/ternary, groups of {core.group_size}, "
          f"{core.acc_bits}-bit Q.{core.frac} accumulators, {cfg.memory.data_bits}-bit AXI4 port")
    manifest = generate_verilog(cfg, outdir / cfg.name)
    warnings = verilator.lint(Path(manifest["verilog"]), manifest["top"])
    print(f"verilog  {manifest['verilog']} ({len(manifest['ports'])} ports); verilator --lint-only -Wall: "
          f"{'clean' if not warnings else f'{len(warnings)} warnings'}")
    gen = torch.Generator().manual_seed(seed)
    groups = -(-k // core.group_size)
    cases = []
    for wbits, ternary in [(b, False) for b in range(1, core.weight_bits + 1)] + [(2, True)] * (core.weight_bits >= 2):
        qmax = 2 if ternary else (1 << wbits) - 1
        z = torch.ones((groups, n), dtype=torch.int64) if ternary else torch.randint(0, qmax + 1, (groups, n), generator=gen)
        cases.append(LutGemm(cfg.act_format.random((m, k), gen), torch.randint(0, qmax + 1, (k, n), generator=gen),
                             f16_encode(torch.randn((groups, n), generator=gen) * 0.02), z, wbits, ternary))
    print(f"gemm     C[{m}x{n}] = A[{m}x{k}] @ (Q - z)[{k}x{n}] x scales, seed {seed}, {len(cases)} precisions; "
          f"building and simulating (Verilator, cached)...")
    ok = True
    for x, run in zip(cases, run_gemms(cfg, cases)):
        ref = lut_gemm(x.a, x.q, x.scales, x.zeros, act=cfg.act_format, acc=IntFormat(core.acc_bits), g=core.g,
                       k_tile=core.k_tile, group_size=core.group_size, frac=core.frac, wbits=x.wbits,
                       ternary=x.ternary, symmetric=core.symmetric)
        exact = torch.equal(run.c, ref)
        ok &= exact
        cyc = max(run.counters["cycles"], 1)
        util = m * k * n / (core.peak_macs_per_cycle(x.wbits) * cyc)
        name = "ternary" if x.ternary else f"W{x.wbits}"
        print(f"{name:<8} {'bit-exact' if exact else 'MISMATCH'} vs ref_model.lut.lut_gemm; cycles {cyc}, "
              f"{util:.1%} of the peak {core.peak_macs_per_cycle(x.wbits):g} MAC/cycle, read {run.counters['read_bytes']} B, "
              f"C[0, :4] = {run.c[0, :4].tolist()}")
    print(f"total    {time.perf_counter() - t0:.1f} s")
    return 0 if ok else 1
