"""Config schema: shipped configs load; each bad value is one clear line and exit 1."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ref_model.errors import ConfigError
from rtl_gen.config import CONFIG_DIR, load_config

BIN = Path(sys.executable).parent


def lutforge(*args, cwd=None):
    return subprocess.run([str(BIN / "lutforge"), *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_configs_load(path):
    cfg = load_config(path)
    assert cfg.hash() == load_config(path).hash()
    assert cfg.pes == cfg.core.rows * cfg.core.cols


def test_overrides_and_derived_values():
    cfg = load_config(None, ["core.rows=16", "core.cols=4", "core.weight.bits=4", "memory.data_bits=128"])
    assert (cfg.core.rows, cfg.core.cols) == (16, 4)
    assert cfg.a_vector_bits == 16 * 8 and cfg.w_vector_bits == 4 * 4
    assert cfg.product_format.bits == 12
    assert cfg.hash() != load_config(None).hash()
    assert load_config(None).target.speed == 6 and load_config(None, ["target.speed=8"]).target.speed == 8


BAD = [
    # (what, YAML edit or override, words the message must contain)
    ("unknown key", ["core.bogus=1"], ["core.bogus", "unknown key"]),
    ("wrong type", ['core.rows="8"'], ["core.rows", "integer"]),
    ("width 0", ["core.act.bits=0"], ["core.act.bits=0", "greater than or equal to 2"]),
    ("width 33", ["core.weight.bits=33"], ["core.weight.bits=33", "less than or equal to 16"]),
    ("rows 0", ["core.rows=0"], ["core.rows=0", "greater than or equal to 1"]),
    ("unknown dataflow", ["core.dataflow=diagonal"], ["core.dataflow", "output_stationary", "weight_stationary"]),
    ("bad port width", ["memory.data_bits=100"], ["memory.data_bits=100", "32, 64, 128, 256, 512"]),
    ("accumulator too narrow", ["core.acc_bits=12"], ["acc_bits=12", "acc_bits >= 16"]),
    ("bool as int", ["core.act.signed=1"], ["core.act.signed", "boolean"]),
    ("unknown device", ["target.device=XC7A35T"], ["target.device", "LFE5U-85F"]),
    ("unknown speed grade", ["target.speed=9"], ["target.speed", "6", "8"]),
    ("m_tile not a power of two", ["core.m_tile=100"], ["m_tile=100", "power of two"]),
    ("bad override syntax", ["core.rows"], ["core.rows", "KEY.PATH=VALUE"]),
]


@pytest.mark.parametrize("what,overrides,words", BAD, ids=[b[0] for b in BAD])
def test_invalid_config_is_one_clear_line(what, overrides, words, tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    for wd in words:
        assert wd in str(err.value), (what, str(err.value))
    # The same through the CLI: exit status 1, one line on stderr, no traceback.
    args = ["config"] + [x for o in overrides for x in ("--set", o)]
    res = lutforge(*args)
    assert res.returncode == 1, res
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lutforge: error:"), res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize("text,words", [
    ("core: [1, 2", ["not valid YAML", "line"]),
    ("- just\n- a list\n", ["top level must be a mapping"]),
    ("name: x\n", ["core", "required field is missing"]),
], ids=["broken yaml", "not a mapping", "missing section"])
def test_bad_files(text, words, tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    res = lutforge("config", str(p))
    assert res.returncode == 1 and "Traceback" not in res.stderr
    for wd in words:
        assert wd in res.stderr, res.stderr


def test_missing_file_lists_shipped_configs():
    res = lutforge("config", "no_such_config.yaml")
    assert res.returncode == 1 and "not found" in res.stderr and "systolic_8x8_int8" in res.stderr


def test_cli_argument_errors():
    res = lutforge("demo", "--m", "0")
    assert res.returncode == 1 and "--m 0" in res.stderr and "Traceback" not in res.stderr
    res = lutforge("frobnicate")
    assert res.returncode == 2 and "invalid choice" in res.stderr


def test_yaml_roundtrip_of_dump(tmp_path):
    cfg = load_config(None, ["core.dataflow=weight_stationary", "core.m_tile=64"])
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    assert load_config(p).hash() == cfg.hash()


def test_decode_lanes():
    """decode.lanes picks the attention lanes (the engine's multiplier count); default: the
    most the head_dim allows; a bad value is one clear line."""
    from rtl_gen.generate import engine_limits
    assert engine_limits(load_config("decode_tiny")).lanes == 4
    assert engine_limits(load_config("decode_tiny", ["decode.lanes=null"])).lanes == 16
    assert engine_limits(load_config("decode_smollm2", ["decode.lanes=8"])).lanes == 8
    for bad, words in (("3", "power of two dividing limits.head_dim=16"), ("32", "power of two dividing"),
                       ("2", "at least 4")):
        with pytest.raises(ConfigError) as err:
            load_config("decode_tiny", [f"decode.lanes={bad}"])
        assert f"decode.lanes={bad}" in str(err.value) and words in str(err.value), str(err.value)
        assert "\n" not in str(err.value)
    assert engine_limits(load_config("decode_tiny")).matvec_lut_lanes == 0
    assert engine_limits(load_config("decode_tiny", ["decode.matvec_lut_lanes=16"])).matvec_lut_lanes == 16
    assert engine_limits(load_config("decode_smollm2")).matvec_lut_lanes == 0
