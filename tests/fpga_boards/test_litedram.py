"""LiteDRAM cores generated offline for every board: the shipped YAMLs, the generator run and
its cache, the Amaranth wrapper against the generated Verilog (Yosys hierarchy check), the
board pins through amaranth-boards; synthesis area and each board's placed core are slow."""

import re
import shutil
import subprocess

import pytest
import yaml
from amaranth.back import verilog

import litedram.modules
import litedram.phy
from fpga_boards.litedram import BOARDS, BoardError, LiteDRAMCore, generate_litedram, request_dram, yaml_path
from fpga_boards.litedram_measure import DramOnlyTop, board_platform, place_core, synth_core
from rtl_gen import toolchain

#: board -> (memtype, module, dram bytes, AXI data bits, sys clock Hz)
EXPECT = {
    "ecpix5": ("DDR3", "MT41K256M16", 512 << 20, 128, 75e6),
    "butterstick": ("DDR3", "MT41K256M16", 512 << 20, 128, 75e6),
    "orangecrab": ("DDR3", "MT41K256M16", 512 << 20, 128, 48e6),
    "ulx3s": ("SDR", "MT48LC16M16", 32 << 20, 64, 50e6),
}


@pytest.mark.parametrize("board", BOARDS)
def test_yaml(board):
    cfg = yaml.safe_load(yaml_path(board).read_text())
    memtype, module, _, data_bits, sys_clk = EXPECT[board]
    assert cfg["cpu"] == "None" and cfg["memtype"] == memtype and cfg["sdram_module"] == module
    assert hasattr(litedram.modules, cfg["sdram_module"]) and hasattr(litedram.phy, cfg["sdram_phy"])
    assert float(cfg["sys_clk_freq"]) == sys_clk
    assert list(cfg["user_ports"]) == ["axi_0"] and cfg["user_ports"]["axi_0"]["type"] == "axi"


@pytest.mark.parametrize("board", BOARDS)
def test_generate(board):
    b = generate_litedram(board)
    memtype, _, size, data_bits, sys_clk = EXPECT[board]
    assert (b.phy.memtype, b.dram_size, b.data_bits, b.sys_clk_hz) == (memtype, size, data_bits, sys_clk)
    assert 1 << b.addr_bits == size and b.id_bits == 3
    assert b.verilog.exists() and b.module == f"litedram_{board}"
    text = b.verilog.read_text()
    # the pads LiteX declares as inputs are fixed to inouts; no repeated assigns are left
    assert b.ports[f"{b.pin_prefix}_dq"] == ("inout", 16)
    lines = [ln for ln in text.splitlines() if ln.startswith("assign ")]
    assert all(a != c for a, c in zip(lines, lines[1:]))
    assert {"sdram_dfii_control", "sdram_dfii_pi0_command", "sdram_dfii_pi0_rddata",
            "ddrctrl_init_done", "ddrctrl_init_error"} <= set(b.csr)
    if memtype == "DDR3":
        assert b.phy.read_leveling and (b.phy.delays, b.phy.bitslips, b.phy.phases) == (8, 4, 2)
        assert {"ddrphy_dly_sel", "ddrphy_rdly_dq_bitslip", "ddrphy_burstdet_seen"} <= set(b.csr)
        assert b.csr["sdram_dfii_pi0_wrdata"].size == 2 and b.phy.dfi_databits == 64
        assert b.ports["pll_locked"][0] == "output" and b.input_clk_hz != 0
    else:  # the SDR core has no PLL: the wrapper makes 50 MHz from the 25 MHz oscillator
        assert "pll_locked" not in b.ports and (b.input_clk_hz, b.sys_clk_hz) == (25e6, 50e6)
        assert not b.phy.read_leveling and "ddrphy_dly_sel" not in b.csr
    # the mode register writes of the generated header, in order (MR2, MR3, MR1, MR0 for DDR3)
    mrs = [dict(s.writes)["sdram_dfii_pi0_baddress"] for s in b.init_sequence
           if dict(s.writes).get("sdram_dfii_pi0_command") == 0b1111]
    assert mrs == ([2, 3, 1, 0] if memtype == "DDR3" else [0, 0])


def test_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("LUTFORGE_CACHE", str(tmp_path))
    a = generate_litedram("ulx3s")
    stamp = (a.folder / "csr.json").stat().st_mtime_ns
    b = generate_litedram("ulx3s")
    assert b.folder == a.folder and (b.folder / "csr.json").stat().st_mtime_ns == stamp
    assert a.folder.parent == tmp_path / "litedram" and [p.name for p in a.folder.parent.iterdir()] == [a.folder.name]


def test_dram_clock_override(monkeypatch, tmp_path):
    """memory.dram_mhz: the core is generated from the shipped YAML with another sys clock,
    cached apart from the board's own; the PHY's DDR timings follow the clock."""
    monkeypatch.setenv("LUTFORGE_CACHE", str(tmp_path))
    base = generate_litedram("ecpix5")
    slow = generate_litedram("ecpix5", sys_clk_mhz=50)
    assert (base.sys_clk_hz, slow.sys_clk_hz) == (75e6, 50e6) and slow.folder != base.folder
    assert "-50mhz-" in slow.folder.name and generate_litedram("ecpix5", sys_clk_mhz=50).folder == slow.folder
    assert (slow.dram_size, slow.data_bits, slow.input_clk_hz) == (base.dram_size, base.data_bits, 100e6)
    with pytest.raises(BoardError, match=r"200 MHz is out of range \(allowed: 25 to 100 MHz\)"):
        generate_litedram("ecpix5", sys_clk_mhz=200)


