"""LiteEth's UDP/IP core in the migen simulator, as ``liteeth_gen`` builds it for the boards
(``LiteEthUDPIPCore``, ``dw=32``, ``with_sys_datapath=True``, a 32-bit raw user port on UDP
port 1234), behind an 8-bit PHY model: whole Ethernet frames (preamble, MAC, IPv4, UDP,
padding, FCS) go in byte by byte on the PHY's receive side and come out of its transmit
side. :func:`run` returns the user port's received words and the frames sent, so a test
can read off LiteEth's word format (which byte of ``data`` is first on the wire, what
``last_be`` says) instead of trusting a reading of its source.

Clocks: core 16 ns (62.5 MHz), PHY 8 ns (125 MHz, 8 bits: gigabit). The simulation is slow
(about 25 s per datagram each way on one core, mostly migen's); the test using it is marked
``slow``.
"""

from __future__ import annotations

import struct
import zlib

MAC = 0x10e2d5000101
IP = (192, 168, 1, 50)
PORT = 1234
HOST_MAC = bytes.fromhex("020000000064")
HOST_IP = (192, 168, 1, 100)
HOST_PORT = 5000


def _ip_checksum(header: bytes) -> int:
    s = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def udp_frame(payload: bytes) -> bytes:
    """The wire bytes of a datagram from the host to the core: preamble, SFD, Ethernet
    header, IPv4 header, UDP header, payload, padding to 60 bytes, FCS."""
    udp = struct.pack("!HHHH", HOST_PORT, PORT, 8 + len(payload), 0) + payload
    iph = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, bytes(HOST_IP), bytes(IP))
    iph = iph[:10] + struct.pack("!H", _ip_checksum(iph)) + iph[12:]
    eth = MAC.to_bytes(6, "big") + HOST_MAC + b"\x08\x00" + iph + udp
    eth += bytes(max(0, 60 - len(eth)))
    return b"\x55" * 7 + b"\xd5" + eth + struct.pack("<I", zlib.crc32(eth))


def user_words(payload: bytes) -> list[tuple[int, int]]:
    """``(data, last_be)`` words of a datagram for the 32-bit user port as hw/host/udp.py
    sends them: byte ``i`` of each word in ``data[8i:8i+8]``, ``last_be`` one-hot on the last
    word's last byte, 0 before."""
    out = []
    for i in range(0, len(payload), 4):
        w = payload[i:i + 4]
        out.append((int.from_bytes(w, "little"), 1 << (len(w) - 1) if i + 4 >= len(payload) else 0))
    return out


def parse_sent(frame: bytes) -> tuple[bytes, int, bool]:
    """(UDP payload, UDP length field, FCS right) of a frame the core sent."""
    body = frame[frame.index(b"\xd5") + 1:]
    udp = body[14 + 20:]
    ulen = struct.unpack("!H", udp[4:6])[0]
    return udp[8:ulen], ulen, zlib.crc32(body[:-4]) == struct.unpack("<I", body[-4:])[0]


def run(rx_payloads: list[bytes], tx_words: list[list[tuple[int, int]]], tx_lengths: list[int],
        max_cycles: int = 60_000):
    """Feed ``rx_payloads`` as frames to the PHY, collect the user port's words
    ``(data, last, last_be, length)``; then send each datagram of ``tx_words`` (``(data,
    last_be)`` per word, ``length`` from ``tx_lengths``) to 255.255.255.255 (no ARP) and
    collect the frames the PHY is given. Returns (words, frames)."""
    from litex.gen.sim import run_simulation
    from litex.soc.interconnect import stream
    from liteeth.common import convert_ip, eth_phy_description
    from liteeth.core import LiteEthUDPIPCore
    from migen import Module
    from migen.sim import passive

    class PHY(Module):
        def __init__(self):
            self.dw = 8
            self.sink = stream.Endpoint(eth_phy_description(8))
            self.source = stream.Endpoint(eth_phy_description(8))

    class DUT(Module):
        def __init__(self):
            self.submodules.phy = PHY()
            self.submodules.core = LiteEthUDPIPCore(self.phy, MAC, convert_ip(".".join(map(str, IP))), 62.5e6,
                                                    dw=32, with_sys_datapath=True)
            self.port = self.core.udp.crossbar.get_port(PORT, dw=32)

    dut = DUT()
    words, frames = [], []

    def phy_rx():
        for _ in range(50):
            yield
        for p in rx_payloads:
            f = udp_frame(p)
            for i, b in enumerate(f):
                yield dut.phy.source.valid.eq(1)
                yield dut.phy.source.data.eq(b)
                yield dut.phy.source.last.eq(i == len(f) - 1)
                yield
            yield dut.phy.source.valid.eq(0)
            for _ in range(24):                     # the inter-frame gap, and some
                yield

    @passive
    def phy_tx():
        yield dut.phy.sink.ready.eq(1)
        cur = []
        while True:
            if (yield dut.phy.sink.valid):
                cur.append((yield dut.phy.sink.data))
                if (yield dut.phy.sink.last):
                    frames.append(bytes(cur))
                    cur = []
            yield

    def user():
        p = dut.port
        yield p.source.ready.eq(1)
        received = 0
        queue = list(zip(tx_words, tx_lengths))
        for _ in range(max_cycles):
            if (yield p.source.valid):
                words.append(((yield p.source.data), (yield p.source.last), (yield p.source.last_be),
                              (yield p.source.length)))
                received += (yield p.source.last)
            if received == len(rx_payloads) and queue:
                dgram, length = queue.pop(0)
                for i, (data, last_be) in enumerate(dgram):
                    last = i == len(dgram) - 1
                    for sig, value in ((p.sink.valid, 1), (p.sink.data, data), (p.sink.last, last),
                                       (p.sink.last_be, last_be), (p.sink.length, length),
                                       (p.sink.ip_address, 0xFFFFFFFF), (p.sink.dst_port, HOST_PORT),
                                       (p.sink.src_port, PORT)):
                        yield sig.eq(value)
                    yield
                    while not (yield p.sink.ready):
                        yield
                yield p.sink.valid.eq(0)
            if received == len(rx_payloads) and not queue and len(frames) >= len(tx_words):
                return
            yield

    run_simulation(dut, {"eth_rx": [phy_rx()], "eth_tx": [phy_tx()], "sys": [user()]},
                   clocks={"sys": 16, "eth_rx": 8, "eth_tx": 8})
    return words, frames
