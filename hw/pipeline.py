"""Small structural helpers shared by the gateware: delay lines with a clock enable."""

from amaranth.hdl import Signal, Value


def delay(m, value, cycles: int, en, *, name: str = "dly"):
    """``value`` delayed by ``cycles`` enabled cycles (a chain of registers).

    With ``cycles == 0`` the value itself is returned. Each register loads only when
    ``en`` is high, so a stalled pipeline keeps its alignment.
    """
    value = Value.cast(value)
    for i in range(cycles):
        reg = Signal(value.shape(), name=f"{name}_{i}")
        with m.If(en):
            m.d.sync += reg.eq(value)
        value = reg
    return value
