"""The boards' LiteEth UDP core (fpga_boards/liteeth.py): the shipped YAMLs generate offline
and cache; the raw port listens on the YAML's port (the generator patch); the wrapper's
Instance matches the core's ports (the 32-bit user port: data, last_be, length); YAMLs
with an 8-bit core or port, or a clock too slow for the line, are refused; the board top
with ``link="udp"`` elaborates (LiteEth's Verilog, the RGMII pins, the Ethernet clock at
the core's 62.5 / 60 MHz, the bridge) and Yosys synthesizes it to
the coarse netlist; boards without Ethernet refuse ``udp`` naming the boards that have it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
from amaranth.back import verilog

from fpga_boards.boards import BOARDS, get_board
from fpga_boards.liteeth import BOARDS as ETH_BOARDS
from fpga_boards.liteeth import LiteEthUdp, generate_liteeth
from fpga_boards.litex_gen import BoardError
from fpga_boards.top import board_top
from ref_model.errors import LutforgeError
from rtl_gen import toolchain
from rtl_gen.config import load_config

SMALL = ["core.rows=2", "core.cols=2", "memory.data_bits=64"]
#: The LiteEth core's clock per board (its YAML's clk_freq): 62.5 MHz, or 60 on the ButterStick,
#: whose 30 MHz oscillator the ECP5 PLL cannot turn into 62.5.
ETH_HZ = {"ecpix5": 62.5e6, "butterstick": 60e6}


@pytest.mark.parametrize("board", ETH_BOARDS)
def test_generate(board):
    b = generate_liteeth(board)
    text = b.verilog.read_text()
    assert b.module == f"liteeth_{board}" and f"module {b.module} (" in text
    assert b.clk_hz == ETH_HZ[board] and b.udp_port == 1234 and re.fullmatch(r"192\.168\.1\.\d+", b.ip_address)
    # the raw port is dispatched on the configured port (the shim), not on the sink's dst_port input
    assert re.search(r"crossbar_sink_param_dst_port == 11'd1234", text)
    assert b.ports["rgmii_mdio"][0] == "inout"          # the TRELLIS_IO pad re-declared (litex_gen.clean_verilog)
    # the 32-bit raw port (data, one-hot last_be, length) on the 32-bit sys-clock datapath
    assert b.ports["host_sink_data"] == ("input", 32) and b.ports["host_source_data"] == ("output", 32)
    assert b.ports["host_sink_last_be"] == ("input", 4) and b.ports["host_source_last_be"] == ("output", 4)
    assert b.ports["host_source_length"] == ("output", 16)
    for prim in ("IDDRX1F", "ODDRX1F"):
        assert prim in text


@pytest.mark.parametrize("old, new, message", [
    ('"core": "udp",\n    "data_width": 32', '"core": "udp",\n    "data_width": 8', "data_width must be 32"),
    ('"clk_freq": 62.5e6', '"clk_freq": 25e6', "below the 1 Gb/s line rate"),
    ('"udp_port": 1234,\n            "data_width": 32', '"udp_port": 1234,\n            "data_width": 8',
     "raw port 'host' of data_width 32"),
])
def test_yaml_checks(monkeypatch, tmp_path, old, new, message):
    """The wrapper and bridge take 32-bit words: an 8-bit core or user port, or a core clock
    that cannot carry the line at 32 bits, is refused before liteeth_gen runs."""
    import fpga_boards.liteeth as le
    text = le.yaml_path("ecpix5").read_text()
    assert old in text
    (tmp_path / "ecpix5.yml").write_text(text.replace(old, new))
    monkeypatch.setattr(le, "YAML_DIR", tmp_path)
    with pytest.raises(BoardError, match=message):
        generate_liteeth("ecpix5")


def test_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("LUTFORGE_CACHE", str(tmp_path))
    a = generate_liteeth("ecpix5")
    stamp = a.verilog.stat().st_mtime_ns
    b = generate_liteeth("ecpix5")
    assert b.folder == a.folder and b.verilog.stat().st_mtime_ns == stamp
    assert a.folder.parent == tmp_path / "liteeth"


def test_bad_board():
    with pytest.raises(BoardError, match="allowed: ecpix5, butterstick"):
        generate_liteeth("ulx3s")


def test_every_ethernet_board_has_a_yaml():
    assert sorted(b.ethernet for b in BOARDS.values() if b.ethernet) == sorted(ETH_BOARDS)


def test_wrapper_matches_core(tmp_path):
    """The Instance binds every port of the core with its direction and width (Yosys
    ``hierarchy -check`` with the core's Verilog and the ECP5 cell library)."""
    b = generate_liteeth("ecpix5")
    from amaranth.hdl import Module
    from amaranth.lib import wiring

    class Top(wiring.Component):
        def __init__(self):
            self.eth = LiteEthUdp(b)
            super().__init__({"pins": wiring.Out(1)})

        def elaborate(self, platform):
            m = Module()
            m.submodules.eth = self.eth
            return m

    (tmp_path / "top.v").write_text(verilog.convert(Top(), name="top"))
    shutil.copy(b.verilog, tmp_path / "core.v")
    p = subprocess.run([toolchain.yosys(), "-p", "read_verilog top.v core.v; read_verilog -lib -specify "
                        "+/ecp5/cells_sim.v +/ecp5/cells_bb.v; hierarchy -check -top top"],
                       cwd=tmp_path, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "Resizing cell port" not in p.stdout


@pytest.mark.parametrize("board", [b for b in BOARDS if BOARDS[b].ethernet is None])
def test_boards_without_ethernet_refuse_udp(board):
    cfg = load_config(None, SMALL)
    with pytest.raises(LutforgeError, match="has no Ethernet: link=udp .* is for ecpix5-85, butterstick"):
        board_top(board, cfg, clock_mhz=25, memory="bram", bram_bytes=16384, link="udp")


def test_unknown_link():
    with pytest.raises(LutforgeError, match="link 'pcie': allowed: uart, udp"):
        board_top("ecpix5-85", load_config(None, SMALL), clock_mhz=25, memory="bram", link="pcie")


@pytest.mark.parametrize("board", [b for b in BOARDS if BOARDS[b].ethernet])
def test_udp_top_elaborates(board):
    cfg = load_config(None, SMALL)
    top = board_top(board, cfg, clock_mhz=40, memory="bram", bram_bytes=16384, link="udp")
    plan = get_board(board).make_platform().prepare(top, name="lutforge_top")
    assert f"liteeth_{get_board(board).ethernet}.v" in plan.files
    il, lpf = plan.files["lutforge_top.il"], plan.files["lutforge_top.lpf"]
    assert "udp_bridge" in il and il.count("EHXPLLL") >= 2      # the design's PLL and the Ethernet one
    eth_hz = ETH_HZ[get_board(board).ethernet]
    assert re.search(rf'FREQUENCY NET "[^"]*clk" {eth_hz:.0f}\b', lpf)   # the Ethernet core's clock
    assert re.search(r'FREQUENCY PORT "eth_rgmii_0__rx_clk__io" 125000000', lpf)
    assert "eth_rgmii_0__tx_data__io" in lpf and "host_uart" not in lpf and 'uart_0__' not in lpf
    link = top.describe()["link"]
    assert link["kind"] == "udp" and link["target"] == f"udp://{link['ip_address']}:1234"
    assert link["eth_clock_mhz"] == eth_hz / 1e6


def test_udp_top_synthesizes(tmp_path):
    """The ECPIX-5 tensor-core top with the UDP link through Yosys to the coarse netlist
    (LiteEth's Verilog, the bridge's FIFOs, the ECP5 I/O primitives resolved)."""
    cfg = load_config(None, SMALL)
    top = board_top("ecpix5-85", cfg, clock_mhz=40, memory="bram", bram_bytes=16384, link="udp")
    plan = get_board("ecpix5-85").make_platform().prepare(top, name="lutforge_top")
    for name, text in plan.files.items():
        if name.endswith((".il", ".v")):
            (tmp_path / name).write_text(text)
    reads = " ".join(f"read_verilog {n};" for n in plan.files if n.endswith(".v"))
    p = subprocess.run([toolchain.yosys(), "-q", "-p",
                        f"read_rtlil lutforge_top.il; {reads} synth_ecp5 -top lutforge_top -run begin:coarse; "
                        "tee -q -o cells.json stat -json"], cwd=tmp_path, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-3000:]
    cells = json.loads((tmp_path / "cells.json").read_text())
    assert "\\lutforge_top" in cells["modules"] and "\\liteeth_ecpix5" in cells["modules"], sorted(cells["modules"])[:8]


def test_udp_dram_top_elaborates():
    """ECPIX-5 with DDR3 and the UDP link: three clocks (design, DRAM controller, Ethernet),
    the link's external CSR window still reaches LiteDRAM's control registers."""
    cfg = load_config(None, ["core.rows=2", "core.cols=2", "memory.data_bits=128"])
    top = board_top("ecpix5-85", cfg, clock_mhz=25, memory="dram", link="udp")
    plan = get_board("ecpix5-85").make_platform().prepare(top, name="lutforge_top")
    assert "litedram_ecpix5.v" in plan.files and "liteeth_ecpix5.v" in plan.files
    il = plan.files["lutforge_top.il"]
    assert "axi_bridge" in il and "wb_bridge" in il and "udp_bridge" in il
    d = top.describe()
    assert d["memory"]["kind"] == "dram" and d["link"]["kind"] == "udp"


@pytest.mark.slow
def test_liteeth_word_format_in_migen():
    """LiteEth's own core (migen simulation, dw=32 on the sys datapath, a 32-bit raw port;
    tests/fpga_boards/liteeth_model.py; about 4 min) has the word format hw/host/udp.py
    assumes: the first byte on the wire in data[7:0], last_be one-hot on the last valid
    byte, length the UDP payload length, on receive and on transmit; and the 17-byte quirk
    (last_be one pad byte too far) that the bridge caps with the length."""
    from hw.host.udp import last_word_bytes

    from .liteeth_model import parse_sent, run, user_words
    rx_lengths, tx_lengths = (1, 2, 3, 4, 17, 19), (1, 2, 3, 4, 17, 47)
    rx = [bytes(range(0x10, 0x10 + n)) for n in rx_lengths]
    tx = [bytes(range(0xA0, 0xA0 + n)) for n in tx_lengths]
    words, frames = run(rx, [user_words(d) for d in tx], list(tx_lengths))
    dgrams, cur = [], []
    for w in words:
        cur.append(w)
        if w[1]:
            dgrams.append(cur)
            cur = []
    assert len(dgrams) == len(rx), words
    for d, ws in zip(rx, dgrams):
        got = b"".join(w[0].to_bytes(4, "little") for w in ws[:-1])
        *_, last_be, length = ws[-1]
        assert length == len(d) and all(w[3] == len(d) for w in ws)
        if len(d) == 17:      # padded frame: the frame's last_be, 18 bytes
            assert last_be == 0b0010
            n = min(last_word_bytes(last_be), length - len(got))
        else:
            assert last_be == 1 << ((len(d) - 1) % 4), (len(d), bin(last_be))
            n = last_word_bytes(last_be)
        assert got + ws[-1][0].to_bytes(4, "little")[:n] == d, (len(d), [hex(w[0]) for w in ws])
    assert len(frames) == len(tx)
    for d, f in zip(tx, frames):
        payload, ulen, crc_ok = parse_sent(f)
        assert crc_ok and ulen == 8 + len(d) and payload == d, (len(d), f.hex())
