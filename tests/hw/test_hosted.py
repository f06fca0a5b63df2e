"""hw/host/hosted.py HostedEngine in the Amaranth simulator, over its UART pins at the bit
level: frames bit-banged onto ``uart_rx`` and decoded from ``uart_tx`` give the same bytes
as host_runtime.protocol.DeviceModel, with a stand-in engine that writes memory through
the mux (so the link and the engine both reach the one memory port pair, never at once);
plus the port sets of elaborate_hosted (byte streams / UART pins, optional ctrl)."""

from __future__ import annotations

import struct

from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from host_runtime import protocol as P
from hw.decode.engine import EngineCounters
from hw.host.hosted import HostedEngine
from hw.mem.axi4 import AXI4ReadSignature, AXI4WriteSignature
from hw.mem.writer import BurstWriter

from .axi_memory import AXIMemory

HASH = bytes.fromhex("a5a5a5a55a5a5a5a")
MEM = 1 << 12
DIV = 4
RUN_CYCLES = 40


class StubEngine(wiring.Component):
    """The engine-control interface; a run writes one beat (token u32, pos u32, n_instr u64)
    at ``program_addr``, stays busy ``RUN_CYCLES`` cycles and answers token + pos + 1."""

    def __init__(self):
        super().__init__({
            "start": In(1), "program_addr": In(32), "n_instr": In(16), "token": In(17), "pos": In(14),
            "busy": Out(1), "error": Out(1), "next_token": Out(17), "counters": Out(EngineCounters()),
            "axi_r": Out(AXI4ReadSignature(addr_bits=32, data_bits=128, id_bits=3)),
            "axi_w": Out(AXI4WriteSignature(addr_bits=32, data_bits=128)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.writer = w = BurstWriter(addr_bits=32, data_bits=128, max_burst=4)
        wiring.connect(m, w.axi, wiring.flipped(self.axi_w))
        left = Signal(range(RUN_CYCLES + 1))
        m.d.comb += [w.start.payload.eq(self.program_addr), w.data.payload.last.eq(1),
                     w.data.payload.data.eq(Cat(self.token, Const(0, 15), self.pos, Const(0, 18), self.n_instr))]
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [self.busy.eq(1), left.eq(RUN_CYCLES), self.counters.cycles.eq(0)]
                    m.next = "ADDR"
            with m.State("ADDR"):
                m.d.comb += w.start.valid.eq(1)
                with m.If(w.start.ready):
                    m.next = "DATA"
            with m.State("DATA"):
                m.d.comb += w.data.valid.eq(1)
                with m.If(w.data.ready):
                    m.next = "WAIT"
            with m.State("WAIT"):
                m.d.sync += left.eq(left - 1)
                with m.If(w.idle & (left <= 1)):
                    m.d.sync += [self.busy.eq(0), self.next_token.eq(self.token + self.pos + 1),
                                 self.counters.cycles.eq(RUN_CYCLES)]
                    m.next = "IDLE"
        return m


def _bits(data: bytes):
    for b in data:
        yield from [0] + [(b >> i) & 1 for i in range(8)] + [1]


def _decode(levels: list[int], div: int) -> bytes:
    """8N1 bytes from a pin sampled once per cycle (sampling each bit in its middle)."""
    out, i = bytearray(), 0
    while i < len(levels):
        if levels[i]:
            i += 1
            continue
        mid = i + div // 2
        if mid + 9 * div >= len(levels):
            break
        bits = [levels[mid + k * div] for k in range(1, 9)]
        assert levels[mid + 9 * div] == 1, f"framing error at cycle {i}"
        out.append(sum(bit << k for k, bit in enumerate(bits)))
        i = mid + 9 * div
    return bytes(out)


def _script() -> bytes:
    seq = iter(range(1, 100))
    f = lambda op, payload=b"": P.encode_frame(op, next(seq), payload)     # noqa: E731
    data = bytes(range(48))
    bad = bytearray(f(P.Op.READ_MEM, struct.pack("<QI", 0, 16)))
    bad[-1] ^= 1
    return b"".join([
        f(P.Op.HELLO), f(P.Op.WRITE_MEM, struct.pack("<Q", 256) + data), f(P.Op.READ_MEM, struct.pack("<QI", 256, 48)),
        f(P.Op.WRITE_CSR, struct.pack("<HQ", P.Csr.PROGRAM_ADDR, 1024)),
        f(P.Op.WRITE_CSR, struct.pack("<HQ", P.Csr.N_INSTR, 9)),
        f(P.Op.RUN, struct.pack("<II", 7, 3)), bytes(bad), f(P.Op.STATUS),
        f(P.Op.READ_MEM, struct.pack("<QI", 1024, 16)), f(P.Op.READ_CSR, struct.pack("<H", P.Csr.NEXT_TOKEN)),
        f(P.Op.READ_CSR, struct.pack("<H", P.CSR_EXT_BASE + 1)),
    ])


def test_hosted_engine_over_uart_pins_matches_device_model():
    stream = _script()
    model_mem = bytearray(MEM)
    dev = P.DeviceModel(model_mem, config_hash=HASH)

    def run(tok, pos):
        a = dev.csr[P.Csr.PROGRAM_ADDR]
        model_mem[a:a + 16] = struct.pack("<IIQ", tok, pos, dev.csr[P.Csr.N_INSTR])
        return tok + pos + 1, RUN_CYCLES
    dev._run = run
    # (the model's RUN completes at once; on the gateware the run is over long before the
    # next frame has crossed the UART)
    want = dev.receive(stream)

    dut = HostedEngine(StubEngine(), config_hash=HASH, mem_size=MEM, uart_divisor=DIV)
    mem = AXIMemory(MEM, 128, latency=2)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(mem.read_process(dut.axi_r), background=True)
    sim.add_testbench(mem.write_process(dut.axi_w), background=True)
    levels: list[int] = []
    idle_seen = []

    async def drive(ctx):
        ctx.set(dut.uart_rx, 1)
        await ctx.tick().repeat(10)
        for bit in _bits(stream):
            ctx.set(dut.uart_rx, bit)
            await ctx.tick().repeat(DIV)
        ctx.set(dut.uart_rx, 1)

    async def watch(ctx):
        budget = (len(stream) + len(want)) * 10 * DIV + 5000
        for _ in range(budget):
            _, _, pin, idle = await ctx.tick().sample(dut.uart_tx, dut.idle)
            levels.append(pin)
            idle_seen.append(idle)

    sim.add_testbench(drive, background=True)
    sim.add_testbench(watch)
    sim.run()
    got = _decode(levels, DIV)
    assert got == want, f"got {got.hex()}\nwant {want.hex()}"
    assert bytes(mem.mem) == bytes(model_mem)
    assert idle_seen[-1] and not all(idle_seen)


def test_port_sets():
    from rtl_gen.config import load_config
    from rtl_gen.generate import elaborate_hosted
    cfg = load_config("decode_tiny")
    plain = elaborate_hosted(cfg)
    uart = elaborate_hosted(cfg, uart_divisor=8, mem_size=1 << 26, ctrl=True)
    common = {"axi_r", "axi_w", "busy", "idle", "link_idle"}
    assert set(plain.signature.members) == common | {"rx", "tx", "flush"}
    assert set(uart.signature.members) == common | {"uart_rx", "uart_tx", "framing_error", "ctrl"}
    assert uart.link.mem_size == 1 << 26 and plain.link.mem_size == cfg.memory.sim.size_bytes
    assert uart.link.config_hash == cfg.hash_bytes()
    for d in (plain, uart):                 # inspected, not elaborated: no "never used" warnings
        for obj in (d, d.engine, d.link, getattr(d, "_urx", None), getattr(d, "_utx", None)):
            if obj is not None:
                obj._MustUse__silence = True
