"""hw.decode.products: lut_mul (exact products without a $mul cell, so Yosys cannot put them
in a DSP), its pipelined variants and Pipe.mul (split, registered products)."""

import random

import pytest
from amaranth.back import rtlil
from amaranth.hdl import Module, Signal, signed
from amaranth.sim import Simulator

from hw.decode.products import lut_mul


@pytest.mark.parametrize("sa,sb,width", [(False, False, None), (True, False, None), (False, True, None),
                                         (True, True, None), (False, False, 10), (True, True, 7)])
def test_lut_mul_exact(sa, sb, width):
    a = Signal(signed(12) if sa else 12)
    b = Signal(signed(9) if sb else 9)
    y = Signal(signed(40))
    m = Module()
    m.d.comb += y.eq(lut_mul(a, b, width))
    assert "$mul" not in rtlil.convert(m, ports=[a, b, y])
    rng = random.Random(1)
    lo_a, hi_a = (-2048, 2047) if sa else (0, 4095)
    lo_b, hi_b = (-256, 255) if sb else (0, 511)
    cases = [(x, z) for x in (lo_a, hi_a, 0, 1) for z in (lo_b, hi_b, 0, 1)]
    cases += [(rng.randint(lo_a, hi_a), rng.randint(lo_b, hi_b)) for _ in range(200)]

    async def bench(ctx):
        for x, z in cases:
            ctx.set(a, x)
            ctx.set(b, z)
            want = x * z if width is None else (x * z) % (1 << width)
            got = ctx.get(y) if width is None else ctx.get(y) % (1 << width)
            assert got == want, (x, z, got, want)

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("sa,sb,width", [(False, False, None), (True, True, None), (False, False, 10),
                                         (True, False, 7)])
def test_lut_mul_pipe_exact(sa, sb, width):
    """The pipelined product: the product of the operands ``latency`` cycles earlier."""
    from hw.decode.products import lut_mul_pipe
    a = Signal(signed(12) if sa else 12)
    b = Signal(signed(9) if sb else 9)
    y = Signal(signed(40))
    m = Module()
    p, lat = lut_mul_pipe(m, a, b, width)
    m.d.comb += y.eq(p)
    assert lat == (4 if width != 7 else 3)   # 9 (7) partial products: 4 (3) registered adder levels
    rng = random.Random(2)
    lo_a, hi_a = (-2048, 2047) if sa else (0, 4095)
    lo_b, hi_b = (-256, 255) if sb else (0, 511)
    cases = [(rng.randint(lo_a, hi_a), rng.randint(lo_b, hi_b)) for _ in range(100)]

    async def bench(ctx):
        hist = []
        for x, z in cases:
            ctx.set(a, x)
            ctx.set(b, z)
            hist.append((x, z))
            await ctx.tick()
            if len(hist) >= lat:
                x0, z0 = hist[-lat]
                want = x0 * z0 if width is None else (x0 * z0) % (1 << width)
                got = ctx.get(y) if width is None else ctx.get(y) % (1 << width)
                assert got == want, (x0, z0, got, want)

    _simulate(m, bench)


def _simulate(m, bench):
    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


def test_settled_mul_ok_only_when_settled():
    """``ok`` never claims a stale product: random operand holds of 1..8 cycles."""
    from hw.decode.products import settled_mul
    a, b = Signal(15), Signal(16)
    m = Module()
    p, ok = settled_mul(m, a, b, 32)
    rng = random.Random(3)

    async def bench(ctx):
        seen = 0
        for _ in range(60):
            x, z = rng.randrange(1 << 15), rng.randrange(1 << 16)
            ctx.set(a, x)
            ctx.set(b, z)
            for k in range(rng.randint(1, 8)):
                if ctx.get(ok):
                    assert ctx.get(p) == (x * z) % (1 << 32), (x, z)
                    seen += 1
                await ctx.tick()
        assert seen > 20

    _simulate(m, bench)


def test_settled_mul_keyed_ok_only_when_settled():
    """With ``key``: operands change only with the key, or one cycle after it (a registered
    derivative); ``ok`` never claims a stale product and does come."""
    from hw.decode.products import settled_mul
    a, b, key = Signal(15), Signal(16), Signal(3)
    m = Module()
    p, ok = settled_mul(m, a, b, 32, key=key)
    rng = random.Random(5)

    async def bench(ctx):
        seen, k = 0, 0
        x, z = 0, 0
        for _ in range(80):
            k = (k + rng.randint(1, 7)) % 8          # a new site
            late = rng.random() < 0.5
            nx, nz = rng.randrange(1 << 15), rng.randrange(1 << 16)
            ctx.set(key, k)
            if not late:
                x, z = nx, nz
            ctx.set(a, x)
            ctx.set(b, z)
            for c in range(rng.randint(1, 9)):
                if late and c == 1:
                    x, z = nx, nz
                    ctx.set(a, x)
                    ctx.set(b, z)
                if ctx.get(ok):
                    assert ctx.get(p) == (x * z) % (1 << 32), (x, z, c, late)
                    seen += 1
                await ctx.tick()
        assert seen > 20

    _simulate(m, bench)


@pytest.mark.parametrize("wa,sa,wb,sb,lut_bits,seed", [
    (26, True, 25, True, 0, 1),     # the matvec's P x kd: 4 MULT18X18D pieces, one sum stage
    (14, True, 25, True, 0, 2),     # the matvec's S x km: 2 pieces
    (32, True, 25, False, 8, 3),    # a 7-bit piece in LUT rows next to DSP pieces
    (18, False, 18, False, 0, 4),   # one piece: registered product only
    (40, False, 36, False, 4, 5),   # 9 pieces: two sum stages
    (12, True, 9, True, 9, 6),      # all LUT rows
])
def test_pipe_mul_exact(wa, sa, wb, sb, lut_bits, seed):
    """Pipe.mul's result equals a*b of the operands ``stage - k`` cycles earlier, over
    extremes and seeded random operands fed one pair per cycle."""
    from hw.decode.products import Pipe
    a = Signal(signed(wa) if sa else wa)
    b = Signal(signed(wb) if sb else wb)
    m = Module()
    y, stage = Pipe(m, "t_").mul(a, b, 0, "y", signed(wa + wb) if sa or sb else wa + wb)
    assert stage >= 1
    rng = random.Random(seed)
    lo_a, hi_a = (-(1 << (wa - 1)), (1 << (wa - 1)) - 1) if sa else (0, (1 << wa) - 1)
    lo_b, hi_b = (-(1 << (wb - 1)), (1 << (wb - 1)) - 1) if sb else (0, (1 << wb) - 1)
    cases = [(x, z) for x in (lo_a, hi_a, 0, 1, -1 if sa else 2) for z in (lo_b, hi_b, 0, 1, -1 if sb else 2)]
    cases += [(rng.randint(lo_a, hi_a), rng.randint(lo_b, hi_b)) for _ in range(150)]

    async def bench(ctx):
        got = []
        for i in range(len(cases) + stage):
            x, z = cases[i] if i < len(cases) else (0, 0)
            ctx.set(a, x)
            ctx.set(b, z)
            await ctx.tick()
            if i + 1 >= stage:
                got.append(ctx.get(y))
        for (x, z), g in zip(cases, got):
            assert g == x * z, f"seed {seed}: {x} * {z} gave {g}"

    _simulate(m, bench)
