"""Unit tests of small gateware blocks in the Amaranth simulator (fast, no Verilator)."""

import random

import pytest
import torch
from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.sim import Simulator

from host_runtime.gemm_layout import GemmLayout
from hw.cores.systolic import SystolicCore
from hw.mem.gearbox import VectorPacker, VectorUnpacker, packing
from hw.pe.mac import multiply, product_shape
from ref_model.gemm import systolic_gemm
from rtl_gen.config import load_config

from .axi_memory import AXIMemory


@pytest.mark.parametrize("use_dsp", [True, False])
@pytest.mark.parametrize("ash,wsh", [(signed(3), signed(3)), (unsigned(3), signed(4)), (signed(4), unsigned(2)),
                                     (unsigned(2), unsigned(3))])
def test_multiply_exhaustive(ash, wsh, use_dsp):
    """Both multiplier forms give the exact product for every operand pair."""
    a, w = Signal(ash), Signal(wsh)
    p = Signal(product_shape(ash, wsh))
    m = Module()
    m.d.comb += p.eq(multiply(a, w, product_shape=p.shape(), use_dsp=use_dsp))
    sim = Simulator(m)

    async def bench(ctx):
        for x in range(ash.signed and -(1 << ash.width - 1) or 0, (1 << (ash.width - ash.signed))):
            for y in range(wsh.signed and -(1 << wsh.width - 1) or 0, (1 << (wsh.width - wsh.signed))):
                ctx.set(a, x)
                ctx.set(w, y)
                assert ctx.get(p) == x * y, (x, y)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("data_bits,vector_bits", [(64, 16), (64, 24), (32, 32), (32, 80), (64, 64), (128, 40)])
