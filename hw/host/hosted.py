"""The hosted engine: an engine behind the host link, sharing one memory port pair.

:class:`HostedEngine` is the reusable unit a board top (and the simulated board) holds:
:class:`~hw.host.link.HostLink` on a byte transport, an engine, and the AXI4 mux that gives
the memory to the link while it executes a memory command (``mem_active``) and to the
engine otherwise. The link only touches memory while the engine is idle (memory
commands and RUN are answered BUSY while it runs), so the mux never switches in the
middle of a burst.

The engine is pluggable: any component with the engine-control interface the link drives
(``hw.decode.engine.DecodeEngine`` has it):

* In: ``start`` (one-cycle pulse), ``program_addr``, ``n_instr``, ``token``, ``pos``;
* Out: ``busy``, ``error``, ``next_token``, ``counters`` (a struct whose fields are the
  lower-cased :class:`host_runtime.protocol.Csr` counter names it has; missing ones read 0);
* Out: ``axi_r`` / ``axi_w``, AXI4 read and write masters (their address / data widths
  are the memory's).

Ports
-----
Transport: with ``uart_divisor=None`` the byte streams ``rx`` (In) / ``tx`` (Out) and
``flush`` (In: drop a partly received frame, see HostLink); with a divisor the serial
pins ``uart_rx`` (In, idle high) / ``uart_tx`` (Out) through :class:`~hw.host.uart.UartRx`
/ :class:`~hw.host.uart.UartTx` (8N1, ``divisor`` clock cycles per bit) and
``framing_error`` (Out, one-cycle pulse per bad stop bit or break).
Memory: ``axi_r`` / ``axi_w`` (Out), AXI4 masters with the engine's widths and ids.
Control: ``ctrl`` (Out, :class:`~hw.host.wishbone.WishboneSignature`, only with
``ctrl=True``): the external CSR window (READ_CSR / WRITE_CSR of index >= ``CSR_EXT_BASE``).
State: ``busy`` (the engine runs), ``link_idle`` (the link waits for bytes), ``idle``
(nothing in progress: link idle, engine idle, no byte offered or on the line: a
simulation's clock loop may sleep).

Latency: as HostLink's plus, with a UART, 10 bit times per byte each way.
"""

from amaranth.hdl import Module, Mux
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..mem.axi4 import AXI4ReadSignature, AXI4WriteSignature
from .link import HostLink
from .uart import UartRx, UartTx
from .wishbone import WishboneSignature

_R_FORWARD = ("araddr", "arlen", "arsize", "arburst", "arid", "arvalid", "rready")
_R_BACK = ("arready", "rdata", "rresp", "rlast", "rid", "rvalid")
_W_FORWARD = ("awaddr", "awlen", "awsize", "awburst", "awid", "awvalid", "wdata", "wstrb", "wlast", "wvalid", "bready")
_W_BACK = ("awready", "wready", "bresp", "bid", "bvalid")
#: Handshake signals a master must not see while the other master owns the port.
_HANDSHAKES = {"arready", "rvalid", "awready", "wready", "bvalid"}


def axi_mux(m: Module, sel, port_r, port_w, a_r, a_w, b_r, b_w) -> None:
    """Drive the memory ports ``port_r`` / ``port_w`` from master ``a`` while ``sel``, else
    from ``b``; the master not selected sees no handshake (its ready / valid inputs low)."""
    for port, a, b, fwd, back in ((port_r, a_r, b_r, _R_FORWARD, _R_BACK), (port_w, a_w, b_w, _W_FORWARD, _W_BACK)):
        for name in fwd:
            m.d.comb += getattr(port, name).eq(Mux(sel, getattr(a, name), getattr(b, name)))
        for name in back:
            v = getattr(port, name)
            if name in _HANDSHAKES:
                m.d.comb += [getattr(a, name).eq(sel & v), getattr(b, name).eq(~sel & v)]
            else:
                m.d.comb += [getattr(a, name).eq(v), getattr(b, name).eq(v)]


