"""The boards' DRAM through LiteDRAM: the controller core generated offline, and its wrapper.

:func:`generate_litedram` runs LiteDRAM's own generator (``litedram_gen``, from the pinned
``litedram`` wheel, found by :func:`rtl_gen.toolchain.litedram_gen`) on the YAML this package
ships for the board (``fpga_boards/litedram/<board>.yml``) and caches what it writes in
``$LUTFORGE_CACHE/litedram/<board>-<hash>`` (the hash covers the YAML text and the versions
of litedram, litex and migen; nothing is downloaded). It returns a :class:`LiteDRAMBuild`:
the Verilog, the CSR map (``csr.json``), the PHY facts and the mode register sequence that
the generator wrote into ``sdram_phy.h`` (:mod:`fpga_boards.dram_init` replays them), the
DRAM size and the AXI user port's widths and clock.

:class:`LiteDRAMCore` wraps that Verilog by ``Instance`` as an Amaranth component with the
project's signatures: an AXI4 slave (``axi_r``/``axi_w``, the same port the simulator's
memory model has), the Wishbone control slave ``ctrl`` (the core's CSRs: DFI software
control and read leveling; the host link reaches it through its external CSR window),
clock/reset inputs, ``user_clk``/``user_rst`` (the core's system clock: its AXI port and
``ctrl`` live in that domain), ``pll_locked``, ``init_done``/``init_error``.
:meth:`LiteDRAMCore.connect_pins` takes the amaranth-boards ``ddr3``/``sdram`` resource
requested with ``dir="-"`` and wires the pads straight to the core, whose PHY instantiates
the ECP5 I/O primitives itself.

The generated core has no CPU: its user port stays blocked (``init_done`` low) until
:func:`fpga_boards.dram_init.dram_init` has run the initialisation over ``ctrl``.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from amaranth.hdl import Cat, ClockDomain, ClockSignal, Const, Instance, Module, Signal
from amaranth.lib import io, wiring
from amaranth.lib.wiring import In, Out

from hw.host.wishbone import WishboneSignature
from hw.mem.axi4 import AXI4ReadSignature, AXI4WriteSignature
from ref_model.errors import ToolchainError
from rtl_gen import toolchain

from .litex_gen import BoardError, cache_folder, clean_verilog, package_versions, read_yaml, run_cached, verilog_ports
from .litex_gen import cache_key as _cache_key

#: Boards with a shipped LiteDRAM YAML.
BOARDS = ("ecpix5", "butterstick", "orangecrab", "ulx3s")
YAML_DIR = Path(__file__).parent / "litedram"
#: The user port the shipped YAMLs define (``user_port_<name>_*`` in the Verilog).
AXI_PORT = "axi_0"
#: The pinned generator packages; their versions are part of the cache key.
GENERATOR_PACKAGES = ("litedram", "litex", "migen")
#: Version of what this module does to the generator's output (:func:`_clean_verilog`); part
#: of the cache key.
POSTPROCESS_VERSION = 1
#: The YAML a cached core was generated from, kept in its folder.
USED_YAML = "litedram.yml"
#: ``memory.dram_mhz`` range: the ECP5 DDR3 PHY's PLL and LiteDRAM's timings are sane here
#: (LiteX runs OrangeCrab's DDR3 at 48 MHz and ECPIX-5's at 75 MHz).
MIN_DRAM_MHZ, MAX_DRAM_MHZ = 25.0, 100.0


def yaml_path(board: str) -> Path:
    if board not in BOARDS:
        raise BoardError(f"board {board!r} has no LiteDRAM configuration; allowed: {', '.join(BOARDS)}")
    return YAML_DIR / f"{board}.yml"


# --- what the generator wrote --------------------------------------------------------------

@dataclass(frozen=True)
class CsrRegister:
    """One CSR of the core: byte address on the control bus, ``size`` 32-bit words (the
    first word holds the most significant bits, as LiteX orders them), ``mode`` rw/ro."""
    name: str
    addr: int
    size: int
    mode: str

    @property
    def word(self) -> int:
        """Wishbone word address of the first (most significant) word."""
        return self.addr // 4


@dataclass(frozen=True)
class PhyInfo:
    """The PHY facts of ``sdram_phy.h`` that initialisation and leveling use."""
    name: str                 # ECP5DDRPHY, GENSDRPHY
    memtype: str              # DDR3, SDR
    xdr: int                  # 1 (SDR) or 2 (DDR)
    databits: int             # DQ pins
    dfi_databits: int         # data bits of one DFI phase (one wrdata/rddata CSR)
    phases: int
    rdphase: int
    wrphase: int
    modules: int              # byte lanes
    dq_dqs_ratio: int
    cl: int
    cwl: int
    read_leveling: bool
    delays: int               # read delay taps scanned (0 without read leveling)
    bitslips: int             # read bitslips scanned (0 without read leveling)
    supported_memory: int     # bytes


@dataclass(frozen=True)
class InitStep:
    """One step of the generator's ``init_sequence()``: CSR writes (by CSR name) in order,
    then a pause of ``delay`` iterations of the BIOS's ``cdelay`` loop."""
    comment: str
    writes: tuple[tuple[str, int], ...]
    delay: int = 0


