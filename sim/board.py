"""The simulated board: host link + decode engine + external memory, served on a socket.

:class:`BoardHarness` (Verilog top ``lutforge_board_top``) is what a board bitstream
holds, minus the pins: the config's :class:`hw.host.hosted.HostedEngine`
(:func:`rtl_gen.generate.elaborate_hosted`: the host link on a byte stream ``rx``/``tx``,
the decode engine, and the mux through which they share the memory ports) beside the RTL
AXI4 memory model (``sim/rtl/lutforge_axi_mem.sv``, timing from ``memory.sim``; its
backdoor tied off: everything goes over the protocol) in place of the DRAM controller.

:func:`build_board` builds (or reuses, by hash) the Verilator executable driven by
``sim/rtl/board_main.cpp``, which runs the clock with no Python and serves one client at
a time on a loopback TCP port or a Unix socket. :func:`start_sim_board` starts it and
gives the ``sim://`` target for :func:`host_runtime.transports.open_target`; the CLI is
``lutforge sim-board CONFIG``.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import urlparse

from amaranth.hdl import Const, Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ref_model.errors import LutforgeError, SimulationError
from rtl_gen.generate import elaborate_hosted, emit_verilog

from . import verilator
from .harness import MEMORY_MODEL, RTL_DIR, memory_model

BOARD_TOP = "lutforge_board_top"
BOARD_MAIN = RTL_DIR / "board_main.cpp"
READY = re.compile(r"^lutforge sim-board listening on (\S+)")


def config_hash_bytes(cfg) -> bytes:
    """The 8 bytes HELLO reports: the config's hash (``cfg.hash()``, 16 hex digits)."""
    return cfg.hash_bytes()


class BoardHarness(wiring.Component):
    """See the module docstring. Ports: ``rx`` (In, bytes from the host), ``tx`` (Out,
    bytes to the host), ``idle`` (Out: the link waits for bytes, the engine is idle and no
    byte is offered on ``tx``: the clock loop may sleep), ``busy`` (Out: the engine runs),
    ``flush`` (In: a new client connected; the link drops a partly received frame as soon
    as ``link_idle``, i.e. when it waits for bytes), ``link_idle`` (Out)."""

    def __init__(self, cfg):
        if cfg.decode is None:
            self._MustUse__silence = True          # a refused config: no "never used" warning
            raise LutforgeError(f"config {cfg.name!r} has no decode section: the simulated board runs the decode "
                                f"engine (add decode.limits, e.g. as in rtl_gen/configs/decode_tiny.yaml)")
        self.cfg = cfg
        self.hosted = elaborate_hosted(cfg)
        super().__init__({"rx": In(stream.Signature(8)), "tx": Out(stream.Signature(8)),
                          "idle": Out(1), "busy": Out(1), "flush": In(1), "link_idle": Out(1)})

    def elaborate(self, platform):
        m = Module()
        mc = self.cfg.memory
        m.submodules.hosted = h = self.hosted
        wiring.connect(m, wiring.flipped(self.rx), h.rx)
        wiring.connect(m, h.tx, wiring.flipped(self.tx))
        m.d.comb += [h.flush.eq(self.flush), self.idle.eq(h.idle), self.busy.eq(h.busy),
                     self.link_idle.eq(h.link_idle)]
        memory_model(m, h.axi_r, h.axi_w, sim=mc.sim, addr_bits=mc.addr_bits, data_bits=mc.data_bits,
                     id_bits=h.axi_r.signature.id_bits,
                     backdoor=(Const(0, 1), Const(0, 1), Const(0, 32), Const(0, 32)))
        return m


def build_board(cfg) -> Path:
    """The simulated board's executable for ``cfg`` (built once per design, cached)."""
    text = emit_verilog(BoardHarness(cfg), BOARD_TOP)
    return verilator.build_raw({f"{BOARD_TOP}.v": text}, BOARD_TOP, extra_files=[MEMORY_MODEL], main=BOARD_MAIN,
                               prefix="Vboard")


