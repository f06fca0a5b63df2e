"""The bit-serial PE and dequantization unit in the Amaranth simulator, against the
group rule of ref_model (exact partial sums; f16 rescale with round half up; wrap)."""

import random

import pytest
import torch
from amaranth.sim import Simulator

from hw.pe.bitserial import BitSerialDequant, BitSerialPE
from ref_model.formats import IntFormat, group_rescale

EDGE_SCALES = [0x7BFF, 0xFBFF, 0x0001, 0x8001, 0x03FF, 0x0400, 0x3C00, 0x0000, 0x8000, 0x7C00 - 1]


@pytest.mark.parametrize("cols,digit_bits,frac,acc_bits", [(3, 2, 8, 32), (1, 11, 0, 16), (4, 1, 24, 20)])
def test_dequant_matches_group_rescale(cols, digit_bits, frac, acc_bits):
    """Random groups at random spacing (including back to back, so ``ready`` stalls the
    producer); rows of 1..4 groups; edge scales and extreme partial sums."""
    rng = random.Random(cols * 100 + digit_bits)
    pb = 23
    dut = BitSerialDequant(cols=cols, partial_bits=pb, acc_bits=acc_bits, frac=frac, digit_bits=digit_bits)
    rows = []
    for _ in range(12):
        groups = []
        for _ in range(rng.randint(1, 4)):
            p = [rng.choice([-(1 << (pb - 1)), (1 << (pb - 1)) - 1, 0, rng.randint(-(1 << 22), (1 << 22) - 1)])
                 for _ in range(cols)]
            s = [rng.choice(EDGE_SCALES + [rng.randint(0, 0xFFFF) & ~0x7C00 | (rng.randint(0, 30) << 10)])
                 for _ in range(cols)]
            groups.append((p, s))
        rows.append(groups)
    fmt = IntFormat(acc_bits)
    expected = []
    for groups in rows:
        tot = sum(group_rescale(torch.tensor(p), torch.tensor(s), frac) for p, s in groups)
        expected.append(fmt.wrap(tot).tolist())
    got = []

    async def producer(ctx):
        ctx.set(dut.en, 1)
        for groups in rows:
            for i, (p, s) in enumerate(groups):
                for _ in range(rng.choice([0, 0, 1, 5])):
                    await ctx.tick()
                for c in range(cols):
                    ctx.set(dut.p[c], p[c])
                    ctx.set(dut.scale[c], s[c])
                ctx.set(dut.last, i == len(groups) - 1)
                ctx.set(dut.p_valid, 1)
                await ctx.tick().until(dut.ready)
                ctx.set(dut.p_valid, 0)
        for _ in range(40):
            await ctx.tick()

    async def consumer(ctx):
        async for _, _, valid, out in ctx.tick().sample(dut.out_valid, dut.out):
            if valid:
                got.append([out[c] for c in range(cols)])

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(producer)
    sim.add_process(consumer)
    sim.run_until(2e-5)
    assert got == expected


def test_pe_partial_sums():
    """Plane steps of random signed-magnitude weights give the exact group sums."""
    rng = random.Random(7)
    rows, planes, kpg = 4, 3, 2
    dut = BitSerialPE(rows=rows, act_bits=8, tree_bits=11, horner_bits=14, partial_bits=16)
    groups = []
    for _ in range(5):
        a = [[rng.choice([-128, 127, rng.randint(-128, 127)]) for _ in range(rows)] for _ in range(kpg)]
        v = [[rng.randint(-7, 7) for _ in range(rows)] for _ in range(kpg)]
        groups.append((a, v))
    expected = [sum(a[b][r] * v[b][r] for b in range(kpg) for r in range(rows)) for a, v in groups]
    got = []

    async def bench(ctx):
        ctx.set(dut.en, 1)
        for a, v in groups:
            for b in range(kpg):
                for p in reversed(range(planes)):
                    for r in range(rows):
                        ctx.set(dut.a[r], a[b][r])
                    ctx.set(dut.sign, sum((v[b][r] < 0) << r for r in range(rows)))
                    ctx.set(dut.mag, sum(((abs(v[b][r]) >> p) & 1) << r for r in range(rows)))
                    ctx.set(dut.first_plane, p == planes - 1)
                    ctx.set(dut.last_plane, p == 0)
                    ctx.set(dut.first_kb, b == 0)
                    ctx.set(dut.last_kb, b == kpg - 1)
                    ctx.set(dut.valid, 1)
                    _, _, pv, pval = await ctx.tick().sample(dut.p_valid, dut.p)
                    if pv:
                        got.append(pval)
        ctx.set(dut.valid, 0)
        for _ in range(3):
            _, _, pv, pval = await ctx.tick().sample(dut.p_valid, dut.p)
            if pv:
                got.append(pval)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert got == expected
