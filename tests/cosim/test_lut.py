"""Cosim: the emitted Verilog of the LUT core under Verilator (through cocotb) against
ref_model.lut.lut_gemm, every output word, W1..W4 and ternary x int8 / int16 activations.

Each parameter set is one accelerator config (one Verilator build, cached by hash) that
runs all of its GEMMs -- every weight precision the config allows, random and edge-case
operands, M / N / K not multiples of the tile -- in one simulation. A failure names the
config overrides, the seed and the case.
"""

import pytest
import torch

from host_runtime.lut_layout import LutGemm
from ref_model.formats import IntFormat, f16_encode
from ref_model.lut import lut_gemm
from rtl_gen.config import config_from_dict
from sim.gemm_runner import run_gemms

# (id, core section, memory section). int8 and int16 activations; g = 2, 3, 4; symmetric
# and full tables; 1..3 rows, 3..8 columns, 1..3 groups per cycle; accumulators that wrap;
# ports of 32..128 bits; a memory that stalls at random.
CONFIGS = [
    ("a8-g4-sym-1x4x2", dict(rows=1, cols=4, k_groups=2, g=4, group_size=16, frac=8, acc_bits=32), dict(data_bits=64)),
    ("a16-g2-sym-2x3x3-stalls", dict(rows=2, cols=3, k_groups=3, g=2, group_size=12, frac=12, acc_bits=40,
                                     act={"bits": 16, "signed": True}),
     dict(data_bits=64, sim={"stall_percent": 30, "read_beats_per_cycle": 0.5, "refresh_period": 89,
                              "refresh_cycles": 5})),
    ("a8-g3-full-3x5x1-acc20", dict(rows=3, cols=5, k_groups=1, g=3, symmetric=False, weight_bits=3,
                                    group_size=9, frac=4, acc_bits=20), dict(data_bits=32)),
    ("a16-g4-full-1x8x1", dict(rows=1, cols=8, k_groups=1, g=4, symmetric=False, group_size=32, frac=16,
                               acc_bits=48, act={"bits": 16, "signed": True}), dict(data_bits=128)),
    ("a8-g2-sym-2x2x4-acc16", dict(rows=2, cols=2, k_groups=4, g=2, group_size=8, frac=0, acc_bits=16),
     dict(data_bits=32, sim={"stall_percent": 20, "write_beats_per_cycle": 0.25})),
]

#: Scale patterns worth testing: +-max, +-0, smallest subnormal, largest exponent, 1.0, -1.0.
EDGE_SCALES = [0x7BFF, 0xFBFF, 0x0000, 0x8000, 0x0001, 0x8001, 0x7800, 0x3C00, 0xBC00, 0x03FF]


def make_cfg(label, core, memory):
    return config_from_dict({"name": f"lut-{label}", "core": {"kind": "lut", **core}, "memory": memory})


def precisions(cfg):
    """(wbits, ternary) of every weight precision the config serves."""
    return [(b, False) for b in range(1, cfg.core.weight_bits + 1)] + [(2, True)] * (cfg.core.weight_bits >= 2)


