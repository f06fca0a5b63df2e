"""Elaboration and Verilog emission: config -> Amaranth component -> Verilog + manifest."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from amaranth.back import verilog
from amaranth.hdl import Shape
from amaranth.lib import wiring

from ref_model.errors import LutforgeError

from .config import AcceleratorConfig


#: core.kind -> (module, class) of its generator; the class takes the AcceleratorConfig.
CORE_GENERATORS = {
    "systolic": ("hw.cores.systolic", "SystolicCore"),
    "bitserial": ("hw.cores.bitserial", "BitSerialCore"),
    "lut": ("hw.cores.lut", "LutCore"),
}


def elaborate_core(cfg: AcceleratorConfig) -> wiring.Component:
    """The tensor core the config describes."""
    try:
        module, cls = CORE_GENERATORS[cfg.core.kind]
    except KeyError:  # pragma: no cover (the schema admits only kinds listed here)
        raise LutforgeError(f"core.kind={cfg.core.kind!r} has no generator; allowed: "
                            f"{', '.join(CORE_GENERATORS)}") from None
    return getattr(importlib.import_module(module), cls)(cfg)


def engine_limits(cfg: AcceleratorConfig):
    """The decode engine's :class:`hw.decode.engine.EngineLimits` from ``cfg.decode``."""
    from hw.decode.engine import EngineLimits
    from ref_model.decode import attention_lanes
    if cfg.decode is None:
        raise LutforgeError(f"config {cfg.name!r} has no decode section (a decode engine needs decode.limits)")
    lim = cfg.decode.limits
    return EngineLimits(dim=lim.dim, ffn=lim.ffn, heads=lim.heads, kv_heads=lim.kv_heads, head_dim=lim.head_dim,
                        vocab=lim.vocab, ctx=lim.context,
                        lanes=cfg.decode.lanes or attention_lanes(lim.head_dim),
                        matvec_lut_lanes=cfg.decode.matvec_lut_lanes)


def elaborate_decode(cfg: AcceleratorConfig) -> wiring.Component:
    """The decode engine the config's ``decode`` section describes (ROMs from ref_model)."""
    from hw.decode.engine import DecodeEngine
    from ref_model.fixedpoint import rom_tables
    m = cfg.memory
    return DecodeEngine(engine_limits(cfg), cfg.decode.decode_numerics(), rom_tables(), addr_bits=m.addr_bits,
                        data_bits=m.data_bits, max_burst=m.max_burst, outstanding=m.outstanding)


def elaborate_hosted(cfg: AcceleratorConfig, *, uart_divisor: int | None = None, mem_size: int | None = None,
                     ctrl: bool = False) -> wiring.Component:
    """The config's decode engine behind the host link (:class:`hw.host.hosted.HostedEngine`):
    what a board bitstream holds apart from the memory controller and the pins.

    ``uart_divisor``: serial pins ``uart_rx`` / ``uart_tx`` at that many clock cycles per
    bit (:func:`hw.host.uart.divisor_for`) instead of the byte streams ``rx`` / ``tx``.
    ``mem_size``: bytes of memory behind the AXI4 ports (default ``memory.sim.size_bytes``).
    ``ctrl``: add the Wishbone master ``ctrl`` of the external CSR window (e.g. LiteDRAM's
    control registers)."""
    from hw.host.hosted import HostedEngine
    if cfg.decode is None:
        raise LutforgeError(f"config {cfg.name!r} has no decode section: a hosted design runs the decode engine "
                            f"(add decode.limits, e.g. as in rtl_gen/configs/decode_tiny.yaml)")
    return HostedEngine(elaborate_decode(cfg), config_hash=cfg.hash_bytes(),
                        mem_size=cfg.memory.sim.size_bytes if mem_size is None else mem_size,
                        max_burst=cfg.memory.max_burst, outstanding=cfg.memory.outstanding, ctrl=ctrl,
                        uart_divisor=uart_divisor)


def top_name(cfg: AcceleratorConfig) -> str:
    """Verilog module name of the core: ``lutforge_`` + the config name, made an identifier."""
    return "lutforge_" + "".join(ch if ch.isalnum() else "_" for ch in cfg.name.lower())


def emit_verilog(component: wiring.Component, name: str, *, platform=None) -> str:
    """Verilog text of an Amaranth component (ports from its signature). ``platform``:
    what the units elaborate for (``None``: portable Verilog; ``ecp5_platform(cfg)``: an
    ECP5 netlist with vendor DSP primitives, :mod:`hw.decode.products`)."""
    return verilog.convert(component, name=name, emit_src=False, platform=platform)


def ecp5_platform(cfg: AcceleratorConfig, *, dsp: bool = True):
    """The elaboration platform for synthesizing ``cfg`` on its target: an ECP5 target
    (products as MULT18X18D with their own registers) when the target is an ECP5 and DSP
    mapping is on, else ``None`` (portable Verilog)."""
    from hw.decode.products import Ecp5Target
    return Ecp5Target() if dsp and cfg.target.family == "ecp5" else None


def port_list(component: wiring.Component) -> list[dict]:
    """Flattened ports as Verilog sees them: name, direction, width."""
    ports = [{"name": "clk", "direction": "input", "width": 1},
             {"name": "rst", "direction": "input", "width": 1}]
    for path, member, _value in component.signature.flatten(component):
        name = "__".join(str(p) for p in path)
        ports.append({"name": name, "direction": "input" if member.flow == wiring.In else "output",
                      "width": Shape.cast(member.shape).width})
    return ports


def manifest_for(cfg: AcceleratorConfig, component: wiring.Component, top: str, verilog_path: Path) -> dict:
    return {
        "top": top,
        "verilog": str(verilog_path),
        "config": cfg.name,
        "config_hash": cfg.hash(),
        "parameters": cfg.model_dump(mode="json"),
        "derived": cfg.derived(),
        "ports": port_list(component),
    }


def generate_verilog(cfg: AcceleratorConfig, outdir: Path, *, unit: str = "core", target: bool = False) -> dict:
    """Write ``TOP.v`` and ``TOP.json`` (the manifest) into ``outdir``; return the manifest.
    ``unit``: ``core`` (the tensor core) or ``decode`` (the decode engine, top
    ``TOP_decode``). ``target``: elaborate for ``cfg.target`` (:func:`ecp5_platform`:
    vendor DSP primitives, what ``lutforge report`` synthesizes) instead of portable
    Verilog (what ``generate-verilog`` writes)."""
    platform = ecp5_platform(cfg) if target else None
    outdir = Path(outdir)
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LutforgeError(f"cannot create output folder {outdir}: {e.strerror}") from None
    if unit == "decode":
        core = elaborate_decode(cfg)
        top = top_name(cfg) + "_decode"
    else:
        core = elaborate_core(cfg)
        top = top_name(cfg)
    text = emit_verilog(core, top, platform=platform)
    vpath = outdir / f"{top}.v"
    vpath.write_text(text)
    manifest = manifest_for(cfg, core, top, vpath)
    if unit == "decode":
        manifest["derived"] = {"unit": "decode", **cfg.decode.model_dump(mode="json")}
    (outdir / f"{top}.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
