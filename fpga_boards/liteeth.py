"""The boards' Ethernet through LiteEth: a UDP/IP core generated offline, and its wrapper.

:func:`generate_liteeth` runs LiteEth's own generator (``liteeth_gen``, from the pinned
``liteeth`` wheel, run as ``python -c`` with one patch, below, like ``liteeth_gen``) on the YAML this package ships for the board
(``fpga_boards/liteeth/<board>.yml``: ``core: udp``, the RGMII PHY of the ECP5
(``LiteEthECP5PHYRGMII``), ``data_width: 32`` at ``clk_freq: 62.5e6`` (60e6 on the
ButterStick; the MAC, IP and UDP datapath 32 bits wide in the core's clock,
``with_sys_datapath``), a fixed MAC / IP address, one raw UDP user port ``host`` of 32
bits) and caches what it writes in ``$LUTFORGE_CACHE/liteeth/<board>-<hash>`` like
:mod:`fpga_boards.litedram` (:mod:`fpga_boards.litex_gen`). It returns a
:class:`LiteEthBuild`.

The patch: ``liteeth_gen`` 2024.12 registers a raw port in the UDP crossbar under its
``sink_dst_port`` *input* (the destination port of what the user sends), so the port
would receive only datagrams addressed to the port it is replying to. The shim registers
it under the YAML's ``udp_port`` instead (the crossbar compares incoming destination ports
with that constant), which leaves the user free to reply to the sender's port.

:class:`LiteEthUdp` wraps the Verilog by ``Instance``: streams ``rx`` / ``tx`` in the
core's clock domain as 32-bit words (:data:`hw.host.udp.RX_LAYOUT` /
:data:`~hw.host.udp.TX_LAYOUT`; the byte order, read from LiteEth's source, is stated in
:mod:`hw.host.udp`), the sender of the last datagram latched (``remote_ip``,
``remote_port``: replies go back to it), the RGMII pins by :meth:`LiteEthUdp.connect_board`.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from amaranth.hdl import ClockDomain, ClockSignal, Const, Instance, Module, Mux, ResetSignal, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hw.host.udp import RX_LAYOUT, TX_LAYOUT, WORD_BYTES

from .litex_gen import BoardError, cache_folder, cache_key, read_yaml, run_cached, verilog_ports

#: Boards with a shipped LiteEth YAML (the boards with an Ethernet PHY).
BOARDS = ("ecpix5", "butterstick")
YAML_DIR = Path(__file__).parent / "liteeth"
#: The raw UDP user port the shipped YAMLs define (``<name>_sink_*`` / ``<name>_source_*``).
PORT = "host"
#: The width of the core's datapath and of its raw user port (``hw.host.udp.WORD_BYTES`` bytes).
WORD_BITS = 8 * WORD_BYTES
#: Gigabit Ethernet's line rate: the core's clock times its width must reach it.
LINE_BPS = 1e9
GENERATOR_PACKAGES = ("liteeth", "liteiclink", "litex", "migen")
POSTPROCESS_VERSION = 1

_SHIM = """
import sys
import liteeth.gen as gen
_add_raw_port = gen.UDPCore.add_raw_port
def add_raw_port(self, platform, name, port_cfg):
    crossbar = self.core.udp.crossbar
    get_port = crossbar.get_port
    # dispatch on the configured listening port, not on the port the user sends to
    crossbar.get_port = lambda _dst, dw=8, cd="sys": get_port(int(port_cfg["udp_port"]), dw=dw, cd=cd)
    try:
        _add_raw_port(self, platform, name, port_cfg)
    finally:
        del crossbar.get_port
