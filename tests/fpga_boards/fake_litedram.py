"""A fake LiteDRAM core on its Wishbone control bus: the CSR map of a generated core, a DFII
that executes software commands, and a PHY whose read-back is right only inside a per-lane
bitslip/delay window -- so the read leveling scan of fpga_boards.dram_init is really tested.

Byte lanes are modelled physically: DQ is ``modules`` bytes wide per beat, so little-endian
byte k of a DFI phase word belongs to lane ``k % modules`` (independent of the BIOS's own
pebo/nebo arithmetic, which the code under test uses). A lane outside its window returns
its bytes corrupted; the ECP5 burst detector of a lane fires only inside its delay window.
"""

from __future__ import annotations

from fpga_boards.dram_init import DFII_COMMAND_CAS, DFII_COMMAND_RAS, DFII_COMMAND_RDDATA, DFII_COMMAND_WE, \
    DFII_COMMAND_WRDATA, DFII_CONTROL_SEL


class FakeLiteDRAM:
    """``read(addr)`` / ``write(addr, value)`` over word addresses, like ``Link.read_ext``.

    ``windows``: lane -> (bitslip, set of delay taps) at which that lane reads back right
    (missing lanes never do). ``flaky``: (lane, tap) pairs that read back right only on
    every other test (an edge of the eye)."""

    def __init__(self, build, windows=None, *, flaky=(), burstdet_always=False):
        self.build, self.phy = build, build.phy
        self.windows = windows or {}
        self.flaky = set(flaky)
        self.burstdet_always = burstdet_always
        self.words = {}                               # word address -> (name, index)
        for reg in build.csr.values():
            for i in range(reg.size):
                self.words[reg.word + i] = (reg.name, i)
        self.regs = {name: 0 for name in build.csr}
        self.delay = [0] * self.phy.modules
        self.bitslip = [0] * self.phy.modules
        self.sel = 0
        self.burst = None                             # phase words of the last write burst
        self.rddata = [0] * self.phy.phases
        self.burstdet = 0
        self.flips = 0
        self.mrs = []                                 # (bank, address) of mode register writes
        self.controls = []                            # values written to sdram_dfii_control
        self.commands = 0
        self.accesses = 0

    # the bus -------------------------------------------------------------------------------
    def _reg(self, addr):
        try:
            return self.words[addr]
        except KeyError:
            raise AssertionError(f"access to word {addr:#x}, which no CSR of the core has") from None

    def write(self, addr, value):
        assert 0 <= value < 1 << 32
        self.accesses += 1
        name, i = self._reg(addr)
        size = self.build.csr[name].size
        shift = 32 * (size - 1 - i)
        self.regs[name] = (self.regs[name] & ~(0xFFFFFFFF << shift)) | (value << shift)
        if i == size - 1:
            self._written(name, self.regs[name])
        return True

    def read(self, addr):
        self.accesses += 1
        name, i = self._reg(addr)
        size = self.build.csr[name].size
        if name == "ddrphy_burstdet_seen":
            v = self.burstdet
        elif name.endswith("_rddata"):
            v = self.rddata[int(name[len("sdram_dfii_pi")])]
        else:
            v = self.regs[name]
        return (v >> (32 * (size - 1 - i))) & 0xFFFFFFFF

    # the PHY and DFII -------------------------------------------------------------------------
    def _selected(self):
        return [m for m in range(self.phy.modules) if self.sel >> m & 1]

    def _written(self, name, v):
        if name == "ddrphy_dly_sel":
            self.sel = v
        elif name == "ddrphy_rdly_dq_rst":
            for m in self._selected():
                self.delay[m] = 0
        elif name == "ddrphy_rdly_dq_inc":
            for m in self._selected():
                self.delay[m] = (self.delay[m] + 1) % self.phy.delays
        elif name == "ddrphy_rdly_dq_bitslip_rst":
            for m in self._selected():
                self.bitslip[m] = 0
        elif name == "ddrphy_rdly_dq_bitslip":
            for m in self._selected():
                self.bitslip[m] = (self.bitslip[m] + 1) % self.phy.bitslips
        elif name == "ddrphy_burstdet_clr":
            self.burstdet = 0
        elif name == "sdram_dfii_control":
            self.controls.append(v)
        elif name.endswith("_command_issue"):
            self._command(int(name[len("sdram_dfii_pi")]))

    def _command(self, phase):
        if self.regs["sdram_dfii_control"] & DFII_CONTROL_SEL:
            return                                    # hardware control: software commands go nowhere
        self.commands += 1
        cmd = self.regs[f"sdram_dfii_pi{phase}_command"]
        addr, bank = self.regs[f"sdram_dfii_pi{phase}_address"], self.regs[f"sdram_dfii_pi{phase}_baddress"]
        if cmd & 0xF == 0xF and not cmd & (DFII_COMMAND_WRDATA | DFII_COMMAND_RDDATA):
            self.mrs.append((bank, addr))
        if cmd & DFII_COMMAND_WRDATA:
            assert cmd & DFII_COMMAND_CAS and cmd & DFII_COMMAND_WE and phase == self.phy.wrphase
            self.burst = [self.regs[f"sdram_dfii_pi{p}_wrdata"] for p in range(self.phy.phases)]
        if cmd & DFII_COMMAND_RDDATA:
            assert cmd & DFII_COMMAND_CAS and not cmd & DFII_COMMAND_RAS and phase == self.phy.rdphase
            self._read_burst()

    def _lane_ok(self, m):
        bitslip, taps = self.windows.get(m, (None, ()))
        if self.bitslip[m] != bitslip or self.delay[m] not in taps:
            return False
        if (m, self.delay[m]) in self.flaky:
            self.flips += 1
            return self.flips % 2 == 0
        return True

    def _read_burst(self):
        nbytes = self.phy.dfi_databits // 8
        ok = [self._lane_ok(m) for m in range(self.phy.modules)]
        for m in range(self.phy.modules):
            taps = self.windows.get(m, (None, ()))[1]
            if self.burstdet_always or self.delay[m] in taps:
                self.burstdet |= 1 << m
        for p in range(self.phy.phases):
            word = bytearray((self.burst[p] if self.burst else 0).to_bytes(nbytes, "little"))
            for k in range(nbytes):
                if not ok[k % self.phy.modules]:
                    word[k] ^= 0x5A ^ (self.bitslip[k % self.phy.modules] << 4)
            self.rddata[p] = int.from_bytes(word, "little")
