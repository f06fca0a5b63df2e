"""ECP5 PLL (EHXPLLL): divider search and the primitive instance.

:func:`pll_params` finds integer dividers for a requested output frequency from an input
clock within the ECP5 limits (Lattice TN1263 / FPGA-DS-02012: PFD 3.125-400 MHz, VCO
400-800 MHz, outputs 3.125-400 MHz, CLKI_DIV / CLKFB_DIV 1-128, output dividers 1-128),
preferring an exact frequency, then the highest VCO (least jitter). The feedback comes
from CLKOP, so f_out = f_in x CLKFB_DIV / CLKI_DIV and f_vco = f_out x CLKOP_DIV.

:class:`EcpPll` instantiates EHXPLLL for one output and its ``locked`` signal. A
frequency no divider set reaches within ``tolerance`` is a :class:`PllError` that names
the closest one.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Instance, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ref_model.errors import LutforgeError

PFD_MHZ = (3.125, 400.0)
VCO_MHZ = (400.0, 800.0)
OUT_MHZ = (3.125, 400.0)
DIV_MAX = 128


class PllError(LutforgeError):
    """No EHXPLLL divider setting gives the requested clock."""


@dataclass(frozen=True)
class PllParams:
    f_in_mhz: float
    clki_div: int
    clkfb_div: int
    clkop_div: int

    @property
    def f_out_mhz(self) -> float:
        return self.f_in_mhz * self.clkfb_div / self.clki_div

    @property
    def f_vco_mhz(self) -> float:
        return self.f_out_mhz * self.clkop_div


def pll_params(f_in_mhz: float, f_out_mhz: float, *, tolerance: float = 0.01) -> PllParams:
    """Dividers for ``f_out_mhz`` from ``f_in_mhz`` (relative ``tolerance``)."""
    if not (OUT_MHZ[0] <= f_out_mhz <= OUT_MHZ[1]):
        raise PllError(f"PLL output {f_out_mhz:g} MHz is outside the ECP5 range "
                       f"{OUT_MHZ[0]:g}-{OUT_MHZ[1]:g} MHz")
    best, best_key = None, None
    for ci in range(1, DIV_MAX + 1):
        pfd = f_in_mhz / ci
        if pfd < PFD_MHZ[0]:
            break
        if pfd > PFD_MHZ[1]:
            continue
        for fb in range(1, DIV_MAX + 1):
            fo = pfd * fb
            if fo > OUT_MHZ[1]:
                break
            op_lo = max(1, int(VCO_MHZ[0] // fo))
            for op in range(op_lo, DIV_MAX + 1):
                vco = fo * op
                if vco > VCO_MHZ[1]:
                    break
                if vco < VCO_MHZ[0]:
                    continue
                key = (abs(fo - f_out_mhz), -vco)
                if best_key is None or key < best_key:
                    best, best_key = PllParams(f_in_mhz, ci, fb, op), key
    if best is None or abs(best.f_out_mhz - f_out_mhz) > tolerance * f_out_mhz:
        near = f" (closest: {best.f_out_mhz:.3f} MHz)" if best else ""
        raise PllError(f"the ECP5 PLL cannot make {f_out_mhz:g} MHz from {f_in_mhz:g} MHz within "
                       f"{tolerance:.1%}{near}")
    return best


class EcpPll(wiring.Component):
    """One EHXPLLL with its feedback from CLKOP.

    ``clk_in``: In(1), the reference clock; ``clk_out``: Out(1), ``params.f_out_mhz``;
    ``locked``: Out(1). Lock takes up to ~1 ms after configuration; hold the design in reset
    until then (:mod:`fpga_boards.top` does)."""

    def __init__(self, f_in_mhz: float, f_out_mhz: float, *, tolerance: float = 0.01):
        self.params = pll_params(f_in_mhz, f_out_mhz, tolerance=tolerance)
        super().__init__({"clk_in": In(1), "clk_out": Out(1), "locked": Out(1)})

    def elaborate(self, platform):
        m = Module()
        p = self.params
        clkop = Signal()
        m.submodules.pll = Instance(
            "EHXPLLL",
            a_FREQUENCY_PIN_CLKI=f"{p.f_in_mhz:g}",
            a_FREQUENCY_PIN_CLKOP=f"{p.f_out_mhz:g}",
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1", a_MFG_GMCREF_SEL="2",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA",
            p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=p.clkop_div, p_CLKOP_CPHASE=p.clkop_div - 1,
            p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP", p_CLKFB_DIV=p.clkfb_div, p_CLKI_DIV=p.clki_div,
            i_CLKI=self.clk_in, i_CLKFB=clkop, i_RST=0, i_STDBY=0, i_PHASESEL0=0, i_PHASESEL1=0,
            i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1, i_PLLWAKESYNC=0, i_ENCLKOP=0,
            o_CLKOP=clkop, o_LOCK=self.locked,
        )
        m.d.comb += self.clk_out.eq(clkop)
        return m
