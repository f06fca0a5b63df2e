"""The generated controller (litedram_gen --sim: LiteDRAM's core over its DRAM model) behind
LiteDRAMCore under Verilator: fpga_boards.dram_init initialises it over the Wishbone ctrl
port (the real DFII and CSR map), then AXI4 bursts through the wrapper's port are written,
read back and compared word for word (IDs echoed, byte strobes, blocked before init).
The DDR3 core (ECPIX-5: 1:4 DFI in LiteDRAM's model, 128-bit port, a 512 MiB model memory)
is slow."""

import pytest
from amaranth.back import verilog as amaranth_verilog

from fpga_boards.litedram import LiteDRAMCore, generate_litedram
from sim import verilator
from sim.harness import HARNESS_TOP


@pytest.mark.parametrize("board,port_bits", [("ulx3s", None), pytest.param("ecpix5", None, marks=pytest.mark.slow),
                                             # the ECPIX-5 decode bitstream's port: 64 bits through the
                                             # crossbar's converter into the 128-bit native words
                                             pytest.param("ecpix5", 64, marks=pytest.mark.slow)])
def test_init_and_axi_on_the_controller(board, port_bits, tmp_path):
    build = generate_litedram(board, sim=True, port_bits=port_bits)
    top = HARNESS_TOP  # the name sim/rtl/public.vlt makes visible to cocotb
    text = amaranth_verilog.convert(LiteDRAMCore(build), name=top)
    model = verilator.build({f"{top}.v": text, build.verilog.name: build.verilog.read_text()}, top)
    model.run("tests.fpga_boards.cocotb_litedram", test_dir=tmp_path,
              extra_env={"LUTFORGE_DRAM_BOARD": board, "LUTFORGE_SEED": "1",
                         "LUTFORGE_DRAM_PORT_BITS": str(port_bits or "")})
