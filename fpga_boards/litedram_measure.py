"""Area and timing of the generated LiteDRAM cores (``lutforge bench litedram``, the slow tests).

* :func:`synth_core`: yowasp Yosys ``synth_ecp5`` of a core alone: cell counts (LUT4, FF...).
* :func:`place_core`: the core with its board's pins (:class:`DramOnlyTop`: the core, the
  oscillator, nothing else) through Yosys, nextpnr-ecp5 and ecppack with the board's
  amaranth-boards platform: Fmax per clock against its constraint.

Both run in a given folder with relative paths (the yowasp tools see a private /tmp).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from amaranth.hdl import Elaboratable, Module
from amaranth.lib import io

from ref_model.errors import ToolchainError
from rtl_gen import toolchain

from .litedram import BOARDS, BoardError, LiteDRAMCore, generate_litedram

#: board -> amaranth-boards platform ("module:Class"; fpga_boards.platforms for corrected pins)
PLATFORMS = {"ecpix5": "amaranth_boards.ecpix5:ECPIX585Platform",
             "butterstick": "amaranth_boards.butterstick:ButterStickPlatform",
             "orangecrab": "fpga_boards.platforms:OrangeCrabR02_85F",
             "ulx3s": "amaranth_boards.ulx3s:ULX3S_85F_Platform"}


def board_platform(board: str):
    import importlib
    if board not in PLATFORMS:
        raise BoardError(f"board {board!r} has no LiteDRAM configuration; allowed: {', '.join(BOARDS)}")
    module, cls = PLATFORMS[board].split(":")
    return getattr(importlib.import_module(module), cls)()


class DramOnlyTop(Elaboratable):
    """The board's LiteDRAM core on its pins, clocked by the board oscillator: nothing else."""

    def __init__(self, board: str):
        self.board = board

    def elaborate(self, platform):
        m = Module()
        m.submodules.dram = core = LiteDRAMCore(generate_litedram(self.board))
        core.connect_board(platform)
        m.submodules.clk = clk = io.Buffer("i", platform.request(platform.default_clk, dir="-"))
        m.d.comb += core.clk_in.eq(clk.i)
        return m


def synth_core(board: str, workdir: Path) -> dict:
    """``synth_ecp5`` of ``board``'s core alone: {cell type: count}, ``lut4``, ``ff``, seconds."""
    b = generate_litedram(board)
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copy(b.verilog, workdir / "core.v")
    t0 = time.monotonic()
    p = subprocess.run([toolchain.yosys(), "-q", "-p", f"read_verilog core.v; synth_ecp5 -top {b.module}; "
                        "tee -q -o stat.txt stat"], cwd=workdir, capture_output=True, text=True)
    if p.returncode != 0:
        raise ToolchainError(f"synth_ecp5 of the {board} LiteDRAM core failed: {p.stderr.strip()[-500:]}")
    cells = {name: int(n) for n, name in re.findall(r"^\s+(\d+)\s+([A-Z][A-Z0-9_]+)\s*$",
                                                    (workdir / "stat.txt").read_text(), re.M)}
    return {"cells": cells, "lut4": cells.get("LUT4", 0), "ff": cells.get("TRELLIS_FF", 0),
            "seconds": round(time.monotonic() - t0, 1)}


_FMAX_RE = re.compile(r"Max frequency for clock\s+'(\S+)': ([\d.]+) MHz \((PASS|FAIL) at ([\d.]+) MHz\)")


def place_core(board: str, workdir: Path) -> dict:
    """:class:`DramOnlyTop` through the board's build plan: {clock: {fmax_mhz, target_mhz,
    met}} (nextpnr's final report), bitstream bytes, seconds."""
    plan = board_platform(board).prepare(DramOnlyTop(board), name="top")
    plan.extract(workdir)
    t0 = time.monotonic()
    # OrangeCrab's plan also suffixes a DFU image (dfu-suffix); only the bitstream matters here
    env = {**os.environ, **toolchain.amaranth_tool_env(), "DFU_SUFFIX": "true"}
    p = subprocess.run(["sh", "build_top.sh"], cwd=workdir, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise ToolchainError(f"building the {board} LiteDRAM top failed: {p.stderr.strip()[-500:]}")
    clocks = {}
    for name, fmax, verdict, want in _FMAX_RE.findall((workdir / "top.tim").read_text()):  # last report wins
        clocks[name.strip("$").removeprefix("glbnet$")] = {"fmax_mhz": float(fmax), "target_mhz": float(want),
                                                           "met": verdict == "PASS"}
    return {"clocks": clocks, "bitstream_bytes": (workdir / "top.bit").stat().st_size,
            "seconds": round(time.monotonic() - t0, 1)}
