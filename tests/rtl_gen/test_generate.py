"""generate-verilog: Verilog + manifest, and the Verilog passes verilator --lint-only -Wall
with only the justified emitter waivers of sim/lint_waivers.vlt."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rtl_gen.config import load_config
from rtl_gen.generate import generate_verilog
from sim.verilator import lint

BIN = Path(sys.executable).parent


def test_generate_verilog_cli(tmp_path):
    res = subprocess.run([str(BIN / "generate-verilog"), "systolic_8x8_int8", "-o", str(tmp_path),
                          "--set", "core.rows=4"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    manifest = json.loads(next(tmp_path.glob("*.json")).read_text())
    cfg = load_config(None, ["core.rows=4"])
    assert manifest["config_hash"] == cfg.hash()
    assert manifest["top"] == "lutforge_systolic_8x8_int8"
    assert manifest["parameters"]["core"]["rows"] == 4
    names = {p["name"]: p for p in manifest["ports"]}
    assert names["axi_r__rdata"]["width"] == 64 and names["axi_r__rdata"]["direction"] == "input"
    assert names["counters"]["width"] == 4 * 48
    text = Path(manifest["verilog"]).read_text()
    assert f"module {manifest['top']}(" in text


def test_generate_verilog_requires_config():
    res = subprocess.run([str(BIN / "generate-verilog")], capture_output=True, text=True)
    assert res.returncode == 2 and "config" in res.stderr


def test_generate_into_unwritable_place(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    res = subprocess.run([str(BIN / "generate-verilog"), "systolic_8x8_int8", "-o", str(blocker / "sub")],
                         capture_output=True, text=True)
    assert res.returncode == 1 and "cannot create output folder" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize("overrides", [
    [],
    ["core.dataflow=weight_stationary", "core.m_tile=64", "core.weight.bits=4", "core.acc_bits=24"],
    ["core.rows=3", "core.cols=5", "core.act.bits=3", "core.act.signed=false", "core.acc_bits=16",
     "core.edge_pipeline=2", "core.dsp_budget=4", "memory.data_bits=32"],
], ids=["default", "ws-w4", "odd"])
def test_lint_clean(overrides, tmp_path):
    cfg = load_config(None, overrides)
    manifest = generate_verilog(cfg, tmp_path)
    assert lint(Path(manifest["verilog"]), manifest["top"]) == []


def test_memory_model_lints_without_waivers():
    from rtl_gen import toolchain
    from sim.harness import MEMORY_MODEL
    res = subprocess.run([str(toolchain.verilator_bin()), "--lint-only", "-Wall", str(MEMORY_MODEL)],
                         env=toolchain.verilator_env(), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_generate_verilog_target_flavour(tmp_path):
    """``--target``: the decode engine elaborated for its ECP5 (the registered products as
    MULT18X18D instances with their input and output registers, what lutforge report
    synthesizes); without it, portable Verilog with no vendor primitive."""
    res = subprocess.run([str(BIN / "generate-verilog"), "decode_tiny", "--decode", "--target", "-o",
                          str(tmp_path / "t")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    text = next((tmp_path / "t").glob("*.v")).read_text()
    assert text.count("MULT18X18D ") >= 100
    assert '.REG_INPUTA_CLK("CLK0")' in text and '.REG_OUTPUT_CLK("CLK0")' in text
    m = generate_verilog(load_config("decode_tiny"), tmp_path / "p", unit="decode")
    assert "MULT18X18D" not in Path(m["verilog"]).read_text()