gen.UDPCore.add_raw_port = add_raw_port
sys.argv[0] = "liteeth_gen"
gen.main()
"""


def yaml_path(board: str) -> Path:
    if board not in BOARDS:
        raise BoardError(f"board {board!r} has no Ethernet (LiteEth) configuration; allowed: {', '.join(BOARDS)}")
    return YAML_DIR / f"{board}.yml"


def _ip(text: str) -> int:
    parts = [int(p) for p in str(text).split(".")]
    if len(parts) != 4 or not all(0 <= p < 256 for p in parts):
        raise BoardError(f"ip_address {text!r}: expected a dotted IPv4 address")
    return int.from_bytes(bytes(parts), "big")


@dataclass(frozen=True)
class LiteEthBuild:
    """A generated LiteEth UDP core (see :func:`generate_liteeth`)."""
    board: str
    folder: Path
    verilog: Path
    module: str
    ports: dict[str, tuple[str, int]] = field(repr=False)
    clk_hz: float = 62.5e6
    ip_address: str = ""
    mac_address: int = 0
    udp_port: int = 0

    def summary(self) -> dict:
        return {"board": self.board, "module": self.module, "clk_hz": self.clk_hz, "ip_address": self.ip_address,
                "mac_address": f"{self.mac_address:012x}", "udp_port": self.udp_port, "verilog": str(self.verilog)}


def module_name(board: str) -> str:
    return f"liteeth_{board}"


def load_build(board: str, folder: Path) -> LiteEthBuild:
    cfg = read_yaml(yaml_path(board), "LiteEth")
    module = module_name(board)
    verilog = folder / "gateware" / f"{module}.v"
    port = cfg["udp_ports"][PORT]
    return LiteEthBuild(board=board, folder=folder, verilog=verilog, module=module,
                        ports=verilog_ports(verilog.read_text(), module), clk_hz=float(cfg["clk_freq"]),
                        ip_address=str(cfg["ip_address"]), mac_address=int(cfg["mac_address"]),
                        udp_port=int(port["udp_port"]))


def _check_yaml(board: str) -> None:
    cfg = read_yaml(yaml_path(board), "LiteEth")
    port = cfg.get("udp_ports", {}).get(PORT)
    problems = []
    if cfg.get("core") != "udp":
        problems.append("core must be udp")
    # The bridge (hw.host.udp) takes 32-bit words; the core must be as wide (an 8-bit core
    # needs 125 MHz, which did not close timing) and fast enough for the line.
    if int(cfg.get("data_width", 8)) != WORD_BITS:
        problems.append(f"data_width must be {WORD_BITS} (the MAC/IP/UDP datapath of UdpLinkBridge's words)")
    elif float(cfg.get("clk_freq", 0)) * WORD_BITS < LINE_BPS:
        problems.append(f"clk_freq {cfg.get('clk_freq')} with data_width {WORD_BITS} is below the 1 Gb/s line "
                        f"rate (at least {LINE_BPS / WORD_BITS / 1e6:g} MHz; 62.5 MHz leaves a 2x margin)")
    if port is None or port.get("mode") != "raw" or int(port.get("data_width", 8)) != WORD_BITS \
            or "udp_port" not in port:
        problems.append(f"udp_ports must have a raw port {PORT!r} of data_width {WORD_BITS} with a udp_port "
                        f"(an 8-bit port cannot feed the line at the core's clock: LiteEth's transmitter underflows)")
    if "ip_address" not in cfg or "mac_address" not in cfg:
        problems.append("ip_address and mac_address must be fixed")
    else:
        _ip(cfg["ip_address"])
    if problems:
        raise BoardError(f"{yaml_path(board)}: {'; '.join(problems)}")


def generate_liteeth(board: str, *, force: bool = False) -> LiteEthBuild:
    """Generate (or take from the cache) the LiteEth UDP core of ``board`` (about 3 s)."""
    path = yaml_path(board)
    _check_yaml(board)
    folder = cache_folder("liteeth", board, cache_key(path.read_bytes() + _SHIM.encode(), GENERATOR_PACKAGES,
                                                      POSTPROCESS_VERSION))
    if force and folder.exists():
        shutil.rmtree(folder)
    module = module_name(board)
    run_cached(folder, [sys.executable, "-c", _SHIM, "--name", module, "--output-dir", "out", str(path)],
               what=f"liteeth_gen for {board}", module=module)
    return load_build(board, folder)


#: amaranth-boards ``eth_rgmii`` subsignal -> core pad. ECPIX-5 names the control pins
#: ``tx_ctrl`` / ``rx_ctrl``, ButterStick ``tx_ctl`` / ``rx_ctl``.
_RGMII_PINS = {"rst": "rgmii_rst_n", "mdc": "rgmii_mdc", "mdio": "rgmii_mdio",
               "tx_clk": "rgmii_clocks_tx", "tx_ctrl": "rgmii_tx_ctl", "tx_ctl": "rgmii_tx_ctl",
               "tx_data": "rgmii_tx_data", "rx_clk": "rgmii_clocks_rx", "rx_ctrl": "rgmii_rx_ctl",
               "rx_ctl": "rgmii_rx_ctl", "rx_data": "rgmii_rx_data"}


class LiteEthUdp(wiring.Component):
    """A generated LiteEth UDP/IP core as an Amaranth component (one raw UDP port).

    Members (all synchronous to ``clk``, the core's system clock, ``build.clk_hz`` = 62.5
    MHz, 60 on the ButterStick: its 32-bit datapath then moves about 2 Gb/s, twice gigabit
    Ethernet; the RGMII receive and transmit clocks, 125 MHz, are the PHY's, crossed inside
    the core):

    * ``clk``, ``rst`` (In): the core's clock and synchronous reset.
    * ``rx`` : Out(stream of ``hw.host.udp.RX_LAYOUT``: ``data`` 32, ``last``, ``last_be``
      4, ``length`` 16): the payload of the datagrams that arrive for ``build.udp_port`` at
      ``build.ip_address`` in words of four bytes, the first byte on the wire in
      ``data[0:8]``; ``last`` on each datagram's last word, whose ``last_be`` is one-hot on
      its last valid byte (bit ``k``: ``k + 1`` bytes); ``length`` the datagram's byte count
      (its UDP length field; it corrects ``last_be`` in one case, see
      :mod:`hw.host.udp`). LiteEth cannot wait: keep ``rx.ready`` high.
    * ``tx`` : In(stream of ``hw.host.udp.TX_LAYOUT``: ``data``, ``last``, ``last_be``,
      ``length``): a datagram to send in the same word format, ``length`` its byte count
      (held for all its words; it must agree with ``last_be``: the headers are made from
      ``length``, the wire bytes end at ``last_be``), without gaps once started (a gap
      underflows LiteEth's MAC: a corrupt frame); it goes from ``build.udp_port`` to
      ``remote_ip`` : ``remote_port``.
    * ``remote_ip`` (32 bits), ``remote_port`` (16) (Out): the source address of the last
      datagram received (latched at its first word): replies go back to the sender.

    Latency: that of LiteEth (a few hundred ns through MAC, IP and UDP); this wrapper adds
    none (it is wiring and the latch).
    """

    def __init__(self, build: LiteEthBuild):
        self.build = build
        self._pins: dict[str, object] = {}
        super().__init__({"clk": In(1), "rst": In(1),
                          "rx": Out(stream.Signature(RX_LAYOUT)), "tx": In(stream.Signature(TX_LAYOUT)),
                          "remote_ip": Out(32), "remote_port": Out(16)})

    def connect_board(self, platform) -> None:
        """Request the board's ``eth_rgmii`` pins (raw: the core's PHY instantiates the ECP5
        I/O cells, ``IDDRX1F`` / ``ODDRX1F`` / ``DELAYG``, itself) and wire them."""
        res = platform.request("eth_rgmii", 0, dir="-")
        for sub, pad in _RGMII_PINS.items():
            port = getattr(res, sub, None)
            if port is None or pad not in self.build.ports:
                continue
            width = self.build.ports[pad][1]
            if len(port.io) != width:
                raise BoardError(f"eth_rgmii {sub!r} has {len(port.io)} pins; the core's {pad} has {width}")
            # the pins as they are: the core drives the PHY's active-low reset itself
            self._pins[pad] = port.io
        # the PHY's receive clock (the core's eth_rx domain, eth_tx is made from it): 125 MHz
        # at gigabit, so nextpnr times the RGMII side too
        platform.add_clock_constraint(res.rx_clk.io, 125e6)

    def elaborate(self, platform):
        m = Module()
        b, p = self.build, f"{PORT}_"
        if platform is not None:
            platform.add_file(b.verilog.name, b.verilog.read_text())
        m.domains.liteeth = ClockDomain("liteeth", local=True)
        m.d.comb += [ClockSignal("liteeth").eq(self.clk), ResetSignal("liteeth").eq(self.rst)]
        rx, tx = self.rx, self.tx
        first = Signal(init=1)
        src_ip, src_port = Signal(32), Signal(16)
        with m.If(rx.valid & rx.ready):
            m.d.liteeth += first.eq(rx.payload.last)
            with m.If(first):
                m.d.liteeth += [self.remote_ip.eq(src_ip), self.remote_port.eq(src_port)]
        # the destination of a datagram being sent stays that of its first word, even if a
        # new request (from another sender) arrives meanwhile
        tx_first = Signal(init=1)
        held_ip, held_port = Signal(32), Signal(16)
        dst_ip, dst_port = Signal(32), Signal(16)
        m.d.comb += [dst_ip.eq(Mux(tx_first, self.remote_ip, held_ip)),
                     dst_port.eq(Mux(tx_first, self.remote_port, held_port))]
        with m.If(tx.valid & tx.ready):
            m.d.liteeth += [tx_first.eq(tx.payload.last), held_ip.eq(dst_ip), held_port.eq(dst_port)]
        ports = {"i_sys_clock": self.clk, "i_sys_reset": self.rst,
                 f"o_{p}source_valid": rx.valid, f"o_{p}source_last": rx.payload.last,
                 f"o_{p}source_data": rx.payload.data, f"i_{p}source_ready": rx.ready,
                 f"o_{p}source_ip_address": src_ip, f"o_{p}source_src_port": src_port,
                 f"o_{p}source_dst_port": Signal(16), f"o_{p}source_length": rx.payload.length,
                 f"o_{p}source_last_be": rx.payload.last_be, f"o_{p}source_error": Signal(),
                 f"i_{p}sink_valid": tx.valid, f"i_{p}sink_last": tx.payload.last,
                 f"i_{p}sink_data": tx.payload.data, f"o_{p}sink_ready": tx.ready,
                 f"i_{p}sink_length": tx.payload.length, f"i_{p}sink_last_be": tx.payload.last_be,
                 f"i_{p}sink_ip_address": dst_ip, f"i_{p}sink_dst_port": dst_port,
                 f"i_{p}sink_src_port": Const(b.udp_port, 16)}
        if "rgmii_int_n" in b.ports:
            ports["i_rgmii_int_n"] = Const(1)       # the PHY's interrupt is not used
        for name, value in self._pins.items():
            direction = b.ports[name][0]
            ports[{"input": "i_", "output": "o_", "inout": "io_"}[direction] + name] = value
        missing = [n for n in b.ports if n.startswith("rgmii_") and n != "rgmii_int_n" and n not in self._pins]
        if platform is not None and missing:
            raise BoardError(f"LiteEthUdp: pins not connected ({', '.join(missing)}); call connect_board(platform)")
        m.submodules.core = Instance(b.module, **ports)
        return m
