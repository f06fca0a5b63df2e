"""The UDP bridge (hw/host/udp.py) in the Amaranth simulator, two unrelated clocks (Ethernet
16 ns, LiteEth's 62.5 MHz; link 13 ns, or 66 ns for a 15 MHz design clock) and LiteEth's
32-bit user port (first byte in ``data[0:8]``, ``last_be`` one-hot on the last valid byte):

* datagrams of 1..9, 16..19, 1471, 1472 bytes (every ``last_be``), back to back or with
  gaps -> the link sees their bytes in order; LiteEth's 17-byte padding quirk (``last_be``
  one byte too far) is capped by the UDP length;
* frames out -> one datagram each (frames of 16..19 bytes, 1471..1473, 4112 split at 1472),
  the length on the first word and held, ``last_be`` right, no gaps inside a datagram
  whatever ``ready`` does, back-to-back datagrams;
* receive overflow: with the link not reading, words that find the FIFO full are dropped,
  each with an ``rx_overflow`` pulse, the accepted words arrive intact and the bridge works
  on afterwards;
* with a real HostLink behind it, the response datagrams are exactly the DeviceModel's
  frames for the same requests, including a truncated and a corrupt datagram.

Every check names its random seed."""

from __future__ import annotations

import random
import struct

import pytest
from amaranth.hdl import ClockDomain, Elaboratable, Module
from amaranth.sim import Simulator

from host_runtime import protocol as P
from hw.decode.engine import EngineCounters
from hw.host.link import HostLink
from hw.host.udp import MAX_DATAGRAM, WORD_BYTES, UdpLinkBridge, last_word_bytes, max_frame_payload

from .axi_memory import AXIMemory

HASH = bytes.fromhex("0123456789abcdef")
MEM = 1 << 14
ETH_NS = 16          # LiteEth's core clock, 62.5 MHz


class _Top(Elaboratable):
    def __init__(self, with_link: bool, **bridge_args):
        self.bridge = UdpLinkBridge(**bridge_args)
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


def words_of(d: bytes, last_be_shift: int = 0):
    """LiteEth's words for datagram ``d``: (data, last, last_be); ``last_be_shift`` moves the
    last word's ``last_be`` that many bytes further (the 17-byte padding quirk)."""
    out = []
    for i in range(0, len(d), WORD_BYTES):
        w = d[i:i + WORD_BYTES]
        last = i + WORD_BYTES >= len(d)
        out.append((int.from_bytes(w, "little"), last, (1 << (len(w) - 1 + last_be_shift)) if last else 0))
    return out


