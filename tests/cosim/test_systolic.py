"""Cosim: the emitted Verilog of the systolic core under Verilator (through cocotb)
against ref_model.gemm.systolic_gemm, every output word, over seeded random and edge cases.

Each parameter set is one accelerator config (built once, cached by hash) that runs all of
its GEMMs in one simulation. A failure names the config overrides, the seed and the case.
"""

import pytest
import torch

from ref_model.gemm import systolic_gemm
from rtl_gen.config import load_config
from sim.gemm_runner import run_gemms

from .cases import standard_cases

OS, WS = "core.dataflow=output_stationary", "core.dataflow=weight_stationary"

# (id, overrides of the default config). Widths int2..int8 and int16, signed and unsigned,
# both dataflows, 4x4 / 8x8 / 16x16 and odd arrays, LUT multipliers, edge pipelining,
# a narrow accumulator that overflows, and a memory that stalls at random.
CONFIGS = [
    ("os-4x4-int8", ["core.rows=4", "core.cols=4", OS]),
    ("ws-4x4-int8", ["core.rows=4", "core.cols=4", WS, "core.m_tile=16"]),
    ("os-8x8-int8", [OS]),
    ("ws-8x8-w4a8", [WS, "core.weight.bits=4", "core.acc_bits=24", "core.m_tile=16"]),
    ("os-16x16-int8", ["core.rows=16", "core.cols=16", "memory.data_bits=128", OS]),
    ("ws-16x16-int8", ["core.rows=16", "core.cols=16", "memory.data_bits=128", WS, "core.m_tile=32"]),
    ("os-3x5-int2", ["core.rows=3", "core.cols=5", "core.act.bits=2", "core.weight.bits=2", "core.acc_bits=12", OS]),
    ("ws-5x3-a3u-w5", ["core.rows=5", "core.cols=3", "core.act.bits=3", "core.act.signed=false",
                       "core.weight.bits=5", "core.acc_bits=16", WS, "core.m_tile=8"]),
    ("os-4x2-a6-w7u", ["core.rows=4", "core.cols=2", "core.act.bits=6", "core.weight.bits=7",
                       "core.weight.signed=false", "core.acc_bits=20", "memory.data_bits=32", OS, "core.row_blocks=3"]),
    ("os-2x4-int16", ["core.rows=2", "core.cols=4", "core.act.bits=16", "core.weight.bits=16", "core.acc_bits=40", OS]),
    ("ws-4x4-a16-w8", ["core.rows=4", "core.cols=4", "core.act.bits=16", "core.acc_bits=32", WS, "core.m_tile=8"]),
    ("os-4x4-acc16-wrap", ["core.rows=4", "core.cols=4", "core.acc_bits=16", OS, "core.k_max=64"]),
    ("ws-4x4-acc16-wrap", ["core.rows=4", "core.cols=4", "core.acc_bits=16", WS, "core.m_tile=16"]),
    ("os-4x4-lut-pipelined-stalls", ["core.rows=4", "core.cols=4", OS, "core.dsp_budget=0", "core.edge_pipeline=2",
                                     "memory.sim.stall_percent=30", "memory.sim.refresh_period=97",
                                     "memory.sim.refresh_cycles=7", "memory.sim.read_beats_per_cycle=0.5"]),
    ("ws-4x4-lut-pipelined-stalls", ["core.rows=4", "core.cols=4", WS, "core.m_tile=16", "core.dsp_budget=5",
                                     "core.edge_pipeline=1", "memory.sim.stall_percent=30",
                                     "memory.sim.write_beats_per_cycle=0.25"]),
]


def check_runs(cfg, label, cases, runs, seed, overrides):
    for (name, a, w), run in zip(cases, runs):
        ref = systolic_gemm(a, w, cfg.act_format, cfg.weight_format, cfg.acc_format)
        where = f"[{label} seed={seed} case='{name}' overrides={overrides}]"
        assert run.status == {"bad_command": 0, "read_error": 0, "write_error": 0}, f"{where} status {run.status}"
        if not torch.equal(run.c, ref):
            bad = (run.c != ref).nonzero()
            i, j = bad[0].tolist()
            raise AssertionError(f"{where} {len(bad)} of {ref.numel()} words differ; first at C[{i},{j}]: "
                                 f"got {int(run.c[i, j])}, expected {int(ref[i, j])}")
        assert run.counters["busy"] >= 1 and run.counters["cycles"] > run.counters["busy"], where
        assert run.counters["read_bytes"] >= len(run.image.a_bytes), where
        assert run.counters["write_bytes"] == run.image.c_size, where


def cosim(label, overrides, seed, workdir):
    cfg = load_config(None, overrides)
    cases = standard_cases(cfg, seed)
    runs = run_gemms(cfg, [(a, w) for _, a, w in cases], workdir=workdir)
    check_runs(cfg, label, cases, runs, seed, overrides)


# The 16x16 arrays take minutes each under Verilator (the 8x8 and odd arrays cover the same
# logic): in the slow run with the extra seeds.
HEAVY = {"os-16x16-int8", "ws-16x16-int8"}
DEFAULT_RUN = [pytest.param(label, ov, id=label, marks=[pytest.mark.slow] if label in HEAVY else [])
               for label, ov in CONFIGS]


@pytest.mark.parametrize("label,overrides", DEFAULT_RUN)
def test_systolic_cosim(label, overrides, tmp_path):
    cosim(label, overrides, 1, tmp_path)


def test_busy_counts_every_mac_step(tmp_path):
    """busy = K * tiles (OS): the counter counts operand vectors, each R x C MACs."""
    cfg = load_config(None, ["core.rows=4", "core.cols=4", OS])
    gen = torch.Generator().manual_seed(3)
    m, k, n = 9, 13, 6
    a, w = cfg.act_format.random((m, k), gen), cfg.weight_format.random((k, n), gen)
    run = run_gemms(cfg, [(a, w)], workdir=tmp_path)[0]
    assert torch.equal(run.c, systolic_gemm(a, w, cfg.act_format, cfg.weight_format, cfg.acc_format))
    assert run.counters["busy"] == k * 3 * 2


@pytest.mark.slow
@pytest.mark.parametrize("seed", [2, 3, 4])
@pytest.mark.parametrize("label,overrides", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_systolic_cosim_more_seeds(label, overrides, seed, tmp_path):
    cosim(label, overrides, seed, tmp_path)
