"""The KV unit in the Amaranth simulator against the instruction-level model's KV steps:
the same bytes in memory after every APPEND, the same rows from every READ."""

from __future__ import annotations

import pytest
import torch
from amaranth.hdl import Signal
from amaranth.sim import Simulator

from hw.decode.isa import Buf, Instr, KVLayout, Op, Reg
from hw.decode.kv import KVUnit
from ref_model.decode import DecodeNumerics
from sim.decode_isa import DecodeISAModel

from .axi_memory import AXIMemory

BASE = 192


def _unpack(word: int, lanes: int) -> list[int]:
    """A lane vector (lane 0 in the low bits) as signed int32 values."""
    out = []
    for i in range(lanes):
        x = (word >> (32 * i)) & 0xFFFFFFFF
        out.append(x - (1 << 32) if x >> 31 else x)
    return out


CASES = [(4, 4, 0, 10), (8, 2, 3, 9), (2, 4, 1, 9), (16, 4, 0, 5)]


@pytest.mark.parametrize("lanes,hd,kv_bits,k_group,window,tokens",
                         [(lanes, 16) + c for lanes in (1, 4, 16) for c in CASES] + [(32, 32) + CASES[0], (32, 32) + CASES[1]])
def test_kv_unit_matches_isa_model(kv_bits, k_group, window, tokens, lanes, hd):
    """Every position up to 9-10 tokens: window boundaries, K group boundaries, raw ring
    wrap, KV2/4/8/16; READ rows as vectors of ``lanes`` channels (32 lanes: KV8 vectors
    span two beats)."""
    _run(kv_bits, k_group, window, tokens, lanes, hd, data_bits=128, check_read=True)


@pytest.mark.parametrize("lanes,kv_bits,k_group,window,tokens", [(lanes,) + c for lanes in (4, 16) for c in CASES])
def test_kv_unit_64bit_port(lanes, kv_bits, k_group, window, tokens):
    """A 64-bit port: APPEND's passes take two raw words per beat and the code rows are
    narrower than their 16-byte pitch; READ takes wider than a beat (raw rows at 4 lanes,
    16 lanes) skip the pad beat of each 16-byte run only at the run's last take (it used to
    skip on the first beat of a two-beat take, and READ stalled)."""
    _run(kv_bits, k_group, window, tokens, lanes, 16, data_bits=64, check_read=True)


@pytest.mark.parametrize("data_bits,lanes,seed", [(64, 4, 1), (128, 4, 2), (128, 16, 3)])
def test_kv_unit_stalled_memory(data_bits, lanes, seed):
    """A memory that withholds read beats (20% of cycles) and write-data ready (80%) at
    random, seeded: APPEND reads back the raw row it has just written only after the
    writer's B response (it read the ring slot's old row when the write landed late), and
    every pass takes beats with gaps."""
    _run(8, 4, 0, 10, lanes, 16, data_bits=data_bits, check_read=True, stall=20, w_stall=80, seed=seed)


@pytest.mark.parametrize("kv_bits,k_group", [(4, 4), (8, 2)])
def test_kv_stats_forward_from_two_beats_ahead(kv_bits, k_group):
    """Two KV heads of 4 channels at 128 bits (4 channels a beat): the statistics words go
    0, 1, 0, 1 (K: a row is 2 beats; V: a head is 1 beat), so each beat's read of its
    statistic misses the write of the beat two ahead and must take it from ST4."""
    _run(kv_bits, k_group, 0, 9, 4, 4, data_bits=128, check_read=True)


def test_kv_append_quantizes_a_beat_per_cycle():
    """The K-group quantization takes a beat (4 channels at 128 bits) per cycle: the APPEND
    that completes a group of 16 rows of 128 channels costs, beyond one that does not,
    about 2 passes x 16 rows x 32 beats + a scale and a parameter record per channel."""
    cycles = _run(4, 16, 0, 16, 16, 64, data_bits=128, check_read=False, nkv=2, max_kv_dim=128)
    extra = cycles[15] - cycles[14]
    row, k_group, per_beat = 128, 16, 4
    bound = 2 * k_group * row // per_beat + 2 * row + 150
    assert extra < bound, f"K-group quantization took {extra} cycles (one channel per cycle would be ~{2 * k_group * row})"


