"""Multiply-accumulate processing elements of the systolic arrays.

Numerics (both PEs): the product of an ``act``-format and a ``weight``-format integer is
exact (``act.bits + weight.bits`` bits, signed if either operand is); sums are kept in a
signed ``acc_bits`` register and wrap modulo 2**acc_bits, which is what
:func:`ref_model.gemm.systolic_gemm` computes.

Multipliers: ``use_dsp=True`` writes ``a * w`` so that Yosys maps it to a DSP block
(one MULT18X18D on ECP5); ``use_dsp=False`` writes the product as a sum of shifted
partial products, which Yosys builds from LUTs and carry chains. The generator chooses per
PE so that an array larger than the part's DSP count still fits.
"""

from amaranth.hdl import Module, Mux, Shape, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out


def product_shape(act_shape: Shape, weight_shape: Shape) -> Shape:
    """Exact product shape: n + m bits, signed if either operand is (ref_model.formats.product_format)."""
    width = act_shape.width + weight_shape.width
    return signed(width) if (act_shape.signed or weight_shape.signed) else Shape(width)


def multiply(a, w, *, product_shape: Shape, use_dsp: bool):
    """Exact product of ``a`` and ``w`` (Amaranth values with their own signedness)."""
    if use_dsp:
        return (a * w).as_signed() if product_shape.signed else a * w
    wa = Shape.cast(w.shape())
    terms = []
    for i in range(wa.width):
        term = Mux(w[i], a << i, 0)
        # The top bit of a two's-complement weight weighs -2^(n-1).
        if wa.signed and i == wa.width - 1:
            term = -term
        terms.append(term)
    total = terms[0]
    for t in terms[1:]:
        total = total + t
    return total


class OutputStationaryPE(wiring.Component):
    """One PE of the output-stationary array.

    Activations (with their ``valid``/``first``/``last`` flags) enter from the left and
    leave right one cycle later; weights enter from the top and leave below one cycle
    later. The product is registered; one cycle later, on a valid step, the accumulator
    becomes ``(first ? 0 : acc) + a*w``; on the ``last`` step of a tile that sum is also
    dropped into the output chain register, which otherwise takes the value of the chain
    register below it (results move up one row per cycle). Everything holds while ``en``
    is low. Latency from operands in to the chain: 2 cycles.
    """

    def __init__(self, *, act_shape, weight_shape, acc_bits: int, use_dsp: bool):
        self.act_shape, self.weight_shape = Shape.cast(act_shape), Shape.cast(weight_shape)
        self.acc_bits, self.use_dsp = acc_bits, use_dsp
        super().__init__({
            "en": In(1),
            "a_in": In(self.act_shape), "valid_in": In(1), "first_in": In(1), "last_in": In(1),
            "w_in": In(self.weight_shape),
            "a_out": Out(self.act_shape), "valid_out": Out(1), "first_out": Out(1), "last_out": Out(1),
            "w_out": Out(self.weight_shape),
            "chain_in": In(signed(acc_bits)), "chain_valid_in": In(1),
            "chain_out": Out(signed(acc_bits)), "chain_valid_out": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        # Stage 1 registers the product (DSP output register, or the end of the LUT
        # adder tree) with the flags; stage 2 accumulates. Every PE has the same extra
        # cycle, so the array's skew is unchanged.
        prod = Signal(product_shape(self.act_shape, self.weight_shape))
        valid, first, last = Signal(), Signal(), Signal()
        acc = Signal(signed(self.acc_bits))
        total = Signal(signed(self.acc_bits))
        m.d.comb += total.eq(Mux(first, 0, acc) + prod)
        with m.If(self.en):
            m.d.sync += [
                prod.eq(multiply(self.a_in, self.w_in, product_shape=prod.shape(), use_dsp=self.use_dsp)),
                valid.eq(self.valid_in), first.eq(self.first_in), last.eq(self.last_in),
                self.a_out.eq(self.a_in), self.valid_out.eq(self.valid_in),
                self.first_out.eq(self.first_in), self.last_out.eq(self.last_in),
                self.w_out.eq(self.w_in),
            ]
            with m.If(valid):
                m.d.sync += acc.eq(total)
            with m.If(valid & last):
                m.d.sync += [self.chain_out.eq(total), self.chain_valid_out.eq(1)]
            with m.Else():
                m.d.sync += [self.chain_out.eq(self.chain_in), self.chain_valid_out.eq(self.chain_valid_in)]
        return m


class WeightStationaryPE(wiring.Component):
    """One PE of the weight-stationary array.

    The PE holds an active weight and a shadow weight. Shadow weights form a chain down
    each column and shift when ``shift`` is high (loading the next block while the current
    one computes). An activation arriving with ``swap`` set first copies the shadow into
    the active weight and is multiplied by it; this flag travels with the activations, so
    the switch sweeps the array as a wavefront. Partial sums flow down:
    ``psum_out = psum_in + a*w`` (wrapping at ``acc_bits``), one cycle per PE.
    """

    def __init__(self, *, act_shape, weight_shape, acc_bits: int, use_dsp: bool):
        self.act_shape, self.weight_shape = Shape.cast(act_shape), Shape.cast(weight_shape)
        self.acc_bits, self.use_dsp = acc_bits, use_dsp
        super().__init__({
            "en": In(1), "shift": In(1),
            "a_in": In(self.act_shape), "valid_in": In(1), "swap_in": In(1),
            "a_out": Out(self.act_shape), "valid_out": Out(1), "swap_out": Out(1),
            "shadow_in": In(self.weight_shape), "shadow_out": Out(self.weight_shape),
            "psum_in": In(signed(acc_bits)), "psum_out": Out(signed(acc_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        active = Signal(self.weight_shape)
        weight = Signal(self.weight_shape)
        swapping = self.valid_in & self.swap_in
        m.d.comb += weight.eq(Mux(swapping, self.shadow_out, active))
        # The product is registered (one cycle, as in every PE of the column, so the
        # partial sum from above arrives in step with it).
        prod = Signal(product_shape(self.act_shape, self.weight_shape))
        with m.If(self.en):
            m.d.sync += [
                prod.eq(multiply(self.a_in, weight, product_shape=prod.shape(), use_dsp=self.use_dsp)),
                self.a_out.eq(self.a_in), self.valid_out.eq(self.valid_in), self.swap_out.eq(self.swap_in),
                self.psum_out.eq(self.psum_in + prod),
            ]
            with m.If(swapping):
                m.d.sync += active.eq(self.shadow_out)
            with m.If(self.shift):
                m.d.sync += self.shadow_out.eq(self.shadow_in)
        return m
