"""Cycle-by-cycle input vectors through an Amaranth component under Verilator (cocotb).

:func:`run_vectors` emits the component's Verilog (for ``platform``, e.g. an ECP5 target
whose vendor primitives ``extra_files`` model), builds it (cached by hash), applies one
value per input port per cycle and returns every output port's value per cycle. For
bit-exact checks of small pipelines against Python references, e.g. the ECP5 flavour of
:mod:`hw.decode.products`.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from rtl_gen.generate import emit_verilog

from . import verilator


#: the top module's name: ``sim/rtl/public.vlt`` makes its ports visible to cocotb
VECTORS_TOP = "lutforge_vectors_top"


def run_vectors(component, inputs: dict[str, list[int]], outputs: list[str], *, platform=None,
                extra_files: list[Path] = (), workdir: Path | None = None) -> dict[str, list[int]]:
    """``inputs``: port name -> one value per cycle (all the same length; signed values
    are written as two's complement by cocotb). Returns port name -> raw (unsigned)
    value per cycle for ``outputs``, sampled at the end of each cycle."""
    text = emit_verilog(component, VECTORS_TOP, platform=platform)
    model = verilator.build({f"{VECTORS_TOP}.v": text}, VECTORS_TOP, extra_files=list(extra_files))
    tmp = tempfile.TemporaryDirectory(prefix="lutforge_vectors_") if workdir is None else None
    work = Path(tmp.name if tmp else workdir)
    try:
        work.mkdir(parents=True, exist_ok=True)
        job = {"inputs": inputs, "outputs": outputs, "results": str(work / "results.json")}
        (work / "job.json").write_text(json.dumps(job))
        model.run("sim.cocotb_vectors", test_dir=work, extra_env={"LUTFORGE_JOB": str(work / "job.json")})
        return json.loads((work / "results.json").read_text())
    finally:
        if tmp:
            tmp.cleanup()
