"""GemmEngine: a tensor core run by descriptor programs, as the host link runs it (Amaranth sim)."""

import torch
from amaranth.sim import Simulator

from fpga_boards.gemm_engine import descriptor_bytes, gemm_engine
from fpga_boards.gemm_host import gemm_program
from hw.cores.systolic import GemmCommand
from ref_model.gemm import systolic_gemm
from rtl_gen.config import load_config
from tests.hw.axi_memory import AXIMemory


def _run(cfg, regions, program_addr, n_instr, mem_size=1 << 16):
    dut = gemm_engine(cfg)
    mem = AXIMemory(mem_size, cfg.memory.data_bits)
    for addr, data in regions:
        mem.mem[addr:addr + len(data)] = data
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(mem.read_process(dut.axi_r), background=True)
    sim.add_testbench(mem.write_process(dut.axi_w), background=True)
    out = {}

    async def host(ctx):
        ctx.set(dut.program_addr, program_addr)
        ctx.set(dut.n_instr, n_instr)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        await ctx.tick().until(~dut.busy)
        out["error"] = ctx.get(dut.error)
        out["done"] = ctx.get(dut.next_token)
        out["counters"] = {n: ctx.get(getattr(dut.counters, n))
                           for n in ("cycles", "matvec_cycles", "read_bytes", "write_bytes")}
    sim.add_testbench(host)
    sim.run()
    return mem, out


def test_descriptor_size():
    assert descriptor_bytes(144, 128) == 32
    assert descriptor_bytes(144, 64) == 32
    assert descriptor_bytes(128, 64) == 16


def test_gemm_program_two_gemms_bit_exact():
    """Two GEMMs of different shapes in one program: C equals ref_model.systolic_gemm, counters add up."""
    cfg = load_config(None, ["core.rows=2", "core.cols=2", "memory.data_bits=64"])
    gen = torch.Generator().manual_seed(3)
    cases = [(cfg.act_format.random((3, 5), gen), cfg.weight_format.random((5, 4), gen)),
             (cfg.act_format.random((4, 2), gen), cfg.weight_format.random((2, 3), gen))]
    prog = gemm_program(cfg, cases)
    mem, out = _run(cfg, prog.regions, prog.program_addr, prog.n_instr)
    assert out["error"] == 0 and out["done"] == 2
    from host_runtime.gemm_layout import GemmLayout
    layout = GemmLayout(cfg)
    for img, (a, w) in zip(prog.images, cases):
        got = layout.unpack_c(img, bytes(mem.mem[img.c_addr:img.c_addr + img.c_size]))
        want = systolic_gemm(a, w, cfg.act_format, cfg.weight_format, cfg.acc_format)
        assert torch.equal(got, want), f"seed 3: C mismatch for {tuple(a.shape)}x{tuple(w.shape)}"
    c = out["counters"]
    assert c["write_bytes"] == sum(img.c_size for img in prog.images)
    descs = 2 * descriptor_bytes(GemmCommand(cfg.memory.addr_bits).size, 64)
    assert c["read_bytes"] >= descs + sum(len(i.a_bytes) for i in prog.images)
    assert 0 < c["matvec_cycles"] < c["cycles"]


def test_bad_descriptor_stops_with_error():
    """A descriptor with K = 0 is the core's bad command: error set, the rest not run."""
    cfg = load_config(None, ["core.rows=2", "core.cols=2", "memory.data_bits=128"])
    layout = GemmCommand(cfg.memory.addr_bits)
    nb = descriptor_bytes(layout.size, 128)
    bad = layout.const({"a_addr": 0, "w_addr": 0, "c_addr": 0x1000, "m": 2, "k": 0, "n": 2}).as_bits()
    good = layout.const({"a_addr": 0, "w_addr": 0, "c_addr": 0x1000, "m": 2, "k": 1, "n": 2}).as_bits()
    descs = bad.to_bytes(nb, "little") + good.to_bytes(nb, "little")
    _, out = _run(cfg, [(0x2000, descs)], 0x2000, 2)
    assert out["error"] == 1 and out["done"] == 0
    assert out["counters"]["write_bytes"] == 0


def test_empty_program_is_idle():
    cfg = load_config(None, ["core.rows=2", "core.cols=2"])
    _, out = _run(cfg, [], 0, 0)
    assert out == {"error": 0, "done": 0, "counters": {"cycles": 0, "matvec_cycles": 0, "read_bytes": 0,
                                                        "write_bytes": 0}}


class SimLink:
    """The Link API over the GemmEngine in the Amaranth simulator: memory commands touch a
    bytearray, RUN simulates the engine on it (what HostLink + the board's memory do)."""

    def __init__(self, cfg, size=1 << 16):
        from host_runtime.protocol import Csr
        self.cfg, self.mem, self.csr, self.Csr = cfg, bytearray(size), {}, Csr

    def hello(self):
        return 1, self.cfg.hash_bytes()

    def write_mem(self, addr, data):
        assert addr % 16 == 0 and len(data) % 16 == 0
        self.mem[addr:addr + len(data)] = data

    def read_mem(self, addr, length):
        assert addr % 16 == 0 and length % 16 == 0
        return bytes(self.mem[addr:addr + length])

    def write_csr(self, idx, value):
        self.csr[idx] = value

    def read_csr(self, idx):
        return self.csr[idx]

    def run(self, token, pos, *, timeout=60.0):
        C = self.Csr
        mem, out = _run(self.cfg, [(0, bytes(self.mem))], self.csr[C.PROGRAM_ADDR], self.csr[C.N_INSTR],
                        mem_size=len(self.mem))
        self.mem[:] = mem.mem
        assert not out["error"]
        for name, v in out["counters"].items():
            self.csr[getattr(C, name.upper())] = v
        return out["done"], out["counters"]["cycles"]


def test_board_gemm_over_link_api():
    """The host side (packing, descriptors, CSRs, RUN, read-back, check) against the engine."""
    from fpga_boards.gemm_host import board_gemm
    cfg = load_config(None, ["core.rows=2", "core.cols=2", "memory.data_bits=64"])
    res = board_gemm(SimLink(cfg), cfg, m=3, k=6, n=5, seed=7)
    assert res["match"] and res["cycles"] > 0 and 0 < res["mac_utilization"] <= 1


def test_board_gemm_refuses_other_config():
    import pytest
    from fpga_boards.gemm_host import board_gemm
    from ref_model.errors import LutforgeError
    cfg = load_config(None, ["core.rows=2", "core.cols=2"])
    other = load_config(None, ["core.rows=2", "core.cols=4"])
    with pytest.raises(LutforgeError, match="the board runs config hash .* program the bitstream"):
        board_gemm(SimLink(other), cfg, m=2, k=2, n=2)