def _sim(top, *, seed, datagrams_in, host_tx_bytes=b"", p_in=0.9, p_ready=0.8, p_host_rx=0.9, expect_out,
         host_ns=13, max_ns=3_000_000, rx_hold_ns=0):
    """Run: send ``datagrams_in`` on udp_rx as words (gaps with probability 1-p_in between
    words; an item may be (bytes, last_be_shift, length), or an int: idle cycles), feed ``host_tx_bytes`` on host_tx
    (no link), collect host_rx bytes (no link; not read before ``rx_hold_ns``) and udp_tx
    datagrams (ready with probability p_ready). Returns (host_rx bytes, datagrams, problems,
    overflow: [(datagram, word index)])."""
    rnd = random.Random(seed)
    b = top.bridge
    sim = Simulator(top)
    sim.add_clock(ETH_NS * 1e-9, domain="eth")
    sim.add_clock(host_ns * 1e-9, domain="sync")
    host_rx, dgrams, problems, overflow = bytearray(), [], [], []
    sent = []

    async def udp_in(ctx):
        for n, item in enumerate(datagrams_in):
            if isinstance(item, int):                           # a pause of that many cycles
                await ctx.tick("eth").repeat(item)
                continue
            d, shift, length = item if isinstance(item, tuple) else (item, 0, len(item))
            for i, (word, last, be) in enumerate(words_of(d, shift)):
                while rnd.random() > p_in:
                    ctx.set(b.udp_rx.valid, 0)
                    await ctx.tick("eth")
                ctx.set(b.udp_rx.payload, {"data": word, "last": last, "last_be": be, "length": length})
                ctx.set(b.udp_rx.valid, 1)
                _, _, ready, ovf = await ctx.tick("eth").sample(b.udp_rx.ready, b.rx_overflow)
                if not ready:
                    problems.append(f"udp_rx not ready at datagram {n} word {i}")
                if ovf:
                    overflow.append((n, i))
            ctx.set(b.udp_rx.valid, 0)
            for _ in range(rnd.randrange(0, 3)):                 # back to back, or a short gap
                await ctx.tick("eth")
        sent.append(True)

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
                word = pl.data.to_bytes(WORD_BYTES, "little")
                if pl.last:
                    want_be = 1 << ((length - 1) % WORD_BYTES)
                    if pl.last_be != want_be:
                        problems.append(f"datagram {len(dgrams)} ({length} bytes): last_be {pl.last_be:#06b}")
                    cur += word[:last_word_bytes(pl.last_be)]
                    if len(cur) != length:
                        problems.append(f"datagram {len(dgrams)}: length field {length}, {len(cur)} bytes")
                    dgrams.append(bytes(cur))
                    cur, started = bytearray(), False
                else:
                    if pl.last_be:
                        problems.append(f"datagram {len(dgrams)}: last_be {pl.last_be:#06b} before the last word")
                    cur += word

    async def host_side(ctx):
        if top.link is not None:
            return
        it = iter(host_tx_bytes)
        nxt = next(it, None)
        t = 0
        while True:
            ctx.set(b.host_rx.ready, t >= rx_hold_ns and rnd.random() < p_host_rx)
            if nxt is not None:
                ctx.set(b.host_tx.payload, nxt)
                ctx.set(b.host_tx.valid, rnd.random() < 0.95)
            else:
                ctx.set(b.host_tx.valid, 0)
            _, _, rv, rr, rp, tv, tr = await ctx.tick("sync").sample(b.host_rx.valid, b.host_rx.ready,
                                                                      b.host_rx.payload, b.host_tx.valid,
                                                                      b.host_tx.ready)
            t += host_ns
            if rv and rr:
                host_rx.append(rp)
            if tv and tr:
                nxt = next(it, None)

    async def main(ctx):
        t = 0
        while t < max_ns and not (sent and expect_out(host_rx, dgrams)):
            await ctx.tick("eth").repeat(100)
            t += 100 * ETH_NS
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
    return bytes(host_rx), dgrams, problems, overflow


def _frames_to_datagrams(frames):
    out = []
    for f in frames:
        out += [f[i:i + MAX_DATAGRAM] for i in range(0, len(f), MAX_DATAGRAM)]
    return out


@pytest.mark.parametrize("seed, host_ns", [(11, 13), (12, 66)])
def test_datagrams_to_bytes(seed, host_ns):
    """Every datagram length modulo 4 (so every last_be), 1..9 bytes, the 1471/1472
    boundary, random gaps between words; the 17-byte quirk and a datagram that ends (last_be)
    before its UDP length says (a truncated frame) keep the right bytes."""
    rnd = random.Random(seed)
    dgin = [rnd.randbytes(n) for n in (*range(1, 10), 16, 17, 18, 19)]
    dgin += [(rnd.randbytes(17), 1, 17),                    # LiteEth: last_be one pad byte too far
             (rnd.randbytes(10), 0, 24)]                    # ended early: last_be counts
    dgin += [rnd.randbytes(MAX_DATAGRAM - 1), rnd.randbytes(rnd.randrange(20, 80)), rnd.randbytes(MAX_DATAGRAM)]
    want_rx = b"".join(d[0] if isinstance(d, tuple) else d for d in dgin)
    got_rx, got_dg, problems, overflow = _sim(_Top(False), seed=seed, datagrams_in=dgin, host_ns=host_ns,
                                              expect_out=lambda rx, dg: len(rx) >= len(want_rx))
    assert not problems and not overflow, f"seed {seed}: {problems[:3]} {overflow[:3]}"
    assert len(got_rx) == len(want_rx), f"seed {seed}: {len(got_rx)} bytes, want {len(want_rx)}"
    assert got_rx == want_rx, f"seed {seed}: the link saw other bytes"