class HostedEngine(wiring.Component):
    """See the module docstring.

    Parameters
    ----------
    engine : the engine component (the interface in the module docstring).
    config_hash : the 8 bytes HELLO reports (``cfg.hash_bytes()``).
    mem_size : bytes of external memory the link may address.
    max_burst, outstanding : the link's AXI4 masters (default: the engine's, else 16 / 2).
    ctrl : add the ``ctrl`` Wishbone master (external CSR window).
    uart_divisor : serial pins at this many clock cycles per bit instead of byte streams.
    """

    def __init__(self, engine: wiring.Component, *, config_hash: bytes, mem_size: int, max_burst: int | None = None,
                 outstanding: int | None = None, ctrl: bool = False, uart_divisor: int | None = None):
        members = engine.signature.members
        missing = [n for n in ("start", "program_addr", "n_instr", "token", "pos", "busy", "error", "next_token",
                               "counters", "axi_r", "axi_w") if n not in members]
        if missing:
            self._MustUse__silence = True
            raise ValueError(f"the engine lacks the link's engine-control ports {', '.join(missing)}")
        self.engine = engine
        rs, ws = members["axi_r"].signature, members["axi_w"].signature
        self.addr_bits, self.data_bits = rs.addr_bits, rs.data_bits
        self.uart_divisor = uart_divisor
        self.link = HostLink(config_hash=config_hash, mem_size=mem_size, counters=members["counters"].shape,
                             addr_bits=rs.addr_bits, data_bits=rs.data_bits,
                             max_burst=max_burst or getattr(engine, "max_burst", 16),
                             outstanding=outstanding or getattr(engine, "outstanding", 2), ctrl=ctrl)
        ports = {
            "axi_r": Out(AXI4ReadSignature(addr_bits=rs.addr_bits, data_bits=rs.data_bits, id_bits=rs.id_bits)),
            "axi_w": Out(AXI4WriteSignature(addr_bits=ws.addr_bits, data_bits=ws.data_bits, id_bits=ws.id_bits)),
            "busy": Out(1), "idle": Out(1), "link_idle": Out(1),
        }
        if ctrl:
            ports["ctrl"] = Out(WishboneSignature(data_bits=self.link.signature.members["ctrl"].signature.data_bits))
        if uart_divisor is None:
            ports.update(rx=In(stream.Signature(8)), tx=Out(stream.Signature(8)), flush=In(1))
        else:
            self._urx, self._utx = UartRx(uart_divisor), UartTx(uart_divisor)
            ports.update(uart_rx=In(1, init=1), uart_tx=Out(1, init=1), framing_error=Out(1))
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        m.submodules.engine = e = self.engine
        m.submodules.link = ln = self.link
        m.d.comb += [e.start.eq(ln.start), e.program_addr.eq(ln.program_addr), e.n_instr.eq(ln.n_instr),
                     e.token.eq(ln.token), e.pos.eq(ln.pos),
                     ln.busy.eq(e.busy), ln.error.eq(e.error), ln.next_token.eq(e.next_token),
                     ln.counters.eq(e.counters),
                     self.busy.eq(e.busy), self.link_idle.eq(ln.idle)]
        if self.uart_divisor is None:
            wiring.connect(m, wiring.flipped(self.rx), ln.rx)
            wiring.connect(m, ln.tx, wiring.flipped(self.tx))
            m.d.comb += [ln.flush.eq(self.flush), self.idle.eq(ln.idle & ~e.busy & ~ln.tx.valid)]
        else:
            m.submodules.uart_rx = urx = self._urx
            m.submodules.uart_tx = utx = self._utx
            wiring.connect(m, urx.data, ln.rx)
            wiring.connect(m, ln.tx, utx.data)
            m.d.comb += [urx.rx.eq(self.uart_rx), self.uart_tx.eq(utx.tx), self.framing_error.eq(urx.framing_error),
                         self.idle.eq(ln.idle & ~e.busy & ~ln.tx.valid & ~utx.busy & ~urx.busy & ~urx.data.valid)]
        if "ctrl" in self.signature.members:
            wiring.connect(m, ln.ctrl, wiring.flipped(self.ctrl))
        axi_mux(m, ln.mem_active, self.axi_r, self.axi_w, ln.axi_r, ln.axi_w, e.axi_r, e.axi_w)
        return m
