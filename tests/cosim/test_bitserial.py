"""Cosim: the emitted Verilog of the bit-serial core under Verilator (through cocotb)
against ref_model.bitserial.bitserial_gemm, every output word.

Each config is one Verilator build that runs all of its GEMMs in one simulation: every
data type (INT2..8 symmetric and asymmetric, ternary, FP3/FP4 and the BitMoD mixtures,
which put several types in one matrix), plane counts 1..8, group sizes 32/64/128, edge
cases and odd shapes. A failure names the config overrides, the seed and the case.
"""

import pytest
import torch

from ref_model.bitserial import bitserial_gemm
from rtl_gen.config import load_config
from sim.gemm_runner import run_gemms

from .bitserial_cases import edge_cases, plane_cases, type_cases

BASE = "bitserial_8x8"
CONFIGS = [
    # 4 k-lanes x 4 columns, a 64-bit port, a memory that stalls at random.
    ("bs-4x4-stalls", ["core.rows=4", "core.cols=4", "core.k_max=512", "memory.data_bits=64",
                       "memory.sim.stall_percent=25", "memory.sim.read_beats_per_cycle=0.5"]),
    # The shipped 8x8, smaller panel.
    ("bs-8x8", ["core.k_max=512"]),
    # 32 k-lanes (a-vectors span two beats, one k-block per group of 32: the dequant unit
    # takes a group every cycle), 3 columns, a 16-bit accumulator that wraps, Q.0 outputs.
    ("bs-32x3-acc16", ["core.rows=32", "core.cols=3", "core.k_max=512", "core.acc_bits=16", "core.out_frac=0",
                       "core.dequant_digit_bits=11", "core.max_planes=6"]),
]


def check(cfg, label, cases, runs, seed, overrides):
    core = cfg.core
    for (name, a, w), run in zip(cases, runs):
        ref = bitserial_gemm(a, w.values, w.scale_bits, w.group_size, core.out_frac, core.acc_bits)
        where = f"[{label} seed={seed} case='{name}' overrides={overrides}]"
        assert run.status == {"bad_command": 0, "read_error": 0, "write_error": 0}, f"{where} status {run.status}"
        if not torch.equal(run.c, ref):
            bad = (run.c != ref).nonzero()
            i, j = bad[0].tolist()
            raise AssertionError(f"{where} {len(bad)} of {ref.numel()} words differ; first at C[{i},{j}]: "
                                 f"got {int(run.c[i, j])}, expected {int(ref[i, j])}")
        kb = -(-a.shape[1] // w.group_size) * w.group_size // core.rows
        nt = -(-w.values.shape[1] // core.cols)
        assert run.counters["busy"] == nt * a.shape[0] * kb * w.planes, f"{where} busy {run.counters}"
        assert run.counters["write_bytes"] == run.image.c_size, where


def cases_for(cfg, seed):
    gen = torch.Generator().manual_seed(seed)
    groups = cfg.core.group_sizes
    cases = []
    for i, g in enumerate(groups):
        cases += plane_cases(cfg, gen, g) if i == 0 else []
        cases += edge_cases(cfg, gen, g)
    g = groups[seed % len(groups)]
    cases += type_cases(cfg, gen, 3, 2 * g + 7, cfg.core.cols + 2, g)
    return cases


def cosim(label, overrides, seed, workdir):
    cfg = load_config(BASE, overrides)
    cases = cases_for(cfg, seed)
    runs = run_gemms(cfg, [(a, w) for _, a, w in cases], workdir=workdir)
    check(cfg, label, cases, runs, seed, overrides)


@pytest.mark.parametrize("label,overrides", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_bitserial_cosim(label, overrides, tmp_path):
    cosim(label, overrides, 1, tmp_path)


def test_bad_commands_are_flagged(tmp_path, monkeypatch):
    """Planes above max_planes, a group size not configured, K above k_max: the core sets
    bad_command and writes nothing; a good command afterwards runs normally."""
    from host_runtime.bitserial_layout import BitSerialLayout, BitSerialWeights
    overrides = CONFIGS[1][1]
    cfg = load_config(BASE, overrides)
    gen = torch.Generator().manual_seed(5)
    monkeypatch.setattr(BitSerialLayout, "check", lambda self, idx, a, w: None)  # let bad commands through

    def weights(k, n, planes, group):
        v = torch.randint(-1, 2, (k, n), generator=gen)
        return BitSerialWeights(v, torch.full((-(-k // group), n), 0x3C00), group, planes)

    kmax = cfg.core.k_max
    cases = [("planes above max", torch.ones((2, 40), dtype=torch.int64), weights(40, 5, cfg.core.max_planes + 1, 32)),
             ("group 16", torch.ones((2, 40), dtype=torch.int64), weights(40, 5, 2, 16)),
             ("K above k_max", torch.ones((1, kmax + 1), dtype=torch.int64), weights(kmax + 1, 3, 2, 128)),
             ("good after bad", cfg.act_format.random((3, 70), gen), weights(70, 9, 2, 64))]
    runs = run_gemms(cfg, [(a, w) for _, a, w in cases], workdir=tmp_path)
    for (name, _, _), run in zip(cases[:3], runs[:3]):
        assert run.status["bad_command"] == 1, f"[{name}] status {run.status}"
        assert run.counters["write_bytes"] == 0 and run.counters["busy"] == 0, f"[{name}] {run.counters}"
    check(cfg, "bad-commands", cases[3:], runs[3:], 5, overrides)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [2, 3])
@pytest.mark.parametrize("label,overrides", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_bitserial_cosim_more_seeds(label, overrides, seed, tmp_path):
    cosim(label, overrides, seed, tmp_path)
