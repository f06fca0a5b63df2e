"""The host link over UDP: datagrams of an Ethernet core <-> the host link's byte streams.

:class:`UdpLinkBridge` sits between a UDP core's user port (in the Ethernet clock domain,
``eth_domain``; the board's LiteEth core, :class:`fpga_boards.liteeth.LiteEthUdp`) and
:class:`~hw.host.link.HostLink`'s ``rx`` / ``tx`` byte streams (in ``host_domain``).

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

Clock-domain crossing (``amaranth.lib.fifo.AsyncFIFO``)
------------------------------------------------------
* receive: one FIFO of ``rx_depth`` bytes (default 4096: two full datagrams, the host's
  window of two frames in flight). The Ethernet side is never stalled (LiteEth's receive
  path cannot wait); a byte that finds the FIFO full is dropped and ``rx_overflow`` pulses
  (in ``eth_domain``): a damaged frame to the protocol, never a hang.
* transmit: the host side writes a datagram's bytes into a data FIFO (2048 bytes) and,
  after its last byte, the datagram's length into a length FIFO (4 entries); the Ethernet
  side starts a datagram only once its length is there, so it sends every byte of it at
  once (LiteEth's transmitter wants the length with the first byte and no gaps).

Ports
-----
Ethernet side (``eth_domain``): ``udp_rx`` In(stream of :data:`RX_LAYOUT`: ``data`` u8,
``last``), always ready; ``udp_tx`` Out(stream of :data:`TX_LAYOUT`: ``data``, ``last``,
``length`` (the datagram's byte count, held for all its bytes)); ``rx_overflow`` Out(1).
Link side (``host_domain``): ``host_rx`` Out(stream of 8 bits) -> ``HostLink.rx``;
``host_tx`` In(stream of 8 bits) <- ``HostLink.tx``.

Latency: about four cycles of the receiving clock per crossing; a response datagram starts
on the Ethernet side about four cycles after the link's last byte of it. Throughput: one
byte per cycle on each side.
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import AsyncFIFO
from amaranth.lib.wiring import In, Out

from host_runtime.protocol import HEADER_BYTES, MAX_PAYLOAD

#: UDP payload of one datagram in a 1500-byte Ethernet frame (1500 - 20 IP - 8 UDP).
MAX_DATAGRAM = 1472
#: Bytes a frame has besides its payload (the 12-byte header and the CRC32).
FRAME_OVERHEAD = HEADER_BYTES + 4
RX_LAYOUT = data.StructLayout({"data": 8, "last": 1})
TX_LAYOUT = data.StructLayout({"data": 8, "last": 1, "length": 16})


class UdpLinkBridge(wiring.Component):
    def __init__(self, *, eth_domain: str = "eth", host_domain: str = "sync", rx_depth: int = 4096,
                 tx_depth: int = 2048, max_datagram: int = MAX_DATAGRAM):
        if tx_depth < max_datagram:
            self._MustUse__silence = True
            raise ValueError(f"tx_depth {tx_depth} must hold a whole datagram of {max_datagram} bytes")
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

        # ---- receive: datagram bytes -> the link -----------------------------------------
        m.submodules.rx_fifo = rxf = AsyncFIFO(width=8, depth=self.rx_depth, w_domain=E, r_domain=H)
        m.d.comb += [self.udp_rx.ready.eq(1),
                     rxf.w_data.eq(self.udp_rx.payload.data), rxf.w_en.eq(self.udp_rx.valid),
                     self.rx_overflow.eq(self.udp_rx.valid & ~rxf.w_rdy),
                     self.host_rx.valid.eq(rxf.r_rdy), self.host_rx.payload.eq(rxf.r_data),
                     rxf.r_en.eq(self.host_rx.ready)]

        # ---- transmit, link side: cut the frame stream into datagrams --------------------
        m.submodules.tx_fifo = txf = AsyncFIFO(width=8, depth=self.tx_depth, w_domain=H, r_domain=E)
        m.submodules.len_fifo = lenf = AsyncFIFO(width=16, depth=4, w_domain=H, r_domain=E)
        pos = Signal(16)            # byte index within the frame
        flen = Signal(32)           # the frame's payload length (header bytes 6..9)
        dlen = Signal(16)           # bytes of the current datagram so far
        t = self.host_tx
        take = Signal()
        frame_end = Signal()
        dgram_end = Signal()
        m.d.comb += [t.ready.eq(txf.w_rdy & lenf.w_rdy), take.eq(t.valid & t.ready),
                     txf.w_data.eq(t.payload), txf.w_en.eq(take),
                     # the header is complete (pos > 9) long before the end (pos >= 15)
                     frame_end.eq((pos >= FRAME_OVERHEAD - 1) & (pos == flen + (FRAME_OVERHEAD - 1))),
                     dgram_end.eq(frame_end | (dlen == self.max_datagram - 1)),
                     lenf.w_data.eq(dlen + 1), lenf.w_en.eq(take & dgram_end)]
        hd = m.d[H]
        with m.If(take):
            hd += [pos.eq(pos + 1), dlen.eq(dlen + 1)]
            for i in range(4):
                with m.If(pos == 6 + i):
                    hd += flen.word_select(i, 8).eq(t.payload)
            with m.If(frame_end):
                hd += pos.eq(0)
            with m.If(dgram_end):
                hd += dlen.eq(0)

        # ---- transmit, Ethernet side: one datagram at a time, its length known -----------
        ed = m.d[E]
        active = Signal()
        length = Signal(16)
        left = Signal(16)
        u = self.udp_tx
        with m.If(~active):
            m.d.comb += lenf.r_en.eq(1)
            with m.If(lenf.r_rdy):
                ed += [active.eq(1), length.eq(lenf.r_data), left.eq(lenf.r_data)]
        with m.Else():
            m.d.comb += [u.valid.eq(txf.r_rdy), u.payload.data.eq(txf.r_data), u.payload.last.eq(left == 1),
                         u.payload.length.eq(length), txf.r_en.eq(u.ready)]
            with m.If(u.valid & u.ready):
                ed += left.eq(left - 1)
                with m.If(left == 1):
                    ed += active.eq(0)
        return m


def max_frame_payload(max_datagram: int = MAX_DATAGRAM) -> int:
    """The largest frame payload that fits one datagram (1456 for 1472)."""
    return min(MAX_PAYLOAD, max_datagram - FRAME_OVERHEAD)