def test_bad_board():
    with pytest.raises(BoardError, match="allowed: ecpix5, butterstick, orangecrab, ulx3s"):
        generate_litedram("arty")


def _yosys_check(tmp_path, top_text, build, top="top"):
    (tmp_path / "top.v").write_text(top_text)
    shutil.copy(build.verilog, tmp_path / "core.v")
    # relative paths: yowasp tools see a private /tmp
    p = subprocess.run([toolchain.yosys(), "-p", "read_verilog top.v core.v; read_verilog -lib -specify "
                        "+/ecp5/cells_sim.v +/ecp5/cells_bb.v; hierarchy -check -top " + top],
                       cwd=tmp_path, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p.stdout


@pytest.mark.parametrize("board", ["ecpix5", "ulx3s"])
def test_wrapper_matches_core(board, tmp_path):
    """The Instance's ports are exactly the core's (names, directions, widths)."""
    b = generate_litedram(board)
    core = LiteDRAMCore(b)
    assert core.axi_r.rdata.shape().width == b.data_bits and len(core.axi_r.arid) == 3 and len(core.axi_w.awid) == 1
    log = _yosys_check(tmp_path, verilog.convert(core, name="top"), b)
    assert "Resizing cell port" not in log and "Warning" not in log.split("hierarchy -check")[-1]


def test_wrapper_id_bits():
    b = generate_litedram("ulx3s")
    with pytest.raises(BoardError, match="read_id_bits=4"):
        LiteDRAMCore(b, read_id_bits=4)


def _platform(board):
    return board_platform(board)


def test_orangecrab_r01_pins_refused():
    """amaranth-boards 0.0.21's OrangeCrab r0.2 ddr3 resource has r0.1's pins: refused."""
    from amaranth_boards.orangecrab_r0_2 import OrangeCrabR0_2_85FPlatform
    with pytest.raises(BoardError, match="r0.1's .bank address on P5 N3 M3.; use fpga_boards.platforms"):
        request_dram(OrangeCrabR0_2_85FPlatform(), "orangecrab")


#: pins constrained in the LPF: the DRAM's plus the board clock
PINS = {"ecpix5": 44 + 1, "butterstick": 51 + 1, "orangecrab": 47 + 8 + 1, "ulx3s": 39 + 1}


@pytest.mark.parametrize("board", BOARDS)
def test_board_pins(board):
    """connect_board on the amaranth-boards platform: every DRAM pin constrained once (the
    p pin of a differential pair), the core's Verilog added to the build."""
    plan = _platform(board).prepare(DramOnlyTop(board), name="top")
    lpf = plan.files["top.lpf"]
    assert len(re.findall(r"^LOCATE COMP", lpf, re.M)) == PINS[board]
    assert f"litedram_{board}.v" in plan.files
    if board == "butterstick":  # second rank and a[15] held by buffers, first rank to the core
        assert "ddr3_0__cs__io[1]" in lpf and "ddr3_0__a__io[15]" in lpf
    if board == "orangecrab":   # r0.2 pins; pseudo power pins held
        assert re.search(r'LOCATE COMP "ddr3_0__ba__io\[0\]" SITE "D6"', lpf)
        assert re.search(r'LOCATE COMP "ddr3_0__dqs__p\[1\]" SITE "G18"', lpf)
        assert "ddr3_pseudo_power_0__vcc_virtual__io[5]" in lpf


@pytest.mark.slow
@pytest.mark.parametrize("board", BOARDS)
def test_synth_area(board, tmp_path):
    """synth_ecp5 of the core alone (10-35 s): LUT4 / FF counts (ECPIX-5 ~3.0k / 2.0k)."""
    r = synth_core(board, tmp_path)
    print(f"{board}: {r['lut4']} LUT4, {r['ff']} FF")
    assert 800 < r["lut4"] < 4000 and 500 < r["ff"] < 3000
    if board != "ulx3s":   # the ECP5 DDR3 PHY's cells
        assert r["cells"]["DQSBUFM"] == 2 and r["cells"]["EHXPLLL"] == 1


@pytest.mark.slow
@pytest.mark.parametrize("board", BOARDS)
def test_place(board, tmp_path):
    """The core with its pins on each board through Yosys, nextpnr-ecp5 and ecppack (30-60 s):
    the I/O cells place on the board's DRAM pins and every clock meets its constraint (the
    DDR3 cores' system clock is made by their PLL: 75 MHz, OrangeCrab 48 MHz; ULX3S's by the
    wrapper's: 50 MHz)."""
    _platform(board)
    r = place_core(board, tmp_path)
    print(f"{board} placed: " + ", ".join(f"{n} {c['fmax_mhz']:.1f} MHz (want {c['target_mhz']:.0f})"
                                          for n, c in r["clocks"].items()))
    assert r["clocks"] and all(c["met"] for c in r["clocks"].values())
    sys_clk = [c for n, c in r["clocks"].items() if n.endswith(("sys_clk", "sdrio_clk"))]
    assert sys_clk and sys_clk[0]["target_mhz"] == pytest.approx(generate_litedram(board).sys_clk_hz / 1e6, rel=1e-3)
    assert r["bitstream_bytes"] > 100_000
