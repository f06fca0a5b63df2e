"""The host link over UDP: datagrams of an Ethernet core <-> the host link's byte streams.

:class:`UdpLinkBridge` sits between a UDP core's 32-bit user port (in the Ethernet clock
domain, ``eth_domain``; the board's LiteEth core, :class:`fpga_boards.liteeth.LiteEthUdp`,
62.5 MHz) and :class:`~hw.host.link.HostLink`'s ``rx`` / ``tx`` byte streams (in
``host_domain``, the design clock, as slow as 15 MHz).

Datagrams and frames
--------------------
* Received datagrams are a byte stream to the link: their payloads are appended in order
  (so a request frame may come in one datagram, the normal case, or split over several
  consecutive ones; the link finds frames by their magic and CRC as on a UART). A datagram
  truncated or damaged on the way is what a damaged byte stream is to the protocol: a bad
  header is skipped, a bad CRC answered CRC_ERROR, and the host retries.
* Every response frame of the link goes out in its own datagram(s): the bridge counts the
  frame's bytes (``16 + length``, the length read from header bytes 6..9) and closes a
  datagram at the end of the frame, or after :data:`MAX_DATAGRAM` = 1472 bytes (the UDP
  payload of a 1500-byte Ethernet MTU: LiteEth does not fragment), so a frame of up to
  4112 bytes leaves as up to three consecutive datagrams that the host's decoder joins. A
  host on a UDP target keeps its frames within one datagram (``UdpTransport.max_frame``;
  ``Link`` then moves 1440 bytes of memory per frame), so a lost datagram costs one
  retry of one frame.

Words on the Ethernet side (LiteEth's byte order)
-------------------------------------------------
A word carries up to four payload bytes, **the first on the wire in** ``data[0:8]``, the
next in ``data[8:16]`` and so on (little-endian lanes). ``last_be`` (4 bits, meaningful
with ``last``) is one-hot: bit ``k`` set means byte ``k`` (``data[8k:8k+8]``) is the
datagram's last valid byte, so the last word holds ``k + 1`` bytes (payload length 1 ->
``0b0001``, 4 -> ``0b1000``, 5 -> a full word and then ``0b0001``). Words before the last
are full. Read from LiteEth 2024.12 (``liteeth``/``litex`` wheels) and confirmed in a migen
simulation of its UDP/IP core as liteeth_gen builds it (dw=32, sys datapath, 32-bit raw
port; ``tests/fpga_boards/liteeth_model.py``, ``test_liteeth_word_format_in_migen``, marked
slow): frames of 1..4, 17, 19 payload bytes in, datagrams of 1..4, 17, 47 bytes out.
Where it comes from:

* ``litex/soc/interconnect/stream.py`` ``_UpConverter`` / ``_DownConverter``
  (``reverse=False`` in ``StrideConverter``): the PHY's byte ``i`` of a word is
  ``data[8i:8i+8]``: the first byte received is lane 0, lane 0 is sent first;
* ``liteeth/packet.py`` ``Depacketizer`` / ``Packetizer``: the payload after a header that
  is not a whole number of words (the 14-byte MAC header) is shifted so that later bytes
  land in higher lanes (``source.data[leftover*8:].eq(sink.data)``), and ``last_be`` is
  rotated with it: the lane order above holds through MAC, IP and UDP;
* ``liteeth/core/udp.py`` ``LiteEthUDPRX``: ``last_be`` of the last word is passed through
  from the frame or, when the datagram ends before the frame (padding), made from
  ``length & 3`` as ``1 -> 0b0001, 2 -> 0b0010, 3 -> 0b0100, 0 -> 0b1000``; ``last`` comes
  at the word where the byte count reaches the UDP ``length``. ``LiteEthUDPTX`` passes
  ``last_be`` on; the MAC's ``LiteEthMACTXLastBE`` drops the bytes after it on the wire,
  and the IP / UDP headers take the byte count from ``length``, so both must agree.

One quirk is handled here: a datagram of 17 payload bytes is padded to the 60-byte
minimum frame and its last word is also the frame's last, so ``LiteEthUDPRX`` passes on
the frame's ``last_be`` (byte 1, one pad byte too many; seen in the migen simulation). The bridge caps the last word's
count by the UDP ``length`` (``udp_rx.length``, the datagram's byte count), which is right.

Clock-domain crossing (``amaranth.lib.fifo.AsyncFIFO``)
------------------------------------------------------
* receive: one FIFO of ``rx_depth`` bytes (default 4096: two full datagrams, the host's
  window of two frames in flight) as ``rx_depth / 4`` words, each with its count of valid
  bytes. The Ethernet side is never stalled (LiteEth's receive path cannot wait); a word
  that finds the FIFO full is dropped and ``rx_overflow`` pulses (in ``eth_domain``): a
  damaged frame to the protocol, never a hang. The link side hands the word's valid
  bytes out one per cycle (the 32 -> 8 gearbox is on the slow side of the FIFO).
* transmit: the link side packs a datagram's bytes into words (8 -> 32, on the slow side
  again) in a data FIFO (``tx_depth`` = 2048 bytes, 512 words) and, with its last byte,
  the datagram's length into a length FIFO (4 entries); the Ethernet side takes a length,
  waits until the data FIFO holds all of that datagram's words (the two FIFOs' pointers
  may cross a cycle apart) and then sends every word of it at once: LiteEth's transmitter
  wants the length with the first word and no gaps (a gap mid-frame underflows its MAC,
  which then sends a corrupt frame).

Ports
-----
Ethernet side (``eth_domain``): ``udp_rx`` In(stream of :data:`RX_LAYOUT`: ``data`` 32,
``last``, ``last_be`` 4, ``length`` 16 (the datagram's byte count: LiteEth's UDP length
field, held for all its words)), always ready; ``udp_tx`` Out(stream of
:data:`TX_LAYOUT`: ``data`` 32, ``last``, ``last_be`` 4 (0 except on the last word),
``length`` (the datagram's byte count, held for all its words)); ``rx_overflow`` Out(1).
Link side (``host_domain``): ``host_rx`` Out(stream of 8 bits) -> ``HostLink.rx``;
``host_tx`` In(stream of 8 bits) <- ``HostLink.tx``.

Latency: about four cycles of the receiving clock per crossing; a response datagram starts
on the Ethernet side about six Ethernet cycles after the link's last byte of it (the
crossing, then one cycle each to take the length and to see the data). Throughput: one
word (four bytes) per cycle on the Ethernet side (250 MB/s at 62.5 MHz, twice the
gigabit line), one byte per cycle on the link side.
"""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import AsyncFIFO
from amaranth.lib.wiring import In, Out

