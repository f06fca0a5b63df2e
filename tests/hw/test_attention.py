"""The decode engine's attention unit in the Amaranth simulator against ref_model.decode.attention,
scalar and lane-parallel (K/V vectors of ``lanes`` channels), grouped-query included."""

from __future__ import annotations

import random

import pytest
import torch
from amaranth.sim import Simulator

from hw.decode.attention import AttentionUnit
from hw.decode.funcs import ExpNegUnit, ReciprocalUnit
from ref_model import decode as U
from ref_model import fixedpoint as fx

T = fx.rom_tables()
F = 12


def _lanes(values: list[int], lanes: int) -> list[int]:
    """Flat int32 values as packed lane vectors (lane 0 in the low bits)."""
    return [sum((v & 0xFFFFFFFF) << (32 * i) for i, v in enumerate(values[k:k + lanes]))
            for k in range(0, len(values), lanes)]


def _run(dut, cmd: dict, q: list[int], k: list[int], v: list[int], n_out: int, seed: int) -> tuple[list[int], int]:
    """One command; q, k and v fed with random gaps; the outputs and the busy cycles."""
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    out, cycles = [], [0]

    def feeder(port, values, rnd, gaps):
        async def proc(ctx):
            for x in values:
                while gaps and rnd.random() < 0.25:
                    await ctx.tick()
                ctx.set(port.payload.as_value() if hasattr(port.payload, "as_value") else port.payload, x)
                ctx.set(port.valid, 1)
                await ctx.tick().until(port.ready)
                ctx.set(port.valid, 0)
        return proc

    async def bench(ctx):
        for key, val in cmd.items():
            ctx.set(getattr(dut.cmd.payload, key), val)
        ctx.set(dut.cmd.valid, 1)
        await ctx.tick().until(dut.cmd.ready)
        ctx.set(dut.cmd.valid, 0)
        while len(out) < n_out:
            _, _, ov, y = await ctx.tick().sample(dut.o_valid, dut.y)
            if ov:
                out.append(y)
            cycles[0] += 1
            assert cycles[0] < 50_000
        await ctx.tick().until(~dut.busy)

    gaps = seed % 2 == 1                          # odd seeds: random gaps; even: full rate
    for i, (port, values) in enumerate(((dut.q, q), (dut.k, k), (dut.v, v))):
        sim.add_testbench(feeder(port, values, random.Random(seed * 10 + i), gaps), background=True)
    sim.add_testbench(bench)
    sim.run()
    return out, cycles[0]


def _case(nh, nkv, hd, n, seed):
    g = torch.Generator().manual_seed(seed)
    q = (torch.randn(nh, hd, generator=g) * (1 << 14)).to(torch.int64)
    k = (torch.randn(n, nkv, hd, generator=g) * (1 << 13)).to(torch.int64)
    v = (torch.randn(n, nkv, hd, generator=g) * (1 << 15)).to(torch.int64)
    if nh > 2:
        q[1] = 0                                   # an all-zero query head (sh = -16)
        q[2, 0] = (1 << 31) - 1                    # an extreme query
        q[0] = q[0] % 4000
        q[0, 3] = 4088                             # amax whose rounding carries: sh + 1
    if n > 8:
        k[1] = (1 << 20)                           # a dominating key: saturating scores
        v[2] = -(1 << 31)
        v[3] = (1 << 31) - 1                       # extreme values
    return q, k, v


