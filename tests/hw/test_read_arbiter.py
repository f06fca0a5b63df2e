"""hw/mem/reader.py ReadArbiter: masters' address requests (random valid patterns, random
port ready) each reach the port exactly once, in each master's order, with the master's
index and own ID in ``arid``; read data goes back to the master named by ``rid``. With and
without ``in_reg`` (a register FIFO per master's request)."""

import random

import pytest
from amaranth.sim import Simulator

from hw.mem.reader import ReadArbiter

N = 3


@pytest.mark.parametrize("in_reg", [False, True])
@pytest.mark.parametrize("seed", [1, 2])
def test_arbiter_grants_every_request_once_in_order(in_reg, seed):
    rng = random.Random(seed)
    dut = ReadArbiter(n=N, addr_bits=32, data_bits=64, in_id_bits=1, in_reg=in_reg)
    masters = [getattr(dut, f"m{i}") for i in range(N)]
    jobs = [[(rng.getrandbits(20) << 4, rng.randrange(16), rng.getrandbits(1)) for _ in range(30)]
            for _ in range(N)]
    got = []          # (master, addr, len, id) in port order
    r_got = [[] for _ in range(N)]

    async def bench(ctx):
        left = [list(j) for j in jobs]
        r_sent = []
        for cycle in range(3000):
            for i, mm in enumerate(masters):
                # a master holds its request until it is taken (AXI: valid stays up)
                if left[i]:
                    a, n, mid = left[i][0]
                    ctx.set(mm.araddr, a), ctx.set(mm.arlen, n), ctx.set(mm.arid, mid)
                    ctx.set(mm.arsize, 3), ctx.set(mm.arburst, 1)
                if not ctx.get(mm.arvalid):
                    ctx.set(mm.arvalid, bool(left[i]) and rng.random() < 0.6)
                ctx.set(mm.rready, 1)
            ctx.set(dut.out.arready, rng.random() < 0.5)
            # read data for a random earlier request, routed by rid
            rv = bool(r_sent) and rng.random() < 0.5
            ctx.set(dut.out.rvalid, rv)
            if rv:
                rid, word = r_sent[0]
                ctx.set(dut.out.rid, rid), ctx.set(dut.out.rdata, word), ctx.set(dut.out.rlast, 1)
            taken = [ctx.get(mm.arvalid) and ctx.get(mm.arready) for mm in masters]
            if ctx.get(dut.out.arvalid) and ctx.get(dut.out.arready):
                arid = ctx.get(dut.out.arid)
                got.append((arid >> 1, ctx.get(dut.out.araddr), ctx.get(dut.out.arlen), arid & 1))
                r_sent.append((arid, rng.getrandbits(64)))
            if rv:
                rid, word = r_sent.pop(0)
                for i, mm in enumerate(masters):
                    assert bool(ctx.get(mm.rvalid)) == (i == rid >> 1), (cycle, seed)
                    if i == rid >> 1:
                        assert ctx.get(mm.rdata) == word and ctx.get(mm.rid) == rid & 1, (cycle, seed)
                        r_got[i].append(word)
            await ctx.tick()
            for i, t in enumerate(taken):
                if t:
                    left[i].pop(0)
                    ctx.set(masters[i].arvalid, 0)
            if not any(left) and len(got) == N * 30 and not r_sent:
                break

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert len(got) == N * 30, f"{len(got)} of {N * 30} requests reached the port (seed {seed}, in_reg {in_reg})"
    for i in range(N):
        mine = [(a, n, mid) for k, a, n, mid in got if k == i]
        assert mine == jobs[i], f"master {i}: requests out of order or changed (seed {seed}, in_reg {in_reg})"
        assert len(r_got[i]) == 30
