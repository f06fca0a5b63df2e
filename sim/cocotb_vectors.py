"""cocotb bench that streams input vectors into a clocked design and records its outputs.

Run inside the Verilator process by :func:`sim.vectors.run_vectors`. The job file
(``$LUTFORGE_JOB``) names the input ports and one value per port per cycle, and the
output ports to sample; after reset the bench applies cycle ``t``'s inputs after the
falling edge and samples every output just before the next rising edge (so an output of
latency ``L`` registers holds the function of cycle ``t - L``'s inputs at cycle ``t``).
Results: ``{port: [value per cycle]}`` (raw unsigned bits) in ``results``.
"""

import json
import os
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge, Timer

CLOCK_NS = 10


@cocotb.test()
async def run_job(dut):
    job = json.loads(Path(os.environ["LUTFORGE_JOB"]).read_text())
    Clock(dut.clk, CLOCK_NS, unit="ns").start()
    inputs, outputs = job["inputs"], job["outputs"]
    for name in inputs:
        getattr(dut, name).value = 0
    dut.rst.value = 1
    await ClockCycles(dut.clk, 3)
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    n = len(next(iter(inputs.values()))) if inputs else 0
    got = {name: [] for name in outputs}
    for t in range(n):
        for name, values in inputs.items():
            getattr(dut, name).value = values[t]
        await Timer(CLOCK_NS // 2 - 1, unit="ns")      # just before the rising edge
        for name in outputs:
            got[name].append(int(getattr(dut, name).value))
        await RisingEdge(dut.clk)
        await FallingEdge(dut.clk)
    Path(job["results"]).write_text(json.dumps(got))
