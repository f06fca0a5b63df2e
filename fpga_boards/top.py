"""Board tops: a generated design with the host link, the board's memory, clock and LEDs.

:class:`BoardTop` (an Amaranth elaboratable for the board's amaranth-boards platform)
holds:

* a PLL (:class:`fpga_boards.pll.EcpPll`) that makes the design clock (``sync``) from the
  board's oscillator; the design is held in reset until it locks;
* the hosted design (:class:`hw.host.hosted.HostedEngine`): the host link on the board's
  UART (8N1, ``baud``) and the engine: the decode engine for a config with a ``decode``
  section, else the config's tensor core as a :class:`fpga_boards.gemm_engine.GemmEngine`
  (or, ``design="selftest"``, :class:`fpga_boards.selftest.SelftestEngine`);
* memory: ``bram`` (:class:`HostedBram`: an :class:`fpga_boards.bram.AxiBram` of
  ``bram_bytes`` in the design's clock domain: a tensor core needs no DRAM) or ``dram`` (the board's LiteDRAM
  core, its user port crossed into the design's domain by
  :class:`fpga_boards.cdc.AxiAsyncBridge`, its control registers on the link's external
  CSR window);
* LEDs where the board has plain ones: heartbeat (about 1 Hz), ready (PLL locked, and the
  DRAM initialised), busy (the engine runs), error (sticky: an engine error or a UART
  framing error since configuration).

:func:`board_top` returns the top and a description of its clocks and memory for the
build manifest.
"""

from __future__ import annotations

from amaranth.build import Attrs
from amaranth.build.res import ResourceError
from amaranth.hdl import ClockDomain, Elaboratable, Module, ResetSignal, Signal
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


def hosted_design(cfg, *, divisor: int, mem_size: int, design: str = "auto", ctrl: bool = False):
    """(kind, HostedEngine): the config's engine (or the self-test one) behind the host link
    on UART pins at ``divisor`` clock cycles per bit, ``mem_size`` bytes of memory."""
    from hw.host.hosted import HostedEngine
    kind, engine = engine_for(cfg, design)
    return kind, HostedEngine(engine, config_hash=cfg.hash_bytes(), mem_size=mem_size,
                              max_burst=cfg.memory.max_burst, outstanding=cfg.memory.outstanding,
                              uart_divisor=divisor, ctrl=ctrl)


