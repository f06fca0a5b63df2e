"""The host link (hw/host) in the Amaranth simulator against host_runtime.protocol.DeviceModel:
the same response bytes for the same input stream, byte for byte, and the same memory,
over valid commands of every opcode, corrupt / truncated / duplicated frames, garbage,
bad versions, opcodes, lengths and addresses, with random rx-valid and tx-ready
back-pressure; plus BUSY while the engine runs (a duplicated RUN does not start it twice).
"""

from __future__ import annotations

import random
import struct
import zlib

import pytest
from amaranth.sim import Simulator

from host_runtime import protocol as P
from hw.decode.engine import EngineCounters
from hw.host.crc import CRC_INIT, crc32_step, crc32_step_int
from hw.host.link import HostLink

from .axi_memory import AXIMemory
from .byte_stream_bench import add_byte_stream_benches

HASH = bytes.fromhex("0123456789abcdef")
MEM = 1 << 14


def _next_token(tok: int, pos: int) -> int:
    return (tok * 7 + pos * 3 + 1) & 0x1FFFF


def _mem(addr, n):
    return struct.pack("<QI", addr, n)


class Script:
    """Builds a byte stream of frames (and damage) with its own sequence numbers."""

    def __init__(self, rnd: random.Random):
        self.rnd, self.seq, self.out = rnd, 100, bytearray()

    def frame(self, op, payload=b"", *, version=P.VERSION, seq=None) -> bytes:
        if seq is None:
            self.seq += 1
            seq = self.seq
        return P.encode_frame(op, seq, payload, version=version)

    def add(self, *frames):
        for f in frames:
            self.out += f

    def garbage(self, n):
        self.out += bytes(self.rnd.choice([0x4C, 0x46, 0x00, 0xFF, self.rnd.randrange(256)]) for _ in range(n))


def _scenario(rnd: random.Random, *, big: bool) -> bytes:
    s = Script(rnd)
    data = rnd.randbytes(4080 if big else 96)
    s.add(s.frame(P.Op.HELLO))
    s.add(s.frame(P.Op.WRITE_MEM, struct.pack("<Q", 256) + data))
    s.add(s.frame(P.Op.READ_MEM, _mem(256, len(data))))
    s.add(s.frame(P.Op.READ_MEM, _mem(MEM - 16, 16)), s.frame(P.Op.READ_MEM, _mem(0, 0)),
          s.frame(P.Op.WRITE_MEM, struct.pack("<Q", 64)))                       # empty write: OK
    s.add(s.frame(P.Op.WRITE_CSR, struct.pack("<HQ", P.Csr.PROGRAM_ADDR, 0x1234_5678_9ABC_DEF0)),
          s.frame(P.Op.WRITE_CSR, struct.pack("<HQ", P.Csr.N_INSTR, 77)))
    for c in P.Csr:
        s.add(s.frame(P.Op.READ_CSR, struct.pack("<H", c)))
    s.add(s.frame(P.Op.STATUS))
    run = s.frame(P.Op.RUN, struct.pack("<II", 1000, 5))
    s.add(run, run)                                                             # duplicated RUN
    s.add(s.frame(P.Op.STATUS), s.frame(P.Op.READ_CSR, struct.pack("<H", P.Csr.NEXT_TOKEN)),
          s.frame(P.Op.READ_CSR, struct.pack("<H", P.Csr.CYCLES)))
    # damage: a payload bit flipped (NACK), a corrupt header (skipped), garbage, a
    # truncated frame followed by good ones, duplicates of a write and of a read
    bad = bytearray(s.frame(P.Op.WRITE_MEM, struct.pack("<Q", 512) + rnd.randbytes(32)))
    bad[P.HEADER_BYTES + 9] ^= 0x10
    s.add(bytes(bad))
    hb = bytearray(s.frame(P.Op.HELLO))
    hb[6] ^= 0x01
    s.add(bytes(hb))
    s.garbage(23)
    s.out += b"LFLF"
    w = s.frame(P.Op.WRITE_MEM, struct.pack("<Q", 1024) + rnd.randbytes(48))
    s.add(w[:30])                                                               # truncated
    s.add(s.frame(P.Op.HELLO), w, w)
    r = s.frame(P.Op.READ_MEM, _mem(1024, 48))
    s.add(r)
    s.garbage(5)
    s.add(r)
    # bad version, opcodes, lengths, addresses, CSRs
    s.add(s.frame(P.Op.HELLO, version=P.VERSION + 1), s.frame(0x55), s.frame(P.Op.HELLO | P.RESPONSE),
          s.frame(P.Op.WRITE_MEM, bytes(7)), s.frame(P.Op.READ_MEM, bytes(11)),
          s.frame(P.Op.READ_MEM, _mem(0, 4096)), s.frame(P.Op.READ_MEM, _mem(0, 4095)),
          s.frame(P.Op.WRITE_CSR, bytes(9)), s.frame(P.Op.READ_CSR, bytes(3)), s.frame(P.Op.RUN, bytes(7)),
          s.frame(P.Op.WRITE_MEM, struct.pack("<Q", 8) + bytes(16)),
          s.frame(P.Op.WRITE_MEM, struct.pack("<Q", 16) + bytes(24)),
          s.frame(P.Op.READ_MEM, _mem(4, 16)), s.frame(P.Op.READ_MEM, _mem(16, 8)),
          s.frame(P.Op.READ_MEM, _mem(MEM, 16)), s.frame(P.Op.READ_MEM, _mem(1 << 63, 16)),
          s.frame(P.Op.WRITE_MEM, struct.pack("<Q", MEM - 16) + bytes(32)),
          s.frame(P.Op.WRITE_CSR, struct.pack("<HQ", P.Csr.CYCLES, 1)),
          s.frame(P.Op.READ_CSR, struct.pack("<H", len(P.Csr))), s.frame(P.Op.READ_CSR, struct.pack("<H", 1000)))
    # RESET forgets the stored response: the same RUN frame runs again afterwards
    s.add(s.frame(P.Op.RESET), run, run, s.frame(P.Op.STATUS))
    s.add(s.frame(P.Op.RUN, struct.pack("<II", 0x1FFFF, 300)), s.frame(P.Op.STATUS))
    s.add(s.frame(P.Op.READ_MEM, _mem(256, len(data))), s.frame(P.Op.WRITE_MEM, struct.pack("<Q", 32) + bytes(16)))
    s.add(w[:P.HEADER_BYTES + 3])                   # truncated at the very end: waits
    return bytes(s.out)


