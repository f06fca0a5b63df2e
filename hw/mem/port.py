"""The memory port every GEMM core shares: operand readers on one AXI4 read port, C writer.

:func:`gemm_memory_port` builds, inside a core's module, one :class:`BurstReader` and one
:class:`VectorUnpacker` per operand stream (sharing the core's ``axi_r`` through a
:class:`ReadArbiter` by ID, in the order given) and the :class:`BurstWriter` with its
:class:`VectorPacker` for the result vectors on ``axi_w``. Submodules are named
``read_NAME``, ``unpack_NAME``, ``arbiter``, ``writer`` and ``pack_c``.
"""

from types import SimpleNamespace

from amaranth.lib import wiring
from amaranth.lib.wiring import connect

from .gearbox import VectorPacker, VectorUnpacker
from .reader import BurstReader, ReadArbiter
from .writer import BurstWriter


def gemm_memory_port(m, *, axi_r, axi_w, addr_bits: int, data_bits: int, max_burst: int, outstanding: int,
                     operands: dict[str, int], c_bits: int) -> SimpleNamespace:
    """``operands``: stream name -> vector width. Returns ``readers``/``unpackers`` (dicts by
    name), ``writer`` and ``pack_c``; the caller drives the readers' and unpackers'
    commands, consumes the vectors and feeds ``pack_c``."""
    rd = dict(addr_bits=addr_bits, data_bits=data_bits, max_burst=max_burst, outstanding=outstanding)
    readers, unpackers = {}, {}
    for name, bits in operands.items():
        readers[name] = m.submodules[f"read_{name}"] = BurstReader(**rd)
    m.submodules.arbiter = arb = ReadArbiter(n=len(operands), addr_bits=addr_bits, data_bits=data_bits)
    for i, r in enumerate(readers.values()):
        connect(m, r.axi, getattr(arb, f"m{i}"))
    connect(m, arb.out, wiring.flipped(axi_r))
    for name, bits in operands.items():
        unpackers[name] = m.submodules[f"unpack_{name}"] = VectorUnpacker(data_bits=data_bits, vector_bits=bits)
        connect(m, readers[name].data, unpackers[name].beats)
    m.submodules.writer = writer = BurstWriter(addr_bits=addr_bits, data_bits=data_bits, max_burst=max_burst)
    connect(m, writer.axi, wiring.flipped(axi_w))
    m.submodules.pack_c = pack_c = VectorPacker(data_bits=data_bits, vector_bits=c_bits)
    m.d.comb += [writer.data.valid.eq(pack_c.beats.valid), writer.data.payload.data.eq(pack_c.beats.payload.data),
                 writer.data.payload.last.eq(pack_c.beats.payload.last), pack_c.beats.ready.eq(writer.data.ready)]
    return SimpleNamespace(readers=readers, unpackers=unpackers, writer=writer, pack_c=pack_c)