def _listen_arg(listen: str | None) -> str:
    if listen is None:
        return "tcp://127.0.0.1:0"
    u = urlparse(listen)
    if u.scheme == "tcp" and u.hostname and u.port is not None:
        return listen
    if u.scheme == "unix" and u.path:
        return listen
    raise LutforgeError(f"--listen {listen!r}: expected tcp://127.0.0.1:PORT (0 = any free port) or "
                        f"unix:///path/to/socket")


def sim_target(listening: str) -> str:
    """The ``sim://`` target for the address the board reports (``tcp://H:P`` or ``unix:///p``)."""
    u = urlparse(listening)
    return f"sim://{u.netloc}" if u.scheme == "tcp" else f"sim://{u.path}"


class SimBoard:
    """A running simulated board (a context manager). ``target`` is its host target
    (``sim://`` address, or ``serial://`` for the UART board); ``listening`` the address it
    printed; ``close()`` stops it (SIGTERM) and fills ``stats``: cycles simulated,
    busy_cycles (engine running), tick_seconds (wall time spent running the clock),
    seconds (wall time in all), and what else the executable reports."""

    def __init__(self, process: subprocess.Popen, listening: str, target: str | None = None):
        self.process, self.listening = process, listening
        self.target = target or sim_target(listening)
        self.stats: dict | None = None

    def close(self, timeout: float = 10.0) -> None:
        p = self.process
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if p.stdout:
            for line in p.stdout.read().splitlines():
                if line.startswith("{"):
                    self.stats = json.loads(line)
            p.stdout.close()

    def __enter__(self) -> "SimBoard":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def start_process(cmd: list[str], ready: re.Pattern, *, ready_timeout: float = 30.0) -> tuple[subprocess.Popen, str]:
    """Start a board executable and wait for its ready line; returns the process and the
    ready pattern's first group (the address it serves)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=None, text=True)
    deadline = time.monotonic() + ready_timeout
    while True:
        left = deadline - time.monotonic()
        got, _, _ = select.select([proc.stdout], [], [], max(left, 0))
        line = proc.stdout.readline() if got else ""
        mo = ready.match(line)
        if mo:
            return proc, mo.group(1)
        if (got and line == "") or proc.poll() is not None or left <= 0:
            proc.kill() if proc.poll() is None else None
            proc.wait()
            why = f"exited with status {proc.returncode}" if proc.returncode is not None and line == "" \
                else f"printed {line.strip()!r}" if line else f"said nothing within {ready_timeout:g} s"
            raise SimulationError(f"the simulated board did not start ({Path(cmd[0]).name} {why})")


def launch(binary: Path, listen: str | None = None, *, ready_timeout: float = 30.0) -> SimBoard:
    """Start a built board executable and wait for its ready line."""
    proc, listening = start_process([str(binary), "--listen", _listen_arg(listen)], READY,
                                    ready_timeout=ready_timeout)
    return SimBoard(proc, listening)


def start_sim_board(cfg, *, listen: str | None = None, ready_timeout: float = 30.0) -> SimBoard:
    """Build (or reuse) the simulated board of ``cfg`` and start it listening on ``listen``
    (``tcp://127.0.0.1:PORT``, port 0 = a free one, the default; or ``unix:///path``).
    Returns a :class:`SimBoard` (use it as a context manager) whose ``target`` goes to
    :func:`host_runtime.transports.open_target`."""
    _listen_arg(listen)             # a bad address is an error before the (maybe long) build
    return launch(build_board(cfg), listen, ready_timeout=ready_timeout)


def serve(cfg, listen: str | None = None) -> int:
    """Run the board in the foreground until SIGINT/SIGTERM (the CLI's ``sim-board``)."""
    args = ["--listen", _listen_arg(listen)]
    binary = build_board(cfg)
    os.execv(str(binary), [str(binary), *args])
    return 0  # pragma: no cover (execv does not return)
