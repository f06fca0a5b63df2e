"""Run GEMMs on a generated core under Verilator and return C with the core's counters.

    results = run_gemms(cfg, [(a, w), ...])

builds (or reuses) the Verilator model of :class:`sim.harness.SimHarness` for ``cfg``,
packs each GEMM's operands in the core's memory layout
(:class:`host_runtime.gemm_layout.GemmLayout`), runs them in one simulation through the
cocotb bench :mod:`sim.cocotb_gemm`, and unpacks C. Comparing C with the reference is
the caller's business (tests, the demo, benchmarks).
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from host_runtime.bitserial_layout import BitSerialLayout
from host_runtime.gemm_layout import GemmImage, GemmLayout
from hw.cores.bitserial import BitSerialCommand
from hw.cores.systolic import CounterLayout, GemmCommand, StatusLayout
from ref_model.errors import LutforgeError, SimulationError
from rtl_gen.generate import emit_verilog

from . import verilator
from .harness import HARNESS_TOP, MEMORY_MODEL, SimHarness
from .memfile import hex_lines, read_dump

#: Bytes written over C's region before each run, so a word the core never writes shows.
POISON = 0xA5


@dataclass
class GemmRun:
    """One simulated GEMM: the result, counters (cycles, busy, read/write bytes) and status."""

    c: torch.Tensor
    counters: dict[str, int]
    status: dict[str, int]
    wall_seconds: float
    image: GemmImage = field(repr=False)

    @property
    def cycles_per_second(self) -> float:
        return self.counters["cycles"] / self.wall_seconds if self.wall_seconds > 0 else float("inf")

    def metrics(self, cfg) -> dict:
        """Ratios against the limits, from the hardware counters.

        ``mac_utilization``: useful MACs (M*K*N) / (PEs * cycles); ``array_busy``: cycles
        in which the array took operands / cycles; ``read_port_utilization``: bytes read /
        (port bytes per cycle * cycles)."""
        c = self.counters
        cycles = max(c["cycles"], 1)
        img = self.image
        return {
            "cycles": c["cycles"],
            "useful_macs": img.m * img.k * img.n,
            "mac_utilization": img.m * img.k * img.n / (cfg.pes * cycles),
            "array_busy": c["busy"] / cycles,
            "read_bytes": c["read_bytes"], "write_bytes": c["write_bytes"],
            "read_port_utilization": c["read_bytes"] / (cfg.bytes_per_beat * cycles),
            "write_port_utilization": c["write_bytes"] / (cfg.bytes_per_beat * cycles),
            "sim_cycles_per_second": self.cycles_per_second,
        }


def _fields(layout, value: int) -> dict[str, int]:
    return {name: (value >> f.offset) & ((1 << f.width) - 1) for name, f in layout}


def build_model(cfg) -> verilator.Model:
    """The cached Verilator model of the harness for ``cfg``."""
    text = emit_verilog(SimHarness(cfg), HARNESS_TOP)
    return verilator.build({f"{HARNESS_TOP}.v": text}, HARNESS_TOP, extra_files=[MEMORY_MODEL])


def timeout_cycles(cfg, m: int, k: int, n: int) -> int:
    """A generous bound on a GEMM's cycles (memory-bound worst case, 4x margin)."""
    R, C = cfg.core.rows, cfg.core.cols
    tiles = -(-m // R) * -(-n // C)
    per_tile = max(k, 2 * R) + R + C
    traffic = (m * k + k * n * max(1, -(-m // R)) + m * n) * 4 // cfg.bytes_per_beat + 1
    rate = min(cfg.memory.sim.read_beats_per_cycle, cfg.memory.sim.write_beats_per_cycle)
    return 4 * (tiles * per_tile + int(traffic / rate)) + 100 * cfg.memory.sim.latency + 20000


def layout_for(cfg):
    """The host-side operand layout of the core kind: GemmLayout (systolic), BitSerialLayout
    (bitserial) or LutLayout (lut)."""
    if cfg.core.kind == "lut":
        from host_runtime.lut_layout import LutLayout
        return LutLayout(cfg)
    return BitSerialLayout(cfg) if cfg.core.kind == "bitserial" else GemmLayout(cfg)


def _pack_case(cfg, layout, idx: int, case) -> tuple[GemmImage, list, int, int]:
    """(image, memory regions, command bits, timeout cycles) of one GEMM case of the core
    kind: ``(A, W)`` with W an integer tensor (systolic) or a BitSerialWeights (bitserial),
    a :class:`host_runtime.lut_layout.LutGemm` (lut)."""
    if cfg.core.kind == "lut":
        x = layout.check(idx, case)
        img = layout.pack(x)
        return img, [(img.a_addr, img.a_bytes), (img.w_addr, img.w_bytes)], layout.command(x, img), \
            layout.timeout_cycles(x, img)
    a, w = case
    if isinstance(layout, BitSerialLayout):
        layout.check(idx, a, w)
        img = layout.pack(a, w)
        return img, img.regions(), BitSerialCommand(cfg.memory.addr_bits).const(img.command()).as_bits(), \
            layout.timeout_cycles(img)
    for name, x, fmt in (("activations", a, cfg.act_format), ("weights", w, cfg.weight_format)):
        if not fmt.contains(x):
            raise LutforgeError(f"GEMM {idx}: {name} outside {fmt.name} [{fmt.min}, {fmt.max}]")
    img = layout.pack(a, w)
    fields = {"a_addr": img.a_addr, "w_addr": img.w_addr, "c_addr": img.c_addr, "m": img.m, "k": img.k, "n": img.n}
    return (img, [(img.a_addr, img.a_bytes), (img.w_addr, img.w_bytes)],
            GemmCommand(cfg.memory.addr_bits).const(fields).as_bits(), timeout_cycles(cfg, img.m, img.k, img.n))


def _prepare(cfg, layout, idx: int, case, workdir: Path) -> tuple[GemmImage, dict]:
    """Check and pack one GEMM; write its memory image as a $readmemh file."""
    bpb = cfg.bytes_per_beat
    img, regions, cmd, timeout = _pack_case(cfg, layout, idx, case)
    if img.end > cfg.memory.sim.size_bytes:
        raise LutforgeError(f"GEMM {idx} ({img.m}x{img.k}x{img.n}) needs {img.end} bytes of memory; "
                            f"memory.sim.size_bytes is {cfg.memory.sim.size_bytes}")
    hex_path = workdir / f"gemm_{idx}.hex"
    with open(hex_path, "w") as fh:
        for addr, raw in regions:
            fh.write(hex_lines(addr // bpb, raw, bpb))
        fh.write(hex_lines(img.c_addr // bpb, bytes([POISON]) * img.c_size, bpb))
    return img, {"hex": str(hex_path), "cmd": cmd, "c_first": img.c_addr // bpb, "c_words": img.c_size // bpb,
                 "timeout_ns": 10 * timeout}


def run_raw(cfg, a, w=None, *, workdir: Path) -> dict:
    """The same GEMM on a plain Verilator build (no cocotb): cycles, wall seconds, and
    whether C matched what :func:`run_gemms` would unpack. The raw-speed reference."""
    layout = layout_for(cfg)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    text = emit_verilog(SimHarness(cfg), HARNESS_TOP)
    binary = verilator.build_raw({f"{HARNESS_TOP}.v": text}, HARNESS_TOP, extra_files=[MEMORY_MODEL])
    img, g = _prepare(cfg, layout, 0, (a, w) if w is not None else a, workdir)
    load, dump = workdir / "raw_load.hex", workdir / "raw_dump.hex"
    load.write_text(Path(g["hex"]).read_text())
    args = [str(binary), f"+memload={load}", f"+memdump={dump}", f"+cmd={g['cmd']:x}",
            f"+dump_first={g['c_first']}", f"+dump_words={g['c_words']}", f"+max_cycles={g['timeout_ns'] // 10}"]
    out = subprocess.run(args, capture_output=True, text=True, cwd=workdir)
    if out.returncode != 0:
        raise SimulationError(f"raw simulation failed ({out.returncode}): {(out.stdout + out.stderr)[-1000:]}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["c"] = layout.unpack_c(img, read_dump(dump))
    return res


def run_gemms(cfg, cases, *, workdir: Path | None = None) -> list[GemmRun]:
    """Simulate each case on the core ``cfg`` describes: an (A, W) pair (W an integer
    tensor for the systolic core, a :class:`host_runtime.bitserial_layout.BitSerialWeights`
    for the bit-serial core) or a :class:`host_runtime.lut_layout.LutGemm` (LUT core)."""
    layout = layout_for(cfg)
    model = build_model(cfg)
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="lutforge_sim_")
        workdir = Path(tmp.name)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        images, gemms = [], []
        for idx, case in enumerate(cases):
            img, gemm = _prepare(cfg, layout, idx, case, workdir)
            images.append(img)
            gemms.append(gemm)
        job = {"load_file": str(workdir / "mem_load.hex"), "dump_file": str(workdir / "mem_dump.hex"),
               "results": str(workdir / "results.json"), "gemms": gemms}
        job_path = workdir / "job.json"
        job_path.write_text(json.dumps(job))
        model.run("sim.cocotb_gemm", test_dir=workdir, extra_env={"LUTFORGE_JOB": str(job_path)},
                  plusargs=[f"+memload={job['load_file']}", f"+memdump={job['dump_file']}"])
        raw_results = json.loads(Path(job["results"]).read_text())
        runs = []
        for img, res in zip(images, raw_results):
            raw = b"".join(bytes.fromhex(wd)[::-1] for wd in res["c_words"])  # words are big-endian hex
            runs.append(GemmRun(c=layout.unpack_c(img, raw), counters=_fields(CounterLayout(), res["counters"]),
                                status=_fields(StatusLayout(), res["status"]), wall_seconds=res["wall_seconds"],
                                image=img))
        return runs
    finally:
        if tmp is not None:
            tmp.cleanup()
