"""rtl_gen.dsp_count: the per-unit MULT18X18D estimate from the elaborated design."""

from amaranth.hdl import Module, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hw.decode.products import lut_mul
from rtl_gen.dsp_count import count_muls, format_counts
from rtl_gen.generate import emit_verilog


class _Inner(wiring.Component):
    def __init__(self):
        super().__init__({"a": In(signed(12)), "b": In(signed(9)), "c": In(32), "y": Out(signed(21)),
                          "z": Out(50), "w": Out(21)})

    def elaborate(self, platform):
        m = Module()
        m.d.comb += [self.y.eq(self.a * self.b), self.z.eq(self.c * self.b.as_unsigned()),
                     self.w.eq(lut_mul(self.a, self.b))]
        return m


class _Top(wiring.Component):
    def __init__(self):
        super().__init__({"a": In(signed(12)), "b": In(signed(9)), "c": In(32), "y": Out(signed(21)),
                          "z": Out(50), "w": Out(21)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.unit = u = _Inner()
        m.d.comb += [u.a.eq(self.a), u.b.eq(self.b), u.c.eq(self.c), self.y.eq(u.y), self.z.eq(u.z),
                     self.w.eq(u.w)]
        return m


def test_count_per_unit():
    res = count_muls(emit_verilog(_Top(), "top"), "top")
    # 12 x 9: one MULT18X18D; 32 x 9: two; the lut_mul product: none
    assert sorted(res["products"]) == [("unit", 12, 9, 1), ("unit", 32, 9, 2)]
    assert res["per_unit"] == {"unit": 3} and res["total"] == 3 and res["synth_dsp"] is None
    assert "estimate: 3 MULT18X18D" in format_counts(res)
