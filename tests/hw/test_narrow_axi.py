"""hw/mem/narrow.py: a 64-bit master's bursts on a 128-bit slave that honours AXI4 narrow
transfers (a Python model: the beat's address picks the wide word, its strobes the bytes),
random burst lengths, addresses, IDs, strobes, slave latencies and stalls on every channel.
Every read beat is compared with a byte-level reference memory."""

import random

import pytest
from amaranth.sim import Simulator

from hw.mem.narrow import AxiNarrowAdapter

NB, WB = 8, 16          # narrow / wide bytes per beat


def _bursts(rng, n, mem_bytes):
    out = []
    for _ in range(n):
        beats = rng.randint(1, 16)
        addr = rng.randrange(0, mem_bytes - beats * NB) // NB * NB
        if addr // 4096 != (addr + beats * NB - 1) // 4096:
            addr = (addr + beats * NB) // 4096 * 4096 - beats * NB
        out.append((addr, beats))
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_narrow_bursts_on_a_wide_slave(seed):
    rng = random.Random(seed)
    mem_bytes = 8192
    dut = AxiNarrowAdapter(addr_bits=32, narrow_bits=64, wide_bits=128, read_id_bits=3, write_id_bits=1)
    ref = bytearray(rng.randbytes(mem_bytes))     # what the memory must hold
    slave = bytearray(ref)                        # the slave model's memory
    s_r, s_w, m_r, m_w = dut.s_r, dut.s_w, dut.m_r, dut.m_w
    writes = _bursts(rng, 40, mem_bytes)
    reads = _bursts(rng, 40, mem_bytes)

    async def bench(ctx):
        # ---- the slave model: queues of accepted bursts, served in order -------------
        ar_q, aw_q, r_cur, b_q = [], [], None, []
        # ---- the master: every write burst, then (all answered) the read bursts ------
        w_jobs = [(a, n, [rng.getrandbits(64) for _ in range(n)], [rng.getrandbits(8) for _ in range(n)],
                   rng.getrandbits(1)) for a, n in writes]
        for a, n, data, strb, _ in w_jobs:
            for i in range(n):
                for b in range(NB):
                    if strb[i] >> b & 1:
                        ref[a + i * NB + b] = data[i] >> (8 * b) & 0xFF
        aw_left, w_left = list(w_jobs), [(d, s) for _, n, d, st, _ in w_jobs for d, s in zip(d, st)]
        w_last = [i == n - 1 for _, n, *_ in w_jobs for i in range(n)]
        r_jobs = [(a, n, rng.getrandbits(3)) for a, n in reads]
        ar_left, r_expect = list(r_jobs), []
        for a, n, rid in r_jobs:
            r_expect += [(int.from_bytes(ref[a + i * NB:a + (i + 1) * NB], "little"), rid, i == n - 1)
                         for i in range(n)]
        got_b, got_r = [], []
        for cycle in range(20000):
            # master drives
            ctx.set(s_w.awvalid, bool(aw_left) and rng.random() < 0.7)
            if aw_left:
                a, n, _, _, wid = aw_left[0]
                ctx.set(s_w.awaddr, a), ctx.set(s_w.awlen, n - 1), ctx.set(s_w.awsize, 3), ctx.set(s_w.awid, wid)
                ctx.set(s_w.awburst, 1)
            ctx.set(s_w.wvalid, bool(w_left) and rng.random() < 0.7)
            if w_left:
                ctx.set(s_w.wdata, w_left[0][0]), ctx.set(s_w.wstrb, w_left[0][1]), ctx.set(s_w.wlast, w_last[0])
            ctx.set(s_w.bready, rng.random() < 0.7)
            reads_on = len(got_b) == len(w_jobs)      # reads after every write was answered
            ctx.set(s_r.arvalid, reads_on and bool(ar_left) and rng.random() < 0.7)
            if ar_left:
                a, n, rid = ar_left[0]
                ctx.set(s_r.araddr, a), ctx.set(s_r.arlen, n - 1), ctx.set(s_r.arsize, 3), ctx.set(s_r.arid, rid)
                ctx.set(s_r.arburst, 1)
            ctx.set(s_r.rready, rng.random() < 0.7)
            # slave drives
            ctx.set(m_w.awready, rng.random() < 0.6)
            ctx.set(m_w.wready, rng.random() < 0.6 and bool(aw_q))
            ctx.set(m_w.bvalid, bool(b_q))
            if b_q:
                ctx.set(m_w.bid, b_q[0]), ctx.set(m_w.bresp, 0)
            ctx.set(m_r.arready, rng.random() < 0.6)
            if r_cur is None and ar_q and rng.random() < 0.5:
                r_cur = list(ar_q.pop(0))
            ctx.set(m_r.rvalid, r_cur is not None)
            if r_cur is not None:
                a, n, rid, i = r_cur
                ba = (a + i * NB) // WB * WB
                ctx.set(m_r.rdata, int.from_bytes(slave[ba:ba + WB], "little"))
                ctx.set(m_r.rid, rid), ctx.set(m_r.rlast, i == n - 1), ctx.set(m_r.rresp, 0)
            # handshakes (values settle before the edge)
            if ctx.get(s_w.awvalid) and ctx.get(s_w.awready):
                assert ctx.get(m_w.awvalid) and ctx.get(m_w.awaddr) == aw_left[0][0]
                aw_q.append([aw_left[0][0], 0, aw_left[0][4]])
                aw_left.pop(0)
            if ctx.get(m_w.wvalid) and ctx.get(m_w.wready):
                a, i, wid = aw_q[0]
                ba, wdata, wstrb = (a + i * NB) // WB * WB, ctx.get(m_w.wdata), ctx.get(m_w.wstrb)
                for b in range(WB):
                    if wstrb >> b & 1:
                        slave[ba + b] = wdata >> (8 * b) & 0xFF
                assert wstrb & ~(0xFF << ((a + i * NB) % WB)) == 0, f"strobe {wstrb:#x} off its lane (seed {seed})"
                aw_q[0][1] += 1
                if ctx.get(m_w.wlast):
                    b_q.append(wid)
                    aw_q.pop(0)
                w_left.pop(0), w_last.pop(0)
            if ctx.get(s_w.bvalid) and ctx.get(s_w.bready):
                got_b.append(ctx.get(s_w.bid))
                b_q.pop(0)
            if ctx.get(s_r.arvalid) and ctx.get(s_r.arready):
                a, n, rid = ar_left.pop(0)
                ar_q.append((a, n, rid, 0))
            if ctx.get(s_r.rvalid) and ctx.get(s_r.rready):
                got_r.append((ctx.get(s_r.rdata), ctx.get(s_r.rid), bool(ctx.get(s_r.rlast))))
                want = r_expect[len(got_r) - 1]
                assert got_r[-1] == want, f"read beat {len(got_r) - 1}: {got_r[-1]} != {want} (seed {seed})"
            if r_cur is not None and ctx.get(m_r.rvalid) and ctx.get(m_r.rready):
                r_cur[3] += 1
                if r_cur[3] == r_cur[1]:
                    r_cur = None
            await ctx.tick()
            if len(got_r) == len(r_expect):
                break
        assert got_b == [wid for *_, wid in w_jobs], f"write responses (seed {seed})"
        assert len(got_r) == len(r_expect), f"{len(got_r)} of {len(r_expect)} read beats (seed {seed})"
        assert slave == ref, f"memory differs (seed {seed})"

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


def test_narrow_adapter_widths():
    with pytest.raises(ValueError, match="power-of-two multiple"):
        AxiNarrowAdapter(addr_bits=32, narrow_bits=64, wide_bits=192)