def _simulate(stream: bytes, *, seed: int, data_bits: int, engine_cycles: int, p_rx: float, p_tx: float,
              expect_len: int, max_cycles: int = 400_000):
    rnd = random.Random(seed)
    dut = HostLink(config_hash=HASH, mem_size=MEM, counters=EngineCounters(), data_bits=data_bits, max_burst=4)
    mem = AXIMemory(MEM, data_bits, latency=3)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(mem.read_process(dut.axi_r), background=True)
    sim.add_testbench(mem.write_process(dut.axi_w), background=True)
    out = bytearray()
    starts = []
    bad_sharing = []

    async def engine(ctx):
        left = 0
        while True:
            _, _, start, tok, pos, active = await ctx.tick().sample(dut.start, dut.token, dut.pos, dut.mem_active)
            if active and left:
                bad_sharing.append("the link used memory while the engine ran")
            if start:
                starts.append((tok, pos))
                left = engine_cycles
                ctx.set(dut.busy, 1)
                ctx.set(dut.counters.cycles, 0)
            elif left:
                left -= 1
                ctx.set(dut.counters.cycles, engine_cycles - left)
                if left == 0:
                    ctx.set(dut.busy, 0)
                    ctx.set(dut.next_token, _next_token(tok, pos))

    sim.add_testbench(engine, background=True)
    add_byte_stream_benches(sim, dut, stream, out, rnd=rnd, p_rx=p_rx, p_tx=p_tx, expect_len=expect_len,
                            max_cycles=max_cycles, tail_cycles=600)   # 600: nothing more may come
    sim.run()
    return bytes(out), mem, starts, bad_sharing


def _first_difference(a: bytes, b: bytes) -> str:
    i = next((k for k in range(min(len(a), len(b))) if a[k] != b[k]), min(len(a), len(b)))
    return f"first difference at byte {i} (got {len(a)} bytes, expected {len(b)}): got {a[i:i + 24].hex()} " \
           f"expected {b[i:i + 24].hex()}"


@pytest.mark.parametrize("seed,data_bits,p_rx,p_tx,big", [
    (1, 128, 1.0, 1.0, False), (2, 128, 0.6, 0.5, False), (3, 64, 0.8, 0.3, False), (4, 128, 0.9, 0.9, True)])
def test_link_matches_device_model(seed, data_bits, p_rx, p_tx, big):
    rnd = random.Random(seed)
    stream = _scenario(rnd, big=big)
    ref_runs = []
    dev = P.DeviceModel(bytearray(MEM), config_hash=HASH,
                        run=lambda tok, pos: (ref_runs.append((tok, pos)) or (_next_token(tok, pos), 5)))
    want = dev.receive(stream)
    got, mem, starts, bad_sharing = _simulate(stream, seed=seed, data_bits=data_bits, engine_cycles=5,
                                              p_rx=p_rx, p_tx=p_tx, expect_len=len(want))
    assert got == want, f"seed {seed}: {_first_difference(got, want)}"
    assert bytes(mem.mem) == bytes(dev.mem), f"seed {seed}: memory differs"
    assert starts == ref_runs, f"seed {seed}: engine starts {starts} != {ref_runs}"
    assert not bad_sharing, f"seed {seed}: {bad_sharing[0]}"
    statuses = [f.payload[0] for f in P.FrameDecoder().feed(got)]
    assert {P.Status.OK, P.Status.CRC_ERROR, P.Status.BAD_OPCODE, P.Status.BAD_LENGTH, P.Status.BAD_ADDRESS,
            P.Status.VERSION_MISMATCH} <= set(statuses), f"seed {seed}: scenario lacks a status"


