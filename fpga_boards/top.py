"""Board tops: a generated design with the host link, the board's memory, clock and LEDs.

:class:`BoardTop` (an Amaranth elaboratable for the board's amaranth-boards platform)
holds:

* a PLL (:class:`fpga_boards.pll.EcpPll`) that makes the design clock (``sync``) from the
  board's oscillator; the design is held in reset until it locks;
* the hosted design (:class:`hw.host.hosted.HostedEngine`): the host link on the board's
  UART (8N1, ``baud``) and the engine: the decode engine for a config with a ``decode``
  section, else the config's tensor core as a :class:`fpga_boards.gemm_engine.GemmEngine`;
* memory: ``bram`` (:class:`fpga_boards.bram.AxiBram`, ``bram_bytes`` of block RAM in the
  design's clock domain: a tensor core needs no DRAM) or ``dram`` (the board's LiteDRAM
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

from amaranth.build import Resource
from amaranth.hdl import ClockDomain, ClockSignal, Elaboratable, Module, ResetSignal, Signal
from amaranth.lib.cdc import ResetSynchronizer
from amaranth.lib.wiring import connect

from ref_model.errors import LutforgeError

from .boards import Board, BoardError, get_board
from .pll import EcpPll

#: Default baud rate of the host link's UART (FTDI bridges of ECPIX-5 and ULX3S reach 3 Mbaud;
#: 1 Mbaud divides every design clock of a whole number of MHz exactly).
DEFAULT_BAUD = 1_000_000
#: Default block-RAM working memory of a tensor-core top.
DEFAULT_BRAM_BYTES = 64 * 1024
MEMORY_KINDS = ("bram", "dram")


def engine_for(cfg):
    """The engine a board runs for ``cfg``: ``("decode", DecodeEngine)`` or ``("gemm", GemmEngine)``."""
    if cfg.decode is not None:
        from rtl_gen.generate import elaborate_decode
        return "decode", elaborate_decode(cfg)
    from .gemm_engine import gemm_engine
    return "gemm", gemm_engine(cfg)


class BoardTop(Elaboratable):
    def __init__(self, board: Board, cfg, *, clock_mhz: float, baud: int = DEFAULT_BAUD, memory: str = "bram",
                 bram_bytes: int = DEFAULT_BRAM_BYTES):
        from hw.host.hosted import HostedEngine
        from hw.host.uart import divisor_for
        if memory not in MEMORY_KINDS:
            raise BoardError(f"memory {memory!r}: allowed: {', '.join(MEMORY_KINDS)}")
        self.board, self.cfg, self.memory = board, cfg, memory
        self.pll = EcpPll(board.clock_in_hz / 1e6, clock_mhz)
        self.clock_mhz = self.pll.params.f_out_mhz
        self.divisor = divisor_for(self.clock_mhz * 1e6, baud)
        self.baud = self.clock_mhz * 1e6 / self.divisor
        self.kind, engine = engine_for(cfg)
        if memory == "bram":
            self.mem_bytes = bram_bytes
        else:
            self.mem_bytes = board.dram_bytes
        self.hosted = HostedEngine(engine, config_hash=cfg.hash_bytes(), mem_size=self.mem_bytes,
                                   max_burst=cfg.memory.max_burst, outstanding=cfg.memory.outstanding,
                                   uart_divisor=self.divisor, ctrl=(memory == "dram"))
        if memory == "dram":
            self.dram = self._dram_core()
        else:
            from .bram import AxiBram
            r = self.hosted.axi_r.signature
            self.dram = None
            self.bram = AxiBram(size_bytes=bram_bytes, addr_bits=r.addr_bits, data_bits=r.data_bits,
                                id_bits=r.id_bits)

    def _dram_core(self):
        raise BoardError(f"{self.board.title}: the DRAM controller is not integrated in this build yet; "
                         f"use memory=bram")

    def describe(self) -> dict:
        return {"design": self.kind, "clock_mhz": round(self.clock_mhz, 4),
                "pll": vars(self.pll.params), "uart": {"baud": round(self.baud), "divisor": self.divisor},
                "memory": {"kind": self.memory, "bytes": self.mem_bytes,
                           **({"dram": self.board.describe()["dram"]} if self.memory == "dram" else {})}}

    # ---- pins ----------------------------------------------------------------------
    def _uart(self, platform):
        b = self.board
        if b.uart is None:
            from amaranth_boards.resources import UARTResource
            p = b.uart_pins
            platform.add_resources([UARTResource("host_uart", 0, rx=p["rx"], tx=p["tx"], conn=p["connector"])])
            return platform.request("host_uart", 0)
        return platform.request(*b.uart)

    def _leds(self, platform):
        """Up to four LED outputs (heartbeat, ready, busy, error), or fewer."""
        b = self.board
        outs = []
        if b.leds == "led":
            for i in range(4):
                outs.append(platform.request("led", i).o)
        elif b.leds == "rgb_led":
            colours = ("g", "g", "b", "r")
            for i, col in enumerate(colours):
                try:
                    led = platform.request("rgb_led", i)
                except Exception:       # fewer RGB LEDs than roles (OrangeCrab has one)
                    break
                outs.append(getattr(led, col).o)
        return outs

    def elaborate(self, platform):
        m = Module()
        clk_in = platform.request(platform.default_clk).i
        m.submodules.pll = pll = self.pll
        m.d.comb += pll.clk_in.eq(clk_in)
        m.domains.sync = cd = ClockDomain("sync")
        m.d.comb += cd.clk.eq(pll.clk_out)
        platform.add_clock_constraint(cd.clk, self.clock_mhz * 1e6)
        m.submodules.reset_sync = ResetSynchronizer(~pll.locked, domain="sync")

        m.submodules.hosted = h = self.hosted
        uart = self._uart(platform)
        m.d.comb += [h.uart_rx.eq(uart.rx.i), uart.tx.o.eq(h.uart_tx)]

        ready = Signal()
        if self.memory == "bram":
            m.submodules.bram = bram = self.bram
            connect(m, h.axi_r, bram.axi_r)
            connect(m, h.axi_w, bram.axi_w)
            m.d.comb += ready.eq(~ResetSignal())
        else:                                                   # pragma: no cover (not integrated yet)
            raise AssertionError("unreachable")

        # ---- LEDs ----
        heartbeat = Signal(max(1, int(self.clock_mhz * 1e6).bit_length() - 1))
        m.d.sync += heartbeat.eq(heartbeat + 1)
        error = Signal()
        with m.If(h.framing_error | h.engine.error):
            m.d.sync += error.eq(1)
        for out, value in zip(self._leds(platform), (heartbeat[-1], ready, h.busy, error)):
            m.d.comb += out.eq(value)
        return m


def board_top(board: str | Board, cfg, *, clock_mhz: float | None = None, baud: int = DEFAULT_BAUD,
              memory: str | None = None, bram_bytes: int = DEFAULT_BRAM_BYTES) -> BoardTop:
    """The top for ``cfg`` on ``board``. ``clock_mhz``: the design clock (default
    ``cfg.clock.mhz``); ``memory``: ``bram`` or ``dram`` (default: ``dram`` for a decode
    engine, ``bram`` for a tensor core)."""
    b = get_board(board) if isinstance(board, str) else board
    if memory is None:
        memory = "dram" if cfg.decode is not None else "bram"
    if cfg.decode is not None and memory == "bram":
        raise BoardError("a decode engine streams a model's weights from DRAM: use memory=dram")
    try:
        return BoardTop(b, cfg, clock_mhz=cfg.clock.mhz if clock_mhz is None else clock_mhz, baud=baud,
                        memory=memory, bram_bytes=bram_bytes)
    except LutforgeError:
        raise
    except ValueError as e:
        raise BoardError(f"{b.title}: {e}") from None


__all__ = ["BoardTop", "board_top", "engine_for", "Resource", "ClockSignal"]
