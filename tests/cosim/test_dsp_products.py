"""Cosim: hw.decode.products elaborated for an ECP5 (MULT18X18D instances with their own
input and output registers, simulated by sim/rtl/ecp5_mult18x18d.sv) under Verilator,
every output word against Python's exact product, cycle by cycle; and the portable
flavour (plain registers and ``*``) through the same bench: both give the same bits at the
same latency.

One design holds every case: Pipe.mul of unsigned x unsigned, signed x signed, signed x
unsigned operands of one to three pieces per side, with LUT-row pieces (``lut_bits``),
a constant operand, and ``registered_product`` of the shapes the matvec lanes and the
attention unit use. Inputs: extreme values (min, max, 0, +-1) then seeded random ones.
"""

import random

import pytest
from amaranth.hdl import Const, Module, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hw.decode.products import Ecp5Target, Pipe, registered_product
from sim.harness import ECP5_MODELS
from sim.vectors import run_vectors

# (name, a shape, b shape or a constant, result shape, lut_bits, kind)
CASES = [
    ("uu_30x25", unsigned(30), unsigned(25), unsigned(55), 0, "pipe"),
    ("ss_26x25", signed(26), signed(25), signed(51), 0, "pipe"),
    ("su_33x18", signed(33), unsigned(18), signed(51), 0, "pipe"),
    ("us_48x16", unsigned(48), signed(16), signed(64), 0, "pipe"),
    ("ss_40x20_rows", signed(40), signed(20), signed(60), 3, "pipe"),     # 3-bit pieces as LUT rows
    ("uc_20xk", unsigned(20), Const(0x5C551D95, 31), unsigned(51), 3, "pipe"),
    ("ss_12x9_lane", signed(12), signed(9), signed(21), 0, "reg"),        # a matvec lane
    ("su_18x17_att", signed(18), unsigned(17), signed(35), 0, "reg"),     # attention, low half
    ("ss_18x15_att", signed(18), signed(15), signed(33), 0, "reg"),       # attention, high half
    ("uu_18x18", unsigned(18), unsigned(18), unsigned(36), 0, "reg"),
    ("uu_8x16_kv", unsigned(8), unsigned(16), unsigned(24), 0, "reg"),    # KV dequantizer
    ("us_17x15_sq", unsigned(17), signed(15), signed(32), 0, "reg"),      # RMSNorm's square
    ("su_16x17_sc", signed(16), unsigned(17), signed(33), 0, "reg"),      # attention s x C
]


class Products(wiring.Component):
    def __init__(self):
        members = {}
        for name, sa, sb, sy, _, _ in CASES:
            members[f"{name}_a"] = In(sa)
            if not isinstance(sb, Const):
                members[f"{name}_b"] = In(sb)
            members[f"{name}_y"] = Out(sy)
        super().__init__(members)
        self.latency = {}

    def elaborate(self, platform):
        m = Module()
        for name, _, sb, sy, lut_bits, kind in CASES:
            a = getattr(self, f"{name}_a")
            b = sb if isinstance(sb, Const) else getattr(self, f"{name}_b")
            if kind == "pipe":
                y, k = Pipe(m, f"{name}_", platform=platform).mul(a, b, 0, name, sy, lut_bits=lut_bits)
            else:
                y, k = registered_product(m, a, b, platform=platform, name=name), 2
            self.latency[name] = k
            m.d.comb += getattr(self, f"{name}_y").eq(y)
        return m


def _range(shape):
    return (-(1 << (shape.width - 1)), (1 << (shape.width - 1)) - 1) if shape.signed else (0, (1 << shape.width) - 1)


def _signed(v, shape):
    return v - (1 << shape.width) if shape.signed and v >> (shape.width - 1) else v


@pytest.mark.parametrize("seed,ecp5", [(3, True), (4, False)])
def test_products_bit_exact(seed, ecp5, tmp_path):
    rng = random.Random(seed)
    n_rand = 300
    dut = Products()
    inputs, want = {}, {}
    for name, sa, sb, sy, _, _ in CASES:
        (alo, ahi) = _range(sa)
        bconst = isinstance(sb, Const)
        (blo, bhi) = (sb.value, sb.value) if bconst else _range(sb)
        edge_a, edge_b = [alo, ahi, 0, 1, -1 if alo < 0 else 2], [blo, bhi, 0, 1, -1 if blo < 0 else 2]
        av = [x for x in edge_a for _ in edge_b] + [rng.randint(alo, ahi) for _ in range(n_rand)]
        bv = [y for _ in edge_a for y in edge_b] + [rng.randint(blo, bhi) for _ in range(n_rand)]
        if bconst:
            bv = [sb.value] * len(av)
        inputs[f"{name}_a"] = [x % (1 << sa.width) for x in av]
        if not bconst:
            inputs[f"{name}_b"] = [y % (1 << sb.width) for y in bv]
        want[name] = [(x * y) for x, y in zip(av, bv)]
    n = max(len(v) for v in inputs.values())
    for k, v in inputs.items():             # pad every port to the longest sequence (zeros)
        inputs[k] = v + [0] * (n - len(v))
    for name in want:
        want[name] += [0] * (n - len(want[name]))
    outputs = [f"{name}_y" for name, *_ in CASES]
    got = run_vectors(dut, inputs, outputs, platform=Ecp5Target() if ecp5 else None,
                      extra_files=[ECP5_MODELS] if ecp5 else [], workdir=tmp_path)
    for name, _, _, sy, _, _ in CASES:
        lat = dut.latency[name]
        ys = got[f"{name}_y"]
        for t in range(lat, n):
            w = want[name][t - lat] % (1 << sy.width)
            assert ys[t] == w, (f"seed {seed}, {'ECP5' if ecp5 else 'portable'} {name}: cycle {t} (inputs of cycle {t - lat}) gave "
                                f"{_signed(ys[t], sy)}, want {_signed(w, sy)}")
