"""Wishbone B4 classic signature: the control bus of external IP on a board.

LiteDRAM's generated core exposes its control and status registers (DFI software control
for initialisation, read leveling) on a 32-bit Wishbone slave; the host link reaches it
through the external CSR window (``host_runtime.protocol``). Seen from the master; a slave
uses ``.flip()``. ``adr`` is a word address (``data_bits``-wide words), as in LiteX.

Classic cycle: the master holds ``cyc``/``stb``/``we``/``adr``/``dat_w``/``sel`` until the
slave raises ``ack`` for one cycle (then ``dat_r`` is valid on a read); ``err`` ends the
cycle as a failure.
"""

from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out


class WishboneSignature(wiring.Signature):
    """Wishbone B4 classic, master side: ``adr`` (word address), ``dat_w``, ``dat_r``,
    ``sel`` (one bit per byte), ``cyc``, ``stb``, ``we``, ``ack``, ``err``."""

    def __init__(self, *, addr_bits: int = 30, data_bits: int = 32):
        if data_bits % 8:
            raise ValueError(f"Wishbone data width must be a multiple of 8, not {data_bits}")
        self.addr_bits, self.data_bits = addr_bits, data_bits
        super().__init__({
            "adr": Out(addr_bits), "dat_w": Out(data_bits), "dat_r": In(data_bits),
            "sel": Out(data_bits // 8), "cyc": Out(1), "stb": Out(1), "we": Out(1),
            "ack": In(1), "err": In(1),
        })
