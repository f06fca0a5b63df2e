"""cocotb test bench that runs a list of GEMMs on the simulation harness.

Run by :func:`sim.gemm_runner.run_gemms` inside the Verilator process; the job file
(``$LUTFORGE_JOB``, JSON) lists each GEMM's memory image (a ``$readmemh`` file), its
command word and the C region to dump. Python wakes only a handful of times per GEMM:
the clock runs in the simulator (cocotb's GPI clock), operands arrive through the
memory backdoor, and the bench sleeps until ``done`` rises.
"""

import json
import os
import shutil
import time
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge, with_timeout

CLOCK_NS = 10


class HarnessTB:
    """Drives ``lutforge_sim_top``: reset, backdoor load/dump, one command at a time."""

    def __init__(self, dut, job):
        self.dut, self.job = dut, job
        self.load_file = Path(job["load_file"])
        self.dump_file = Path(job["dump_file"])

    async def reset(self):
        dut = self.dut
        Clock(dut.clk, CLOCK_NS, unit="ns").start()
        dut.rst.value = 1
        dut.cmd__valid.value = 0
        dut.backdoor_load.value = 0
        dut.backdoor_dump.value = 0
        dut.dump_first.value = 0
        dut.dump_words.value = 0
        await ClockCycles(dut.clk, 4)
        dut.rst.value = 0
        await RisingEdge(dut.clk)

    async def pulse(self, signal):
        """High for exactly one rising edge. Inputs change only at falling edges, so no
        question arises of whether a rising edge saw the old or the new value."""
        await FallingEdge(self.dut.clk)
        signal.value = 1
        await FallingEdge(self.dut.clk)
        signal.value = 0

    async def run_gemm(self, g):
        dut = self.dut
        shutil.copyfile(g["hex"], self.load_file)
        await self.pulse(dut.backdoor_load)
        if not int(dut.cmd__ready.value):
            raise RuntimeError("core not idle before a command")
        dut.cmd__payload.value = g["cmd"]
        # Watch for done before the command goes in: a rejected command finishes in the
        # cycle after it is taken, before pulse() returns.
        finished = cocotb.start_soon(with_timeout(RisingEdge(dut.done), g["timeout_ns"], "ns"))
        t0 = time.perf_counter()
        await self.pulse(dut.cmd__valid)
        await finished
        wall = time.perf_counter() - t0
        counters, status = int(dut.counters.value), int(dut.status.value)
        dut.dump_first.value = g["c_first"]
        dut.dump_words.value = g["c_words"]
        await self.pulse(dut.backdoor_dump)
        dumped = [line.strip() for line in self.dump_file.read_text().splitlines()]
        words = [w for w in dumped if w and not w.startswith(("//", "@"))]
        return {"counters": counters, "status": status, "wall_seconds": wall, "c_words": words}


@cocotb.test()
async def run_job(dut):
    job = json.loads(Path(os.environ["LUTFORGE_JOB"]).read_text())
    tb = HarnessTB(dut, job)
    await tb.reset()
    results = []
    for g in job["gemms"]:
        results.append(await tb.run_gemm(g))
    Path(job["results"]).write_text(json.dumps(results))