@pytest.mark.parametrize("kv_bits,lanes,seed", [(4, 4, 11), (8, 16, 12), (2, 1, 13)])
def test_kv_read_extreme_parameter_records(kv_bits, lanes, seed):
    """Parameter records in memory with extreme fields (written by a host or corrupt), seeded:
    ``mn`` at the int32 ends, shifts ``e`` from -128 to 127 (the hardware clamps at +-40),
    mantissas up to 0xFFFF. READ dequantizes steps of 2**32 and more (saturated) and steps
    that round to 0 as the reference does."""
    _run(kv_bits, 4, 1, 9, lanes, 16, data_bits=128, check_read=True, poke_seed=seed)


def _poke_params(mems, L, seed):
    """Overwrite every K and V parameter record of the layer at ``BASE`` in each of ``mems``
    (the same bytes) with extreme fields from a seeded generator."""
    g = torch.Generator().manual_seed(seed)
    pick = lambda vals: vals[int(torch.randint(len(vals), (1,), generator=g))]  # noqa: E731
    mns = [-(1 << 31), (1 << 31) - 1, 0, -1, (1 << 30)]
    es = [-128, -41, -40, -24, -1, 0, 1, 8, 16, 24, 31, 32, 39, 40, 41, 127]
    mans = [0, 1, 0xFFF, 0xFFFF, 0x8000]
    regions = [("k_params", L.k_groups, L.k_param_row_bytes, L.row),
               ("v_params", L.max_ctx, L.v_param_row_bytes, L.n_kv_heads)]
    for name, rows, pitch, per_row in regions:
        for r in range(rows):
            for i in range(per_row):
                rec = (pick(mns).to_bytes(4, "little", signed=True) + pick(es).to_bytes(1, "little", signed=True)
                       + b"\0" + pick(mans).to_bytes(2, "little"))
                a = BASE + L.offset(name) + r * pitch + i * len(rec)
                for mem in mems:
                    mem[a:a + len(rec)] = rec


