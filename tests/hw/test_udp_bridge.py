"""The UDP bridge (hw/host/udp.py) in the Amaranth simulator, two unrelated clocks (Ethernet
8 ns, link 13 ns): datagrams in -> the bytes the link sees; frames out -> one datagram each
(a frame over 1472 bytes split into consecutive datagrams), length fields right, no gaps
inside a datagram, back-to-back datagrams; and with a real HostLink behind it, the
response datagrams are exactly the DeviceModel's frames for the same requests, including a
truncated and a corrupt datagram (answered as the protocol does: skipped / CRC_ERROR)."""

from __future__ import annotations

import random
import struct

from amaranth.hdl import ClockDomain, Elaboratable, Module
from amaranth.sim import Simulator

from host_runtime import protocol as P
from hw.decode.engine import EngineCounters
from hw.host.link import HostLink
from hw.host.udp import MAX_DATAGRAM, UdpLinkBridge, max_frame_payload

from .axi_memory import AXIMemory

HASH = bytes.fromhex("0123456789abcdef")
MEM = 1 << 14


class _Top(Elaboratable):
    def __init__(self, with_link: bool):
        self.bridge = UdpLinkBridge()
        self.link = HostLink(config_hash=HASH, mem_size=MEM, counters=EngineCounters(), data_bits=128,
                             max_burst=4) if with_link else None

    def elaborate(self, platform):
        m = Module()
        m.domains.eth = ClockDomain()
        m.domains.sync = ClockDomain()
        m.submodules.bridge = b = self.bridge
        if self.link is not None:
            from amaranth.lib.wiring import connect
            m.submodules.link = ln = self.link
            connect(m, b.host_rx, ln.rx)
            connect(m, ln.tx, b.host_tx)
        return m


def _sim(top, *, seed, datagrams_in, host_tx_bytes=b"", p_in=0.9, p_ready=0.8, expect_out, max_ns=3_000_000):
    """Run: send ``datagrams_in`` on udp_rx (gaps with probability 1-p_in between bytes),
    feed ``host_tx_bytes`` on host_tx (no link), collect host_rx bytes (no link) and udp_tx
    datagrams (ready with probability p_ready). Returns (host_rx bytes, datagrams, problems)."""
    rnd = random.Random(seed)
    b = top.bridge
    sim = Simulator(top)
    sim.add_clock(8e-9, domain="eth")
    sim.add_clock(13e-9, domain="sync")
    host_rx, dgrams, problems, overflow = bytearray(), [], [], []

    async def udp_in(ctx):
        for d in datagrams_in:
            for i, byte in enumerate(d):
                while rnd.random() > p_in:
                    ctx.set(b.udp_rx.valid, 0)
                    await ctx.tick("eth")
                ctx.set(b.udp_rx.payload, {"data": byte, "last": i == len(d) - 1})
                ctx.set(b.udp_rx.valid, 1)
                _, _, ovf = await ctx.tick("eth").sample(b.rx_overflow)
                if ovf:
                    overflow.append(i)
            ctx.set(b.udp_rx.valid, 0)
            for _ in range(rnd.randrange(0, 3)):                 # back to back, or a short gap
                await ctx.tick("eth")

    async def udp_out(ctx):
        cur, started, length = bytearray(), False, None
        while True:
            ready = rnd.random() < p_ready
            ctx.set(b.udp_tx.ready, ready)
            _, _, valid, pl = await ctx.tick("eth").sample(b.udp_tx.valid, b.udp_tx.payload)
            if started and not valid:
                problems.append(f"gap inside datagram {len(dgrams)} after {len(cur)} bytes")
            if valid and ready:
                if not started:
                    length = pl.length
                elif pl.length != length:
                    problems.append(f"datagram {len(dgrams)}: the length field changed inside it")
                started = True
                cur.append(pl.data)
                if pl.last:
                    if len(cur) != length:
                        problems.append(f"datagram {len(dgrams)}: length field {length}, {len(cur)} bytes")
                    dgrams.append(bytes(cur))
                    cur, started = bytearray(), False

    async def host_side(ctx):
        if top.link is not None:
            return
        it = iter(host_tx_bytes)
        nxt = next(it, None)
        while True:
            ctx.set(b.host_rx.ready, rnd.random() < 0.9)
            if nxt is not None:
                ctx.set(b.host_tx.payload, nxt)
                ctx.set(b.host_tx.valid, rnd.random() < 0.95)
            else:
                ctx.set(b.host_tx.valid, 0)
            _, _, rv, rr, rp, tv, tr = await ctx.tick("sync").sample(b.host_rx.valid, b.host_rx.ready,
                                                                      b.host_rx.payload, b.host_tx.valid,
                                                                      b.host_tx.ready)
            if rv and rr:
                host_rx.append(rp)
            if tv and tr:
                nxt = next(it, None)

    async def main(ctx):
        t = 0
        while t < max_ns and not expect_out(host_rx, dgrams):
            await ctx.tick("eth").repeat(100)
            t += 800
        await ctx.tick("eth").repeat(400)

    sim.add_testbench(udp_in, background=True)
    sim.add_testbench(udp_out, background=True)
    sim.add_testbench(host_side, background=True)
    if top.link is not None:
        mem = AXIMemory(MEM, 128, latency=3)
        sim.add_testbench(mem.read_process(top.link.axi_r), background=True)
        sim.add_testbench(mem.write_process(top.link.axi_w), background=True)
    sim.add_testbench(main)
    sim.run()
    return bytes(host_rx), dgrams, problems + [f"rx overflow at byte {i}" for i in overflow]


