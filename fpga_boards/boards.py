"""The board registry: which amaranth-boards platform, which part, which memory, which pins.

A :class:`Board` names everything a bitstream build needs to know about a board and
nothing else: the amaranth-boards platform class (device, package, speed grade, clock
input and pin resources all come from it), the external memory (a DRAM chip of LiteDRAM's
module table and the PHY that drives it), the host link's UART pins and the
openFPGALoader arguments that program it.

Memory facts are derived, never restated:

* data bus width: the number of ``dq`` pins of the platform's ``ddr3`` / ``sdram``
  resource;
* size: the geometry (banks x rows x columns x bus width) of the LiteDRAM module
  (``litedram.modules``) the board's LiteDRAM description names;
* controller clock: that description's ``sys_clk_freq``;
* peak bandwidth: bus bytes x transfers per controller cycle x controller clock
  (ECP5 DDR3 PHY: 1:2 clock ratio, double data rate: 4 transfers per cycle; SDR SDRAM: 1).

:func:`check_model_fits` says whether a model's weights, KV cache and program fit the
board's memory, with a message that names the shortfall.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass, field

from .litedram import BoardError  # the one error class of board problems (re-exported)

__all__ = ["BOARDS", "Board", "BoardError", "Dram", "check_model_fits", "get_board"]


@dataclass(frozen=True)
class Dram:
    """A board's external memory as LiteDRAM describes it.

    ``description``: the stem of the board's LiteDRAM build description
    (``fpga_boards/litedram/NAME.yml``), whose ``sdram_module``, ``sdram_phy`` and
    ``sys_clk_freq`` win over ``module`` / ``phy`` / ``sys_clk_mhz`` here (those only
    stand in while no description is shipped); ``module``: LiteDRAM module class
    (``litedram.modules``); ``phy``: the LiteDRAM PHY; ``resource``: the platform
    resource holding its pins; ``sys_clk_mhz``: controller clock."""

    description: str
    module: str
    phy: str
    resource: str
    sys_clk_mhz: float


@dataclass(frozen=True)
class Board:
    name: str
    title: str
    platform: str                       # "module:Class" in amaranth_boards, or a dotted module path
    dram: Dram
    uart: tuple[str, int] | None        # platform resource of the host link's UART
    uart_pins: dict | None = None       # (rx, tx, connector) when the board has no UART resource
    loader: tuple[str, ...] = ()        # openFPGALoader arguments that select the board/cable
    dfu: bool = False                   # programmed through a USB DFU bootloader (flash only, no SRAM load)
    platform_kwargs: dict = field(default_factory=dict)
    leds: str = "led"                   # "led" (LEDResources) or "rgb_led"
    notes: str = ""
    #: The stem of the board's LiteEth description (``fpga_boards/liteeth/NAME.yml``): the
    #: board has Ethernet and can carry the host link over UDP (``link="udp"``).
    ethernet: str | None = None

    # ---- the platform --------------------------------------------------------------
    def platform_class(self):
        module, cls = self.platform.split(":")
        return getattr(importlib.import_module(module if "." in module else f"amaranth_boards.{module}"), cls)

    def make_platform(self):
        return self.platform_class()(**self.platform_kwargs)

    @property
    def device(self) -> str:
        return self.platform_class().device

    @property
    def package(self) -> str:
        return self.platform_class().package

    @property
    def speed(self) -> str:
        return self.platform_class().speed

    @property
    def clock_in_hz(self) -> float:
        """Frequency of the platform's default clock input."""
        p = self.make_platform()
        return float(p.lookup(p.default_clk).clock.frequency)

    # ---- the memory ----------------------------------------------------------------
    @property
    def dram_bus_bits(self) -> int:
        """Width of the DRAM data bus: the ``dq`` pins of the platform resource."""
        p = self.make_platform()
        res = p.lookup(self.dram.resource, 0)
        for sub in res.ios:
            if getattr(sub, "name", None) == "dq":
                return len(sub.ios[0].names)
        raise BoardError(f"board {self.name}: resource {self.dram.resource!r} has no dq pins")

    @property
    def dram_description(self) -> dict:
        """The board's LiteDRAM build description ({} when none is shipped)."""
        return _litedram_yml(self.dram.description) or {}

    @property
    def dram_module_name(self) -> str:
        return self.dram_description.get("sdram_module", self.dram.module)

    @property
    def dram_phy(self) -> str:
        return self.dram_description.get("sdram_phy", self.dram.phy)

    @property
    def dram_module(self):
        import litedram.modules
        return getattr(litedram.modules, self.dram_module_name)

    @property
    def dram_bytes(self) -> int:
        """Capacity from the LiteDRAM module's geometry and the board's bus width."""
        mod = self.dram_module
        return mod.nbanks * mod.nrows * mod.ncols * self.dram_bus_bits // 8

    @property
    def dram_sys_clk_mhz(self) -> float:
        """Controller clock: the board's LiteDRAM description (``sys_clk_freq``) if one
        is shipped, else the registry's value."""
        desc = self.dram_description
        if "sys_clk_freq" in desc:
            return float(desc["sys_clk_freq"]) / 1e6   # YAML reads "75e6" as a string
        return self.dram.sys_clk_mhz

    @property
    def transfers_per_cycle(self) -> int:
        return {"ECP5DDRPHY": 4, "GENSDRPHY": 1}[self.dram_phy]

    @property
    def dram_peak_bytes_per_s(self) -> float:
        return self.dram_bus_bits / 8 * self.transfers_per_cycle * self.dram_sys_clk_mhz * 1e6

    def describe(self) -> dict:
        return {"board": self.name, "title": self.title, "device": self.device, "package": self.package,
                "speed": self.speed, "clock_in_mhz": self.clock_in_hz / 1e6,
                "dram": {"module": self.dram_module_name, "phy": self.dram_phy, "bus_bits": self.dram_bus_bits,
                         "bytes": self.dram_bytes, "sys_clk_mhz": self.dram_sys_clk_mhz,
                         "peak_mb_per_s": round(self.dram_peak_bytes_per_s / 1e6, 1)},
                "ethernet": self.ethernet, "notes": self.notes}