@dataclass(frozen=True)
class LiteDRAMBuild:
    """A generated LiteDRAM core (see :func:`generate_litedram`)."""
    board: str
    folder: Path
    verilog: Path
    module: str
    csr: dict[str, CsrRegister]
    constants: dict[str, object]
    phy: PhyInfo
    init_sequence: tuple[InitStep, ...]
    #: Verilog ports of the core: name -> (direction, width).
    ports: dict[str, tuple[str, int]] = field(repr=False)
    sys_clk_hz: float = 0.0
    #: Frequency of the board oscillator that :class:`LiteDRAMCore`'s ``clk_in`` takes: the
    #: ECP5 DDR3 cores make their clocks with their own PLL; for the SDR core, which runs on
    #: the clock it is given, the wrapper adds a PLL when this differs from ``sys_clk_hz``.
    input_clk_hz: float = 0.0
    #: A simulation core (LiteDRAM's DRAM model in place of the PHY; ``clk`` is the system clock).
    sim: bool = False

    @property
    def dram_size(self) -> int:
        return self.phy.supported_memory

    @property
    def data_bits(self) -> int:
        return self.ports[f"user_port_{AXI_PORT}_rdata"][1]

    @property
    def addr_bits(self) -> int:
        """AXI byte-address bits the core decodes (``dram_size == 2**addr_bits``)."""
        return self.ports[f"user_port_{AXI_PORT}_araddr"][1]

    @property
    def id_bits(self) -> int:
        return self.ports[f"user_port_{AXI_PORT}_arid"][1]

    @property
    def pin_prefix(self) -> str:
        return "sdram" if self.phy.memtype == "SDR" else "ddram"

    def csr_word(self, name: str) -> int:
        """Wishbone word address of CSR ``name`` (``sdram_dfii_control``...)."""
        try:
            return self.csr[name].word
        except KeyError:
            raise BoardError(f"the {self.board} LiteDRAM core has no CSR {name!r}") from None

    def summary(self) -> dict:
        return {"board": self.board, "module": self.module, "memtype": self.phy.memtype,
                "phy": self.phy.name, "dram_size": self.dram_size, "data_bits": self.data_bits,
                "addr_bits": self.addr_bits, "id_bits": self.id_bits, "sys_clk_hz": self.sys_clk_hz,
                "input_clk_hz": self.input_clk_hz, "verilog": str(self.verilog)}


_verilog_ports = verilog_ports
_clean_verilog = clean_verilog


_DEFINE_RE = re.compile(r"^#define\s+(\w+)(?:\s+(\S+))?\s*$", re.M)


def _parse_phy_header(text: str) -> tuple[dict[str, str | None], tuple[InitStep, ...]]:
    defines = {name: value for name, value in _DEFINE_RE.findall(text)}
    flags = {k: int(v, 0) for k, v in defines.items() if k.startswith(("DFII_CONTROL_", "DFII_COMMAND_")) and v}

    def value(expr: str) -> int:
        return sum(flags[f] if f in flags else int(f, 0) for f in expr.split("|"))

    body = text[text.index("static inline void init_sequence(void)"):]
    body = body[body.index("{") + 1:]
    steps: list[InitStep] = []
    comment, writes = "", []
    for line in body.splitlines():
        line = line.strip()
        if line.startswith("}"):
            break
        if m := re.fullmatch(r"/\*\s*(.*?)\s*\*/", line):
            if writes:
                steps.append(InitStep(comment, tuple(writes)))
            comment, writes = m.group(1), []
        elif m := re.fullmatch(r"(\w+)_write\((.+)\);", line):
            writes.append((m.group(1), value(m.group(2))))
        elif m := re.fullmatch(r"command_p(\d+)\((.+)\);", line):
            writes += [(f"sdram_dfii_pi{m.group(1)}_command", value(m.group(2))),
                       (f"sdram_dfii_pi{m.group(1)}_command_issue", 1)]
        elif m := re.fullmatch(r"cdelay\((\d+)\);", line):
            steps.append(InitStep(comment, tuple(writes), int(m.group(1))))
            comment, writes = "", []
        elif line:
            raise ToolchainError(f"sdram_phy.h: init_sequence has a statement this port does not know: {line!r}")
    if writes:
        steps.append(InitStep(comment, tuple(writes)))
    return defines, tuple(steps)


