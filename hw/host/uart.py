"""A UART for the host link: 8N1 serial <-> byte streams, one integer clock divisor.

Line format: idle high; a start bit (low), eight data bits least significant first, one
stop bit (high); each bit lasts ``divisor`` clock cycles, so the baud rate is
``clk_hz / divisor`` (:func:`divisor_for` picks the divisor and refuses a rate the clock
cannot make within :data:`BAUD_TOLERANCE`).

:class:`UartTx`: ``data`` (In, stream of bytes) -> ``tx`` (the pin). A byte is taken when
the line is idle or in the last cycle of the previous stop bit, so back-to-back bytes
leave exactly ``10 * divisor`` cycles apart. ``busy`` is high while a byte is on the line.

:class:`UartRx`: ``rx`` (the pin) -> ``data`` (Out, stream of bytes). The pin goes through
a two-flop synchronizer (so the receiver sees it two cycles late). A falling edge starts a
byte; the start bit is sampled again half a bit later (a glitch shorter than that is no
byte), then every bit is sampled once in its middle, ``divisor`` cycles apart. With that
the sampling point drifts by at most half a bit over the 9.5 bits up to the stop bit's
middle: a sender whose rate is off by a few percent is received correctly (tested: ±3 % at
divisor 8, ±3.5 % at divisor 16, back-to-back bytes, edges on whole cycles). A stop bit that
reads low is a framing error: the byte is dropped, ``framing_error`` pulses for one cycle,
and the receiver waits for the line to go high again (a *break*, the line held low, is one
framing error, not a stream of zero bytes). ``data`` holds one byte; a byte completed while
the previous one is still not taken is dropped and pulses ``overrun``. ``busy`` is high
from a start bit until its byte is out (or the line is high again after an error).

Latency: a byte appears on ``rx``'s ``data`` 2 + 9.5 bit times after its start bit's
falling edge (synchronizer, then the stop bit's middle).
"""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

from ref_model.errors import LutforgeError

#: Smallest divisor (clock cycles per bit): the receiver samples half a bit after the edge.
MIN_DIVISOR = 4
#: Largest relative difference between the requested and the achieved baud rate.
BAUD_TOLERANCE = 0.02


def divisor_for(clk_hz: float, baud: float) -> int:
    """The clock divisor (cycles per bit) for ``baud`` at ``clk_hz``; raises
    :class:`~ref_model.errors.LutforgeError` when the nearest integer divisor misses the rate
    by more than :data:`BAUD_TOLERANCE` or is below :data:`MIN_DIVISOR`."""
    if clk_hz <= 0 or baud <= 0:
        raise LutforgeError(f"UART: clock {clk_hz} Hz and baud {baud} must be positive")
    div = max(1, round(clk_hz / baud))
    got = clk_hz / div
    if div < MIN_DIVISOR:
        raise LutforgeError(f"UART: {baud:g} baud needs at least {MIN_DIVISOR} clock cycles per bit; a "
                            f"{clk_hz / 1e6:g} MHz clock allows at most {clk_hz / MIN_DIVISOR:g} baud")
    if abs(got - baud) / baud > BAUD_TOLERANCE:
        raise LutforgeError(f"UART: a {clk_hz / 1e6:g} MHz clock cannot make {baud:g} baud within "
                            f"{BAUD_TOLERANCE:.0%} (divisor {div} gives {got:.0f} baud, off by "
                            f"{abs(got - baud) / baud:.1%}); pick a baud rate near {clk_hz / 1e6:g} MHz / N")
    return div


def _check_divisor(owner, divisor: int) -> int:
    if not isinstance(divisor, int) or divisor < MIN_DIVISOR:
        owner._MustUse__silence = True          # refused: no "created but never used" warning
        raise ValueError(f"UART divisor must be an integer >= {MIN_DIVISOR}, not {divisor!r}")
    return divisor


class UartTx(wiring.Component):
    """8N1 transmitter (see the module docstring). Ports: ``data`` In(stream 8), ``tx``
    Out(1) (the pin, idle high), ``busy`` Out(1)."""

    def __init__(self, divisor: int):
        self.divisor = _check_divisor(self, divisor)
        super().__init__({"data": In(stream.Signature(8)), "tx": Out(1, init=1), "busy": Out(1)})

    def elaborate(self, platform):
        m = Module()
        timer = Signal(range(self.divisor))
        left = Signal(range(10))            # bits still to send after the current one
        shreg = Signal(9)                   # data bits then the stop bit
        sending = Signal()
        last = Signal()                     # the last cycle of the stop bit
        m.d.comb += [last.eq(sending & (left == 0) & (timer == 0)), self.busy.eq(sending),
                     self.data.ready.eq(~sending | last)]
        with m.If(sending):
            m.d.sync += timer.eq(timer - 1)
            with m.If(timer == 0):
                m.d.sync += timer.eq(self.divisor - 1)
                with m.If(left == 0):
                    m.d.sync += sending.eq(0)
                with m.Else():
                    m.d.sync += [self.tx.eq(shreg[0]), shreg.eq(shreg >> 1), left.eq(left - 1)]
        with m.If(self.data.valid & self.data.ready):
            m.d.sync += [self.tx.eq(0), shreg.eq(Cat(self.data.payload, 1)), left.eq(9),
                         timer.eq(self.divisor - 1), sending.eq(1)]
        return m


class UartRx(wiring.Component):
    """8N1 receiver (see the module docstring). Ports: ``rx`` In(1) (the pin),
    ``data`` Out(stream 8), ``framing_error`` Out(1), ``overrun`` Out(1), ``busy`` Out(1)."""

    def __init__(self, divisor: int):
        self.divisor = _check_divisor(self, divisor)
        super().__init__({"rx": In(1, init=1), "data": Out(stream.Signature(8)),
                          "framing_error": Out(1), "overrun": Out(1), "busy": Out(1)})

    def elaborate(self, platform):
        m = Module()
        pin = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.rx, pin, init=1)
        timer = Signal(range(self.divisor))
        nbit = Signal(range(8))
        shreg = Signal(8)
        m.d.comb += self.framing_error.eq(0)
        with m.If(self.data.valid & self.data.ready):
            m.d.sync += self.data.valid.eq(0)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(~pin):
                    m.d.sync += timer.eq(self.divisor // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    m.d.sync += [timer.eq(self.divisor - 1), nbit.eq(0)]
                    with m.If(pin):                 # a glitch, not a start bit
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "DATA"
            with m.State("DATA"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    m.d.sync += [timer.eq(self.divisor - 1), shreg.eq(Cat(shreg[1:], pin)), nbit.eq(nbit + 1)]
                    with m.If(nbit == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    with m.If(pin):
                        with m.If(self.data.valid & ~self.data.ready):
                            m.d.comb += self.overrun.eq(1)
                        with m.Else():
                            m.d.sync += [self.data.payload.eq(shreg), self.data.valid.eq(1)]
                        m.next = "IDLE"
                    with m.Else():
                        m.d.comb += self.framing_error.eq(1)
                        m.next = "BREAK"
            with m.State("BREAK"):                  # wait for the line to be idle again
                m.d.comb += self.busy.eq(1)
                with m.If(pin):
                    m.next = "IDLE"
        return m