@pytest.mark.parametrize("lanes,nh,nkv,hd,n,seed", [
    (1, 4, 2, 16, 5, 1), (1, 2, 2, 8, 1, 2), (1, 3, 1, 8, 9, 3), (1, 4, 2, 16, 16, 4),
    (4, 4, 2, 16, 5, 5), (8, 3, 1, 8, 9, 6), (8, 2, 2, 8, 1, 7), (16, 4, 2, 16, 16, 8),
    (16, 4, 2, 16, 16, 9), (16, 4, 4, 16, 3, 10), (4, 1, 1, 4, 16, 11), (32, 4, 2, 32, 7, 12),
])
def test_attention_matches_reference(lanes, nh, nkv, hd, n, seed):
    """Buffers at max_heads 4, head_dim 16 (32 for 32 lanes), context 16; position 0
    (n = 1) and a full context (n = 16), GQA 2:1 and 3:1, MHA, extreme queries/keys/values."""
    q, k, v = _case(nh, nkv, hd, n, seed)
    want = U.attention(q, k, v, F).reshape(-1)
    dut = AttentionUnit(max_heads=4, max_head_dim=max(16, lanes), max_ctx=16, frac=F, exp_table=T["exp2"],
                        log2e_q30=T["log2e_q30"][0], rcp_table=T["reciprocal"], lanes=lanes)
    c = round((1 << 16) / hd ** 0.5)
    got, _ = _run(dut, {"heads": nh, "kv_heads": nkv, "head_dim": hd, "n": n, "c": c}, q.reshape(-1).tolist(),
                  _lanes(k.reshape(-1).tolist(), lanes), _lanes(v.reshape(-1).tolist(), lanes), nh * hd, seed)
    assert got == want.tolist(), f"seed {seed}"


@pytest.mark.parametrize("nh", [1, 2])
def test_attention_query_max_in_last_element(nh):
    """The last query element has the largest magnitude of its head (the last head): its
    |q| reaches the head's maximum one cycle after the element, before the shift is taken."""
    hd, n, lanes = 8, 3, 4
    q, k, v = _case(nh, 1, hd, n, 13 + nh)
    q[-1, -1] = -(1 << 30)
    want = U.attention(q, k, v, F).reshape(-1)
    dut = AttentionUnit(max_heads=4, max_head_dim=16, max_ctx=16, frac=F, exp_table=T["exp2"],
                        log2e_q30=T["log2e_q30"][0], rcp_table=T["reciprocal"], lanes=lanes)
    c = round((1 << 16) / hd ** 0.5)
    got, _ = _run(dut, {"heads": nh, "kv_heads": 1, "head_dim": hd, "n": n, "c": c}, q.reshape(-1).tolist(),
                  _lanes(k.reshape(-1).tolist(), lanes), _lanes(v.reshape(-1).tolist(), lanes), nh * hd, 13 + nh)
    assert got == want.tolist(), f"seed {13 + nh}"


def test_attention_lanes_cycles():
    """At full input rate the K and V phases take one cycle per vector: 16 lanes need
    about 1/16 of the scalar unit's cycles for them (GQA 2:1: the K vector serves both heads)."""
    nh, nkv, hd, n = 4, 2, 16, 16
    q, k, v = _case(nh, nkv, hd, n, 20)
    want = U.attention(q, k, v, F).reshape(-1).tolist()
    cyc = {}
    for lanes in (1, 16):
        dut = AttentionUnit(max_heads=4, max_head_dim=16, max_ctx=16, frac=F, exp_table=T["exp2"],
                            log2e_q30=T["log2e_q30"][0], rcp_table=T["reciprocal"], lanes=lanes, par_heads=2,
                            max_kv_heads=2)
        got, cyc[lanes] = _run(dut, {"heads": nh, "kv_heads": nkv, "head_dim": hd, "n": n, "c": 16384},
                               q.reshape(-1).tolist(), _lanes(k.reshape(-1).tolist(), lanes),
                               _lanes(v.reshape(-1).tolist(), lanes), nh * hd, 20)
        assert got == want, f"lanes {lanes}"
    kv_vectors = n * nkv * hd
    # Q, out, exp/P passes, the per-head Q shift (4 register steps, for Fmax), pipeline fills:
    # the exp and reciprocal units' latencies once per group of par_heads heads, plus 36
    fills = nh // 2 * (ExpNegUnit.LATENCY + ReciprocalUnit.LATENCY) + 36
    fixed = 3 * nh * hd + 2 * n * nkv + 4 * nh + fills
    assert cyc[1] >= 2 * kv_vectors
    assert cyc[16] <= 2 * kv_vectors // 16 + fixed, cyc


def test_attention_rejects_bad_lanes():
    with pytest.raises(ValueError, match="lanes"):
        AttentionUnit(max_heads=4, max_head_dim=16, max_ctx=16, frac=F, exp_table=T["exp2"],
                      log2e_q30=T["log2e_q30"][0], rcp_table=T["reciprocal"], lanes=3)
