"""The host link's external CSR window (READ_CSR / WRITE_CSR of index >= CSR_EXT_BASE over the
``ctrl`` Wishbone master) in the Amaranth simulator against host_runtime.protocol.DeviceModel
with a ``ctrl`` bus model: the same response bytes, byte for byte, and the same register
contents, over slaves with varying latency, a slave that never acknowledges (DEVICE_ERROR
after CSR_EXT_TIMEOUT cycles, the link keeps working) and one that signals ``err``; a
duplicated frame is answered from the stored response without a second bus cycle. Without
``ctrl`` the window's indices are BAD_ADDRESS.
"""

from __future__ import annotations

import random
import struct

import pytest
from amaranth.sim import Simulator

from host_runtime import protocol as P
from hw.decode.engine import EngineCounters
from hw.host.link import HostLink

from .axi_memory import AXIMemory
from .byte_stream_bench import add_byte_stream_benches

HASH = bytes.fromhex("0011223344556677")
MEM = 1 << 12
DEAD = {0x40}           # never acknowledges
ERR = {0x41}            # answers err


def _latency(adr: int) -> int:
    return 1 + adr % 5


class Bus:
    """The ctrl model DeviceModel sees: registers, DEAD and ERR addresses as the slave below."""

    def __init__(self):
        self.regs: dict[int, int] = {}
        self.log: list[tuple] = []

    def read(self, adr):
        if adr in DEAD or adr in ERR:
            return None
        self.log.append(("r", adr))
        return self.regs.get(adr, adr * 0x01010101 & 0xFFFFFFFF)

    def write(self, adr, value):
        if adr in DEAD or adr in ERR:
            return False
        self.log.append(("w", adr, value))
        self.regs[adr] = value
        return True


def _stream(rnd: random.Random) -> bytes:
    seq = iter(range(1, 1000))
    f = lambda op, payload=b"": P.encode_frame(op, next(seq), payload)     # noqa: E731
    wr = lambda i, v: f(P.Op.WRITE_CSR, struct.pack("<HQ", i, v))          # noqa: E731
    rd = lambda i: f(P.Op.READ_CSR, struct.pack("<H", i))                   # noqa: E731
    B = P.CSR_EXT_BASE
    out = [f(P.Op.HELLO), rd(B), rd(B + 7), wr(B + 3, 0xFFFF_FFFF_1234_5678), rd(B + 3)]
    for _ in range(12):
        a = rnd.randrange(16)
        out.append(wr(B + a, rnd.getrandbits(64)) if rnd.random() < 0.5 else rd(B + a))
    dup = wr(B + 9, 0xCAFE)
    out += [dup, dup, rd(B + 9)]                        # a retry does not write twice
    out += [rd(B + 0x40), wr(B + 0x40, 5), rd(B + 0x41), wr(B + 0x41, 6)]    # dead bus, bus error
    out += [rd(B + 0x7FFF), wr(B + 0x7FFF, 1), rd(0xFFFF)]
    out += [f(P.Op.WRITE_CSR, struct.pack("<HQ", B, 1) + b"x"), f(P.Op.READ_CSR, struct.pack("<H", B) + b"y")]
    out += [wr(P.Csr.N_INSTR, 12), rd(P.Csr.N_INSTR), rd(len(P.Csr)), f(P.Op.STATUS)]
    return b"".join(out)


def _simulate(stream: bytes, *, ctrl: bool, expect_len: int, seed: int = 0, max_cycles: int = 100_000):
    rnd = random.Random(seed)
    dut = HostLink(config_hash=HASH, mem_size=MEM, counters=EngineCounters(), ctrl=ctrl)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    mem = AXIMemory(MEM, 128)
    sim.add_testbench(mem.read_process(dut.axi_r), background=True)
    sim.add_testbench(mem.write_process(dut.axi_w), background=True)
    out = bytearray()
    regs: dict[int, int] = {}
    log: list[tuple] = []

    async def slave(ctx):
        wb = dut.ctrl
        count, acked = 0, False
        while True:
            _, _, cyc, stb, we, adr, dat, sel = await ctx.tick().sample(wb.cyc, wb.stb, wb.we, wb.adr, wb.dat_w,
                                                                       wb.sel)
            ctx.set(wb.ack, 0)
            ctx.set(wb.err, 0)
            if acked:                       # the cycle in which the master saw ack/err
                acked, count = False, 0
                continue
            if not (cyc and stb):
                count = 0
                continue
            count += 1
            if adr in DEAD or count < _latency(adr):
                continue
            assert sel == 0xF
            if adr in ERR:
                ctx.set(wb.err, 1)
            else:
                if we:
                    regs[adr] = dat
                    log.append(("w", adr, dat))
                else:
                    log.append(("r", adr))
                    ctx.set(wb.dat_r, regs.get(adr, adr * 0x01010101 & 0xFFFFFFFF))
                ctx.set(wb.ack, 1)
            acked = True

    if ctrl:
        sim.add_testbench(slave, background=True)
    add_byte_stream_benches(sim, dut, stream, out, rnd=rnd, p_rx=0.8, p_tx=0.7, expect_len=expect_len,
                            max_cycles=max_cycles, tail_cycles=300)
    sim.run()
    return bytes(out), regs, log


@pytest.mark.parametrize("seed", [1, 2])
def test_ext_window_matches_device_model(seed):
    stream = _stream(random.Random(seed))
    bus = Bus()
    want = P.DeviceModel(bytearray(MEM), config_hash=HASH, ctrl=bus).receive(stream)
    got, regs, log = _simulate(stream, ctrl=True, expect_len=len(want), seed=seed)
    assert got == want, f"seed {seed}: responses differ ({len(got)} vs {len(want)} bytes)"
    assert regs == bus.regs and log == bus.log, f"seed {seed}: bus transactions differ"
    statuses = [f.payload[0] for f in P.FrameDecoder().feed(got)]
    assert statuses.count(P.Status.DEVICE_ERROR) == 4 and P.Status.BAD_LENGTH in statuses
    assert log.count(("w", 9, 0xCAFE)) == 1


def test_without_ctrl_the_window_is_bad_address():
    stream = _stream(random.Random(3))
    want = P.DeviceModel(bytearray(MEM), config_hash=HASH).receive(stream)
    got, _, _ = _simulate(stream, ctrl=False, expect_len=len(want))
    assert got == want
    frames = P.FrameDecoder().feed(got)
    assert frames[1].payload[0] == P.Status.BAD_ADDRESS


def test_link_ext_helpers():
    bus = Bus()
    from host_runtime.transports import LoopbackTransport
    link = P.Link(LoopbackTransport(P.DeviceModel(bytearray(MEM), ctrl=bus)))
    link.write_ext(5, 0xDEADBEEF)
    assert link.read_ext(5) == 0xDEADBEEF and bus.regs == {5: 0xDEADBEEF}
    with pytest.raises(P.ProtocolError, match="DEVICE_ERROR"):
        link.read_ext(0x40)
    with pytest.raises(P.ProtocolError, match="outside the window"):
        link.read_ext(0x8000)
    with pytest.raises(P.ProtocolError, match="does not fit 32 bits"):
        link.write_ext(1, 1 << 32)
