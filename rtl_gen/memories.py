"""Memories of an elaborated design, measured from the design itself.

``design_memories(component)`` elaborates an Amaranth component and lists every memory
it contains (hierarchical name, depth, width, read/write ports). Benches use it to
measure what a generator really instantiates (e.g. the LUT core's table RAMs with and
without symmetrization) rather than what a formula on paper says.
"""

from __future__ import annotations

from amaranth.hdl import Shape
from amaranth.hdl._ir import Fragment
from amaranth.hdl._mem import MemoryInstance


def design_memories(component) -> list[dict]:
    """Every memory in ``component``: ``name`` (dotted path), ``depth``, ``width``,
    ``bits`` (= depth x width), ``read_ports``, ``write_ports``."""
    found = []

    def walk(frag, path):
        for sub, name, _ in frag.subfragments:
            here = path + [str(name)]
            if isinstance(sub, MemoryInstance):
                data = sub._data   # the MemoryData behind the instance (Amaranth 0.5)
                width = Shape.cast(data.shape).width
                found.append({"name": ".".join(here), "depth": data.depth, "width": width,
                              "bits": data.depth * width, "read_ports": len(sub._read_ports),
                              "write_ports": len(sub._write_ports)})
            walk(sub, here)

    walk(Fragment.get(component, None), [])
    return found
