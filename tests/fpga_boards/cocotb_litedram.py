"""cocotb side of test_litedram_sim.py: the LiteDRAM simulation core (the generated controller
over LiteDRAM's DRAM model) behind LiteDRAMCore, initialised by fpga_boards.dram_init over
the Wishbone ctrl port, then driven through the AXI4 port (bursts, IDs, byte strobes).

Signals are driven at falling edges; a handshake is evaluated (ReadOnly) before the rising
edge that completes it."""

import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.task import bridge, resume
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly, RisingEdge

from fpga_boards.dram_init import CDELAY_S, dram_init
from fpga_boards.litedram import generate_litedram


async def _handshake(clk, ready):
    """Values are set (at a falling edge); return after the rising edge that takes them."""
    while True:
        await ReadOnly()
        done = int(ready.value) == 1
        await RisingEdge(clk)
        if done:
            return
        await FallingEdge(clk)


class Master:
    def __init__(self, dut):
        self.dut, self.clk = dut, dut.clk_in
        self.wb_cycles = 0
        self.latencies = []

    async def wb(self, addr, value=None):
        d = self.dut
        await FallingEdge(self.clk)
        d.ctrl__adr.value, d.ctrl__sel.value, d.ctrl__cyc.value, d.ctrl__stb.value = addr, 0xF, 1, 1
        d.ctrl__we.value = int(value is not None)
        d.ctrl__dat_w.value = value or 0
        for _ in range(1000):
            await ReadOnly()
            ack, err, data = int(d.ctrl__ack.value), int(d.ctrl__err.value), int(d.ctrl__dat_r.value)
            await RisingEdge(self.clk)
            self.wb_cycles += 1
            if ack or err:
                break
            await FallingEdge(self.clk)
        else:
            raise AssertionError(f"wishbone word {addr:#x}: no ack in 1000 cycles")
        assert not err, f"wishbone word {addr:#x}: err"
        await FallingEdge(self.clk)
        d.ctrl__cyc.value = d.ctrl__stb.value = d.ctrl__we.value = 0
        return data

    async def axi_write(self, addr, beats, awid, strb=None):
        d = self.dut
        nbytes = len(d.axi_w__wdata) // 8
        await FallingEdge(self.clk)
        d.axi_w__awaddr.value, d.axi_w__awlen.value, d.axi_w__awid.value = addr, len(beats) - 1, awid
        d.axi_w__awsize.value, d.axi_w__awburst.value, d.axi_w__awvalid.value = (nbytes.bit_length() - 1), 1, 1
        await _handshake(self.clk, d.axi_w__awready)
        await FallingEdge(self.clk)
        d.axi_w__awvalid.value = 0
        for i, beat in enumerate(beats):
            d.axi_w__wdata.value, d.axi_w__wlast.value, d.axi_w__wvalid.value = beat, int(i == len(beats) - 1), 1
            d.axi_w__wstrb.value = (1 << nbytes) - 1 if strb is None else strb
            await _handshake(self.clk, d.axi_w__wready)
            await FallingEdge(self.clk)
        d.axi_w__wvalid.value = 0
        d.axi_w__bready.value = 1
        for _ in range(2000):
            await ReadOnly()
            if int(d.axi_w__bvalid.value):
                bid, bresp = int(d.axi_w__bid.value), int(d.axi_w__bresp.value)
                await RisingEdge(self.clk)
                await FallingEdge(self.clk)
                d.axi_w__bready.value = 0
                return bid, bresp
            await FallingEdge(self.clk)
        raise AssertionError(f"AXI write at {addr:#x}: no response")

    async def axi_read(self, addr, n, arid):
        d, nbytes = self.dut, len(self.dut.axi_r__rdata) // 8
        await FallingEdge(self.clk)
        d.axi_r__araddr.value, d.axi_r__arlen.value, d.axi_r__arid.value = addr, n - 1, arid
        d.axi_r__arsize.value, d.axi_r__arburst.value, d.axi_r__arvalid.value = nbytes.bit_length() - 1, 1, 1
        await _handshake(self.clk, d.axi_r__arready)
        await FallingEdge(self.clk)
        d.axi_r__arvalid.value = 0
        d.axi_r__rready.value = 1
        out = []
        for cycle in range(2000 + 100 * n):
            await ReadOnly()
            if int(d.axi_r__rvalid.value):
                if not out:
                    self.latencies.append(cycle + 1)   # rising edges from the AR handshake to the first beat
                out.append((int(d.axi_r__rdata.value), int(d.axi_r__rid.value), int(d.axi_r__rresp.value),
                            int(d.axi_r__rlast.value)))
            await RisingEdge(self.clk)
            await FallingEdge(self.clk)
            if out and out[-1][3]:
                d.axi_r__rready.value = 0
                return out
        raise AssertionError(f"AXI read at {addr:#x}: {len(out)} of {n} beats")


