"""cocotb bench of the decode engine: load a memory image, run token programs, dump results.

Run by :func:`sim.decode_runner.run_decode` inside the Verilator process. The job file
(``$LUTFORGE_JOB``) names the image (a ``$readmemh`` file), the program, the tokens and
positions, and the region to dump after each token (logits and trace). Python wakes a few
times per token: the clock runs in the simulator and the bench sleeps until ``busy`` falls.
"""

import json
import os
import shutil
import time
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, with_timeout
from cocotb.utils import get_sim_time

CLOCK_NS = 10


@cocotb.test()
async def run_job(dut):
    job = json.loads(Path(os.environ["LUTFORGE_JOB"]).read_text())
    Clock(dut.clk, CLOCK_NS, unit="ns").start()
    for name in ("start", "backdoor_load", "backdoor_dump", "dump_first", "dump_words", "token", "pos"):
        getattr(dut, name).value = 0
    dut.rst.value = 1
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await FallingEdge(dut.clk)

    async def pulse(signal):
        """A one-cycle pulse; returns the time of the clock edge that takes it."""
        await FallingEdge(dut.clk)
        signal.value = 1
        edge = get_sim_time("ns") + CLOCK_NS / 2
        await FallingEdge(dut.clk)
        signal.value = 0
        return edge

    shutil.copyfile(job["image"], job["load_file"])
    await pulse(dut.backdoor_load)
    dut.program_addr.value = job["program_addr"]
    dut.n_instr.value = job["n_instr"]
    dut.dump_first.value = job["dump_first"]
    dut.dump_words.value = job["dump_words"]
    results = []
    for i, (token, pos) in enumerate(job["steps"]):
        dut.token.value = token
        dut.pos.value = pos
        t0 = time.perf_counter()
        t_start = await pulse(dut.start)
        await with_timeout(FallingEdge(dut.busy), job["timeout_ns"], "ns")
        busy_edges = round((get_sim_time("ns") - t_start) / CLOCK_NS)
        wall = time.perf_counter() - t0
        await FallingEdge(dut.clk)
        res = {"next_token": int(dut.next_token.value), "error": int(dut.error.value),
               "counters": int(dut.counters.value), "busy_edges": busy_edges, "wall_seconds": wall}
        if job["dump_words"]:
            await pulse(dut.backdoor_dump)
            dump = Path(job["dump_file"])
            per_token = dump.with_name(f"{dump.stem}_{i}{dump.suffix}")
            shutil.move(dump, per_token)
            res["dump"] = str(per_token)
        results.append(res)
    Path(job["results"]).write_text(json.dumps(results))