def _phy_info(d: dict[str, str | None]) -> PhyInfo:
    # the header names the PHY first: "#define SDRAM_PHY_ECP5DDRPHY" (GENSDRPHY, SDRAMPHYMODEL...)
    name = next(k[len("SDRAM_PHY_"):] for k, v in d.items() if k.startswith("SDRAM_PHY_") and not v)
    memtype = next(t for t in ("DDR4", "DDR3", "DDR2", "SDR") if f"SDRAM_PHY_{t}" in d)

    def num(key, default=0):
        v = d.get(f"SDRAM_PHY_{key}")
        return int(v.rstrip("ULL"), 0) if v else default

    return PhyInfo(name=name, memtype=memtype, xdr=num("XDR"), databits=num("DATABITS"),
                   dfi_databits=num("DFI_DATABITS"), phases=num("PHASES"), rdphase=num("RDPHASE"),
                   wrphase=num("WRPHASE"), modules=num("MODULES"), dq_dqs_ratio=num("DQ_DQS_RATIO", 8),
                   cl=num("CL"), cwl=num("CWL"),
                   read_leveling="SDRAM_PHY_READ_LEVELING_CAPABLE" in d,
                   delays=num("DELAYS"), bitslips=num("BITSLIPS"),
                   supported_memory=num("SUPPORTED_MEMORY"))


def module_name(board: str, sim: bool = False) -> str:
    return f"litedram_{board}_sim" if sim else f"litedram_{board}"


def load_build(board: str, folder: Path, *, sim: bool = False) -> LiteDRAMBuild:
    """Read a generated core's files (what :func:`generate_litedram` returns)."""
    module = module_name(board, sim)
    verilog = folder / "gateware" / f"{module}.v"
    csr_json = json.loads((folder / "csr.json").read_text())
    csr = {name: CsrRegister(name, r["addr"], r["size"], r["type"])
           for name, r in csr_json["csr_registers"].items()}
    defines, steps = _parse_phy_header((folder / "software" / "include" / "generated" / "sdram_phy.h").read_text())
    used = folder / USED_YAML       # the YAML the core was generated from (absent in old caches)
    cfg = _read_yaml(used if used.exists() else yaml_path(board))
    sys_clk = float(cfg["sys_clk_freq"])
    return LiteDRAMBuild(board=board, folder=folder, verilog=verilog, module=module, csr=csr,
                         constants=csr_json.get("constants", {}), phy=_phy_info(defines),
                         init_sequence=steps, ports=_verilog_ports(verilog.read_text(), module),
                         sys_clk_hz=sys_clk, input_clk_hz=float(cfg.get("input_clk_freq", sys_clk)), sim=sim)


def _read_yaml(path: Path) -> dict:
    return read_yaml(path, "LiteDRAM")


def generator_versions() -> dict[str, str]:
    return package_versions(GENERATOR_PACKAGES)


def cache_key(yaml_text: str, sim: bool = False) -> str:
    return _cache_key(yaml_text.encode() + (b"\0sim" if sim else b""), GENERATOR_PACKAGES, POSTPROCESS_VERSION)


