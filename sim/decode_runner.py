"""Run compiled token programs on the decode engine under Verilator (cocotb), read results.

:func:`run_decode` builds (or reuses, by hash) the Verilator model of
:class:`sim.decode_harness.DecodeHarness`, loads the program's memory image through the
memory model's backdoor, runs one token program per step and returns, per token, the
next token (ARGMAX), the engine's counters, and the logits and per-layer residuals the
program STOREd (read back through the backdoor).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hw.decode.engine import EngineCounters
from hw.decode.products import Ecp5Target
from ref_model.errors import SimulationError
from rtl_gen.generate import emit_verilog

from . import verilator
from .decode_harness import DECODE_TOP, DecodeHarness
from .harness import ECP5_MODELS, MEMORY_MODEL
from .memfile import hex_lines, read_dump


@dataclass
class TokenRun:
    next_token: int
    counters: dict[str, int]
    logits: torch.Tensor            # (vocab,) int32 Q.F
    residuals: torch.Tensor | None  # (n_layers, dim) int32, when the program traces
    wall_seconds: float
    busy_edges: int                 # clock edges from the one that took ``start`` to ``busy``'s fall


def _fields(layout, value: int) -> dict[str, int]:
    return {name: (value >> f.offset) & ((1 << f.width) - 1) for name, f in layout}


def build_decode_model(limits, numerics, tables, *, sim, data_bits: int = 128,
                       ecp5: bool = False) -> verilator.Model:
    """``ecp5``: the engine as elaborated for an ECP5 (what ``lutforge report`` and the board
    builds synthesize: products as MULT18X18D instances, simulated by
    ``sim/rtl/ecp5_mult18x18d.sv``) instead of portable Verilog."""
    platform = Ecp5Target() if ecp5 else None
    text = emit_verilog(DecodeHarness(limits, numerics, tables, sim=sim, data_bits=data_bits), DECODE_TOP,
                        platform=platform)
    extra = [MEMORY_MODEL] + ([ECP5_MODELS] if ecp5 else [])
    return verilator.build({f"{DECODE_TOP}.v": text}, DECODE_TOP, extra_files=extra)


def run_decode(prog, limits, tables, steps: list[tuple[int, int]], *, sim, data_bits: int = 128,
               workdir: Path | None = None, timeout_cycles: int = 50_000_000, ecp5: bool = False) -> list[TokenRun]:
    """Run ``steps`` ((token, position) pairs) of the compiled program ``prog``
    (:class:`host_runtime.decode_program.DecodeProgram`) on the engine (``ecp5``: as
    :func:`build_decode_model`)."""
    bpb = data_bits // 8
    if prog.image.size > sim.size_bytes:
        raise SimulationError(f"memory image of {prog.image.size} bytes exceeds the simulated memory "
                              f"({sim.size_bytes} bytes, memory.sim.size_bytes)")
    model = build_decode_model(limits, prog.numerics, tables, sim=sim, data_bits=data_bits, ecp5=ecp5)
    tmp = tempfile.TemporaryDirectory(prefix="lutforge_decode_") if workdir is None else None
    work = Path(tmp.name if tmp else workdir)
    work.mkdir(parents=True, exist_ok=True)
    try:
        image = work / "image.hex"
        image.write_text(hex_lines(0, bytes(prog.image.data), bpb))
        hp_vocab = prog.shape.vocab_size
        first = prog.logits_addr
        end = (prog.trace_addr + prog.shape.n_layers * prog.shape.dim * 4) if prog.trace_addr is not None \
            else first + hp_vocab * 4
        job = {"image": str(image), "load_file": str(work / "mem_load.hex"), "dump_file": str(work / "dump.hex"),
               "results": str(work / "results.json"), "program_addr": prog.program_addr,
               "n_instr": len(prog.instrs), "steps": [list(s) for s in steps],
               "dump_first": first // bpb, "dump_words": -(-(end - first) // bpb),
               "timeout_ns": timeout_cycles * 10}
        (work / "job.json").write_text(json.dumps(job))
        model.run("sim.cocotb_decode", test_dir=work, extra_env={"LUTFORGE_JOB": str(work / "job.json")},
                  plusargs=[f"+memload={job['load_file']}", f"+memdump={job['dump_file']}"])
        results = json.loads(Path(job["results"]).read_text())
        runs = []
        for res in results:
            if res["error"]:
                raise SimulationError("the decode engine flagged an error (memory response or bad opcode)")
            raw = read_dump(Path(res["dump"]))
            words = torch.from_numpy(np.frombuffer(raw, dtype="<i4").astype(np.int64))
            logits = words[:hp_vocab]
            resid = None
            if prog.trace_addr is not None:
                off = (prog.trace_addr - first) // 4
                resid = words[off:off + prog.shape.n_layers * prog.shape.dim].view(prog.shape.n_layers, prog.shape.dim)
            runs.append(TokenRun(res["next_token"], _fields(EngineCounters(), res["counters"]), logits, resid,
                                 res["wall_seconds"], res["busy_edges"]))
        return runs
    finally:
        if tmp:
            tmp.cleanup()