@functools.cache
def _litedram_yml(stem: str) -> dict | None:
    from pathlib import Path

    import yaml
    path = Path(__file__).parent / "litedram" / f"{stem}.yml"
    if not path.is_file():
        return None
    return yaml.safe_load(path.read_text())


BOARDS: dict[str, Board] = {b.name: b for b in (
    Board("ecpix5-85", "LambdaConcept ECPIX-5 85F", "ecpix5:ECPIX585Platform",
          Dram("ecpix5", "MT41K256M16", "ECP5DDRPHY", "ddr3", 75.0),
          uart=("uart", 0), loader=("-b", "ecpix5"), leds="rgb_led", ethernet="ecpix5",
          notes="UART over the FT2232's second channel (the JTAG cable's USB port); or the host link over "
                "UDP on its gigabit Ethernet port (--link udp)"),
    Board("butterstick", "ButterStick r1.0 (85F)", "butterstick:ButterStickPlatform",
          Dram("butterstick", "MT41K256M16", "ECP5DDRPHY", "ddr3", 75.0),
          uart=None, uart_pins={"connector": ("syzygy", 0), "rx": "S16", "tx": "S17"},
          loader=("--dfu", "--vid", "0x1209", "--pid", "0x5af1", "--altsetting", "0"), dfu=True, leds="none",
          notes="no UART on the board: the host link's UART is on SYZYGY port 0 (S16 rx, S17 tx), "
                "e.g. through a 3.3 V USB-serial adapter; programmed over its USB DFU bootloader (1209:5af1); "
                "or the host link over UDP on its gigabit Ethernet port (--link udp)", ethernet="butterstick"),
    Board("orangecrab-85", "OrangeCrab r0.2 85F", "fpga_boards.platforms:OrangeCrabR02_85F",
          Dram("orangecrab", "MT41K256M16", "ECP5DDRPHY", "ddr3", 48.0),
          uart=None, uart_pins={"connector": ("io", 0), "rx": "0", "tx": "1"},
          loader=("-b", "orangeCrab"), dfu=True, leds="rgb_led",
          notes="no UART on the board: the host link's UART is on the feather header (pins 0 rx, 1 tx); "
                "programmed over its USB DFU bootloader; DDR3 pins corrected to r0.2 (fpga_boards/platforms.py)"),
    Board("ulx3s-85", "Radiona ULX3S 85F", "ulx3s:ULX3S_85F_Platform",
          Dram("ulx3s", "MT48LC16M16", "GENSDRPHY", "sdram", 50.0),
          uart=("uart", 0), loader=("-b", "ulx3s"), leds="led",
          notes="32 MB SDRAM: tensor cores and small models only; the tensor-core top keeps its working "
                "memory in block RAM"),
)}


def get_board(name: str) -> Board:
    try:
        return BOARDS[name]
    except KeyError:
        raise BoardError(f"unknown board {name!r}; allowed: {', '.join(BOARDS)}") from None


def check_model_fits(board: Board | str, need_bytes: int, *, what: str = "the model") -> None:
    """Raise :class:`BoardError` if ``need_bytes`` (weights + KV cache + program) exceed the
    board's external memory."""
    b = get_board(board) if isinstance(board, str) else board
    have = b.dram_bytes
    if need_bytes > have:
        raise BoardError(f"{what} needs {need_bytes / 2**20:.1f} MiB of memory; {b.title} has "
                         f"{have / 2**20:.0f} MiB of {b.dram_module_name} "
                         f"({need_bytes - have:,} bytes over): use a board with more memory "
                         f"({', '.join(x.name for x in BOARDS.values() if x.dram_bytes >= need_bytes) or 'none'})")
