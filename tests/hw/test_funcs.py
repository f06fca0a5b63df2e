"""Decode-engine function units in the Amaranth simulator, bit-exact against ref_model.fixedpoint."""

from __future__ import annotations

import random

import pytest
import torch
from amaranth.sim import Simulator

from hw.decode.funcs import ExpNegUnit, ReciprocalUnit, RsqrtUnit, SigmoidUnit, SinCosUnit
from ref_model import fixedpoint as fx

T = fx.rom_tables()


def _stream(dut, inputs: dict[str, list[int]], outputs: tuple[str, ...]) -> dict[str, list[int]]:
    """Feed one input per cycle (with random gaps), collect every valid output."""
    n = len(next(iter(inputs.values())))
    got = {k: [] for k in outputs}
    rnd = random.Random(n)
    sim = Simulator(dut)
    sim.add_clock(1e-8)

    async def bench(ctx):
        i = 0
        while len(got[outputs[0]]) < n:
            if i < n and rnd.random() < 0.8:
                for k, v in inputs.items():
                    ctx.set(getattr(dut, k), v[i])
                ctx.set(dut.i_valid, 1)
                i += 1
            else:
                ctx.set(dut.i_valid, 0)
            sampled = await ctx.tick().sample(dut.o_valid, *(getattr(dut, k) for k in outputs))
            if sampled[2]:
                for k, v in zip(outputs, sampled[3:]):
                    got[k].append(v)
    sim.add_testbench(bench)
    sim.run()
    return got


def _positive_inputs(seed: int, n: int) -> list[int]:
    rnd = random.Random(seed)
    xs = [1, 2, 3, 4, (1 << 22) - 1, 1 << 22, (1 << 24) - 1, 1 << 24, (1 << 62) - 1, 1 << 62]
    xs += [rnd.randrange(1, 1 << rnd.randrange(1, 63)) for _ in range(n)]
    return xs


@pytest.mark.parametrize("cls,fn,name", [(RsqrtUnit, fx.rsqrt, "rsqrt"), (ReciprocalUnit, fx.reciprocal, "reciprocal")])
def test_rsqrt_reciprocal(cls, fn, name):
    xs = _positive_inputs(5, 300)
    got = _stream(cls(T[name]), {"x": xs}, ("m", "s"))
    m, s = fn(torch.tensor(xs))
    assert got["m"] == m.tolist(), name
    assert got["s"] == s.tolist(), name


def test_exp_neg():
    rnd = random.Random(7)
    xs = [0, -1, -2, -(1 << 31), -(1 << 16), -(12 << 16), -(1 << 20) + 1, -(1 << 20), -(1 << 20) - 1, -(16 << 16) + 1] + [-rnd.randrange(0, 1 << rnd.randrange(1, 32)) for _ in range(300)]
    got = _stream(ExpNegUnit(T["exp2"], T["log2e_q30"][0]), {"x": xs}, ("y",))
    assert got["y"] == fx.exp_neg(torch.tensor(xs)).tolist()


def test_sincos():
    rnd = random.Random(9)
    ps = [0, 1, (1 << 30) - 1, 1 << 30, (1 << 30) + 1, 1 << 31, 3 << 30, (1 << 32) - 1] + \
        [rnd.randrange(0, 1 << 32) for _ in range(300)]
    got = _stream(SinCosUnit(T["sin"]), {"phase": ps}, ("cos", "sin"))
    c, s = fx.sincos(torch.tensor(ps))
    assert got["cos"] == c.tolist() and got["sin"] == s.tolist()


def test_sigmoid_silu():
    rnd = random.Random(11)
    xs = [0, 1, -1, 16 << 16, -(16 << 16), (16 << 16) - 1, (1 << 31) - 1, -(1 << 31)] + \
        [rnd.randrange(-(1 << 21), 1 << 21) for _ in range(300)]
    got = _stream(SigmoidUnit(T["sigmoid"]), {"x": xs}, ("sig", "silu"))
    t = torch.tensor(xs)
    assert got["sig"] == fx.sigmoid(t).tolist()
    assert got["silu"] == fx.silu(t).tolist()


@pytest.mark.parametrize("qmax,b", [(127, 8), (2047, 8), (15, 8), (3, 4), (255, 12)])
def test_mant_scale(qmax, b):
    from hw.decode.funcs import MantScaleUnit, scale_rom
    from ref_model.decode import _mant_scale, act_scale_rom
    assert scale_rom(b) == act_scale_rom(b).tolist()
    rnd = random.Random(qmax + b)
    xs = [0, 1, 2, (1 << 32) - 1, (1 << 31)] + [rnd.randrange(0, 1 << rnd.randrange(1, 33)) for _ in range(200)]
    cmul = ((1 << 25) // qmax + 1) >> 1
    got = _stream(MantScaleUnit(b), {"amax": xs, "cmul": [cmul] * len(xs)}, ("man", "s", "rcp"))
    man, s = _mant_scale(torch.tensor(xs), qmax, b)
    assert got["man"] == man.tolist() and got["s"] == s.tolist()
    assert got["rcp"] == act_scale_rom(b)[man].tolist()