#: ``litedram_gen --sim`` imports ``get_sdram_phy_settings`` from ``litex.tools.litex_sim``, a
#: module that also imports liteeth and litescope (for litex_sim's Ethernet and scope
#: options); the function itself lives in ``litedram.phy.model``. After writing the Verilog,
#: LiteX's sim toolchain prepares its own Verilator flow (a makefile naming the
#: pythondata-misc-tapcfg package), which is not used here. This runs the generator with the
#: module stood in for by one that has just that function and that last step skipped.
_SIM_SHIM = """
import sys, types
import litedram.phy.model
import litex.build.sim.verilator
litex.build.sim.verilator._generate_sim_variables = lambda *args, **kwargs: None
shim = types.ModuleType("litex.tools.litex_sim")
shim.get_sdram_phy_settings = litedram.phy.model.get_sdram_phy_settings
sys.modules["litex.tools.litex_sim"] = shim
sys.argv[0] = "litedram_gen"
from litedram.gen import main
main()
"""


def board_yaml_text(board: str, sys_clk_mhz: float | None = None) -> str:
    """The YAML ``litedram_gen`` is given for ``board``: the shipped file, or with
    ``sys_clk_mhz`` its ``sys_clk_freq`` replaced (a design's ``memory.dram_mhz``: a large
    design next to the controller may need a slower DRAM clock to meet timing; the DDR3
    clock is twice it, the peak bandwidth scales with it)."""
    path = yaml_path(board)
    text = path.read_text()
    if sys_clk_mhz is None:
        return text
    if not MIN_DRAM_MHZ <= sys_clk_mhz <= MAX_DRAM_MHZ:
        raise BoardError(f"DRAM controller clock {sys_clk_mhz:g} MHz is out of range "
                         f"(allowed: {MIN_DRAM_MHZ:g} to {MAX_DRAM_MHZ:g} MHz)")
    import yaml
    cfg = _read_yaml(path)
    cfg["sys_clk_freq"] = float(sys_clk_mhz) * 1e6
    return (f"# {path.name} with sys_clk_freq = {sys_clk_mhz:g} MHz (memory.dram_mhz)\n"
            + yaml.safe_dump(cfg, sort_keys=False))


def generate_litedram(board: str, *, sim: bool = False, force: bool = False,
                      sys_clk_mhz: float | None = None) -> LiteDRAMBuild:
    """Generate (or take from the cache) the LiteDRAM core of ``board``.

    ``sim=True`` asks ``litedram_gen --sim`` for the same controller with LiteDRAM's DRAM
    model (``SDRAMPHYModel``: a DFI PHY over a memory array) in place of the FPGA PHY and
    pins, for simulation (``litedram_<board>_sim``; its CSRs have no read leveling).

    Runs ``litedram_gen --name litedram_<board> <board>.yml`` (:func:`board_yaml_text`) in a scratch folder, fixes the
    Verilog (:func:`_clean_verilog`) and moves the result into the cache
    folder in one rename, so concurrent callers never see half a build. About 1 s."""
    text = board_yaml_text(board, sys_clk_mhz)
    clk = "" if sys_clk_mhz is None else f"-{sys_clk_mhz:g}mhz"
    folder = cache_folder("litedram", f"{board}{'-sim' if sim else ''}{clk}", cache_key(text, sim))
    if force and folder.exists():
        shutil.rmtree(folder)
    module = module_name(board, sim)
    args = ["--name", module, "--output-dir", "out", USED_YAML]
    cmd = [sys.executable, "-c", _SIM_SHIM, "--sim", *args] if sim else [toolchain.litedram_gen(), *args]
    run_cached(folder, cmd, what=f"litedram_gen for {board}", module=module, files={USED_YAML: text})
    return load_build(board, folder, sim=sim)


# --- the Amaranth wrapper ------------------------------------------------------------------

#: amaranth-boards resource subsignal -> core pad (without the ``ddram_``/``sdram_`` prefix),
#: and the logical value that extra bits of the resource are held at (a board whose resource
#: is wider than the core: a second rank, an unused top address bit).
_DDR3_PINS = {"rst": ("reset_n", 1), "clk": ("clk_p", 0), "clk_en": ("cke", 0), "cs": ("cs_n", 0),
              "we": ("we_n", 0), "ras": ("ras_n", 0), "cas": ("cas_n", 0), "a": ("a", 0), "ba": ("ba", 0),
              "dqs": ("dqs_p", None), "dq": ("dq", None), "dm": ("dm", 0), "odt": ("odt", 0)}
_SDRAM_PINS = {"clk_en": ("cke", 0), "cs": ("cs_n", 0), "we": ("we_n", 0), "ras": ("ras_n", 0),
               "cas": ("cas_n", 0), "a": ("a", 0), "ba": ("ba", 0), "dq": ("dq", None), "dqm": ("dm", 0)}