from host_runtime.protocol import HEADER_BYTES, MAX_PAYLOAD

#: UDP payload of one datagram in a 1500-byte Ethernet frame (1500 - 20 IP - 8 UDP).
MAX_DATAGRAM = 1472
#: Bytes a frame has besides its payload (the 12-byte header and the CRC32).
FRAME_OVERHEAD = HEADER_BYTES + 4
#: Bytes per word of the Ethernet side (LiteEth's 32-bit raw UDP user port).
WORD_BYTES = 4
RX_LAYOUT = data.StructLayout({"data": 8 * WORD_BYTES, "last": 1, "last_be": WORD_BYTES, "length": 16})
TX_LAYOUT = data.StructLayout({"data": 8 * WORD_BYTES, "last": 1, "last_be": WORD_BYTES, "length": 16})


def last_word_bytes(last_be: int) -> int:
    """Bytes valid in a datagram's last word for ``last_be`` (one-hot: bit ``k`` marks byte
    ``k``, bits ``8k..8k+7`` of ``data``, as the last valid byte; the highest set bit counts,
    0 is read as a full word)."""
    return last_be.bit_length() or WORD_BYTES


class UdpLinkBridge(wiring.Component):
    def __init__(self, *, eth_domain: str = "eth", host_domain: str = "sync", rx_depth: int = 4096,
                 tx_depth: int = 2048, max_datagram: int = MAX_DATAGRAM):
        problems = []
        if tx_depth < max_datagram:
            problems.append(f"tx_depth {tx_depth} must hold a whole datagram of {max_datagram} bytes")
        for name, depth in (("rx_depth", rx_depth), ("tx_depth", tx_depth)):
            if depth % WORD_BYTES or (depth // WORD_BYTES) & (depth // WORD_BYTES - 1):
                problems.append(f"{name} {depth} must be {WORD_BYTES} times a power of 2 (bytes of whole words)")
        if not 0 < max_datagram < 1 << 16:
            problems.append(f"max_datagram {max_datagram} must be 1..65535")
        if problems:
            self._MustUse__silence = True
            raise ValueError("; ".join(problems))
        self.eth_domain, self.host_domain = eth_domain, host_domain
        self.rx_depth, self.tx_depth, self.max_datagram = rx_depth, tx_depth, max_datagram
        super().__init__({
            "udp_rx": In(stream.Signature(RX_LAYOUT)),
            "udp_tx": Out(stream.Signature(TX_LAYOUT)),
            "rx_overflow": Out(1),
            "host_rx": Out(stream.Signature(8)),
            "host_tx": In(stream.Signature(8)),
        })

    def elaborate(self, platform):
        m = Module()
        E, H = self.eth_domain, self.host_domain
        ed, hd = m.d[E], m.d[H]
        W = WORD_BYTES

        # ---- receive, Ethernet side: words (and how many of their bytes count) -> FIFO ----
        # FIFO entry: data (32) and the number of valid bytes less one (2).
        m.submodules.rx_fifo = rxf = AsyncFIFO(width=8 * W + 2, depth=self.rx_depth // W, w_domain=E, r_domain=H)
        r = self.udp_rx
        off = Signal(16)            # bytes of the datagram before this word
        nbytes = Signal(range(W + 1))
        from_be = Signal(range(W + 1))
        room = Signal(16)
        m.d.comb += from_be.eq(W)
        for k in range(W):          # the highest set bit of last_be (one-hot: its only bit)
            with m.If(r.payload.last_be[k]):
                m.d.comb += from_be.eq(k + 1)
        m.d.comb += [room.eq(r.payload.length - off), nbytes.eq(W)]
        with m.If(r.payload.last):
            m.d.comb += nbytes.eq(from_be)
            # LiteEth takes last_be from the Ethernet frame when the datagram's last word is
            # also the frame's: a 17-byte payload padded to the 60-byte minimum frame then
            # has last_be marking byte 1 (the frame's 18th byte), one pad byte too many.
            # The UDP length field is right; it caps the count.
            with m.If((r.payload.length > off) & (room < from_be)):
                m.d.comb += nbytes.eq(room)
        with m.If(r.valid):
            ed += off.eq(Mux(r.payload.last, 0, off + W))
        m.d.comb += [r.ready.eq(1),
                     rxf.w_data.eq(Cat(r.payload.data, (nbytes - 1)[:2])), rxf.w_en.eq(r.valid),
                     self.rx_overflow.eq(r.valid & ~rxf.w_rdy)]

        # ---- receive, link side: words -> bytes, first byte in data[0:8] ------------------
        idx = Signal(2)
        r_data, r_last_idx = rxf.r_data[:8 * W], rxf.r_data[8 * W:]
        m.d.comb += [self.host_rx.valid.eq(rxf.r_rdy), self.host_rx.payload.eq(r_data.word_select(idx, 8)),
                     rxf.r_en.eq(self.host_rx.ready & (idx == r_last_idx))]
        with m.If(self.host_rx.valid & self.host_rx.ready):
            hd += idx.eq(Mux(idx == r_last_idx, 0, idx + 1))

        # ---- transmit, link side: cut the frame stream into datagrams, pack words ---------
        m.submodules.tx_fifo = txf = AsyncFIFO(width=8 * W, depth=self.tx_depth // W, w_domain=H, r_domain=E)
        m.submodules.len_fifo = lenf = AsyncFIFO(width=16, depth=4, w_domain=H, r_domain=E)
        pos = Signal(16)            # byte index within the frame
        flen = Signal(32)           # the frame's payload length (header bytes 6..9)
        dlen = Signal(16)           # bytes of the current datagram so far
        acc = Signal(8 * W)         # the word being packed; byte dlen % 4 comes next
        lane = Signal(2)
        t = self.host_tx
        take = Signal()
        frame_end = Signal()
        dgram_end = Signal()
        m.d.comb += [t.ready.eq(txf.w_rdy & lenf.w_rdy), take.eq(t.valid & t.ready), lane.eq(dlen[:2]),
                     # the header is complete (pos > 9) long before the end (pos >= 15)
                     frame_end.eq((pos >= FRAME_OVERHEAD - 1) & (pos == flen + (FRAME_OVERHEAD - 1))),
                     dgram_end.eq(frame_end | (dlen == self.max_datagram - 1)),
                     txf.w_data.eq(Cat(*[Mux(lane == i, t.payload, acc.word_select(i, 8)) for i in range(W)])),
                     txf.w_en.eq(take & ((lane == W - 1) | dgram_end)),
                     lenf.w_data.eq(dlen + 1), lenf.w_en.eq(take & dgram_end)]
        with m.If(take):
            hd += [pos.eq(pos + 1), dlen.eq(dlen + 1), acc.word_select(lane, 8).eq(t.payload)]
            for i in range(4):
                with m.If(pos == 6 + i):
                    hd += flen.word_select(i, 8).eq(t.payload)
            with m.If(frame_end):
                hd += pos.eq(0)
            with m.If(dgram_end):
                hd += dlen.eq(0)

        # ---- transmit, Ethernet side: one datagram at a time, all its words there ---------
        length = Signal(16)
        words = Signal(16)
        left = Signal(16)
        be = Signal(W)
        u = self.udp_tx
        for k in range(W):
            m.d.comb += be[k].eq(length[:2] == (k + 1) % W)
        with m.FSM(domain=E):
            with m.State("IDLE"):
                m.d.comb += lenf.r_en.eq(1)
                with m.If(lenf.r_rdy):
                    ed += [length.eq(lenf.r_data), words.eq((lenf.r_data + (W - 1)) >> 2)]
                    m.next = "WAIT"
            with m.State("WAIT"):
                # The length and the data cross in separate FIFOs, whose pointers may arrive a
                # cycle apart: wait until the whole datagram is readable, then send it gaplessly.
                ed += left.eq(words)
                with m.If(txf.r_level >= words):
                    m.next = "SEND"
            with m.State("SEND"):
                # (r_rdy is high throughout: every word of the datagram is in the FIFO)
                m.d.comb += [u.valid.eq(txf.r_rdy), u.payload.data.eq(txf.r_data), u.payload.last.eq(left == 1),
                             u.payload.last_be.eq(Mux(left == 1, be, 0)), u.payload.length.eq(length),
                             txf.r_en.eq(u.ready)]
                with m.If(u.valid & u.ready):
                    ed += left.eq(left - 1)
                    with m.If(left == 1):
                        m.next = "IDLE"
        return m


def max_frame_payload(max_datagram: int = MAX_DATAGRAM) -> int:
    """The largest frame payload that fits one datagram (1456 for 1472)."""
    return min(MAX_PAYLOAD, max_datagram - FRAME_OVERHEAD)
