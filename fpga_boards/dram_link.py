"""DRAM initialisation of a board over the host link (``lutforge dram-init``).

The board's bitstream puts LiteDRAM's Wishbone control bus behind the host link's external
CSR window (READ_CSR / WRITE_CSR of index ``CSR_EXT_BASE + word``; ``Link.read_ext`` /
``Link.write_ext``); :class:`LinkCtrl` makes that window the ``ctrl`` of
:func:`fpga_boards.dram_init.dram_init`. :func:`memtest` then writes a pseudo-random pattern
through WRITE_MEM (the accelerator's AXI port, now served by the DRAM) and reads it back.
"""

from __future__ import annotations

import contextlib
import random
import time
from dataclasses import dataclass

from host_runtime.protocol import MEM_ALIGN, Link, ProtocolError

from .dram_init import DramInitError, InitReport, dram_init
from .litedram import generate_litedram


class LinkCtrl:
    """The external CSR window of ``link`` as a word-addressed ``ctrl`` (read/write), with
    the link's failures turned into errors that say what they mean for DRAM init."""

    def __init__(self, link):
        if not (hasattr(link, "read_ext") and hasattr(link, "write_ext")):
            raise DramInitError("this host link has no external CSR window (Link.read_ext/write_ext); "
                                "the DRAM controller's registers cannot be reached")
        self.link = link

    def _explain(self, what: str, addr: int, e: ProtocolError) -> DramInitError:
        msg = str(e)
        if "BAD_ADDRESS" in msg:
            return DramInitError(f"the device has no external CSR window ({what} of word {addr:#x} answered "
                                 f"BAD_ADDRESS): its bitstream has no DRAM controller on the host link")
        if "DEVICE_ERROR" in msg:
            return DramInitError(f"the DRAM controller's control bus did not acknowledge {what} of word {addr:#x} "
                                 f"(DEVICE_ERROR: bus timeout or error; is the controller's clock running?)")
        return DramInitError(f"{what} of DRAM controller word {addr:#x}: {msg}")

    def read(self, addr: int) -> int:
        try:
            return self.link.read_ext(addr)
        except ProtocolError as e:
            raise self._explain("a read", addr, e) from None

    def write(self, addr: int, value: int) -> None:
        try:
            self.link.write_ext(addr, value)
        except ProtocolError as e:
            raise self._explain("a write", addr, e) from None


@dataclass
class MemtestResult:
    base: int
    nbytes: int
    errors: int             # wrong bytes
    first_bad: int | None   # address of the first wrong byte
    write_s: float
    read_s: float

    def summary(self) -> str:
        rate = self.nbytes / max(self.write_s + self.read_s, 1e-9) / 1e6
        verdict = "OK" if not self.errors else f"{self.errors} wrong bytes, first at {self.first_bad:#x}"
        return f"memtest {self.nbytes} bytes at {self.base:#x}: {verdict} ({rate:.2f} MB/s written + read back)"


def memtest(link, nbytes: int, *, base: int = 0, seed: int = 1) -> MemtestResult:
    """Write ``nbytes`` (rounded up to :data:`MEM_ALIGN`) of seeded random bytes at ``base``
    through WRITE_MEM, read them back through READ_MEM, count the wrong bytes."""
    if base % MEM_ALIGN:
        raise DramInitError(f"memtest base {base:#x} is not a multiple of {MEM_ALIGN} bytes")
    n = -(-nbytes // MEM_ALIGN) * MEM_ALIGN
    data = random.Random(seed).randbytes(n)
    t0 = time.monotonic()
    link.write_mem(base, data)
    t1 = time.monotonic()
    back = link.read_mem(base, n)
    t2 = time.monotonic()
    bad = [i for i in range(n) if i >= len(back) or back[i] != data[i]]
    return MemtestResult(base, n, len(bad), base + bad[0] if bad else None, t1 - t0, t2 - t1)


def init_over_link(link, board: str, *, memtest_bytes: int = 0, memtest_base: int = 0,
                   log=None, sleep=time.sleep) -> tuple[InitReport, MemtestResult | None]:
    """Initialise ``board``'s DRAM through ``link`` and optionally run :func:`memtest`.

    A failed memtest sets the core's ``init_error`` (as the BIOS does; the AXI port then
    stays blocked) and raises :class:`DramInitError`."""
    build = generate_litedram(board)
    ctrl = LinkCtrl(link)
    report = dram_init(ctrl, build, sleep=sleep, log=log)
    if not memtest_bytes:
        return report, None
    if memtest_base + memtest_bytes > build.dram_size:
        raise DramInitError(f"memtest of {memtest_bytes} bytes at {memtest_base:#x} runs past the "
                            f"{build.dram_size >> 20} MiB of the {board} DRAM")
    result = memtest(link, memtest_bytes, base=memtest_base)
    if result.errors:
        ctrl.write(build.csr_word("ddrctrl_init_error"), 1)
        raise DramInitError(f"{board}: {result.summary()}; init_error set")
    return report, result


@contextlib.contextmanager
def connect(target: str, *, timeout: float = 2.0, retries: int = 5):
    """A :class:`Link` to a board's host link (``serial://``, ``udp://``, ``tcp://``, ``sim://HOST:PORT``)."""
    from host_runtime.transports import open_target
    transport = open_target(target)
    try:
        yield Link(transport, timeout=timeout, retries=retries)
    finally:
        transport.close()