def _ddr3_ba_pins(platform) -> list[str]:
    res = platform.lookup("ddr3", 0)
    for sub in res.ios:
        if getattr(sub, "name", None) == "ba":
            return [name for pins in sub.ios for name in pins.names]
    return []


def request_dram(platform, board: str):
    """The board's DRAM pins for :meth:`LiteDRAMCore.connect_pins` (raw ports), and the
    (port, logical value) pairs a board wants held (OrangeCrab's DDR3 pseudo power pins:
    virtual VCC high, virtual GND low, as LiteDRAM's ECP5 PHY drives them).

    OrangeCrab r0.2: amaranth-boards 0.0.21's ``ddr3`` resource has r0.1's bank address pins
    (``P5`` is not even a ball of the MG285 package) and mixed-up strobe pairs; the platform
    must be one with the r0.2 pins (``fpga_boards.platforms.OrangeCrabR02_85F``), else this
    is an error rather than a bitstream that cannot work."""
    if board == "orangecrab":
        if "P5" in _ddr3_ba_pins(platform):
            raise BoardError("this OrangeCrab platform has amaranth-boards 0.0.21's ddr3 pins, which are r0.1's "
                             "(bank address on P5 N3 M3); use fpga_boards.platforms.OrangeCrabR02_85F")
        power = platform.request("ddr3_pseudo_power", 0, dir="-")
        return platform.request("ddr3", 0, dir="-"), [(power.vcc_virtual, 0), (power.gnd_virtual, 0)]
    if board == "ulx3s":
        return platform.request("sdram", 0, dir="-"), []
    if board in BOARDS:
        return platform.request("ddr3", 0, dir="-"), []
    raise BoardError(f"board {board!r} has no LiteDRAM configuration; allowed: {', '.join(BOARDS)}")


