"""Corrections to amaranth-boards platforms, where its pinout disagrees with the board.

OrangeCrab r0.2: amaranth-boards 0.0.21's ``ddr3`` resource carries the r0.1 bank address
pins and swapped byte-lane strobes / masks. The pins below are those of the r0.2
schematic as litex-boards (``gsd_orangecrab.py``, ``_io_r0_2``) has them, which the
board's own LiteX examples run with: ``ba`` D6 B7 A6; ``dqs`` B15/A16 (lane 0, with dq
C17...A13) and G18/H17 (lane 1); ``dm`` D16 (lane 0) G16 (lane 1).
"""

from amaranth.build import Attrs, DiffPairs, Pins, PinsN, Resource, Subsignal
from amaranth_boards.orangecrab_r0_2 import OrangeCrabR0_2_85FPlatform

_ORANGECRAB_R02_DDR3 = Resource(
    "ddr3", 0,
    Subsignal("rst", PinsN("L18", dir="o")),
    Subsignal("clk", DiffPairs("J18", "K18", dir="o"), Attrs(IO_TYPE="SSTL135D_I")),
    Subsignal("clk_en", Pins("D18", dir="o")),
    Subsignal("cs", PinsN("A12", dir="o")),
    Subsignal("we", PinsN("B12", dir="o")),
    Subsignal("ras", PinsN("C12", dir="o")),
    Subsignal("cas", PinsN("D13", dir="o")),
    Subsignal("a", Pins("C4 D2 D3 A3 A4 D4 C3 B2 B1 D1 A7 C2 B6 C1 A2 C7", dir="o")),
    Subsignal("ba", Pins("D6 B7 A6", dir="o")),
    Subsignal("dqs", DiffPairs("B15 G18", "A16 H17", dir="io"),
              Attrs(IO_TYPE="SSTL135D_I", TERMINATION="OFF", DIFFRESISTOR="100")),
    Subsignal("dq", Pins("C17 D15 B17 C16 A15 B13 A17 A13 F17 F16 G15 F15 J16 C18 H16 F18", dir="io"),
              Attrs(TERMINATION="OFF")),
    Subsignal("dm", Pins("D16 G16", dir="o")),
    Subsignal("odt", Pins("C13", dir="o")),
    Attrs(IO_TYPE="SSTL135_I", SLEWRATE="FAST"),
)


class OrangeCrabR02_85F(OrangeCrabR0_2_85FPlatform):
    """OrangeCrab r0.2 85F with the r0.2 DDR3 pinout (see the module docstring)."""

    resources = [r for r in OrangeCrabR0_2_85FPlatform.resources if r.name != "ddr3"] + [_ORANGECRAB_R02_DDR3]
