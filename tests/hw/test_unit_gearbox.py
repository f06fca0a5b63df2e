"""Run-time-width unpacker/packer (the decode engine's memory streams) round trips."""

from __future__ import annotations

import random

import pytest
from amaranth.hdl import Module
from amaranth.sim import Simulator

from hw.mem.gearbox import UnitPacker, UnitUnpacker


@pytest.mark.parametrize("data_bits", [32, 64, 128])
@pytest.mark.parametrize("unit", [2, 4, 8, 32, 64])
def test_unit_pack_unpack_round_trip(data_bits, unit):
    widths = (2, 4, 8, 32, 64)
    sel = widths.index(unit)
    rnd = random.Random(data_bits * 100 + unit)
    count = rnd.randrange(1, 3 * data_bits // unit + 5)
    units = [rnd.randrange(1 << unit) for _ in range(count)]
    m = Module()
    m.submodules.pack = pack = UnitPacker(data_bits=data_bits, unit_bits=widths)
    m.submodules.unpack = unpack = UnitUnpacker(data_bits=data_bits, unit_bits=widths)
    m.d.comb += [unpack.beats.payload.eq(pack.beats.payload.data), unpack.beats.valid.eq(pack.beats.valid),
                 pack.beats.ready.eq(unpack.beats.ready), pack.sel.eq(sel)]
    got, lasts = [], []
    sim = Simulator(m)
    sim.add_clock(1e-8)

    async def feed(ctx):
        ctx.set(unpack.cmd.payload.count, count)
        ctx.set(unpack.cmd.payload.sel, sel)
        ctx.set(unpack.cmd.valid, 1)
        await ctx.tick().until(unpack.cmd.ready)
        ctx.set(unpack.cmd.valid, 0)
        for i, u in enumerate(units):
            while rnd.random() < 0.2:
                await ctx.tick()
            ctx.set(pack.units.payload.unit, u)
            ctx.set(pack.units.payload.last, i == count - 1)
            ctx.set(pack.units.valid, 1)
            await ctx.tick().until(pack.units.ready)
            ctx.set(pack.units.valid, 0)

    async def drain(ctx):
        n = 0
        while len(got) < count:
            ready = rnd.random() < 0.7
            ctx.set(unpack.units.ready, ready)
            _, _, v, p, bv, bl, br = await ctx.tick().sample(unpack.units.valid, unpack.units.payload,
                                                             pack.beats.valid, pack.beats.payload.last,
                                                             pack.beats.ready)
            if v and ready:
                got.append(p)
            if bv and br:
                lasts.append(bl)
            n += 1
            assert n < 10_000
    sim.add_testbench(feed)
    sim.add_testbench(drain)
    sim.run()
    assert got == units
    assert lasts and lasts[-1] == 1 and sum(lasts) == 1
