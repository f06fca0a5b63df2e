"""The simulated board over a bit-level UART, served on a pseudo-terminal.

:class:`UartBoardHarness` (Verilog top ``lutforge_uart_board_top``) is the simulated board
of :mod:`sim.board` with the host link's byte streams behind the gateware UART
(:func:`rtl_gen.generate.elaborate_hosted` with ``uart_divisor``: :class:`hw.host.uart.UartRx`
/ :class:`~hw.host.uart.UartTx`, 8N1): its ports are the serial pins ``uart_rx`` /
``uart_tx`` (plus ``idle``, ``busy``, ``framing_error``), and the RTL memory model stands
in for the DRAM controller, as on a board top.

:func:`build_uart_board` builds (or reuses, by hash) the Verilator executable driven by
``sim/rtl/uart_board_main.cpp``: it serializes the host's bytes onto ``uart_rx`` and
decodes ``uart_tx`` bit by bit, ``divisor`` clock cycles per bit, and serves them on a
pty, so the host connects with ``serial:///dev/pts/N`` (pyserial: the transport a real
board's UART uses). ``flip_ppm`` inverts bits on the line (both directions, seeded):
line noise that the protocol's CRC and retries must absorb. The CLI is
``lutforge sim-board CONFIG --uart``.

Rate: every byte costs ``10 * divisor`` simulated cycles each way; at the default 8 cycles
per bit the simulated board moves a few kB/s (bounded by the simulator's cycles per
second, see docs/host_link.md), a real board at 3 Mbaud 300 kB/s.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from amaranth.hdl import Const, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hw.host.uart import MIN_DIVISOR, divisor_for
from ref_model.errors import LutforgeError
from rtl_gen.generate import elaborate_hosted, emit_verilog

from . import verilator
from .board import SimBoard, start_process
from .harness import MEMORY_MODEL, RTL_DIR, memory_model

UART_BOARD_TOP = "lutforge_uart_board_top"
UART_BOARD_MAIN = RTL_DIR / "uart_board_main.cpp"
READY = re.compile(r"^lutforge sim-board serial on (\S+)")
#: Clock cycles per bit of the simulated UART unless a baud rate is asked for.
DEFAULT_DIVISOR = 8


class UartBoardHarness(wiring.Component):
    """See the module docstring. Ports: ``uart_rx`` (In, idle high), ``uart_tx`` (Out),
    ``idle`` (Out: nothing in progress, the clock loop may sleep), ``busy`` (Out: the engine
    runs), ``framing_error`` (Out: the board's receiver saw a bad stop bit)."""

    def __init__(self, cfg, divisor: int = DEFAULT_DIVISOR):
        if cfg.decode is None:
            self._MustUse__silence = True
            raise LutforgeError(f"config {cfg.name!r} has no decode section: the simulated board runs the decode "
                                f"engine (add decode.limits, e.g. as in rtl_gen/configs/decode_tiny.yaml)")
        self.cfg, self.divisor = cfg, divisor
        self.hosted = elaborate_hosted(cfg, uart_divisor=divisor)
        super().__init__({"uart_rx": In(1, init=1), "uart_tx": Out(1, init=1), "idle": Out(1), "busy": Out(1),
                          "framing_error": Out(1)})

    def elaborate(self, platform):
        m = Module()
        mc = self.cfg.memory
        m.submodules.hosted = h = self.hosted
        m.d.comb += [h.uart_rx.eq(self.uart_rx), self.uart_tx.eq(h.uart_tx), self.idle.eq(h.idle),
                     self.busy.eq(h.busy), self.framing_error.eq(h.framing_error)]
        memory_model(m, h.axi_r, h.axi_w, sim=mc.sim, addr_bits=mc.addr_bits, data_bits=mc.data_bits,
                     id_bits=h.axi_r.signature.id_bits,
                     backdoor=(Const(0, 1), Const(0, 1), Const(0, 32), Const(0, 32)))
        return m


def uart_divisor(cfg, *, baud: float | None = None, clock_mhz: float | None = None) -> int:
    """Cycles per bit: :data:`DEFAULT_DIVISOR` unless ``baud`` is given, then the divisor
    for ``baud`` at ``clock_mhz`` (default the config's clock), checked by
    :func:`hw.host.uart.divisor_for`."""
    if baud is None:
        return DEFAULT_DIVISOR
    return divisor_for((clock_mhz or cfg.clock.mhz) * 1e6, baud)


_built: dict[tuple[str, int], Path] = {}


def build_uart_design(verilog: dict[str, str], top: str, *, extra_files: list[Path] = ()) -> Path:
    """Build (or reuse, by hash) ``sim/rtl/uart_board_main.cpp`` around any Verilog top
    ``top`` with the ports ``clk``, ``rst``, ``uart_rx`` (in), ``uart_tx``, ``idle``,
    ``busy`` (out): e.g. a board top whose DRAM controller is replaced by the memory model
    (``verilog``: file name -> text; ``extra_files``: e.g. the memory model's source)."""
    return verilator.build_raw(verilog, top, extra_files=list(extra_files), main=UART_BOARD_MAIN,
                               prefix="Vuartboard")


def build_uart_board(cfg, divisor: int = DEFAULT_DIVISOR) -> Path:
    """The UART board's executable for ``cfg`` at ``divisor`` cycles per bit (cached on
    disk by the Verilog's hash, and in this process by the config hash, which skips the
    elaboration)."""
    key = (cfg.hash(), divisor)
    if key in _built and _built[key].exists():
        return _built[key]
    text = emit_verilog(UartBoardHarness(cfg, divisor), UART_BOARD_TOP)
    _built[key] = build_uart_design({f"{UART_BOARD_TOP}.v": text}, UART_BOARD_TOP, extra_files=[MEMORY_MODEL])
    return _built[key]


def _args(divisor: int, flip_ppm: float, seed: int, link: str | None) -> list[str]:
    if not isinstance(divisor, int) or divisor < MIN_DIVISOR:
        raise LutforgeError(f"UART divisor {divisor!r}: at least {MIN_DIVISOR} clock cycles per bit")
    if not 0 <= flip_ppm <= 1e6:
        raise LutforgeError(f"--flip-ppm {flip_ppm:g}: a bit error rate in parts per million, 0..1000000")
    args = ["--bit-cycles", str(divisor), "--flip-ppm", repr(float(flip_ppm)), "--seed", str(int(seed))]
    return args + (["--link", str(link)] if link else [])


def serial_target(pty: str, baud: float) -> str:
    """The ``serial://`` target of the board's pty (the baud rate is nominal on a pty)."""
    return f"serial://{pty}?baud={int(baud)}"


def start_uart_board(cfg, *, divisor: int = DEFAULT_DIVISOR, flip_ppm: float = 0.0, seed: int = 1,
                     link: str | None = None, ready_timeout: float = 30.0) -> SimBoard:
    """Build (or reuse) the UART board of ``cfg`` and start it on a pty. Returns a
    :class:`~sim.board.SimBoard` whose ``target`` is ``serial:///dev/pts/N?baud=B`` (B =
    the config's clock / ``divisor``) and ``listening`` the pty path; ``close()`` fills
    ``stats`` (cycles, bytes each way on the line, bits flipped, framing errors)."""
    _args(divisor, flip_ppm, seed, link)             # bad arguments fail before the build
    return launch_uart(build_uart_board(cfg, divisor), divisor=divisor, baud=cfg.clock.mhz * 1e6 / divisor,
                       flip_ppm=flip_ppm, seed=seed, link=link, ready_timeout=ready_timeout)


def launch_uart(binary: Path, *, divisor: int, baud: float, flip_ppm: float = 0.0, seed: int = 1,
                link: str | None = None, ready_timeout: float = 30.0) -> SimBoard:
    """Start a built UART board executable (:func:`build_uart_board`,
    :func:`build_uart_design`) at ``divisor`` cycles per bit (the divisor its gateware UART
    was built with) and wait for its pty; ``baud`` only names the rate in the target."""
    proc, pty = start_process([str(binary), *_args(divisor, flip_ppm, seed, link)], READY,
                              ready_timeout=ready_timeout)
    return SimBoard(proc, pty, target=serial_target(pty, baud))


def serve_uart(cfg, *, divisor: int = DEFAULT_DIVISOR, flip_ppm: float = 0.0, seed: int = 1,
               link: str | None = None, clock_mhz: float | None = None) -> int:
    """Run the UART board in the foreground until SIGINT/SIGTERM (``sim-board --uart``)."""
    args = _args(divisor, flip_ppm, seed, link)
    binary = build_uart_board(cfg, divisor)
    mhz = clock_mhz or cfg.clock.mhz
    print(f"lutforge sim-board: {cfg.name} over a UART at {divisor} cycles/bit ({mhz * 1e6 / divisor:,.0f} baud "
          f"at {mhz:g} MHz), line noise {flip_ppm:g} ppm; host runtime: --timeout 10 (a 4 kB frame takes "
          f"seconds)", flush=True)
    os.execv(str(binary), [str(binary), *args])
    return 0  # pragma: no cover (execv does not return)
