"""DRAM initialisation and read leveling of a generated LiteDRAM core, driven from the host.

A port of the LiteX BIOS's ``sdram_init()`` (``litex/soc/software/liblitedram/sdram.c`` and
``accessors.c``, litex 2024.12) to Python, for cores generated without a CPU
(:mod:`fpga_boards.litedram`). Every register access goes through ``ctrl``: any object with
``read(addr) -> int`` and ``write(addr, value)`` over the core's Wishbone control bus in
32-bit *word* addresses -- over the host link that is the external CSR window
(``Link.read_ext`` / ``Link.write_ext``), in tests a fake.

The sequence (:func:`dram_init`):

1. DFII to software control (``sdram_dfii_control = CKE|ODT|RESET_N``); ``init_done`` and
   ``init_error`` cleared.
2. The mode register sequence the generator wrote into ``sdram_phy.h`` (``init_sequence()``:
   reset release, CKE, MR2/MR3/MR1/MR0, ZQ calibration for DDR3; precharge, auto refresh and
   the mode register for SDR), with its pauses.
3. On PHYs that can (ECP5 DDR3): read leveling. For each byte lane (module) and each of the
   ``bitslips`` read bitslips, every one of the ``delays`` read delay taps is scored by the
   BIOS's test: activate row 0, write a pseudo-random burst (LFSR, seeds 42, 84, 36) through
   the DFI write phase, read it back through the read phase, precharge, count the wrong bits
   of this lane and check the PHY's burst detector. The bitslip with the best score wins; its
   delay window is centred (the longest run of working taps, the first needing two working
   taps in a row because edges are spotty) and checked.
4. DFII back to hardware control (``SEL``), ``init_done`` set. A lane without a working
   window sets ``init_error`` too (the user port stays blocked) and raises
   :class:`DramInitError` with the scan table.

The BIOS's memtest is left to the caller (``lutforge dram-init --memtest N`` writes and reads
back through the AXI port, which only answers after ``init_done``).

``cdelay(n)`` of the BIOS is a busy loop of ``n`` iterations on a CPU of tens of MHz; here it
is a sleep of ``n`` microseconds (longer than the loop on any such CPU).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ref_model.errors import LutforgeError

from .litedram import LiteDRAMBuild

DFII_CONTROL_SEL, DFII_CONTROL_CKE, DFII_CONTROL_ODT, DFII_CONTROL_RESET_N = 0x01, 0x02, 0x04, 0x08
DFII_COMMAND_CS, DFII_COMMAND_WE, DFII_COMMAND_CAS, DFII_COMMAND_RAS = 0x01, 0x02, 0x04, 0x08
DFII_COMMAND_WRDATA, DFII_COMMAND_RDDATA = 0x10, 0x20
DFII_CONTROL_SOFTWARE = DFII_CONTROL_CKE | DFII_CONTROL_ODT | DFII_CONTROL_RESET_N
DFII_CONTROL_HARDWARE = DFII_CONTROL_SEL
#: Seeds of the BIOS's read-leveling test patterns.
SEEDS = (42, 84, 36)
#: Tap of the BIOS's 32-bit LFSR (``lfsr_taps[32]`` in libbase/lfsr.h).
LFSR32_TAPS = 0x80200003
#: Seconds per ``cdelay`` iteration.
CDELAY_S = 1e-6
#: Tries of the final check at the centred delay (the BIOS's ``retries``).
CENTER_RETRIES = 8


class DramInitError(LutforgeError):
    """Initialisation or leveling that failed (a lane without a read window, a bus error)."""


def lfsr32(prev: int) -> int:
    """One step of the BIOS's Galois LFSR (``lfsr(32, prev)``)."""
    lsb = prev & 1
    prev >>= 1
    return prev ^ LFSR32_TAPS if lsb else prev


def pattern_burst(seed: int, phases: int, nbytes: int) -> list[bytes]:
    """The BIOS's pseudo-random burst: ``phases`` rows of ``nbytes`` bytes, each byte 8 LFSR
    steps (bit i = the low bit after step i)."""
    prv, rows = seed, []
    for _ in range(phases):
        row = bytearray()
        for _ in range(nbytes):
            v = 0
            for bit in range(8):
                prv = lfsr32(prv)
                v |= (prv & 1) << bit
            row.append(v)
        rows.append(bytes(row))
    return rows


