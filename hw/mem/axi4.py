"""AXI4 port signatures (AMBA AXI4, ARM IHI 0022): the external memory contract.

Signals are named as in the specification (``araddr``, ``arlen``...), so the flattened
Verilog ports read ``mem__araddr`` etc. All signatures are seen from the master; a
slave uses ``.flip()``. Only INCR bursts are used; ``arsize``/``awsize`` is always the
full data width.
"""

from amaranth.hdl import Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

#: AXI4 INCR burst encoding.
BURST_INCR = 0b01
#: Bursts must not cross a 4 KiB address boundary (AXI4 A3.4.1).
BOUNDARY_BYTES = 4096
#: Largest AXI4 INCR burst, in beats.
MAX_BURST_BEATS = 256


def size_code(data_bits: int) -> int:
    """``arsize``/``awsize`` for full-width beats: log2(bytes per beat)."""
    return (data_bits // 8).bit_length() - 1


class AXI4ReadSignature(wiring.Signature):
    """Read address (AR) and read data (R) channels, master side."""

    def __init__(self, *, addr_bits: int, data_bits: int, id_bits: int = 1):
        self.addr_bits, self.data_bits, self.id_bits = addr_bits, data_bits, id_bits
        super().__init__({
            "araddr": Out(addr_bits), "arlen": Out(8), "arsize": Out(3), "arburst": Out(2),
            "arid": Out(id_bits), "arvalid": Out(1), "arready": In(1),
            "rdata": In(data_bits), "rresp": In(2), "rlast": In(1), "rid": In(id_bits),
            "rvalid": In(1), "rready": Out(1),
        })


class AXI4WriteSignature(wiring.Signature):
    """Write address (AW), write data (W) and write response (B) channels, master side."""

    def __init__(self, *, addr_bits: int, data_bits: int, id_bits: int = 1):
        self.addr_bits, self.data_bits, self.id_bits = addr_bits, data_bits, id_bits
        super().__init__({
            "awaddr": Out(addr_bits), "awlen": Out(8), "awsize": Out(3), "awburst": Out(2),
            "awid": Out(id_bits), "awvalid": Out(1), "awready": In(1),
            "wdata": Out(data_bits), "wstrb": Out(data_bits // 8), "wlast": Out(1),
            "wvalid": Out(1), "wready": In(1),
            "bresp": In(2), "bid": In(id_bits), "bvalid": In(1), "bready": Out(1),
        })


def burst_limit(addr, remaining, *, max_burst: int, bytes_per_beat: int, m):
    """Beats of the next burst from ``addr``: at most ``max_burst``, ``remaining``, and
    never across a 4 KiB boundary. Returns an Amaranth value (combinational)."""
    shift = bytes_per_beat.bit_length() - 1
    to_boundary = Signal(range(BOUNDARY_BYTES // bytes_per_beat + 1))
    m.d.comb += to_boundary.eq((BOUNDARY_BYTES - addr[:12]) >> shift)
    cap = Signal(range(max(max_burst, BOUNDARY_BYTES // bytes_per_beat) + 1))
    m.d.comb += cap.eq(Mux(to_boundary < max_burst, to_boundary, max_burst))
    return Mux(remaining < cap, remaining, cap)
