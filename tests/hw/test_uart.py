"""hw/host/uart.py in the Amaranth simulator: transmitter timing and loopback, the receiver
against a bit-banged line whose baud rate is off by up to ±3 %, back-to-back bytes,
glitches, framing errors and a break; divisor_for's rate check."""

from __future__ import annotations

import random

import pytest
from amaranth.hdl import Module
from amaranth.sim import Simulator

from hw.host.uart import UartRx, UartTx, divisor_for
from ref_model.errors import LutforgeError


def _line(bits_per_byte):
    """Levels of a stream of 8N1 frames (start 0, data LSB first, stop 1) per byte."""
    def frame(b):
        return [0] + [(b >> i) & 1 for i in range(8)] + [1]
    return frame


def _rx_run(divisor: int, segments: list[tuple[int, float]], *, tail: int = 200):
    """Drive ``rx`` with (level, duration in cycles, fractional) segments; collect bytes,
    framing errors and overruns."""
    dut = UartRx(divisor)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    got, errors = [], []

    async def drive(ctx):
        t, now = 0.0, 0
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(5)
        for level, dur in segments:
            ctx.set(dut.rx, level)
            t += dur
            n = round(t) - now          # edges at rounded positions: timing error < 1 cycle
            now += n
            if n > 0:
                await ctx.tick().repeat(n)
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(tail)

    async def watch(ctx):
        ctx.set(dut.data.ready, 1)
        while True:
            _, _, valid, payload, ferr = await ctx.tick().sample(dut.data.valid, dut.data.payload, dut.framing_error)
            if valid:
                got.append(payload)
            if ferr:
                errors.append(len(got))

    sim.add_testbench(drive)
    sim.add_testbench(watch, background=True)
    sim.run()
    return got, errors


def _segments(data: bytes, period: float, *, gap: float = 0.0):
    segs = []
    for b in data:
        for level in [0] + [(b >> i) & 1 for i in range(8)] + [1]:
            segs.append((level, period))
        if gap:
            segs.append((1, gap))
    return segs


@pytest.mark.parametrize("divisor,err", [(8, 0.0), (8, 0.02), (8, -0.02), (8, 0.03), (8, -0.03),
                                         (16, 0.035), (16, -0.035), (13, 0.02)])
def test_rx_tolerates_baud_mismatch(divisor, err):
    data = random.Random(divisor * 100 + int(err * 1000)).randbytes(40) + b"\x00\xff\x55\xaa"
    got, errors = _rx_run(divisor, _segments(data, divisor * (1 + err)))      # back to back
    assert bytes(got) == data and not errors, f"divisor {divisor}, rate off by {err:+.0%}"


def test_rx_glitch_framing_error_and_break():
    d = 8
    segs = [(0, 2), (1, 40)]                                  # a glitch: no byte
    segs += _segments(b"\x41", d)
    segs += [(0, d)] + [(1, d)] * 8 + [(0, d), (1, 3 * d)]     # stop bit low: framing error
    segs += _segments(b"\x42", d)
    segs += [(0, 30 * d), (1, 2 * d)]                         # a break: one framing error
    segs += _segments(b"\x43\x44", d)
    got, errors = _rx_run(d, segs)
    assert bytes(got) == b"\x41\x42\x43\x44"
    assert errors == [1, 2], errors


def test_rx_overrun_keeps_the_first_byte():
    dut = UartRx(8)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    overruns = []

    async def bench(ctx):
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(4)
        for level, n in _segments(b"\x11\x22", 8):
            ctx.set(dut.rx, level)
            await ctx.tick().repeat(int(n))
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(20)
        assert ctx.get(dut.data.valid) and ctx.get(dut.data.payload) == 0x11

    async def watch(ctx):
        while True:
            _, _, ov = await ctx.tick().sample(dut.overrun)
            overruns.append(ov)
    sim.add_testbench(bench)
    sim.add_testbench(watch, background=True)
    sim.run()
    assert sum(overruns) == 1


@pytest.mark.parametrize("divisor", [4, 8, 11])
def test_tx_timing_and_loopback(divisor):
    """Bytes offered back to back leave exactly 10 bit times apart with the right levels,
    and the receiver gets them back."""
    data = random.Random(divisor).randbytes(24)
    m = Module()
    m.submodules.tx = tx = UartTx(divisor)
    m.submodules.rx = rx = UartRx(divisor)
    m.d.comb += rx.rx.eq(tx.tx)
    sim = Simulator(m)
    sim.add_clock(1e-8)
    levels, got = [], []

    async def feed(ctx):
        for b in data:
            ctx.set(tx.data.payload, b)
            ctx.set(tx.data.valid, 1)
            await ctx.tick().until(tx.data.ready)
        ctx.set(tx.data.valid, 0)

    async def watch(ctx):
        ctx.set(rx.data.ready, 1)
        for _ in range(10 * divisor * len(data) + 100):
            _, _, pin, valid, payload = await ctx.tick().sample(tx.tx, rx.data.valid, rx.data.payload)
            levels.append(pin)
            if valid:
                got.append(payload)

    sim.add_testbench(feed, background=True)
    sim.add_testbench(watch)
    sim.run()
    assert bytes(got) == data
    start = levels.index(0)
    frame = _line(10)
    want = [lv for b in data for lv in frame(b) for _ in range(divisor)]
    assert levels[start:start + len(want)] == want
    assert all(levels[start + len(want):])


def test_divisor_for():
    assert divisor_for(100e6, 3e6) == 33                     # 3.03 Mbaud, 1 % off
    assert divisor_for(48e6, 115200) == 417
    assert divisor_for(25e6, 3125000) == 8
    with pytest.raises(LutforgeError, match="cannot make 7e\\+06 baud within 2%"):
        divisor_for(50e6, 7e6)                               # divisor 7: 7.14 Mbaud, 2.0 % off
    with pytest.raises(LutforgeError, match="at least 4 clock cycles per bit"):
        divisor_for(10e6, 3e6)
    with pytest.raises(ValueError, match="divisor must be an integer >= 4"):
        UartRx(2)