@cocotb.test()
async def init_then_axi(dut):
    board = os.environ["LUTFORGE_DRAM_BOARD"]
    seed = int(os.environ.get("LUTFORGE_SEED", "1"))
    rng = random.Random(seed)
    build = generate_litedram(board, sim=True)     # the AXI port's width: the DUT's (a narrow adapter)
    cocotb.start_soon(Clock(dut.clk_in, 20, unit="ns").start())
    for name in ("ctrl__cyc", "ctrl__stb", "ctrl__we", "axi_r__arvalid", "axi_r__rready", "axi_w__awvalid",
                 "axi_w__wvalid", "axi_w__bready", "rst"):
        getattr(dut, name).value = 0
    await ClockCycles(dut.clk_in, 10)
    m = Master(dut)

    # before init the AXI port is blocked
    await FallingEdge(dut.clk_in)
    dut.axi_r__arvalid.value = 1
    for _ in range(50):
        await ReadOnly()
        assert int(dut.axi_r__arready.value) == 0 and int(dut.init_done.value) == 0
        await FallingEdge(dut.clk_in)
    dut.axi_r__arvalid.value = 0

    class Ctrl:
        read = staticmethod(resume(m.wb))

        @staticmethod
        def write(addr, value):
            resume(m.wb)(addr, value)

    @resume
    async def pause(seconds):
        # cdelay(n) is n iterations of the BIOS's busy loop: n cycles on the fastest CPU
        await ClockCycles(dut.clk_in, max(1, round(seconds / CDELAY_S)))

    report = await bridge(dram_init)(Ctrl(), build, sleep=pause)
    dut._log.info(report.summary() + f"; {m.wb_cycles} wishbone cycles")
    await ClockCycles(dut.clk_in, 2)
    assert int(dut.init_done.value) == 1 and int(dut.init_error.value) == 0

    nbytes = len(dut.axi_r__rdata) // 8
    mem = {}
    bursts = [(0, 1), (0x100, 8), (0x1000 - 4 * nbytes, 4), (build.dram_size - 16 * nbytes, 16), (0x12340 // nbytes * nbytes, 3)]
    for addr, n in bursts:
        beats = [rng.getrandbits(8 * nbytes) for _ in range(n)]
        awid = rng.getrandbits(len(dut.axi_w__awid))
        bid, bresp = await m.axi_write(addr, beats, awid)
        assert (bid, bresp) == (awid, 0), f"write {addr:#x}: bid {bid} bresp {bresp}, sent awid {awid} (seed {seed})"
        for i, b in enumerate(beats):
            mem[addr + i * nbytes] = b
    # byte strobes: only the low half of one beat changes
    a = 0x100 + nbytes
    new = rng.getrandbits(8 * nbytes)
    half = (1 << (nbytes // 2)) - 1
    await m.axi_write(a, [new], 0, strb=half)
    lowmask = (1 << (4 * nbytes)) - 1
    mem[a] = (mem[a] & ~lowmask) | (new & lowmask)
    for addr, n in bursts:
        arid = rng.getrandbits(len(dut.axi_r__arid))
        got = await m.axi_read(addr, n, arid)
        assert len(got) == n, f"read {addr:#x}: {len(got)} beats, expected {n} (seed {seed})"
        for i, (data, rid, rresp, last) in enumerate(got):
            want = mem[addr + i * nbytes]
            assert data == want, f"read {addr:#x} beat {i}: {data:#x} != {want:#x} (seed {seed})"
            assert (rid, rresp, last) == (arid, 0, int(i == n - 1)), f"read {addr:#x} beat {i} (seed {seed})"
    dut._log.info(f"read latency (AR handshake to first R beat, idle controller): {m.latencies} cycles")