def test_datagrams_to_bytes_and_frames_to_datagrams():
    seed = 11
    rnd = random.Random(seed)
    dgin = [rnd.randbytes(n) for n in (1, 60, MAX_DATAGRAM, 17, 300)]
    frames = [P.encode_frame(P.Op.HELLO | P.RESPONSE, 1, b"\x00" + HASH),
              P.encode_frame(P.Op.READ_MEM | P.RESPONSE, 2, b"\x00" + rnd.randbytes(max_frame_payload() - 2)),
              P.encode_frame(P.Op.READ_MEM | P.RESPONSE, 3, b"\x00" + rnd.randbytes(max_frame_payload() - 1)),
              P.encode_frame(P.Op.READ_MEM | P.RESPONSE, 7, b"\x00" + rnd.randbytes(max_frame_payload())),
              P.encode_frame(P.Op.READ_MEM | P.RESPONSE, 4, b"\x00" + rnd.randbytes(4095)),
              P.encode_frame(P.Op.STATUS | P.RESPONSE, 5, b"\x00" + bytes(14)),
              P.encode_frame(P.Op.WRITE_MEM | P.RESPONSE, 6, b"\x00")]
    want_rx = b"".join(dgin)
    want_dg = []
    for f in frames:
        want_dg += [f[i:i + MAX_DATAGRAM] for i in range(0, len(f), MAX_DATAGRAM)]
    assert [len(d) for d in want_dg][1:3] == [MAX_DATAGRAM - 1, MAX_DATAGRAM]   # the boundary cases
    got_rx, got_dg, problems = _sim(_Top(False), seed=seed, datagrams_in=dgin, host_tx_bytes=b"".join(frames),
                                    expect_out=lambda rx, dg: len(rx) >= len(want_rx) and len(dg) >= len(want_dg))
    assert not problems, f"seed {seed}: {problems[:3]}"
    assert got_rx == want_rx, f"seed {seed}: the link saw other bytes"
    assert [len(d) for d in got_dg] == [len(d) for d in want_dg], f"seed {seed}"
    assert got_dg == want_dg, f"seed {seed}: datagram contents differ"


def test_link_behind_the_bridge_answers_like_the_device_model():
    seed = 5
    rnd = random.Random(seed)
    seq = iter(range(300, 400))
    data = rnd.randbytes(1024)

    def fr(op, payload=b""):
        return P.encode_frame(op, next(seq), payload)

    w = fr(P.Op.WRITE_MEM, struct.pack("<Q", 512) + data)
    bad = bytearray(fr(P.Op.WRITE_MEM, struct.pack("<Q", 2048) + rnd.randbytes(64)))
    bad[P.HEADER_BYTES + 20] ^= 0x04                        # a corrupt datagram: CRC_ERROR
    big = fr(P.Op.WRITE_MEM, struct.pack("<Q", 4096) + rnd.randbytes(2048))
    dgin = [fr(P.Op.HELLO), w, w,                           # a retransmission: the stored response
            fr(P.Op.READ_MEM, struct.pack("<QI", 512, 1024)),
            bytes(bad),
            fr(P.Op.WRITE_MEM, struct.pack("<Q", 64) + rnd.randbytes(32))[:40],   # truncated datagram
            fr(P.Op.HELLO),
            big[:MAX_DATAGRAM], big[MAX_DATAGRAM:],           # one frame split over two datagrams
            fr(P.Op.READ_MEM, struct.pack("<QI", 4096, 16)),
            fr(P.Op.STATUS)]
    dev = P.DeviceModel(bytearray(MEM), config_hash=HASH)
    want = b"".join(dev.receive(d) for d in dgin)
    want_dg = []                                            # each response frame is one datagram
    while want:
        n = P.HEADER_BYTES + 4 + struct.unpack_from("<I", want, 6)[0]
        want_dg.append(want[:n])
        want = want[n:]
    statuses = [P.FrameDecoder().feed(f)[0].payload[0] for f in want_dg]
    assert P.Status.CRC_ERROR in statuses
    got_rx, got_dg, problems = _sim(_Top(True), seed=seed, datagrams_in=dgin, p_in=1.0, p_ready=0.9,
                                    expect_out=lambda rx, dg: len(dg) >= len(want_dg))
    assert not problems, f"seed {seed}: {problems[:3]}"
    def show(dg):
        return [(f.op & 0x7F, f.seq, f.payload[0]) for d in dg for f in P.FrameDecoder().feed(d)]
    assert [len(d) for d in got_dg] == [len(d) for d in want_dg], f"seed {seed}: {show(got_dg)} != {show(want_dg)}"
    assert got_dg == want_dg, f"seed {seed}: responses differ from the DeviceModel's"