class BoardTop(Elaboratable):
    def __init__(self, board: Board, cfg, *, clock_mhz: float, baud: int = DEFAULT_BAUD, memory: str = "bram",
                 bram_bytes: int = DEFAULT_BRAM_BYTES, design: str = "auto"):
        try:
            self._setup(board, cfg, clock_mhz=clock_mhz, baud=baud, memory=memory, bram_bytes=bram_bytes,
                        design=design)
        except Exception:
            self._MustUse__silence = True           # refused: no "created but never used" warning
            raise

    def _setup(self, board, cfg, *, clock_mhz, baud, memory, bram_bytes, design):
        from hw.host.uart import divisor_for
        if memory not in MEMORY_KINDS:
            raise BoardError(f"memory {memory!r}: allowed: {', '.join(MEMORY_KINDS)}")
        if design not in DESIGNS:
            raise BoardError(f"design {design!r}: allowed: {', '.join(DESIGNS)}")
        self.board, self.cfg, self.memory = board, cfg, memory
        # every check that can fail comes before the first component is made (an unused
        # component warns)
        self.clock_mhz = pll_params(board.clock_in_hz / 1e6, clock_mhz).f_out_mhz
        self.divisor = divisor_for(self.clock_mhz * 1e6, baud)
        self.baud = self.clock_mhz * 1e6 / self.divisor
        if memory == "dram":
            self.dram_build = self._dram_build()
            self.mem_bytes = self.dram_build.dram_size      # LiteDRAM's own figure for the build
            if cfg.memory.data_bits != self.dram_build.data_bits:
                raise BoardError(f"the design's memory port is {cfg.memory.data_bits} bits; {board.title}'s "
                                 f"LiteDRAM port is {self.dram_build.data_bits} "
                                 f"(set memory.data_bits={self.dram_build.data_bits})")
        else:
            self.mem_bytes = bram_bytes
        self.pll = EcpPll(board.clock_in_hz / 1e6, clock_mhz)
        self.kind, self.hosted = hosted_design(cfg, divisor=self.divisor, mem_size=self.mem_bytes, design=design,
                                               ctrl=(memory == "dram"))
        r, w = self.hosted.axi_r.signature, self.hosted.axi_w.signature
        if memory == "dram":
            from .cdc import AxiAsyncBridge, WishboneAsyncBridge
            from .litedram import LiteDRAMCore
            self.dram = LiteDRAMCore(self.dram_build, addr_bits=r.addr_bits, read_id_bits=r.id_bits,
                                     write_id_bits=w.id_bits)
            self.axi_bridge = AxiAsyncBridge(addr_bits=r.addr_bits, data_bits=r.data_bits, read_id_bits=r.id_bits,
                                             write_id_bits=w.id_bits, s_domain="sync", m_domain="dram")
            self.wb_bridge = WishboneAsyncBridge(s_domain="sync", m_domain="dram")
        else:
            self.dram = None
            self.core = HostedBram(self.hosted, bram_bytes=bram_bytes)

    def _dram_build(self):
        try:
            from .litedram import generate_litedram
        except ImportError:
            raise BoardError(f"{self.board.title}: this build has no LiteDRAM integration "
                             f"(fpga_boards/litedram.py); use memory=bram") from None
        return generate_litedram(self.board.dram.description, sys_clk_mhz=self.cfg.memory.dram_mhz)

    def describe(self) -> dict:
        return {"design": self.kind, "clock_mhz": round(self.clock_mhz, 4),
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

    def elaborate(self, platform):
        m = Module()
        m.submodules.clk_buf = clk_buf = io.Buffer("i", platform.request(platform.default_clk, dir="-"))
        clk_in = clk_buf.i
        m.submodules.pll = pll = self.pll
        m.d.comb += pll.clk_in.eq(clk_in)
        m.domains.sync = cd = ClockDomain("sync")
        m.d.comb += cd.clk.eq(pll.clk_out)
        platform.add_clock_constraint(cd.clk, self.clock_mhz * 1e6)
        m.submodules.reset_sync = ResetSynchronizer(~pll.locked, domain="sync")

        h = self.hosted
        if self.board.name == "butterstick":      # power the SYZYGY banks the UART is on
            from .platforms import ButterStickVccio
            m.submodules.vccio = vccio = ButterStickVccio(self.clock_mhz * 1e6)
            ctl = platform.request("vccio_ctrl", 0, dir="-")
            m.submodules.vccio_pdm = pdm = io.Buffer("o", ctl.pdm)
            m.submodules.vccio_en = en = io.Buffer("o", ctl.en)
            m.d.comb += [pdm.o.eq(vccio.pdm), en.o.eq(vccio.en)]
        rx, tx = self._uart(m, platform)
        ready = Signal()
        if self.memory == "bram":
            m.submodules.core = core = self.core
            m.d.comb += [core.uart_rx.eq(rx), tx.eq(core.uart_tx), ready.eq(~ResetSignal())]
        else:
            m.submodules.hosted = h
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
            connect(m, ab.m_r, dram.axi_r)
            connect(m, ab.m_w, dram.axi_w)
            connect(m, h.ctrl, wb.s)
            connect(m, wb.m, dram.ctrl)
            init = Signal()
            m.submodules.init_sync = FFSynchronizer(dram.init_done & ~dram.init_error, init)
            m.d.comb += ready.eq(init)

        # ---- LEDs ----
        heartbeat = Signal(max(1, int(self.clock_mhz * 1e6).bit_length() - 1))
        m.d.sync += heartbeat.eq(heartbeat + 1)
        error = Signal()
        with m.If(h.framing_error | h.engine.error):
            m.d.sync += error.eq(1)
        for out, value in zip(self._leds(m, platform), (heartbeat[-1], ready, h.busy, error)):
            m.d.comb += out.eq(value)
        return m


def board_top(board: str | Board, cfg, *, clock_mhz: float | None = None, baud: int = DEFAULT_BAUD,
              memory: str | None = None, bram_bytes: int = DEFAULT_BRAM_BYTES, design: str = "auto") -> BoardTop:
    """The top for ``cfg`` on ``board``. ``clock_mhz``: the design clock (default
    ``cfg.clock.mhz``); ``memory``: ``bram`` or ``dram`` (default: ``dram`` for a decode
    engine, ``bram`` for a tensor core)."""
    b = get_board(board) if isinstance(board, str) else board
    if memory is None:
        memory = "dram" if cfg.decode is not None else "bram"
    if cfg.decode is not None and memory == "bram" and design != "selftest":
        raise BoardError("a decode engine streams a model's weights from DRAM: use memory=dram")
    try:
        return BoardTop(b, cfg, clock_mhz=cfg.clock.mhz if clock_mhz is None else clock_mhz, baud=baud,
                        memory=memory, bram_bytes=bram_bytes, design=design)
    except LutforgeError:
        raise
    except ValueError as e:
        raise BoardError(f"{b.title}: {e}") from None