def test_gearbox_roundtrip(data_bits, vector_bits):
    """Unpacker then packer reproduce the vectors, segment boundaries and padding included,
    under random stalls on both ends."""
    slots, bpv = packing(vector_bits, data_bits)
    rng = random.Random(data_bits * 1000 + vector_bits)
    segs = [rng.randint(1, 7) for _ in range(3)]
    vectors = [[rng.getrandbits(vector_bits) for _ in range(n)] for n in segs]
    beats = []
    for seg in vectors:   # pack like host_runtime.gemm_layout
        if bpv == 1:
            for i in range(0, len(seg), slots):
                beats.append(sum(v << (j * vector_bits) for j, v in enumerate(seg[i:i + slots])))
        else:
            for v in seg:
                beats += [(v >> (p * data_bits)) & ((1 << data_bits) - 1) for p in range(bpv)]
    m = Module()
    m.submodules.unpack = up = VectorUnpacker(data_bits=data_bits, vector_bits=vector_bits)
    m.submodules.pack = pk = VectorPacker(data_bits=data_bits, vector_bits=vector_bits)
    flat = [v for seg in vectors for v in seg]
    m.d.comb += [pk.vectors.valid.eq(up.vectors.valid), pk.vectors.payload.vector.eq(up.vectors.payload),
                 up.vectors.ready.eq(pk.vectors.ready)]
    count = Signal(16)
    with m.If(up.vectors.valid & up.vectors.ready):
        m.d.sync += count.eq(count + 1)
    m.d.comb += pk.vectors.payload.last.eq(count + 1 == len(flat))
    sim = Simulator(m)
    sim.add_clock(1e-8)
    out = []

    async def source(ctx):
        for n in segs:
            ctx.set(up.seg.payload.length, n)
            ctx.set(up.seg.payload.count, 1)
            ctx.set(up.seg.valid, 1)
            await ctx.tick().until(up.seg.ready)
        ctx.set(up.seg.valid, 0)

    async def feeder(ctx):
        for b in beats:
            while rng.random() < 0.3:
                ctx.set(up.beats.valid, 0)
                await ctx.tick()
            ctx.set(up.beats.payload, b)
            ctx.set(up.beats.valid, 1)
            await ctx.tick().until(up.beats.ready)
        ctx.set(up.beats.valid, 0)

    async def sink(ctx):
        while True:
            ctx.set(pk.beats.ready, rng.random() < 0.7)
            _, _, valid, ready, data, last = await ctx.tick().sample(pk.beats.valid, pk.beats.ready,
                                                                     pk.beats.payload.data, pk.beats.payload.last)
            if valid and ready:
                out.append(data)
                if last:
                    return

    sim.add_testbench(source, background=True)
    sim.add_testbench(feeder, background=True)
    sim.add_testbench(sink)
    sim.run_until(1e-3)
    # The packer writes one dense segment: compare vector by vector.
    got = []
    for b in out:
        if bpv == 1:
            got += [(b >> (j * vector_bits)) & ((1 << vector_bits) - 1) for j in range(slots)]
        else:
            got.append(b)
    if bpv > 1:
        got = [sum(got[i * bpv + p] << (p * data_bits) for p in range(bpv)) for i in range(len(got) // bpv)]
    assert got[:len(flat)] == flat
    assert all(x == 0 for x in got[len(flat):])


def _run_core(cfg, cmds, mem_size=1 << 16, preload=()):
    """Run commands on a SystolicCore in the Amaranth simulator with a behavioural AXI
    memory (``preload``: (address, bytes) pairs); returns the memory and per-command results."""
    dut = SystolicCore(cfg)
    mem = AXIMemory(mem_size, cfg.memory.data_bits)
    for addr, data in preload:
        mem.mem[addr:addr + len(data)] = data
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(mem.read_process(dut.axi_r), background=True)
    sim.add_testbench(mem.write_process(dut.axi_w), background=True)
    results = []

    async def bench(ctx):
        for fields in cmds:
            for k, v in fields.items():
                ctx.set(getattr(dut.cmd.payload, k), v)
            ctx.set(dut.cmd.valid, 1)
            await ctx.tick().until(dut.cmd.ready)
            ctx.set(dut.cmd.valid, 0)
            await ctx.tick().until(dut.done)
            results.append({"status": ctx.get(dut.status.as_value()), "busy": ctx.get(dut.counters.busy),
                            "cycles": ctx.get(dut.counters.cycles)})
    sim.add_testbench(bench)
    sim.run()
    return mem, results


def test_core_rejects_bad_commands():
    """K = 0, M = 0 or K > k_max: done at once with bad_command, nothing read or written."""
    cfg = load_config(None, ["core.rows=2", "core.cols=2", "core.k_max=8"])
    _, res = _run_core(cfg, [dict(m=2, k=9, n=2), dict(m=0, k=1, n=1), dict(m=1, k=0, n=1)])
    assert [r["status"] & 1 for r in res] == [1, 1, 1]
    assert all(r["busy"] == 0 and r["cycles"] < 4 for r in res)


@pytest.mark.parametrize("overrides,shape", [
    (["core.rows=2", "core.cols=3", "core.row_blocks=2"], (5, 7, 4)),
    (["core.rows=3", "core.cols=2", "core.dataflow=weight_stationary", "core.m_tile=8"], (9, 7, 3)),
], ids=["os", "ws"])
def test_core_gemm_in_amaranth_sim(overrides, shape):
    cfg = load_config(None, overrides)
    gen = torch.Generator().manual_seed(5)
    m_, k_, n_ = shape
    a, w = cfg.act_format.random((m_, k_), gen), cfg.weight_format.random((k_, n_), gen)
    lay = GemmLayout(cfg)
    img = lay.pack(a, w)
    mem, res = _run_core(cfg, [dict(a_addr=img.a_addr, w_addr=img.w_addr, c_addr=img.c_addr, m=m_, k=k_, n=n_)],
                         mem_size=img.end + 4096, preload=[(img.a_addr, img.a_bytes), (img.w_addr, img.w_bytes)])
    assert res[0]["status"] == 0
    got = lay.unpack_c(img, bytes(mem.mem[img.c_addr:img.c_addr + img.c_size]))
    assert torch.equal(got, systolic_gemm(a, w, cfg.act_format, cfg.weight_format, cfg.acc_format))


@pytest.mark.parametrize("out_reg", [False, True])
@pytest.mark.parametrize("start_beat,beats", [(512 - 3, 40), (0, 1), (500, 200)])
def test_burst_reader_writer_copy_across_4k(start_beat, beats, out_reg):
    """A reader feeding a writer copies a region that starts off a burst boundary and
    crosses 4 KiB pages: no burst crosses a page (the memory asserts it), data intact."""
    from hw.mem.reader import BurstReader
    from hw.mem.writer import BurstWriter
    bpb = 8
    m = Module()
    m.submodules.rd = rd = BurstReader(addr_bits=32, data_bits=64, max_burst=16, outstanding=2, out_reg=out_reg)
    m.submodules.wr = wr = BurstWriter(addr_bits=32, data_bits=64, max_burst=16)
    sent = Signal(24)
    with m.If(rd.data.valid & rd.data.ready):
        m.d.sync += sent.eq(sent + 1)
    m.d.comb += [wr.data.valid.eq(rd.data.valid), wr.data.payload.data.eq(rd.data.payload),
                 wr.data.payload.last.eq(sent + 1 == beats), rd.data.ready.eq(wr.data.ready)]
    mem = AXIMemory(1 << 16, 64)
    rng = random.Random(start_beat)
    src, dst = start_beat * bpb, (1 << 15) + (start_beat + 5) * bpb
    payload = bytes(rng.getrandbits(8) for _ in range(beats * bpb))
    mem.mem[src:src + len(payload)] = payload
    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(mem.read_process(rd.axi), background=True)
    sim.add_testbench(mem.write_process(wr.axi), background=True)

    async def bench(ctx):
        ctx.set(wr.start.payload, dst)
        ctx.set(wr.start.valid, 1)
        await ctx.tick().until(wr.start.ready)
        ctx.set(wr.start.valid, 0)
        ctx.set(rd.cmd.payload.addr, src)
        ctx.set(rd.cmd.payload.beats, beats)
        ctx.set(rd.cmd.valid, 1)
        await ctx.tick().until(rd.cmd.ready)
        ctx.set(rd.cmd.valid, 0)
        await ctx.tick().until(sent == beats)
        await ctx.tick().until(wr.idle)
    sim.add_testbench(bench)
    sim.run()
    assert bytes(mem.mem[dst:dst + len(payload)]) == payload


@pytest.mark.parametrize("out_reg", [False, True])
def test_burst_reader_random_backpressure(out_reg):
    """A consumer that takes beats at random gets every beat once, in order, with the
    reader's FIFO never overrun (credits count the FIFO's room, not the output register)."""
    from hw.mem.reader import BurstReader
    seed, beats, bpb = 7 + out_reg, 150, 8
    m = Module()
    m.submodules.rd = rd = BurstReader(addr_bits=32, data_bits=64, max_burst=8, outstanding=2, out_reg=out_reg)
    mem = AXIMemory(1 << 14, 64)
    rng = random.Random(seed)
    payload = bytes(rng.getrandbits(8) for _ in range(beats * bpb))
    mem.mem[64:64 + len(payload)] = payload
    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(mem.read_process(rd.axi), background=True)
    got = []

    async def bench(ctx):
        ctx.set(rd.cmd.payload.addr, 64)
        ctx.set(rd.cmd.payload.beats, beats)
        ctx.set(rd.cmd.valid, 1)
        await ctx.tick().until(rd.cmd.ready)
        ctx.set(rd.cmd.valid, 0)
        for _ in range(beats * 6):
            ready = rng.random() < 0.4
            ctx.set(rd.data.ready, ready)
            if ready and ctx.get(rd.data.valid):
                got.append(ctx.get(rd.data.payload))
            await ctx.tick()
            if len(got) == beats:
                break
        ctx.set(rd.data.ready, 0)
        for _ in range(20):
            await ctx.tick()
            assert not ctx.get(rd.data.valid), f"seed {seed}: a beat beyond the {beats} asked for"
    sim.add_testbench(bench)
    sim.run()
    want = [int.from_bytes(payload[i * bpb:(i + 1) * bpb], "little") for i in range(beats)]
    assert got == want, f"seed {seed}: beats differ"