def random_case(m, k, n, wbits, ternary, cfg, gen, *, edge=False):
    act, G = cfg.act_format, cfg.core.group_size
    groups = -(-k // G)
    qmax = 2 if ternary else (1 << wbits) - 1
    if edge:
        av = torch.tensor([act.min, act.max, act.min + 1, 0, -1, 1])
        a = av[torch.randint(len(av), (m, k), generator=gen)]
        q = torch.tensor([0, qmax])[torch.randint(2, (k, n), generator=gen)]
        z = torch.tensor([0, qmax])[torch.randint(2, (groups, n), generator=gen)]
        s = torch.tensor(EDGE_SCALES)[torch.randint(len(EDGE_SCALES), (groups, n), generator=gen)]
    else:
        a = act.random((m, k), gen)
        q = torch.randint(0, qmax + 1, (k, n), generator=gen)
        z = torch.randint(0, qmax + 1, (groups, n), generator=gen)
        s = f16_encode(torch.randn((groups, n), generator=gen) * 0.02)
    if ternary:
        z = torch.ones((groups, n), dtype=torch.int64)
    return LutGemm(a, q, s, z, wbits, ternary)


def lut_cases(cfg, seed):
    """The case list of one config: list of (label, LutGemm)."""
    R, C, G = cfg.core.rows, cfg.core.cols, cfg.core.group_size
    act = cfg.act_format
    gen = torch.Generator().manual_seed(seed)
    cases = []
    for wbits, ternary in precisions(cfg):
        name = "ternary" if ternary else f"W{wbits}"
        m, k, n = (int(torch.randint(1, 3 * R + 2, (1,), generator=gen)), int(torch.randint(1, 3 * G + 1, (1,), generator=gen)),
                   int(torch.randint(1, 3 * C + 2, (1,), generator=gen)))
        for label, shape in (("one tile", (R, G, C)), ("odd", (R + 1, 2 * G - 1, 2 * C + 1)), ("random", (m, k, n))):
            cases.append((f"{name} random {label} {shape}", random_case(*shape, wbits, ternary, cfg, gen)))
        cases.append((f"{name} edges", random_case(2 * R + 1, 2 * G, C + 1, wbits, ternary, cfg, gen, edge=True)))
    # Accumulator corners: all-min activations x the largest code, the largest scale.
    b = cfg.core.weight_bits
    k = 3 * G
    qmax = (1 << b) - 1
    a = torch.tensor([[act.min] * k, [act.max] * k])
    q = torch.tensor([[qmax, 0, qmax]] * k)
    z = torch.tensor([[0, qmax, qmax]] * 3)
    s = torch.tensor([[0x7BFF, 0x7BFF, 0xFBFF]] * 3)
    cases.append((f"corners W{b} K={k}", LutGemm(a, q, s, z, b)))
    cases.append(("1x1x1 zero activations", LutGemm(torch.zeros((1, 1), dtype=torch.int64), torch.tensor([[1]]),
                                                   torch.tensor([[0x3C00]]), torch.tensor([[0]]), 1)))
    return cases


def reference(cfg, x):
    core = cfg.core
    return lut_gemm(x.a, x.q, x.scales, x.zeros, act=cfg.act_format, acc=IntFormat(core.acc_bits), g=core.g,
                    k_tile=core.k_tile, group_size=core.group_size, frac=core.frac, wbits=x.wbits,
                    ternary=x.ternary, symmetric=core.symmetric)


def check_runs(cfg, label, cases, runs, seed):
    for (name, x), run in zip(cases, runs):
        ref = reference(cfg, x)
        where = f"[{label} seed={seed} case='{name}' core={cfg.core.model_dump()}]"
        assert run.status == {"bad_command": 0, "read_error": 0, "write_error": 0}, f"{where} status {run.status}"
        if not torch.equal(run.c, ref):
            bad = (run.c != ref).nonzero()
            i, j = bad[0].tolist()
            raise AssertionError(f"{where} {len(bad)} of {ref.numel()} words differ; first at C[{i},{j}]: "
                                 f"got {int(run.c[i, j])}, expected {int(ref[i, j])}")
        m, k, n = x.shape
        kp = -(-k // cfg.core.group_size) * cfg.core.group_size
        tiles = -(-m // cfg.core.rows) * -(-n // cfg.core.cols)
        # busy counts plane lookups: one per plane per chunk per tile.
        assert run.counters["busy"] == tiles * (kp // cfg.core.k_tile) * x.wbits, where
        assert run.counters["cycles"] > run.counters["busy"], where
        assert run.counters["write_bytes"] == run.image.c_size, where


def cosim(label, core, memory, seed, workdir):
    cfg = make_cfg(label, core, memory)
    cases = lut_cases(cfg, seed)
    runs = run_gemms(cfg, [x for _, x in cases], workdir=workdir)
    check_runs(cfg, label, cases, runs, seed)


@pytest.mark.parametrize("label,core,memory", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_lut_cosim(label, core, memory, tmp_path):
    cosim(label, core, memory, 1, tmp_path)


def test_steady_state_rate(tmp_path):
    """A long K on one tile runs at one chunk per max(wbits, entries) cycles, near the peak."""
    label, core, memory = CONFIGS[0]
    cfg = make_cfg(label, dict(core, g=2, k_groups=4), dict(memory, data_bits=128))
    gen = torch.Generator().manual_seed(5)
    x = random_case(1, 1024, cfg.core.cols, 2, False, cfg, gen)
    run = run_gemms(cfg, [x], workdir=tmp_path)[0]
    assert torch.equal(run.c, reference(cfg, x))
    chunks = 1024 // cfg.core.k_tile
    ideal = chunks * cfg.core.chunk_cycles(2) + (1024 // cfg.core.group_size) * cfg.core.param_vectors
    assert run.counters["cycles"] < 1.15 * ideal + 80, (run.counters, ideal)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [2, 3])
@pytest.mark.parametrize("label,core,memory", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_lut_cosim_more_seeds(label, core, memory, seed, tmp_path):
    cosim(label, core, memory, seed, tmp_path)
