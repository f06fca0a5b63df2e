"""The bit-serial core's config section: validation, derived values, Verilog + manifest."""

from pathlib import Path

import pytest

from ref_model.errors import ConfigError
from rtl_gen.config import load_config
from rtl_gen.generate import generate_verilog
from sim.verilator import lint


def test_shipped_config_and_derived():
    cfg = load_config("bitserial_8x8")
    assert cfg.core.kind == "bitserial" and cfg.pes == 64
    d = cfg.derived()
    # |sum of 8 lanes of +-a| <= 8 * 128 needs 12 signed bits; |P| < 128 * 255 * 128 needs 23.
    assert d["tree_bits"] == 12 and d["partial_bits"] == 23
    assert d["plane_vector_bits"] == 64 and d["scale_vector_bits"] == 128 and d["c_vector_bits"] == 256


@pytest.mark.parametrize("override,message", [
    ("core.rows=6", "rows=6 is not a power of two"),
    ("core.group_sizes=[16]", "group_sizes"),
    ("core.group_sizes=[]", "group_sizes is empty"),
    ("core.k_max=100", "k_max=100 is not a multiple of the largest group 128"),
    ("core.max_planes=9", "max_planes"),
    ("core.act={bits: 8, signed: false}", "signed activations"),
    ("core.dequant_digit_bits=0", "dequant_digit_bits"),
    ("core.out_frac=30", "out_frac"),
    ("core.dsp_budget=4", "unknown key"),
])
def test_bad_values_are_one_line_errors(override, message):
    with pytest.raises(ConfigError) as e:
        load_config("bitserial_8x8", [override])
    text = str(e.value)
    assert message in text and "\n" not in text and text.startswith(str(Path(__file__).parents[2] / "rtl_gen"))


@pytest.mark.parametrize("overrides", [[], ["core.rows=4", "core.cols=3", "memory.data_bits=32"]])
def test_verilog_lint_clean(overrides, tmp_path):
    cfg = load_config("bitserial_8x8", overrides)
    manifest = generate_verilog(cfg, tmp_path)
    assert manifest["derived"]["lanes"] == cfg.core.rows * cfg.core.cols
    names = {p["name"] for p in manifest["ports"]}
    assert {"cmd__payload", "axi_r__arid", "counters", "status"} <= names
    assert lint(Path(manifest["verilog"]), manifest["top"]) == []
