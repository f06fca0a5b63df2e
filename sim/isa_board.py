"""A board in Python: the host protocol's device model over a memory, with the
instruction-level model of the decode engine (:mod:`sim.decode_isa`) as its engine.

It answers the same frames as the simulated board (``lutforge sim-board``) and runs the
same token programs, bit-exact with the reference, but at Python speed and without a
Verilator build: a fast stand-in for host-runtime tests and for ``lutforge run
--target isa://``. Cycle counts it reports are 0 (it has no clock).
"""

from __future__ import annotations

from host_runtime.protocol import Csr, DeviceModel
from host_runtime.transports import LoopbackTransport

from .decode_isa import DecodeISAModel


class IsaBoard(DeviceModel):
    """``cfg``: the accelerator config (its decode numerics, memory size and hash)."""

    def __init__(self, cfg, *, memory_bytes: int | None = None):
        size = memory_bytes or cfg.memory.sim.size_bytes
        super().__init__(bytearray(size), config_hash=cfg.hash_bytes(), run=self._run_token)
        self.engine = DecodeISAModel(self.mem, cfg.decode.decode_numerics())

    def _run_token(self, token: int, pos: int) -> tuple[int, int]:
        nxt = self.engine.step(self.csr[Csr.PROGRAM_ADDR], self.csr[Csr.N_INSTR], token, pos)
        return nxt, 0


def isa_target(cfg) -> LoopbackTransport:
    """A transport to a fresh :class:`IsaBoard` of ``cfg``."""
    return LoopbackTransport(IsaBoard(cfg))
