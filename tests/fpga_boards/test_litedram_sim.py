"""The generated controller (litedram_gen --sim: LiteDRAM's core over its DRAM model) behind
LiteDRAMCore under Verilator: fpga_boards.dram_init initialises it over the Wishbone ctrl
port (the real DFII and CSR map), then AXI4 bursts through the wrapper's port are written,
read back and compared word for word (IDs echoed, byte strobes, blocked before init).
The DDR3 core (ECPIX-5: 1:4 DFI in LiteDRAM's model, 128-bit port, a 512 MiB model memory)
is slow."""

import pytest
from amaranth.back import verilog as amaranth_verilog
from amaranth.hdl import ClockDomain, DomainRenamer, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, connect, flipped

from fpga_boards.litedram import LiteDRAMCore, generate_litedram
from hw.mem.axi4 import AXI4ReadSignature, AXI4WriteSignature
from hw.mem.narrow import AxiNarrowAdapter
from sim import verilator
from sim.harness import HARNESS_TOP


class _NarrowDram(wiring.Component):
    """LiteDRAMCore's members with a ``bits``-wide AXI4 port: the board tops' narrow-burst
    adapter (hw/mem/narrow.py) on the controller's native port."""

    def __init__(self, build, bits):
        self.core = LiteDRAMCore(build)
        members = dict(self.core.signature.members)
        members["axi_r"] = In(AXI4ReadSignature(addr_bits=32, data_bits=bits, id_bits=3))
        members["axi_w"] = In(AXI4WriteSignature(addr_bits=32, data_bits=bits, id_bits=1))
        self.bits = bits
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = self.core
        m.domains.dram = cd = ClockDomain("dram", async_reset=True)
        m.d.comb += [cd.clk.eq(core.user_clk), cd.rst.eq(core.user_rst)]
        m.submodules.narrow = nw = DomainRenamer("dram")(AxiNarrowAdapter(
            addr_bits=32, narrow_bits=self.bits, wide_bits=self.core.build.data_bits, read_id_bits=3, write_id_bits=1))
        connect(m, flipped(self.axi_r), nw.s_r)
        connect(m, flipped(self.axi_w), nw.s_w)
        connect(m, nw.m_r, core.axi_r)
        connect(m, nw.m_w, core.axi_w)
        connect(m, flipped(self.ctrl), core.ctrl)
        m.d.comb += [core.clk_in.eq(self.clk_in), core.rst.eq(self.rst), self.user_clk.eq(core.user_clk),
                     self.user_rst.eq(core.user_rst), self.pll_locked.eq(core.pll_locked),
                     self.init_done.eq(core.init_done), self.init_error.eq(core.init_error)]
        return m


@pytest.mark.parametrize("board,port_bits", [("ulx3s", None), pytest.param("ecpix5", None, marks=pytest.mark.slow),
                                             # the ECPIX-5 decode bitstream's port: 64-bit narrow bursts
                                             # on the 128-bit native port (the board top's adapter)
                                             pytest.param("ecpix5", 64, marks=pytest.mark.slow)])
def test_init_and_axi_on_the_controller(board, port_bits, tmp_path):
    build = generate_litedram(board, sim=True)
    top = HARNESS_TOP  # the name sim/rtl/public.vlt makes visible to cocotb
    dut = LiteDRAMCore(build) if port_bits is None else _NarrowDram(build, port_bits)
    text = amaranth_verilog.convert(dut, name=top)
    model = verilator.build({f"{top}.v": text, build.verilog.name: build.verilog.read_text()}, top)
    model.run("tests.fpga_boards.cocotb_litedram", test_dir=tmp_path,
              extra_env={"LUTFORGE_DRAM_BOARD": board, "LUTFORGE_SEED": "1"})