def test_busy_while_the_engine_runs():
    """RUN answers OK at once; while the engine runs, memory commands and another RUN are
    answered BUSY (and do nothing), STATUS says busy; a duplicated RUN starts nothing."""
    s = Script(random.Random(0))
    run = s.frame(P.Op.RUN, struct.pack("<II", 3, 4))
    s.add(run, run, s.frame(P.Op.READ_MEM, _mem(0, 16)), s.frame(P.Op.WRITE_MEM, struct.pack("<Q", 0) + b"x" * 16),
          s.frame(P.Op.RUN, struct.pack("<II", 9, 9)), s.frame(P.Op.STATUS),
          s.frame(P.Op.READ_CSR, struct.pack("<H", P.Csr.ENGINE_STATUS)))
    stream = bytes(s.out)
    got, mem, starts, bad = _simulate(stream, seed=0, data_bits=128, engine_cycles=5000, p_rx=1.0, p_tx=1.0,
                                      expect_len=7 * 17 + 14 + 8, max_cycles=20_000)
    frames = P.FrameDecoder().feed(got)
    assert [f.payload[0] for f in frames] == [P.Status.OK, P.Status.OK, P.Status.BUSY, P.Status.BUSY,
                                               P.Status.BUSY, P.Status.OK, P.Status.OK]
    busy, error, _, cycles = P.STATUS_REPLY.unpack(frames[5].payload[1:])
    assert busy == 1 and error == 0 and 0 < cycles < 5000
    assert struct.unpack("<Q", frames[6].payload[1:])[0] == 1
    assert starts == [(3, 4)] and bytes(mem.mem[:16]) == bytes(16) and not bad


def test_flush_forgets_a_partial_frame():
    """A frame cut off (a client that disconnected) swallows the next frames' bytes unless
    the transport pulses ``flush`` when the new client connects."""
    dut = HostLink(config_hash=HASH, mem_size=MEM, counters=EngineCounters())
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    mem = AXIMemory(MEM, 128)
    sim.add_testbench(mem.read_process(dut.axi_r), background=True)
    sim.add_testbench(mem.write_process(dut.axi_w), background=True)
    cut = P.encode_frame(P.Op.WRITE_MEM, 1, bytes(8 + 1024))[:300]
    hello = P.encode_frame(P.Op.HELLO, 2)
    out = bytearray()

    async def send(ctx, data):
        for b in data:
            ctx.set(dut.rx.payload, b)
            ctx.set(dut.rx.valid, 1)
            await ctx.tick().until(dut.rx.ready)
        ctx.set(dut.rx.valid, 0)

    async def bench(ctx):
        ctx.set(dut.tx.ready, 1)
        await send(ctx, cut)
        await ctx.tick().repeat(20)
        assert ctx.get(dut.idle)
        ctx.set(dut.flush, 1)
        await ctx.tick()
        ctx.set(dut.flush, 0)
        await send(ctx, hello)
        for _ in range(200):
            _, _, valid, payload = await ctx.tick().sample(dut.tx.valid, dut.tx.payload)
            if valid:
                out.append(payload)
    sim.add_testbench(bench)
    sim.run()
    frames = P.FrameDecoder().feed(bytes(out))
    assert [(f.op, f.seq, f.payload[0]) for f in frames] == [(P.Op.HELLO | P.RESPONSE, 2, P.Status.OK)]


def test_crc_step_matches_zlib():
    """The combinational CRC32 step against zlib over random bytes (integer model and
    gateware)."""
    rnd = random.Random(5)
    data = rnd.randbytes(200)
    st = CRC_INIT
    for b in data:
        st = crc32_step_int(st, b)
    assert st ^ 0xFFFFFFFF == zlib.crc32(data)

    from amaranth.hdl import Module, Signal
    m = Module()
    state, byte, nxt = Signal(32), Signal(8), Signal(32)
    m.d.comb += nxt.eq(crc32_step(state, byte))
    sim = Simulator(m)
    bad = []

    async def bench(ctx):
        for _ in range(300):
            s_, b_ = rnd.getrandbits(32), rnd.getrandbits(8)
            ctx.set(state, s_)
            ctx.set(byte, b_)
            await ctx.delay(1e-9)
            if ctx.get(nxt) != crc32_step_int(s_, b_):
                bad.append((s_, b_))
    sim.add_testbench(bench)
    sim.run()
    assert not bad, f"CRC step differs for (state, byte) {bad[:3]}"
