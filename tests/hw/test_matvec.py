"""The decode engine's matvec unit in the Amaranth simulator against ref_model.decode.matvec."""

from __future__ import annotations

import random

import pytest
import torch
from amaranth.sim import Simulator

from host_runtime.decode_program import pack_codes, pack_scales
from hw.decode.isa import WeightKind, align
from hw.decode.matvec import MatvecUnit
from ref_model import decode as U
from ref_model.formats import f16_encode

from .axi_memory import AXIMemory

CODE_RANGE = {WeightKind.Q4_1: (0, 15), WeightKind.Q4_0: (0, 15), WeightKind.Q8_0: (-128, 127),
              WeightKind.W2: (0, 3), WeightKind.TERNARY: (-1, 1)}


def _matrix(kind: WeightKind, rows: int, cols: int, g: torch.Generator):
    lo, hi = CODE_RANGE[kind]
    codes = torch.randint(lo, hi + 1, (rows, cols), generator=g)
    ng = cols // 32
    d = f16_encode(torch.randn(rows, ng, generator=g) * 0.02)
    d[0, 0] = f16_encode(torch.tensor(65504.0))      # the largest f16 scale
    d[-1, -1] = 0x8001                                 # the smallest negative subnormal
    m = f16_encode(torch.randn(rows, ng, generator=g) * 0.05) if kind.asymmetric else None
    if codes.shape[0] > 1:
        codes[1] = lo                                  # a row of extreme codes
    return codes, d, m


def _input(cols: int, g: torch.Generator, norm: bool):
    x = (torch.randn(cols, generator=g) * (1 << 14)).to(torch.int64)
    x[0] = (1 << 31) - 1                               # int32 extremes in the first block
    x[1] = -(1 << 31)
    if cols >= 64:
        x[32:64] = 0                                   # an all-zero activation block
    return x


def _run(kind: WeightKind, rows: int, cols: int, seed: int, norm: bool, data_bits: int = 128, acc_frac: int = 24,
         prefetch=None, lut_lanes=0, x=None):
    g = torch.Generator().manual_seed(seed)
    codes, d, m = _matrix(kind, rows, cols, g)
    x = _input(cols, g, norm) if x is None else x
    num = U.DecodeNumerics(acc_frac=acc_frac)
    bits = num.norm_act_bits if norm else num.act_bits
    a, e, man = U.quantize_act(x, num.act_frac, num.act_block, bits, num.act_scale_bits)
    # the integer-only statement: exact even for terms beyond 2**51 (the extreme scale below)
    want = U.matvec_int(codes, kind.offset, d, m, a, e, num.act_frac, num.acc_bits, num.acc_frac, man)

    cbytes, sbytes = pack_codes(codes + kind.offset * 0, kind), pack_scales(d, m)
    caddr = 4096 - 64                                  # the code stream crosses a 4 KiB page
    saddr = align(caddr + len(cbytes) + 64)
    mem = AXIMemory(align(saddr + len(sbytes)) + 4096, data_bits, latency=5)
    mem.mem[caddr:caddr + len(cbytes)] = cbytes
    mem.mem[saddr:saddr + len(sbytes)] = sbytes
    dut = MatvecUnit(max_dim=256, data_bits=data_bits, acc_frac=acc_frac, prefetch=prefetch, lut_lanes=lut_lanes)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(mem.read_process(dut.axi), background=True)
    got, cycles = [], {}
    rnd = random.Random(seed)

    async def feed(ctx):
        for v in x.tolist():
            ctx.set(dut.x.payload, v)
            ctx.set(dut.x.valid, 1)
            await ctx.tick().until(dut.x.ready)
            ctx.set(dut.x.valid, 0)
            if rnd.random() < 0.2:
                await ctx.tick()

    async def bench(ctx):
        for k, v in {"kind": kind, "norm": int(norm), "rows": rows, "cols": cols,
                     "codes_addr": caddr, "scales_addr": saddr}.items():
            ctx.set(getattr(dut.cmd.payload, k), int(v))
        ctx.set(dut.cmd.valid, 1)
        await ctx.tick().until(dut.cmd.ready)
        ctx.set(dut.cmd.valid, 0)
        n = 0
        while len(got) < rows:
            ready = rnd.random() < 0.8
            ctx.set(dut.y.ready, ready)
            _, _, valid, val = await ctx.tick().sample(dut.y.valid, dut.y.payload)
            n += 1
            if valid and ready:
                got.append(val)
            assert n < 50_000, "matvec did not finish"
        ctx.set(dut.y.ready, 0)
        await ctx.tick().until(~dut.busy)
        cycles["n"] = n

    sim.add_testbench(feed)
    sim.add_testbench(bench)
    sim.run()
    return torch.tensor(got), want


@pytest.mark.parametrize("kind,rows,cols,norm", [
    (WeightKind.Q4_1, 5, 96, True), (WeightKind.Q4_0, 3, 64, False), (WeightKind.Q8_0, 4, 64, True),
    (WeightKind.W2, 3, 128, False), (WeightKind.TERNARY, 2, 96, True), (WeightKind.Q4_1, 1, 32, False)])
def test_matvec_matches_reference(kind, rows, cols, norm):
    seed = 100 + rows * 7 + cols + int(kind)
    got, want = _run(kind, rows, cols, seed, norm)
    assert torch.equal(got, want), f"seed {seed}, {kind.name} {rows}x{cols}: got {got.tolist()} want {want.tolist()}"


def test_matvec_block_maxima_at_block_edges():
    """Each activation block's maximum |x| sits on one of its edges (last, first, last...),
    growing block by block: a block boundary off by one element in the load or the
    quantize pass changes a block's scale."""
    g = torch.Generator().manual_seed(41)
    x = (torch.randn(160, generator=g) * 64).to(torch.int64)
    for k in range(5):
        x[k * 32 + (31 if k % 2 == 0 else 0)] = (-1) ** k * (1000 << (2 * k))
    got, want = _run(WeightKind.Q8_0, 3, 160, 41, False, x=x)
    assert torch.equal(got, want), f"seed 41: got {got.tolist()} want {want.tolist()}"


def test_matvec_on_a_64_bit_port():
    got, want = _run(WeightKind.Q8_0, 3, 64, 7, False, data_bits=64)
    assert torch.equal(got, want)


def test_matvec_term_rounding_shows():
    """acc_frac = F: every group term's rounding reaches the output (no final shift)."""
    got, want = _run(WeightKind.Q4_1, 12, 96, 11, True, acc_frac=12)
    assert torch.equal(got, want)


def test_matvec_deep_prefetch():
    """Weight readers with deep FIFOs (the engine's ``matvec_prefetch``): the code stream
    (320 beats) is longer than its FIFO, every block of the 256-element input is
    quantized while later blocks load."""
    got, want = _run(WeightKind.Q4_1, 40, 256, 21, True, prefetch=(256, 64))
    assert torch.equal(got, want)


@pytest.mark.parametrize("kind", [WeightKind.Q8_0, WeightKind.Q4_0, WeightKind.TERNARY])
def test_matvec_lut_lanes(kind):
    """Lanes whose product is built from LUTs (lut_mul) give the same bits: signed 8-bit,
    offset 4-bit and 2-bit codes times signed 12-bit norm codes."""
    got, want = _run(kind, 3, 64, 31 + int(kind), True, lut_lanes=20)
    assert torch.equal(got, want)