def _run(kv_bits, k_group, window, tokens, lanes, hd, *, data_bits, check_read, nkv=2, max_kv_dim=64, stall=0, w_stall=0, seed=0,
         poke_seed=None):
    ctx = 16
    L = KVLayout(ctx, nkv, hd, kv_bits, k_group, window)
    num = DecodeNumerics(kv_bits=kv_bits, k_group=k_group, kv_window=window)
    size = BASE + L.size + 4096
    mem = AXIMemory(size, data_bits, latency=4, stall_percent=stall, write_stall_percent=w_stall, seed=seed)
    ref = DecodeISAModel(bytearray(size), num)
    regs = {Reg.N_KV_HEADS: nkv, Reg.HEAD_DIM: hd, Reg.KV_BITS: kv_bits, Reg.K_GROUP: k_group,
            Reg.KV_WINDOW: window, Reg.MAX_CTX: ctx}
    regs.update({r: L.offset(p) for p, r in KVLayout.OFFSET_REGS.items()})
    ref.regs.update(regs)
    g = torch.Generator().manual_seed(kv_bits * 100 + k_group)
    rows = [(torch.randn(2, nkv * hd, generator=g) * (1 << 16)).to(torch.int64) for _ in range(tokens)]
    rows[2][0, 5] = (1 << 31) - 1
    rows[3][1, :] = -7                                  # a constant V row: range 0

    dut = KVUnit(max_kv_dim=max_kv_dim, scale_bits=num.kv_scale_bits, lanes=lanes, max_kv_heads=4, data_bits=data_bits)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(mem.read_process(dut.axi_r), background=True)
    sim.add_testbench(mem.write_process(dut.axi_w), background=True)
    fields = {"kv_bits": kv_bits, "k_group": k_group, "kv_window": window, "kv_heads": nkv, "head_dim": hd,
              "max_ctx": ctx, "v_raw": regs[Reg.KV_V_RAW], "k_codes": regs[Reg.KV_K_CODES],
              "k_params": regs[Reg.KV_K_PARAMS], "v_codes": regs[Reg.KV_V_CODES], "v_params": regs[Reg.KV_V_PARAMS]}
    failures = []
    append_cycles = []
    cycle_count = Signal(32)

    async def send(ctx_, port, values):
        for v in values:
            ctx_.set(port.payload, v)
            ctx_.set(port.valid, 1)
            await ctx_.tick().until(port.ready)
        ctx_.set(port.valid, 0)

    async def bench(ctx_):
        for k, v in fields.items():
            ctx_.set(getattr(dut.regs, k), v)
        for pos in range(tokens):
            k_row, v_row = rows[pos]
            # APPEND
            ctx_.set(dut.cmd.payload.read, 0)
            ctx_.set(dut.cmd.payload.base, BASE)
            ctx_.set(dut.cmd.payload.pos, pos)
            ctx_.set(dut.cmd.valid, 1)
            await ctx_.tick().until(dut.cmd.ready)
            ctx_.set(dut.cmd.valid, 0)
            t0 = ctx_.get(cycle_count)
            await send(ctx_, dut.k_in, k_row.tolist())
            await send(ctx_, dut.v_in, v_row.tolist())
            await ctx_.tick().until(~dut.busy)
            append_cycles.append(ctx_.get(cycle_count) - t0)
            ref.regs[Reg.POS] = pos
            ref.bufs[Buf.K], ref.bufs[Buf.V] = k_row, v_row
            ref.execute(Instr(Op.KV_APPEND, src=Buf.K, src2=Buf.V, addr=BASE))
            if bytes(mem.mem) != bytes(ref.mem):
                diff = [a for a in range(size) if mem.mem[a] != ref.mem[a]]
                failures.append(f"pos {pos}: memory differs at {len(diff)} bytes from {diff[0]:#x}")
                return
            if not check_read:
                continue
            if poke_seed is not None and pos == tokens - 1:
                _poke_params([mem.mem, ref.mem], L, poke_seed)
            # READ
            ctx_.set(dut.cmd.payload.read, 1)
            ctx_.set(dut.cmd.valid, 1)
            await ctx_.tick().until(dut.cmd.ready)
            ctx_.set(dut.cmd.valid, 0)
            got = {"k": [], "v": []}
            want_k, want_v = ref._kv_read(BASE, L, pos + 1)
            n = (pos + 1) * nkv * hd
            ctx_.set(dut.k_out.ready, 1)
            ctx_.set(dut.v_out.ready, 1)
            cycles = 0
            while len(got["k"]) < n or len(got["v"]) < n:
                _, _, kv_, kp, vv, vp = await ctx_.tick().sample(dut.k_out.valid, dut.k_out.payload.as_value(),
                                                                 dut.v_out.valid, dut.v_out.payload.as_value())
                for valid, word, name in ((kv_, kp, "k"), (vv, vp, "v")):
                    if valid:
                        got[name] += _unpack(word, lanes)
                cycles += 1
                assert cycles < 50_000, f"pos {pos}: READ stalled with {len(got['k'])}/{len(got['v'])} of {n}"
            await ctx_.tick().until(~dut.busy)
            if got["k"] != want_k.reshape(-1).tolist() or got["v"] != want_v.reshape(-1).tolist():
                wk, wv = want_k.reshape(-1).tolist(), want_v.reshape(-1).tolist()
                bad = [(name, i, a, b) for name, gl, wl in (("k", got["k"], wk), ("v", got["v"], wv)) for i, (a, b) in enumerate(zip(gl, wl)) if a != b]
                failures.append(f"pos {pos}: READ rows differ: {len(bad)} words, first {bad[:4]}")
                return

    async def count(ctx_):
        async for _ in ctx_.tick():
            ctx_.set(cycle_count, ctx_.get(cycle_count) + 1)

    sim.add_testbench(count, background=True)
    sim.add_testbench(bench)
    sim.run()
    assert not failures, failures
    return append_cycles
