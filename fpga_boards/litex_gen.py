"""Running a LiteX core generator offline and caching what it writes (shared by
:mod:`fpga_boards.litedram` and :mod:`fpga_boards.liteeth`).

A generator (``litedram_gen``, ``liteeth_gen``) reads a YAML this package ships for a board
and writes a folder (``gateware/<module>.v``, ``csr.json``, headers). :func:`run_cached`
runs it in a scratch folder, post-processes the Verilog (:func:`clean_verilog`) and moves
the result into ``$LUTFORGE_CACHE/<kind>/<name>-<hash>`` in one rename, so concurrent
callers never see half a build; :func:`cache_key` hashes the YAML text, the versions of the
generator's packages and the post-processing version (nothing is downloaded).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path

from ref_model.cache import cache_root
from ref_model.errors import LutforgeError, ToolchainError


class BoardError(LutforgeError):
    """A board name or board-side argument that is not supported."""


def read_yaml(path: Path, what: str) -> dict:
    """The mapping a generator YAML holds (``what`` names the generator in errors)."""
    import yaml
    try:
        cfg = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise BoardError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(cfg, dict):
        raise BoardError(f"{path}: a {what} config is a mapping of keys, not {type(cfg).__name__}")
    return cfg


def package_versions(packages: tuple[str, ...]) -> dict[str, str]:
    try:
        return {p: metadata.version(p) for p in packages}
    except metadata.PackageNotFoundError as e:
        raise ToolchainError(f"the PyPI package {e.name!r} is not installed; run: pip install -e .") from None


def cache_key(data: bytes, packages: tuple[str, ...], postprocess: int) -> str:
    h = hashlib.sha256(data)
    h.update(json.dumps({**package_versions(packages), "postprocess": postprocess}, sort_keys=True).encode())
    return h.hexdigest()[:16]


_PORT_RE = re.compile(r"^\s*(input|output|inout)\s+wire\s+(?:\[(\d+):0\]\s+)?(\w+)\s*,?\s*$", re.M)


def verilog_ports(text: str, module: str) -> dict[str, tuple[str, int]]:
    """Ports of ``module`` in LiteX's Verilog: name -> (direction, width)."""
    start = text.index(f"module {module} (")
    header = text[start:text.index(");", start)]
    return {name: (d, int(msb) + 1 if msb else 1) for d, msb, name in _PORT_RE.findall(header)}


def clean_verilog(text: str, module: str) -> str:
    """Two fixes of what LiteX 2024.12 writes, neither changing the logic.

    * It repeats some ``assign`` statements verbatim (LiteDRAM's bank machines' FIFO
      outputs, the DFI write data and mask), which Yosys and Verilator report as multiple
      drivers; the repeats are dropped.
    * It lowers tristate buffers (LiteDRAM's DQ/DQS, LiteEth's MDIO) to ``TRELLIS_IO`` with
      the pad bound as an *input* (``i_B``), so the core's header declares the pad ``input``;
      in a design where the core is a submodule that would make the pad undrivable. Every
      port bound to a bidirectional ``TRELLIS_IO`` pad is re-declared ``inout``."""
    lines, prev = [], None
    for line in text.splitlines(keepends=True):
        if not (line.startswith("assign ") and line == prev):
            lines.append(line)
        prev = line
    text = "".join(lines)
    pads = set()
    for block in re.finditer(r"TRELLIS_IO #\(\s*//[^\n]*\n\s*\.DIR \(\"BIDIR\"\)\s*\)[^;]*?\.B \((\w+)", text):
        pads.add(block.group(1))
    start = text.index(f"module {module} (")
    end = text.index(");", start)
    header = text[start:end]
    for pad in pads:
        header = re.sub(rf"^(\s*)input(\s+wire\s+(?:\[\d+:0\]\s+)?{pad}\s*,?\s*)$", r"\1inout\2", header, flags=re.M)
    return text[:start] + header + text[end:]


def run_cached(folder: Path, cmd: list[str], *, what: str, module: str, done: str = "csr.json",
               files: dict[str, str] | None = None) -> None:
    """Run generator ``cmd`` (which must write into ``--output-dir out`` relative to its
    working folder: pass ``out`` there) unless ``folder/done`` exists; clean the Verilog
    ``gateware/<module>.v`` and move the output to ``folder`` in one rename. ``files``
    (name -> text) are written into the working folder first (inputs ``cmd`` names by a
    relative path) and kept in the output. ``what`` names the generator and board in errors."""
    if (folder / done).exists():
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{folder.name}-") as tmp:
        out = Path(tmp) / "out"
        for name, text in (files or {}).items():
            (Path(tmp) / name).write_text(text)
        # cwd: LiteX writes git.h from the repository around cwd; the scratch folder has none.
        proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
        (Path(tmp) / "gen.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0 or not (out / done).exists():
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-8:])
            raise ToolchainError(f"{what} failed (exit {proc.returncode}):\n{tail}")
        shutil.copy(Path(tmp) / "gen.log", out / "gen.log")
        for name in files or {}:
            shutil.copy(Path(tmp) / name, out / name)
        v = out / "gateware" / f"{module}.v"
        v.write_text(clean_verilog(v.read_text(), module))
        try:
            os.rename(out, folder)
        except OSError:
            if not (folder / done).exists():  # lost a race only if the winner finished
                raise


def cache_folder(kind: str, name: str, key: str) -> Path:
    return cache_root() / kind / f"{name}-{key}"