@pytest.mark.parametrize("seed, host_ns", [(21, 13), (22, 66)])
def test_frames_to_datagrams(seed, host_ns):
    """Frames of 16..19 bytes (every last_be), 1471..1473 (one datagram, and 1472 + 1), 4112
    (1472 + 1472 + 1168): one datagram each, split at 1472, length first, no gaps."""
    rnd = random.Random(seed)
    R = P.Op.READ_MEM | P.RESPONSE
    frames = [P.encode_frame(P.Op.STATUS | P.RESPONSE, 1 + n, rnd.randbytes(n)) for n in range(4)]
    frames += [P.encode_frame(R, 10 + k, b"\x00" + rnd.randbytes(max_frame_payload() - 1 + k)) for k in (-1, 0, 1)]
    frames += [P.encode_frame(P.Op.HELLO | P.RESPONSE, 20, b"\x00" + HASH),
               P.encode_frame(R, 21, b"\x00" + rnd.randbytes(4095)),
               P.encode_frame(P.Op.WRITE_MEM | P.RESPONSE, 22, b"\x00")]
    want_dg = _frames_to_datagrams(frames)
    lens = [len(d) for d in want_dg]
    assert {n % 4 for n in lens} == {0, 1, 2, 3} and {MAX_DATAGRAM - 1, MAX_DATAGRAM, 1} <= set(lens)
    got_rx, got_dg, problems, _ = _sim(_Top(False), seed=seed, datagrams_in=[], host_tx_bytes=b"".join(frames),
                                       host_ns=host_ns, expect_out=lambda rx, dg: len(dg) >= len(want_dg))
    assert not problems, f"seed {seed}: {problems[:3]}"
    assert [len(d) for d in got_dg] == lens, f"seed {seed}"
    assert got_dg == want_dg, f"seed {seed}: datagram contents differ"


def test_rx_overflow_drops_words_and_recovers():
    """A 16-word receive FIFO, the link not reading: of three 40-byte datagrams (30 words)
    the first 16 words are kept and each later one is dropped with an rx_overflow pulse
    (the receive side stays ready); the link then gets the kept bytes, and a datagram sent
    after it drained arrives whole."""
    seed = 31
    rnd = random.Random(seed)
    d = [rnd.randbytes(40) for _ in range(3)]
    late = rnd.randbytes(23)
    kept = b"".join(d)[:16 * WORD_BYTES]
    want = kept + late
    got_rx, _, problems, overflow = _sim(_Top(False, rx_depth=16 * WORD_BYTES), seed=seed,
                                         datagrams_in=[*d, 3000, late], p_in=1.0, rx_hold_ns=10_000,
                                         expect_out=lambda rx, dg: len(rx) >= len(want))
    assert not problems, f"seed {seed}: {problems[:3]}"
    assert overflow == [(n, i) for n in range(3) for i in range(10) if n * 10 + i >= 16], f"seed {seed}: {overflow}"
    assert got_rx == want, f"seed {seed}: {len(got_rx)} bytes, want {len(want)}"


def test_bridge_refuses_bad_depths():
    with pytest.raises(ValueError, match="must hold a whole datagram"):
        UdpLinkBridge(tx_depth=1024)
    with pytest.raises(ValueError, match="rx_depth 4000 must be 4 times a power of 2"):
        UdpLinkBridge(rx_depth=4000)


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
    got_rx, got_dg, problems, overflow = _sim(_Top(True), seed=seed, datagrams_in=dgin, p_in=1.0, p_ready=0.9,
                                              expect_out=lambda rx, dg: len(dg) >= len(want_dg))
    assert not problems and not overflow, f"seed {seed}: {problems[:3]} {overflow[:3]}"

    def show(dg):
        return [(f.op & 0x7F, f.seq, f.payload[0]) for d in dg for f in P.FrameDecoder().feed(d)]
    assert [len(d) for d in got_dg] == [len(d) for d in want_dg], f"seed {seed}: {show(got_dg)} != {show(want_dg)}"
    assert got_dg == want_dg, f"seed {seed}: responses differ from the DeviceModel's"
