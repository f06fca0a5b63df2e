"""Corrections to amaranth-boards platforms, where its pinout disagrees with the board.

OrangeCrab r0.2: amaranth-boards 0.0.21's ``ddr3`` resource carries the r0.1 bank address
pins and swapped byte-lane strobes / masks. The pins below are those of the r0.2
schematic as litex-boards (``gsd_orangecrab.py``, ``_io_r0_2``) has them, which the
board's own LiteX examples run with: ``ba`` D6 B7 A6; ``dqs`` B15/A16 (lane 0, with dq
C17...A13) and G18/H17 (lane 1); ``dm`` D16 (lane 0) G16 (lane 1).

ButterStick: its SYZYGY I/O banks are unpowered until the FPGA sets their voltage
(:class:`ButterStickVccio`); a top that uses SYZYGY pins (the host link's UART) holds it.
"""

import math

from amaranth.build import Attrs, DiffPairs, Pins, PinsN, Resource, Subsignal
from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import Out
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


class ButterStickVccio(wiring.Component):
    """ButterStick's SYZYGY bank voltages: the board powers its I/O banks A, B, C only when
    the FPGA sets them (buck converters whose feedback node takes a current from a
    sigma-delta DAC the FPGA drives; amaranth-boards' ButterStick platform documents the
    circuit and leaves this to the design). ``pdm`` (Out(3)): the DAC outputs;
    ``en`` (Out(1)): regulator enable, raised after the DAC's filter settled; ``power_good``
    (Out(1)): ~1 ms later, the banks are up.

    Circuit (ButterStick r1.0): feedback 0.6 V, injection resistor 68 kOhm, feedback
    resistor 53.6 kOhm, set resistor 13 kOhm; the control voltage for an output ``v`` is
    ``0.6 (1 + Ri/Rf) + Ri 0.6/Rs - (Ri/Rf) v``, produced as a duty cycle of 3.3 V."""

    VFB, RI, RF, RS = 0.6, 68_000, 53_600, 13_000
    FILTER_HZ = 1 / (2 * math.pi * 68_000 * 0.1e-6)

    def __init__(self, clk_hz: float, volts=(3.3, 3.3, 3.3)):
        for v in volts:
            if not 1.0 <= v <= 3.3:
                raise ValueError(f"ButterStick VCCIO {v} V: allowed 1.0..3.3 V")
        self.clk_hz, self.volts = clk_hz, tuple(volts)
        super().__init__({"pdm": Out(3), "en": Out(1), "power_good": Out(1)})

    def duty(self, v: float) -> float:
        vctl = self.VFB * (1 + self.RI / self.RF) + self.RI * self.VFB / self.RS - self.RI / self.RF * v
        return vctl / 3.3

    def elaborate(self, platform):
        m = Module()
        counter = Signal(10)
        m.d.sync += counter.eq(counter + 1)
        for i, v in enumerate(self.volts):
            m.d.sync += self.pdm[i].eq(counter < int(self.duty(v) * (1 << len(counter))))
        boot = int(4 / self.FILTER_HZ * self.clk_hz)
        soft = int(1e-3 * self.clk_hz)
        t = Signal(range(boot + soft + 1))
        with m.If(t != boot + soft):
            m.d.sync += t.eq(t + 1)
        m.d.comb += [self.en.eq(t >= boot), self.power_good.eq(t == boot + soft)]
        return m