def lane_bytes(module: int, *, nbytes: int, xdr: int, dq_dqs_ratio: int = 8) -> list[int]:
    """Indices (in the big-endian byte order of the wrdata/rddata CSRs) of the bytes of one
    DFI phase that byte lane ``module`` carries: one per clock edge (the BIOS's pebo/nebo)."""
    nebo = nbytes // xdr - 1 - (module * dq_dqs_ratio) // 8
    pebo = nebo + nbytes // xdr
    if nbytes // xdr == 0:
        pebo = nebo = 0
    idx = [pebo] + ([pebo + 1] if dq_dqs_ratio == 16 else [])
    if xdr == 2:
        idx += [nebo] + ([nebo + 1] if dq_dqs_ratio == 16 else [])
    return idx


@dataclass
class ScanRow:
    """One bitslip of one lane: wrong bits (plus missed bursts) at each delay tap."""
    module: int
    bitslip: int
    errors: list[int]
    score: int
    #: (first, last) tap of the centred window at this bitslip, None if none works.
    window: tuple[int, int] | None = None

    def line(self) -> str:
        taps = "".join("1" if e == 0 else "0" for e in self.errors)
        win = f"delays: {(self.window[0] + self.window[1]) // 2:02d}+-{(self.window[1] - self.window[0]) // 2:02d}" \
            if self.window else "delays: -"
        return f"m{self.module}, b{self.bitslip:02d}: |{taps}| {win}"


@dataclass
class LaneResult:
    module: int
    bitslip: int
    delay: int | None
    window: tuple[int, int] | None
    ok: bool


@dataclass
class InitReport:
    board: str
    phy: str = ""
    steps: int = 0
    writes: int = 0
    reads: int = 0
    scan: list[ScanRow] = field(default_factory=list)
    lanes: list[LaneResult] = field(default_factory=list)
    seconds: float = 0.0

    def scan_table(self) -> str:
        return "\n".join(r.line() for r in self.scan)

    def summary(self) -> str:
        lanes = ", ".join(f"m{lane.module}: bitslip {lane.bitslip} delay {lane.delay}" for lane in self.lanes)
        lev = f"; read leveling {lanes}" if self.lanes else f"; no read leveling ({self.phy} has none)"
        return (f"{self.board}: DRAM initialised ({self.steps} mode-register steps{lev}; "
                f"{self.writes} CSR writes, {self.reads} reads, {self.seconds:.1f} s)")


class Csrs:
    """The core's CSRs by name over a word-addressed ``ctrl`` (LiteX order: a register of
    ``size`` words keeps its most significant word at the lowest address)."""

    def __init__(self, ctrl, build: LiteDRAMBuild, *, sleep=time.sleep, report: InitReport | None = None):
        self.ctrl, self.build, self.sleep = ctrl, build, sleep
        self.report = report or InitReport(build.board, build.phy.name)

    def has(self, name: str) -> bool:
        return name in self.build.csr

    def write(self, name: str, value: int) -> None:
        reg = self.build.csr.get(name)
        if reg is None:
            raise DramInitError(f"the {self.build.board} LiteDRAM core has no CSR {name!r}")
        for i in range(reg.size):
            self.ctrl.write(reg.word + i, (value >> (32 * (reg.size - 1 - i))) & 0xFFFFFFFF)
            self.report.writes += 1

    def read(self, name: str) -> int:
        reg = self.build.csr.get(name)
        if reg is None:
            raise DramInitError(f"the {self.build.board} LiteDRAM core has no CSR {name!r}")
        v = 0
        for i in range(reg.size):
            v = (v << 32) | (self.ctrl.read(reg.word + i) & 0xFFFFFFFF)
            self.report.reads += 1
        return v

    def cdelay(self, n: int) -> None:
        if n:
            self.sleep(n * CDELAY_S)