class LiteDRAMCore(wiring.Component):
    """A generated LiteDRAM core as an Amaranth component.

    Members (the core's ports renamed to the project's signatures):

    * ``axi_r`` : In(AXI4ReadSignature), ``axi_w`` : In(AXI4WriteSignature): the AXI4 slave,
      ``build.data_bits`` wide (128 on the DDR3 boards: the native width of the 1:2 ECP5 PHY
      with BL8 on x16; 64 on ULX3S through the crossbar's down-converter; a narrower design port goes through
      ``hw.mem.narrow.AxiNarrowAdapter``, not LiteDRAM's up-converter: docs/boards.md). ``addr_bits`` is the
      master's address width; the core decodes the low ``build.addr_bits`` (higher bits
      alias). Read IDs are ``read_id_bits`` wide and write IDs ``write_id_bits`` (the decode
      engine's 3 and 1), zero-extended to the core's ``build.id_bits``. INCR bursts.
    * ``ctrl`` : In(WishboneSignature(addr_bits=30, data_bits=32)): the CSRs, word-addressed
      (``build.csr_word(name)``); classic cycles, ``cti``/``bte`` held 0.
    * ``clk_in``, ``rst``: the board oscillator (``build.input_clk_hz``; the ECP5 DDR3 cores
      have their own PLL and ECLK tree; for the ULX3S SDR core, which runs on the clock it is
      given, the wrapper adds an EHXPLLL making ``build.sys_clk_hz`` from it) and an
      asynchronous reset. A simulation core takes its system clock on ``clk_in``.
    * ``user_clk``, ``user_rst``: the core's system clock and reset (``build.sys_clk_hz``);
      ``axi_r``/``axi_w``/``ctrl`` are synchronous to it, so a board top clocks its ``sync``
      domain (accelerator and host link) from ``user_clk``.
    * ``pll_locked`` (the core's or the wrapper's PLL), ``init_done``, ``init_error``: the core's status;
      the AXI port answers nothing until software set ``init_done`` (and not ``init_error``).

    Latency: that of LiteDRAM; this wrapper adds none (it is wiring). Measured on the
    simulation cores (LiteDRAM's DRAM model in place of the PHY, idle controller): 15-19
    ``user_clk`` cycles from the AR handshake to the first R beat on ULX3S (SDR), 14-17 on
    ECPIX-5 (DDR3).
    """

    def __init__(self, build: LiteDRAMBuild, *, addr_bits: int = 32, read_id_bits: int = 3,
                 write_id_bits: int = 1):
        for what, bits in (("read_id_bits", read_id_bits), ("write_id_bits", write_id_bits)):
            if not 1 <= bits <= build.id_bits:
                self._MustUse__silence = True  # never elaborated: no "created but never used" warning
                raise BoardError(f"{what}={bits}: the {build.board} core's AXI IDs are {build.id_bits} bits; "
                                 f"allowed: 1..{build.id_bits}")
        self.build = build
        self._addr_bits = addr_bits
        self._pins: dict[str, object] = {}      # core pad -> IO value
        self._held: list[tuple[object, int]] = []  # (port, logical value) of unused resource bits
        self._sdram_clk = None
        super().__init__({
            "axi_r": In(AXI4ReadSignature(addr_bits=addr_bits, data_bits=build.data_bits, id_bits=read_id_bits)),
            "axi_w": In(AXI4WriteSignature(addr_bits=addr_bits, data_bits=build.data_bits, id_bits=write_id_bits)),
            "ctrl": In(WishboneSignature(addr_bits=30, data_bits=32)),
            "clk_in": In(1), "rst": In(1),
            "user_clk": Out(1), "user_rst": Out(1), "pll_locked": Out(1),
            "init_done": Out(1), "init_error": Out(1),
        })

    def connect_board(self, platform) -> None:
        """Request the board's DRAM pins from ``platform`` (an amaranth-boards platform of
        ``build.board``) and wire them (:func:`request_dram`, :meth:`connect_pins`)."""
        res, held = request_dram(platform, self.build.board)
        self.connect_pins(res)
        self._held += held

    def connect_pins(self, res) -> None:
        """Wire the board's DRAM resource to the core's pads.

        ``res`` is ``platform.request("ddr3", 0, dir="-")`` (ECP5 DDR3 boards) or
        ``platform.request("sdram", 0, dir="-")`` (ULX3S): raw ports, because the core's PHY
        instantiates the ECP5 I/O cells (``ODDRX2F``, ``TRELLIS_IO``, ``DELAYG``...) itself.
        Differential pairs use their ``p`` pin only (the IO_TYPE of the resource makes the
        pair). Resource bits beyond the core's (ButterStick's second rank, its 16th address
        line) are held inactive; the SDR clock pin is driven with the core's clock inverted
        (a DDR output, as litex-boards' ULX3S target does)."""
        table = _SDRAM_PINS if self.build.phy.memtype == "SDR" else _DDR3_PINS
        prefix = self.build.pin_prefix
        for sub, (pad, hold) in table.items():
            port = getattr(res, sub, None)
            name = f"{prefix}_{pad}"
            if port is None or name not in self.build.ports:
                continue
            raw = port.p if isinstance(port, io.DifferentialPort) else port.io
            width = self.build.ports[name][1]
            if len(raw) < width:
                raise BoardError(f"resource {sub!r} has {len(raw)} pins; the {self.build.board} core's {name} needs {width}")
            self._pins[name] = raw[:width]
            if len(raw) > width:
                if hold is None:
                    raise BoardError(f"resource {sub!r} has {len(raw)} pins; the {self.build.board} core drives {width}")
                self._held.append((port[width:], hold))
        if self.build.phy.memtype == "SDR":
            if getattr(res, "clk", None) is None:
                raise BoardError("the sdram resource has no clk pin")
            self._sdram_clk = res.clk

    def elaborate(self, platform):
        m = Module()
        b, p = self.build, f"user_port_{AXI_PORT}_"
        if platform is not None:
            platform.add_file(b.verilog.name, b.verilog.read_text())
        clk, rst, own_pll = self.clk_in, self.rst, False
        if b.phy.memtype == "SDR" and not b.sim and b.input_clk_hz != b.sys_clk_hz:
            # LiteDRAM's SDR core runs on the clock it is given: make it from the oscillator.
            from .pll import EcpPll
            m.submodules.pll = pll = EcpPll(b.input_clk_hz / 1e6, b.sys_clk_hz / 1e6)
            rst = Signal()
            m.d.comb += [pll.clk_in.eq(self.clk_in), rst.eq(self.rst | ~pll.locked), self.pll_locked.eq(pll.locked)]
            clk, own_pll = pll.clk_out, True
        ports = {"i_clk": clk, "o_user_clk": self.user_clk,
                 "o_user_rst": self.user_rst, "o_init_done": self.init_done, "o_init_error": self.init_error}
        if "rst" in b.ports:   # the simulation core (``sim=True``) has no reset input
            ports["i_rst"] = rst
        if "sim_trace" in b.ports:
            ports["i_sim_trace"] = Const(0)
        if "pll_locked" in b.ports:
            ports["o_pll_locked"] = self.pll_locked
        elif not own_pll:
            m.d.comb += self.pll_locked.eq(1)
        # AXI: zero-extend IDs and sizes, take the address bits the core decodes.
        r, w = self.axi_r, self.axi_w
        for ch, port in (("ar", r), ("aw", w)):
            ports[f"i_{p}{ch}addr"] = _widen(getattr(port, f"{ch}addr")[:b.addr_bits], b.addr_bits)
            for f in ("len", "burst", "valid"):
                ports[f"i_{p}{ch}{f}"] = getattr(port, f"{ch}{f}")
            for f in ("size", "id"):
                ports[f"i_{p}{ch}{f}"] = _widen(getattr(port, f"{ch}{f}"), b.ports[f"{p}{ch}{f}"][1])
            ports[f"o_{p}{ch}ready"] = getattr(port, f"{ch}ready")
        for f in ("data", "strb", "last", "valid"):
            ports[f"i_{p}w{f}"] = getattr(w, f"w{f}")
        ports[f"o_{p}wready"] = w.wready
        for f in ("resp", "valid"):
            ports[f"o_{p}b{f}"] = getattr(w, f"b{f}")
        ports[f"o_{p}bid"] = w.bid if b.id_bits == len(w.bid) else _narrow_id(m, w.bid, b.id_bits)
        ports[f"i_{p}bready"] = w.bready
        for f in ("data", "resp", "last", "valid"):
            ports[f"o_{p}r{f}"] = getattr(r, f"r{f}")
        ports[f"o_{p}rid"] = r.rid if b.id_bits == len(r.rid) else _narrow_id(m, r.rid, b.id_bits)
        ports[f"i_{p}rready"] = r.rready
        c = self.ctrl
        ports.update({"i_wb_ctrl_adr": c.adr, "i_wb_ctrl_dat_w": c.dat_w, "o_wb_ctrl_dat_r": c.dat_r,
                      "i_wb_ctrl_sel": c.sel, "i_wb_ctrl_cyc": c.cyc, "i_wb_ctrl_stb": c.stb,
                      "i_wb_ctrl_we": c.we, "o_wb_ctrl_ack": c.ack, "o_wb_ctrl_err": c.err,
                      "i_wb_ctrl_cti": Const(0, 3), "i_wb_ctrl_bte": Const(0, 2)})
        for name, value in self._pins.items():
            direction = b.ports[name][0]
            ports[{"input": "i_", "output": "o_", "inout": "io_"}[direction] + name] = value
        m.submodules.core = Instance(b.module, **ports)

        for n, (port, value) in enumerate(self._held):
            m.submodules[f"hold{n}"] = buf = io.Buffer("o", port)
            m.d.comb += buf.o.eq(Const(value, 1).replicate(len(port)))
        if self._sdram_clk is not None:
            if platform is not None:
                m.domains.litedram = _domain(m, self.user_clk)
                m.submodules.sdram_clk = clk = io.DDRBuffer("o", self._sdram_clk, o_domain="litedram")
                m.d.comb += [clk.o[0].eq(0), clk.o[1].eq(1)]
            else:  # no platform (lint, simulation): a plain inverted copy stands in for the DDR cell
                m.submodules.sdram_clk = clk = io.Buffer("o", self._sdram_clk)
                m.d.comb += clk.o.eq(~self.user_clk)
        return m


def _widen(value, bits: int):
    # LiteDRAM's axsize is 4 bits (AXI4's is 3); its IDs and addresses may be wider than the master's.
    return Cat(value, Const(0, bits - len(value))) if bits > len(value) else value


def _narrow_id(m: Module, wide, bits: int):
    # The core's IDs are wider than the master's: take the core's low bits (it echoes what
    # it was given, so the high bits are zero).
    s = Signal(bits)
    m.d.comb += wide.eq(s[:len(wide)])
    return s


def _domain(m: Module, clk):
    cd = ClockDomain("litedram", local=True, reset_less=True)
    m.d.comb += ClockSignal("litedram").eq(clk)
    return cd
