"""The bitstream flow: timing and fit verdicts (fast), full builds (slow: minutes each)."""

import json

import pytest

from fpga_boards.build import TimingError, _timing_check, build_bitstream, format_manifest
from ref_model.errors import ToolchainError
from rtl_gen.config import load_config
from rtl_gen.report import check_fit


def test_timing_miss_says_by_how_much():
    clocks = {"$glbnet$clk": {"achieved_mhz": 41.2, "target_mhz": 50.0, "met": False},
              "$glbnet$dram": {"achieved_mhz": 80.0, "target_mhz": 75.0, "met": True}}
    with pytest.raises(TimingError, match=r"misses timing: \$glbnet\$clk reaches 41.2 MHz of 50 MHz "
                                          r"\(8.8 MHz, 18% short\); lower the design clock"):
        _timing_check(clocks, "x on ULX3S")
    _timing_check({"c": {"achieved_mhz": 60.0, "target_mhz": 50.0, "met": True}}, "x")


def test_fit_error_says_by_how_much():
    synth = {"lut4_slots": 70000, "ff": 20000, "dsp": 295, "bram": 40}
    with pytest.raises(ToolchainError, match=r"needs 295 DSP multipliers \(MULT18X18D\), the part has 156 "
                                             r"\(139 over\); map the rest to LUTs"):
        check_fit(synth, {"lut4": 83640, "ff": 83640, "dsp": 156, "bram": 208}, top="t", device="LFE5U-85F",
                  dsp=True)


def _check_manifest(out, man, board):
    assert (out / "lutforge_top.bit").stat().st_size > 100_000
    on_disk = json.loads((out / "lutforge_top.manifest.json").read_text())
    assert on_disk == man and man["board"] == board and man["timing_met"]
    for r in man["resources"].values():
        assert 0 < r["used"] <= r["available"]
    assert "Fmax" in format_manifest(man)


@pytest.mark.slow
def test_ulx3s_tensor_core_bitstream(tmp_path):
    """ULX3S 85F: 8x8 int8 systolic core + host link + block RAM at 50 MHz (several minutes)."""
    cfg = load_config("ulx3s_systolic_8x8")
    man = build_bitstream("ulx3s-85", cfg, tmp_path, log=print)
    _check_manifest(tmp_path, man, "ulx3s-85")
    assert man["resources"]["dsp"]["used"] == 64


@pytest.mark.slow
def test_ecpix5_tensor_core_on_ddr3_bitstream(tmp_path):
    """ECPIX-5 85F: 8x8 int8 systolic + host link + LiteDRAM DDR3 (design at 50 MHz, the
    controller at 75 MHz, AXI4 crossing) (tens of minutes)."""
    cfg = load_config("ecpix5_systolic_8x8")
    man = build_bitstream("ecpix5-85", cfg, tmp_path, memory="dram", log=print)
    _check_manifest(tmp_path, man, "ecpix5-85")
    assert man["memory"]["kind"] == "dram" and man["memory"]["bytes"] == 512 << 20
    assert {c["domain"] for c in man["clocks"].values()} >= {"design", "dram"}


@pytest.mark.slow
def test_ecpix5_decode_bitstream(tmp_path):
    """ECPIX-5 85F: ecpix5_decode_tiny (decode_tiny's 4-lane engine on a 64-bit port, narrow
    bursts on LiteDRAM's 128-bit port; 118 MULT18X18D) + host link + LiteDRAM DDR3 at 50 MHz
    (~25 minutes; routed and met on 2026-12-03; an engine of 2026-12-01 stopped at the fit
    check with 295 MULT18X18D, the 128-bit one of 2026-12-02 did not route)."""
    cfg = load_config("ecpix5_decode_tiny")
    man = build_bitstream("ecpix5-85", cfg, tmp_path, log=print)
    _check_manifest(tmp_path, man, "ecpix5-85")
    assert man["resources"]["dsp"]["used"] <= 156
    assert man["memory"]["kind"] == "dram" and man["memory"]["bytes"] == 512 << 20


def test_clock_labels_when_clocks_share_a_frequency():
    """OrangeCrab: design, DRAM controller and oscillator all at 48 MHz; the crossing's DRAM
    clock and the oscillator's buffer are told apart by their nets."""
    from types import SimpleNamespace

    from fpga_boards.build import _label_clocks
    clocks = {n: {"target_mhz": t} for n, t in (("$glbnet$axi_bridge.ar.clk", 48.0),
                                                ("$glbnet$axi_bridge.ar.dram_clk", 48.0),
                                                ("$glbnet$clk_buf.buf.i", 48.0),
                                                ("$glbnet$dram.core.crg_clkout1", 24.0))}
    _label_clocks(clocks, SimpleNamespace(dram_mhz=48.0, clock_mhz=48.0, link="uart"))
    assert [c["domain"] for c in clocks.values()] == ["design", "dram", "other", "other"]
