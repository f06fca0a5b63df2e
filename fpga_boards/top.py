"""Board tops: a generated design with the host link, the board's memory, clock and LEDs.

:class:`BoardTop` (an Amaranth elaboratable for the board's amaranth-boards platform)
holds:

* a PLL (:class:`fpga_boards.pll.EcpPll`) that makes the design clock (``sync``) from the
  board's oscillator; the design is held in reset until it locks;
* the hosted design (:class:`hw.host.hosted.HostedEngine`): the host link on the board's
  UART (8N1, ``baud``; ``link="uart"``, the default) or, on a board with Ethernet
  (``Board.ethernet``: ECPIX-5, ButterStick; ``link="udp"``), over UDP: the board's LiteEth
  core (:class:`fpga_boards.liteeth.LiteEthUdp`, its 32-bit datapath in its own clock
  domain ``eth`` at the core's ``clk_hz``, 62.5 MHz on ECPIX-5, 60 on ButterStick, from a
  second PLL) and :class:`hw.host.udp.UdpLinkBridge` (32-bit datagram words <-> the link's
  byte streams, across the two clocks); and the engine: the decode engine for a config with a ``decode``
  section, else the config's tensor core as a :class:`fpga_boards.gemm_engine.GemmEngine`
  (or, ``design="selftest"``, :class:`fpga_boards.selftest.SelftestEngine`);
* memory: ``bram`` (:class:`HostedBram`: an :class:`fpga_boards.bram.AxiBram` of
  ``bram_bytes`` in the design's clock domain: a tensor core needs no DRAM) or ``dram`` (the board's LiteDRAM
  core, its user port crossed into the design's domain by
  :class:`fpga_boards.cdc.AxiAsyncBridge`, its control registers on the link's external
  CSR window);
* LEDs where the board has plain ones: heartbeat (about 1 Hz), ready (PLL locked, and the
  DRAM initialised), busy (the engine runs), error (sticky: an engine error, a UART
  framing error or, over UDP, a datagram byte dropped on a full receive FIFO, since
  configuration).

:func:`board_top` returns the top and a description of its clocks and memory for the
build manifest.
"""

from __future__ import annotations

from amaranth.build import Attrs
from amaranth.build.res import ResourceError
from amaranth.hdl import ClockDomain, DomainRenamer, Elaboratable, Module, ResetSignal, Signal
from amaranth.lib import io, wiring
from amaranth.lib.cdc import FFSynchronizer, ResetSynchronizer
from amaranth.lib.wiring import In, Out, connect

from ref_model.errors import LutforgeError

from .boards import Board, BoardError, get_board
from .pll import EcpPll, pll_params

#: Default baud rate of the host link's UART (FTDI bridges of ECPIX-5 and ULX3S reach 3 Mbaud;
#: 1 Mbaud divides every design clock of a whole number of MHz exactly).
DEFAULT_BAUD = 1_000_000
#: Default block-RAM working memory of a tensor-core top.
DEFAULT_BRAM_BYTES = 64 * 1024
MEMORY_KINDS = ("bram", "dram")
#: Host link transports: the UART (every board), UDP over Ethernet (boards with ``ethernet``).
LINKS = ("uart", "udp")
DESIGNS = ("auto", "selftest")


def engine_for(cfg, design: str = "auto"):
    """The engine a board runs for ``cfg``: ``("decode", DecodeEngine)``, ``("gemm", GemmEngine)``
    or, with ``design="selftest"``, ``("selftest", SelftestEngine)`` (no accelerator)."""
    if design == "selftest":
        from .selftest import SelftestEngine
        return "selftest", SelftestEngine(addr_bits=cfg.memory.addr_bits, data_bits=cfg.memory.data_bits)
    if cfg.decode is not None:
        from rtl_gen.generate import elaborate_decode
        return "decode", elaborate_decode(cfg)
    from .gemm_engine import gemm_engine
    return "gemm", gemm_engine(cfg)


