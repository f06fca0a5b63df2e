"""Decode-engine vector units in the Amaranth simulator, bit-exact against ref_model.decode."""

from __future__ import annotations

import math
import random

import pytest
import torch
from amaranth.sim import Simulator

from hw.decode.vector import ArgmaxUnit, ElementwiseUnit, RmsNormUnit, RopeUnit
from ref_model import decode as U
from ref_model import fixedpoint as fx

T = fx.rom_tables()
F = 12


def _drive(dut, cmd: dict, streams: dict[str, list[int]], n_out: int, seed: int) -> list[int]:
    """Send one command, feed each input stream with random gaps, collect ``n_out`` pushes."""
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    out = []

    def feeder(name, values, rnd):
        port = getattr(dut, name)

        async def proc(ctx):
            for v in values:
                while rnd.random() < 0.25:
                    await ctx.tick()
                ctx.set(port.payload, v)
                ctx.set(port.valid, 1)
                await ctx.tick().until(port.ready)
                ctx.set(port.valid, 0)
        return proc

    async def bench(ctx):
        for k, v in cmd.items():
            ctx.set(getattr(dut.cmd.payload, k), v)
        ctx.set(dut.cmd.valid, 1)
        await ctx.tick().until(dut.cmd.ready)
        ctx.set(dut.cmd.valid, 0)
        cycles = 0
        while len(out) < n_out:
            _, _, v, y = await ctx.tick().sample(dut.o_valid, dut.y)
            if v:
                out.append(y)
            cycles += 1
            assert cycles < 20_000
        await ctx.tick().until(~dut.busy)

    for i, (name, values) in enumerate(streams.items()):
        sim.add_testbench(feeder(name, values, random.Random(seed * 10 + i)), background=True)
    sim.add_testbench(bench)
    sim.run()
    return out


@pytest.mark.parametrize("n,scale,seed", [(64, 1 << 14, 1), (96, 1 << 24, 2), (32, 3, 3), (64, 0, 4)])
def test_rmsnorm(n, scale, seed):
    g = torch.Generator().manual_seed(seed)
    h = (torch.randn(n, generator=g) * scale).to(torch.int64).clamp(-(1 << 31), (1 << 31) - 1)
    if scale > (1 << 20):
        h[0] = -(1 << 31)
    gain = (torch.rand(n, generator=g) * 3 * (1 << 12) * math.sqrt(n)).to(torch.int64)
    gain[1] = -gain[1]
    eps = round(n * 1e-5 * 2 ** (2 * F - 10))
    want = U.rmsnorm(h, gain, eps, F, 12, 10)
    dut = RmsNormUnit(frac=F, gain_frac=12, ss_shift=10, rsqrt_table=T["rsqrt"])
    got = _drive(dut, {"n": n, "eps": eps}, {"x": h.tolist() * 2, "gain": gain.tolist()}, n, seed)
    assert got == want.tolist(), f"seed {seed}"


@pytest.mark.parametrize("heads,hd,pos", [(2, 16, 0), (3, 8, 5), (1, 64, 16383)])
def test_rope(heads, hd, pos):
    g = torch.Generator().manual_seed(hd + pos)
    x = (torch.randn(heads, hd, generator=g) * (1 << 16)).to(torch.int64)
    x[0, 0], x[0, 1] = (1 << 31) - 1, -(1 << 31)
    consts = fx.rope_phase_constants(hd, 10000.0)
    want = U.rope(x, fx.rope_phase(pos, consts)).reshape(-1)
    dut = RopeUnit(max_head_dim=128, sin_table=T["sin"])
    got = _drive(dut, {"heads": heads, "head_dim": hd, "pos": pos},
                 {"consts": consts.tolist(), "x": x.reshape(-1).tolist()}, heads * hd, pos)
    assert got == want.tolist()


@pytest.mark.parametrize("op", [0, 1])
def test_add_and_swiglu(op):
    g = torch.Generator().manual_seed(op)
    n = 80
    a = (torch.randn(n, generator=g) * (1 << 14)).to(torch.int64)
    b = (torch.randn(n, generator=g) * (1 << 14)).to(torch.int64)
    a[:4] = torch.tensor([(1 << 31) - 1, -(1 << 31), (1 << 31) - 1, 1 << 20])
    b[:4] = torch.tensor([(1 << 31) - 1, -(1 << 31), -5, (1 << 31) - 1])
    want = U.residual_add(a, b) if op == 0 else U.swiglu(a, b, F)
    dut = ElementwiseUnit(frac=F, sigmoid_table=T["sigmoid"])
    got = _drive(dut, {"n": n, "op": op}, {"a": a.tolist(), "b": b.tolist()}, n, 7 + op)
    assert got == want.tolist()


def test_argmax_lowest_index_wins_ties():
    xs = [-(1 << 31), 5, 9, -3, 9, 9, 2]
    dut = ArgmaxUnit()
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    res = {}

    async def bench(ctx):
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        for x in xs:
            ctx.set(dut.i_valid, 1)
            ctx.set(dut.x, x)
            await ctx.tick()
        ctx.set(dut.i_valid, 0)
        await ctx.tick()
        res["i"], res["v"] = ctx.get(dut.index), ctx.get(dut.value)
    sim.add_testbench(bench)
    sim.run()
    assert (res["i"], res["v"]) == (U.argmax(torch.tensor(xs)), 9) == (2, 9)
