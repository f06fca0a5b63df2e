"""System test of the tensor-core board design over a bit-level UART: exactly the logic the
ULX3S tensor-core top holds apart from its PLL and pins (fpga_boards.top.HostedBram: the
host link on UART pins + GemmEngine + the block-RAM AXI4 slave), under Verilator with the
serial pins driven bit by bit (sim/uart_board.py), reached over a pty with pyserial.

``lutforge gemm --target serial://...`` checks the config hash at HELLO, uploads A and W,
writes the descriptor, RUNs and reads C back: C equals ref_model's GEMM word for word.
"""

from __future__ import annotations

from fpga_boards.top import HostedBram, hosted_design
from rtl_gen.cli import main
from rtl_gen.config import load_config
from rtl_gen.generate import emit_verilog
from sim.uart_board import build_uart_design, launch_uart

SETS = ["core.rows=2", "core.cols=2", "memory.data_bits=64"]
TOP = "lutforge_gemm_uart_top"
DIVISOR = 8


def test_gemm_over_uart_on_the_board_design(capsys):
    cfg = load_config(None, SETS)
    _, hosted = hosted_design(cfg, divisor=DIVISOR, mem_size=16384)
    text = emit_verilog(HostedBram(hosted, bram_bytes=16384), TOP)
    binary = build_uart_design({f"{TOP}.v": text}, TOP)
    with launch_uart(binary, divisor=DIVISOR, baud=cfg.clock.mhz * 1e6 / DIVISOR, ready_timeout=60) as board:
        args = ["gemm", "--target", board.target, "--config", "systolic_8x8_int8",
                *[a for s in SETS for a in ("--set", s)], "--timeout", "10"]
        rc = main([*args, "--m", "5", "--k", "9", "--n", "3", "--seed", "4"])
        out, err = capsys.readouterr()
        assert rc == 0, err
        assert "C matches the reference" in out
        # a config the bitstream was not built from is refused at HELLO
        rc = main([*args[:-2], "--set", "core.cols=4", "--timeout", "10"])
        _, err = capsys.readouterr()
        assert rc == 1 and "the board runs config hash" in err
    assert board.stats and board.stats["framing_errors"] == 0