class DramInit:
    """The BIOS's init and read leveling over :class:`Csrs` (see the module docstring)."""

    def __init__(self, ctrl, build: LiteDRAMBuild, *, sleep=time.sleep, log=None):
        self.build, self.phy = build, build.phy
        self.report = InitReport(build.board, build.phy.name)
        self.csr = Csrs(ctrl, build, sleep=sleep, report=self.report)
        self.log = log or (lambda line: None)
        self.nbytes = self.phy.dfi_databits // 8
        self.ecp5 = self.phy.name == "ECP5DDRPHY"

    # DFII commands on one phase (command_px and friends)
    def _command(self, phase: int, cmd: int) -> None:
        self.csr.write(f"sdram_dfii_pi{phase}_command", cmd)
        self.csr.write(f"sdram_dfii_pi{phase}_command_issue", 1)

    def _address(self, phase: int, address: int, bank: int) -> None:
        self.csr.write(f"sdram_dfii_pi{phase}_address", address)
        self.csr.write(f"sdram_dfii_pi{phase}_baddress", bank)

    def software_control(self, on: bool) -> None:
        want = DFII_CONTROL_SOFTWARE if on else DFII_CONTROL_HARDWARE
        if self.csr.read("sdram_dfii_control") != want:
            self.csr.write("sdram_dfii_control", want)

    def init_sequence(self) -> None:
        for step in self.build.init_sequence:
            for name, value in step.writes:
                self.csr.write(name, value)
            self.csr.cdelay(step.delay)
            self.report.steps += 1

    # read leveling actions (sdram_leveling_action: select the lane, act, deselect)
    def _action(self, module: int, csr: str) -> None:
        self.csr.write("ddrphy_dly_sel", 1 << module)
        self.csr.write(csr, 1)
        self.csr.write("ddrphy_dly_sel", 0)
        if self.ecp5:  # sync all DQSBUFMs by toggling their PAUSE lines
            self.csr.write("ddrphy_dly_sel", 0xFF)
            self.csr.write("ddrphy_dly_sel", 0)

    def rst_delay(self, module: int) -> None:
        self._action(module, "ddrphy_rdly_dq_rst")

    def inc_delay(self, module: int) -> None:
        self._action(module, "ddrphy_rdly_dq_inc")

    def rst_bitslip(self, module: int) -> None:
        self._action(module, "ddrphy_rdly_dq_bitslip_rst")

    def inc_bitslip(self, module: int) -> None:
        self._action(module, "ddrphy_rdly_dq_bitslip")

    def check_pattern(self, module: int, seed: int) -> int:
        """sdram_write_read_check_test_pattern: wrong bits of lane ``module`` (+1 if the
        ECP5 burst detector saw no read burst on it)."""
        phy, csr = self.phy, self.csr
        prs = pattern_burst(seed, phy.phases, self.nbytes)
        self._address(0, 0, 0)                                   # activate row 0
        self._command(0, DFII_COMMAND_RAS | DFII_COMMAND_CS)
        csr.cdelay(15)
        for p in range(phy.phases):
            csr.write(f"sdram_dfii_pi{p}_wrdata", int.from_bytes(prs[p], "big"))
        self._address(phy.wrphase, 0, 0)
        self._command(phy.wrphase, DFII_COMMAND_CAS | DFII_COMMAND_WE | DFII_COMMAND_CS | DFII_COMMAND_WRDATA)
        csr.cdelay(15)
        if self.ecp5:
            csr.write("ddrphy_burstdet_clr", 1)
        self._address(phy.rdphase, 0, 0)
        self._command(phy.rdphase, DFII_COMMAND_CAS | DFII_COMMAND_CS | DFII_COMMAND_RDDATA)
        csr.cdelay(15)
        self._address(0, 0, 0)                                   # precharge
        self._command(0, DFII_COMMAND_RAS | DFII_COMMAND_WE | DFII_COMMAND_CS)
        csr.cdelay(15)
        mask = (1 << phy.dq_dqs_ratio) - 1 if phy.dq_dqs_ratio < 8 else 0xFF
        ibo = (module * phy.dq_dqs_ratio) % 8
        errors = 0
        for p in range(phy.phases):
            tst = csr.read(f"sdram_dfii_pi{p}_rddata").to_bytes(self.nbytes, "big")
            for i in lane_bytes(module, nbytes=self.nbytes, xdr=phy.xdr, dq_dqs_ratio=phy.dq_dqs_ratio):
                errors += bin(((prs[p][i] >> ibo) & mask) ^ ((tst[i] >> ibo) & mask)).count("1")
        if self.ecp5 and not (csr.read("ddrphy_burstdet_seen") >> module) & 1:
            errors += 1
        return errors

    def run_pattern(self, module: int) -> int:
        return sum(self.check_pattern(module, s) for s in SEEDS)

    def scan_module(self, module: int, bitslip: int) -> ScanRow:
        """sdram_read_leveling_scan_module: errors at every delay tap, and the score."""
        max_errors = len(SEEDS) * 8 * self.phy.phases * self.nbytes // self.phy.modules
        self.rst_delay(module)
        errors, score = [], 0
        for _ in range(self.phy.delays):
            e = self.run_pattern(module)
            errors.append(e)
            # The BIOS's unsigned sum wraps when the burst detector's misses push e past
            # max_errors; clamped at 0 here.
            score += (e == 0) * max_errors * self.phy.delays + max(max_errors - e, 0)
            self.inc_delay(module)
        return ScanRow(module, bitslip, errors, score)

    def center_module(self, module: int) -> tuple[tuple[int, int] | None, int | None, bool]:
        """sdram_leveling_center_module: find the longest working tap run, set the middle
        tap and check it. Returns (window, tap, passed)."""
        delays = self.phy.delays
        delay, working = 0, False
        delay_min = -1
        self.rst_delay(module)
        while True:
            last_working, working = working, self.run_pattern(module) == 0
            if working and last_working and delay_min < 0:
                delay_min = delay - 1   # the first working tap can be spotty: two in a row
                break
            delay += 1
            if delay >= delays:
                break
            self.inc_delay(module)
        delay_max = cur_min = delay_min
        while True:
            if self.run_pattern(module) == 0:
                if delay - cur_min > delay_max - delay_min:
                    delay_min, delay_max = cur_min, delay
            else:
                cur_min = delay + 1
            delay += 1
            if delay >= delays:
                break
            self.inc_delay(module)
        if delay_min < 0:
            return None, None, False
        mid = (delay_min + delay_max) // 2 % delays
        for _ in range(CENTER_RETRIES):
            self.rst_delay(module)
            self.csr.cdelay(100)
            for _ in range(mid):
                self.inc_delay(module)
                self.csr.cdelay(100)
            if self.run_pattern(module) == 0:
                return (delay_min, delay_max), mid, True
        return (delay_min, delay_max), mid, False

    def read_leveling(self) -> None:
        """sdram_leveling + sdram_read_leveling for every lane."""
        for module in range(self.phy.modules):
            self.rst_delay(module)
            self.rst_bitslip(module)
        for module in range(self.phy.modules):
            best_score, best = 0, 0
            self.rst_bitslip(module)
            for bitslip in range(self.phy.bitslips):
                row = self.scan_module(module, bitslip)
                row.window, _, _ = self.center_module(module)
                self.report.scan.append(row)
                self.log(row.line())
                if row.score > best_score:
                    best_score, best = row.score, bitslip
                if bitslip == self.phy.bitslips - 1:
                    break
                self.inc_bitslip(module)
            self.rst_bitslip(module)
            for _ in range(best):
                self.inc_bitslip(module)
            window, tap, ok = self.center_module(module)
            self.report.lanes.append(LaneResult(module, best, tap, window, ok))
            self.log(f"best: m{module}, b{best:02d} " + (f"delay {tap} (window {window[0]}..{window[1]})"
                                                         if window else "no working delay"))

    def run(self) -> InitReport:
        t0 = time.monotonic()
        # PHYs that have them (not ECP5 or SDR): read/write phases reset, a PHY reset pulse
        if self.csr.has("ddrphy_rdphase"):
            self.csr.write("ddrphy_rdphase", self.phy.rdphase)
        if self.csr.has("ddrphy_wrphase"):
            self.csr.write("ddrphy_wrphase", self.phy.wrphase)
        self.software_control(True)
        if self.csr.has("ddrphy_rst"):
            for v in (1, 0):
                self.csr.write("ddrphy_rst", v)
                self.csr.cdelay(1000)
        if self.csr.has("ddrctrl_init_done"):
            self.csr.write("ddrctrl_init_done", 0)
            self.csr.write("ddrctrl_init_error", 0)
        self.init_sequence()
        if self.phy.read_leveling:
            self.software_control(True)
            self.read_leveling()
        self.software_control(False)
        failed = [lane.module for lane in self.report.lanes if not lane.ok]
        if failed:
            self.csr.write("ddrctrl_init_error", 1)
        self.csr.write("ddrctrl_init_done", 1)
        self.report.seconds = time.monotonic() - t0
        if failed:
            raise DramInitError(f"{self.build.board}: read leveling failed on byte lane(s) "
                                f"{', '.join(map(str, failed))} (no bitslip/delay reads the test pattern back); "
                                f"scan (1 = pattern read back at that delay tap):\n{self.report.scan_table()}")
        return self.report


def dram_init(ctrl, build: LiteDRAMBuild, *, sleep=time.sleep, log=None) -> InitReport:
    """Initialise the DRAM behind ``build``'s core over ``ctrl`` (see the module docstring)."""
    return DramInit(ctrl, build, sleep=sleep, log=log).run()
