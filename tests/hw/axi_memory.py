"""A behavioural AXI4 memory for Amaranth-simulator unit tests (one beat per cycle).

The cosim tests use the RTL memory model in ``sim/rtl``; this one is for fast unit tests
of small blocks under ``amaranth.sim``. Add its processes with
``sim.add_testbench(proc, background=True)``.
"""

import random
from collections import deque


class AXIMemory:
    """Serves ``axi_r``/``axi_w`` ports of a DUT from a bytearray."""

    def __init__(self, size: int, data_bits: int, latency: int = 3, *, stall_percent: int = 0,
                 write_stall_percent: int = 0, seed: int = 0):
        """``stall_percent``: each cycle the read-data channel withholds its next beat with
        this probability, ``write_stall_percent``: the write-data channel its ready (both
        seeded): consumers see beats with gaps at random places, and written bytes land
        late, after reads issued later (AXI orders nothing between R and W)."""
        self.mem = bytearray(size)
        self.bpb = data_bits // 8
        self.latency = latency
        self.stall_percent = stall_percent
        self.write_stall_percent = write_stall_percent
        self.rng = random.Random(seed)

    def read_process(self, port):
        async def proc(ctx):
            pending = deque()   # [ready_at_cycle, addr, beats_left, id]
            cycle = 0
            ctx.set(port.arready, 1)
            while True:
                _, _, arvalid, araddr, arlen, arid, rvalid, rready = await ctx.tick().sample(
                    port.arvalid, port.araddr, port.arlen, port.arid, port.rvalid, port.rready)
                cycle += 1
                if rvalid and rready:   # the beat shown before this edge was taken
                    p = pending[0]
                    p[1] += self.bpb
                    p[2] -= 1
                    if p[2] == 0:
                        pending.popleft()
                if arvalid:
                    assert araddr % 4096 + (arlen + 1) * self.bpb <= 4096, "read burst crosses 4 KiB"
                    pending.append([cycle + self.latency, araddr, arlen + 1, arid])
                stall = self.stall_percent and self.rng.randrange(100) < self.stall_percent
                if pending and pending[0][0] <= cycle and not stall:
                    p = pending[0]
                    ctx.set(port.rvalid, 1)
                    ctx.set(port.rdata, int.from_bytes(self.mem[p[1]:p[1] + self.bpb], "little"))
                    ctx.set(port.rid, p[3])
                    ctx.set(port.rlast, p[2] == 1)
                    ctx.set(port.rresp, 0)
                else:
                    ctx.set(port.rvalid, 0)
        return proc

    def write_process(self, port):
        async def proc(ctx):
            bursts = deque()
            bresp_due = deque()
            cycle = 0
            ctx.set(port.awready, 1)
            ctx.set(port.wready, 1)
            while True:
                _, _, awvalid, awaddr, awlen, wvalid, wready, wdata, wlast, bvalid = await ctx.tick().sample(
                    port.awvalid, port.awaddr, port.awlen, port.wvalid, port.wready, port.wdata, port.wlast,
                    port.bvalid)
                cycle += 1
                if awvalid:
                    assert awaddr % 4096 + (awlen + 1) * self.bpb <= 4096, "write burst crosses 4 KiB"
                    bursts.append([awaddr, awlen + 1])
                if wvalid and wready:
                    b = bursts[0]
                    self.mem[b[0]:b[0] + self.bpb] = wdata.to_bytes(self.bpb, "little")
                    b[0] += self.bpb
                    b[1] -= 1
                    assert bool(wlast) == (b[1] == 0), "wlast misplaced"
                    if b[1] == 0:
                        bursts.popleft()
                        bresp_due.append(cycle + self.latency)
                # a stalled write-data channel: the beats land late (reads meanwhile see the
                # old bytes, as a memory that orders nothing between R and W may show them)
                ctx.set(port.wready, not (self.write_stall_percent and self.rng.randrange(100) < self.write_stall_percent))
                if bresp_due and bresp_due[0] <= cycle:
                    bresp_due.popleft()
                    ctx.set(port.bvalid, 1)
                    ctx.set(port.bresp, 0)
                else:
                    ctx.set(port.bvalid, 0)
        return proc