class HostedBram(wiring.Component):
    """What a block-RAM board top holds apart from its clock and pins: ``hosted`` (a
    :class:`hw.host.hosted.HostedEngine` with UART pins) on an :class:`~fpga_boards.bram.AxiBram`.
    Ports: ``uart_rx`` (In, idle high), ``uart_tx``, ``idle``, ``busy``, ``framing_error``,
    ``error`` (the engine's). The simulated UART board (``sim.uart_board.build_uart_design``)
    runs it as it is, so the tensor-core bitstream's logic is tested end to end over a UART."""

    def __init__(self, hosted, *, bram_bytes: int):
        from .bram import AxiBram
        r = hosted.axi_r.signature
        self.hosted = hosted
        self.bram = AxiBram(size_bytes=bram_bytes, addr_bits=r.addr_bits, data_bits=r.data_bits, id_bits=r.id_bits)
        super().__init__({"uart_rx": In(1, init=1), "uart_tx": Out(1, init=1), "idle": Out(1), "busy": Out(1),
                          "framing_error": Out(1), "error": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.hosted = h = self.hosted
        m.submodules.bram = bram = self.bram
        connect(m, h.axi_r, bram.axi_r)
        connect(m, h.axi_w, bram.axi_w)
        m.d.comb += [h.uart_rx.eq(self.uart_rx), self.uart_tx.eq(h.uart_tx), self.idle.eq(h.idle),
                     self.busy.eq(h.busy), self.framing_error.eq(h.framing_error), self.error.eq(h.engine.error)]
        return m


def hosted_design(cfg, *, divisor: int | None, mem_size: int, design: str = "auto", ctrl: bool = False):
    """(kind, HostedEngine): the config's engine (or the self-test one) behind the host link
    on UART pins at ``divisor`` clock cycles per bit (None: byte streams, for the UDP
    bridge), ``mem_size`` bytes of memory."""
    from hw.host.hosted import HostedEngine
    kind, engine = engine_for(cfg, design)
    return kind, HostedEngine(engine, config_hash=cfg.hash_bytes(), mem_size=mem_size,
                              max_burst=cfg.memory.max_burst, outstanding=cfg.memory.outstanding,
                              uart_divisor=divisor, ctrl=ctrl)


class BoardTop(Elaboratable):
    def __init__(self, board: Board, cfg, *, clock_mhz: float, baud: int = DEFAULT_BAUD, memory: str = "bram",
                 bram_bytes: int = DEFAULT_BRAM_BYTES, design: str = "auto", link: str = "uart"):
        try:
            self._setup(board, cfg, clock_mhz=clock_mhz, baud=baud, memory=memory, bram_bytes=bram_bytes,
                        design=design, link=link)
        except Exception:
            self._MustUse__silence = True           # refused: no "created but never used" warning
            raise

    def _setup(self, board, cfg, *, clock_mhz, baud, memory, bram_bytes, design, link):
        from hw.host.uart import divisor_for
        if memory not in MEMORY_KINDS:
            raise BoardError(f"memory {memory!r}: allowed: {', '.join(MEMORY_KINDS)}")
        if design not in DESIGNS:
            raise BoardError(f"design {design!r}: allowed: {', '.join(DESIGNS)}")
        if link not in LINKS:
            raise BoardError(f"link {link!r}: allowed: {', '.join(LINKS)}")
        if link == "udp" and board.ethernet is None:
            from .boards import BOARDS
            raise BoardError(f"{board.title} has no Ethernet: link=udp (--link udp) is for "
                             f"{', '.join(b.name for b in BOARDS.values() if b.ethernet)}; use the UART (--link uart)")
        self.board, self.cfg, self.memory, self.link = board, cfg, memory, link
        # every check that can fail comes before the first component is made (an unused
        # component warns)
        self.clock_mhz = pll_params(board.clock_in_hz / 1e6, clock_mhz).f_out_mhz
        self.divisor = divisor_for(self.clock_mhz * 1e6, baud)
        self.baud = self.clock_mhz * 1e6 / self.divisor
        if memory == "dram":
            self.dram_build = self._dram_build()
            self.mem_bytes = self.dram_build.dram_size      # LiteDRAM's own figure for the build
            bits, native = cfg.memory.data_bits, self.dram_build.data_bits
            if bits > native or native % bits or (native // bits) & (native // bits - 1):
                raise BoardError(f"the design's memory port is {bits} bits; {board.title}'s LiteDRAM port is "
                                 f"{native} bits: allowed: {native} or a power-of-two fraction of it "
                                 f"(memory.data_bits)")
        else:
            self.mem_bytes = bram_bytes
        if link == "udp":
            from .liteeth import generate_liteeth
            self.eth_build = generate_liteeth(board.ethernet)
            self.eth_mhz = pll_params(board.clock_in_hz / 1e6, self.eth_build.clk_hz / 1e6).f_out_mhz
        self.pll = EcpPll(board.clock_in_hz / 1e6, clock_mhz)
        self.kind, self.hosted = hosted_design(cfg, divisor=self.divisor if link == "uart" else None,
                                               mem_size=self.mem_bytes, design=design, ctrl=(memory == "dram"))
        if link == "udp":
            from hw.host.udp import UdpLinkBridge

            from .liteeth import LiteEthUdp
            self.eth_pll = EcpPll(board.clock_in_hz / 1e6, self.eth_build.clk_hz / 1e6)
            self.eth = LiteEthUdp(self.eth_build)
            self.udp_bridge = UdpLinkBridge(eth_domain="eth", host_domain="sync")
        r, w = self.hosted.axi_r.signature, self.hosted.axi_w.signature
        if memory == "dram":
            from .cdc import AxiAsyncBridge, WishboneAsyncBridge
            from .litedram import LiteDRAMCore
            self.dram = LiteDRAMCore(self.dram_build, addr_bits=r.addr_bits, read_id_bits=r.id_bits,
                                     write_id_bits=w.id_bits)
            self.axi_bridge = AxiAsyncBridge(addr_bits=r.addr_bits, data_bits=r.data_bits, read_id_bits=r.id_bits,
                                             write_id_bits=w.id_bits, s_domain="sync", m_domain="dram")
            # a narrower design port: narrow bursts on the controller's native port, after the
            # clock crossing (LiteDRAM's own width converter hangs on bursts: hw/mem/narrow.py)
            self.narrow = None
            if r.data_bits < self.dram_build.data_bits:
                from hw.mem.narrow import AxiNarrowAdapter
                self.narrow = AxiNarrowAdapter(addr_bits=r.addr_bits, narrow_bits=r.data_bits,
                                               wide_bits=self.dram_build.data_bits, read_id_bits=r.id_bits,
                                               write_id_bits=w.id_bits)
            self.wb_bridge = WishboneAsyncBridge(s_domain="sync", m_domain="dram")
        elif link == "uart":
            self.dram = None
            self.core = HostedBram(self.hosted, bram_bytes=bram_bytes)
        else:
            from .bram import AxiBram
            self.dram = None
            self.bram = AxiBram(size_bytes=bram_bytes, addr_bits=r.addr_bits, data_bits=r.data_bits, id_bits=r.id_bits)

    def _dram_build(self):
        try:
            from .litedram import generate_litedram
        except ImportError:
            raise BoardError(f"{self.board.title}: this build has no LiteDRAM integration "
                             f"(fpga_boards/litedram.py); use memory=bram") from None
        return generate_litedram(self.board.dram.description, sys_clk_mhz=self.cfg.memory.dram_mhz)

    def describe(self) -> dict:
        link = {"kind": self.link}
        if self.link == "udp":
            e = self.eth_build
            link.update(ip_address=e.ip_address, udp_port=e.udp_port, mac_address=f"{e.mac_address:012x}",
                        eth_clock_mhz=round(self.eth_mhz, 4), eth_pll=vars(self.eth_pll.params),
                        target=f"udp://{e.ip_address}:{e.udp_port}")
        return {"design": self.kind, "clock_mhz": round(self.clock_mhz, 4), "link": link,
                "pll": vars(self.pll.params), "uart": {"baud": round(self.baud), "divisor": self.divisor},
                "memory": {"kind": self.memory, "bytes": self.mem_bytes,
                           **({"dram": self.dram_describe()} if self.memory == "dram" else {})}}

    @property
    def dram_mhz(self) -> float | None:
        """The DRAM controller's clock of this build (``memory.dram_mhz`` or the board's)."""
        return self.dram_build.sys_clk_hz / 1e6 if self.memory == "dram" else None

    def dram_describe(self) -> dict:
        d = dict(self.board.describe()["dram"])
        scale = self.dram_mhz / d["sys_clk_mhz"]
        d["sys_clk_mhz"] = self.dram_mhz
        d["peak_mb_per_s"] = round(d["peak_mb_per_s"] * scale, 1)
        return d

    # ---- pins ----------------------------------------------------------------------
    def _uart(self, m, platform):
        """(rx, tx) of the host link's UART: the board's resource, or pins the registry names."""
        b = self.board
        if b.uart is None:
            from amaranth_boards.resources import UARTResource
            p = b.uart_pins
            platform.add_resources([UARTResource("host_uart", 0, rx=p["rx"], tx=p["tx"], conn=p["connector"],
                                                 attrs=Attrs(IO_TYPE="LVCMOS33"))])
            res = platform.request("host_uart", 0, dir="-")
        else:
            res = platform.request(*b.uart, dir="-")
        m.submodules.uart_rx_buf = rx = io.Buffer("i", res.rx)
        m.submodules.uart_tx_buf = tx = io.Buffer("o", res.tx)
        return rx.i, tx.o

    def _leds(self, m, platform):
        """Up to four LED outputs (heartbeat, ready, busy, error), or fewer."""
        b = self.board
        ports = []
        if b.leds == "led":
            ports = [platform.request("led", i, dir="-") for i in range(4)]
        elif b.leds == "rgb_led":
            for i, col in enumerate(("g", "g", "b", "r")):
                try:
                    led = platform.request("rgb_led", i, dir="-")
                except ResourceError:       # fewer RGB LEDs than roles (OrangeCrab has one)
                    break
                ports.append(getattr(led, col))
        outs = []
        for i, port in enumerate(ports):
            m.submodules[f"led_buf{i}"] = buf = io.Buffer("o", port)
            outs.append(buf.o)
        return outs

    def _udp(self, m, platform, clk_in):
        """The UDP link: the LiteEth core on its own PLL clock (domain ``eth``), the bridge
        into the design's domain. Returns the sticky ``rx_overflow`` flag, in ``sync``."""
        cd_eth = _pll_domain(m, platform, "eth", self.eth_pll, clk_in, self.eth_mhz)
        m.submodules.eth = eth = self.eth
        eth.connect_board(platform)
        m.d.comb += [eth.clk.eq(cd_eth.clk), eth.rst.eq(cd_eth.rst)]
        m.submodules.udp_bridge = br = self.udp_bridge
        h = self.hosted
        connect(m, eth.rx, br.udp_rx)
        connect(m, br.udp_tx, eth.tx)
        connect(m, br.host_rx, h.rx)
        connect(m, h.tx, br.host_tx)
        m.d.comb += h.flush.eq(0)
        overflow, overflow_sync = Signal(), Signal()
        with m.If(br.rx_overflow):
            m.d.eth += overflow.eq(1)
        m.submodules.overflow_sync = FFSynchronizer(overflow, overflow_sync)
        return overflow_sync

    def elaborate(self, platform):
        m = Module()
        m.submodules.clk_buf = clk_buf = io.Buffer("i", platform.request(platform.default_clk, dir="-"))
        clk_in = clk_buf.i
        _pll_domain(m, platform, "sync", self.pll, clk_in, self.clock_mhz)

        h = self.hosted
        if self.board.name == "butterstick":      # power the SYZYGY banks the UART is on
            from .platforms import ButterStickVccio
            m.submodules.vccio = vccio = ButterStickVccio(self.clock_mhz * 1e6)
            ctl = platform.request("vccio_ctrl", 0, dir="-")
            m.submodules.vccio_pdm = pdm = io.Buffer("o", ctl.pdm)
            m.submodules.vccio_en = en = io.Buffer("o", ctl.en)
            m.d.comb += [pdm.o.eq(vccio.pdm), en.o.eq(vccio.en)]
        link_error = Signal()
        if self.link == "uart":
            rx, tx = self._uart(m, platform)
        else:
            link_error = self._udp(m, platform, clk_in)
        ready = Signal()
        if self.memory == "bram" and self.link == "uart":
            m.submodules.core = core = self.core
            m.d.comb += [core.uart_rx.eq(rx), tx.eq(core.uart_tx), ready.eq(~ResetSignal())]
        elif self.memory == "bram":
            m.submodules.hosted = h
            m.submodules.bram = bram = self.bram
            connect(m, h.axi_r, bram.axi_r)
            connect(m, h.axi_w, bram.axi_w)
            m.d.comb += ready.eq(~ResetSignal())
        else:
            m.submodules.hosted = h
            if self.link == "uart":
                m.d.comb += [h.uart_rx.eq(rx), tx.eq(h.uart_tx)]
            # The controller runs on its own clock (its PLL, from the board oscillator); the
            # design's AXI4 ports and the link's control window cross into it.
            m.submodules.dram = dram = self.dram
            dram.connect_board(platform)    # the DRAM pins (and OrangeCrab's pseudo power pins held)
            m.domains.dram = cd_dram = ClockDomain("dram", async_reset=True)
            m.d.comb += [dram.clk_in.eq(clk_in), dram.rst.eq(0),
                         cd_dram.clk.eq(dram.user_clk), cd_dram.rst.eq(dram.user_rst)]
            m.submodules.axi_bridge = ab = self.axi_bridge
            m.submodules.wb_bridge = wb = self.wb_bridge
            connect(m, h.axi_r, ab.s_r)
            connect(m, h.axi_w, ab.s_w)
            if self.narrow is None:
                connect(m, ab.m_r, dram.axi_r)
                connect(m, ab.m_w, dram.axi_w)
            else:
                m.submodules.narrow = nw = DomainRenamer("dram")(self.narrow)
                connect(m, ab.m_r, nw.s_r)
                connect(m, ab.m_w, nw.s_w)
                connect(m, nw.m_r, dram.axi_r)
                connect(m, nw.m_w, dram.axi_w)
            connect(m, h.ctrl, wb.s)
            connect(m, wb.m, dram.ctrl)
            init = Signal()
            m.submodules.init_sync = FFSynchronizer(dram.init_done & ~dram.init_error, init)
            m.d.comb += ready.eq(init)

        # ---- LEDs ----
        heartbeat = Signal(max(1, int(self.clock_mhz * 1e6).bit_length() - 1))
        m.d.sync += heartbeat.eq(heartbeat + 1)
        error = Signal()
        with m.If((h.framing_error if self.link == "uart" else link_error) | h.engine.error):
            m.d.sync += error.eq(1)
        for out, value in zip(self._leds(m, platform), (heartbeat[-1], ready, h.busy, error)):
            m.d.comb += out.eq(value)
        return m


def board_top(board: str | Board, cfg, *, clock_mhz: float | None = None, baud: int = DEFAULT_BAUD,
              memory: str | None = None, bram_bytes: int = DEFAULT_BRAM_BYTES, design: str = "auto",
              link: str = "uart") -> BoardTop:
    """The top for ``cfg`` on ``board``. ``clock_mhz``: the design clock (default
    ``cfg.clock.mhz``); ``memory``: ``bram`` or ``dram`` (default: ``dram`` for a decode
    engine, ``bram`` for a tensor core); ``link``: ``uart`` (default) or ``udp`` (boards with
    Ethernet)."""
    b = get_board(board) if isinstance(board, str) else board
    if memory is None:
        memory = "dram" if cfg.decode is not None else "bram"
    if cfg.decode is not None and memory == "bram" and design != "selftest":
        raise BoardError("a decode engine streams a model's weights from DRAM: use memory=dram")
    try:
        return BoardTop(b, cfg, clock_mhz=cfg.clock.mhz if clock_mhz is None else clock_mhz, baud=baud,
                        memory=memory, bram_bytes=bram_bytes, design=design, link=link)
    except LutforgeError:
        raise
    except ValueError as e:
        raise BoardError(f"{b.title}: {e}") from None


def _pll_domain(m: Module, platform, name: str, pll, clk_in, mhz: float) -> ClockDomain:
    """Clock domain ``name`` from ``pll`` (fed by ``clk_in``): constrained to ``mhz`` and
    held in reset until the PLL locks (reset released synchronously)."""
    prefix = "" if name == "sync" else f"{name}_"
    m.submodules[f"{prefix}pll"] = pll
    m.d.comb += pll.clk_in.eq(clk_in)
    cd = ClockDomain(name)
    m.domains += cd
    m.d.comb += cd.clk.eq(pll.clk_out)
    platform.add_clock_constraint(cd.clk, mhz * 1e6)
    m.submodules[f"{prefix}reset_sync"] = ResetSynchronizer(~pll.locked, domain=name)
    return cd
