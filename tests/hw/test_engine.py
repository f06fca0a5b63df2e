"""The whole decode engine in the Amaranth simulator on a tiny random llama: logits, every
layer's residual and the argmax token equal the integer reference, token after token."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from amaranth.sim import Simulator

from host_runtime.decode_program import compile_decode
from hw.decode.engine import DecodeEngine, EngineLimits
from ref_model.decode import DecodeNumerics, attention_lanes
from ref_model.fixedpoint import rom_tables
from ref_model.models.gguf_model import load_gguf
from ref_model.models.int_llama import IntLlama
from ref_model.models.tiny import write_tiny_llama

from .axi_memory import AXIMemory


def _i32(mem, addr, n):
    return torch.from_numpy(np.frombuffer(bytes(mem[addr:addr + 4 * n]), dtype="<i4").astype(np.int64))


# A whole decode in the Python simulator takes minutes; the default run decodes the same
# kind of model under Verilator (tests/cosim/test_decode_engine.py, every layer compared).
@pytest.mark.slow
@pytest.mark.parametrize("kv_bits,k_group", [(8, 2)])
def test_engine_decodes_tiny_model(tmp_path, kv_bits, k_group):
    model = load_gguf(write_tiny_llama(tmp_path / "tiny.gguf", seed=5))
    hp = model.hparams
    num = DecodeNumerics(kv_bits=kv_bits, k_group=k_group)
    ctx = 8
    ref = IntLlama(model, num, max_context=ctx)
    prog = compile_decode(ref, trace=True, context=ctx)
    lim = EngineLimits(dim=hp.dim, ffn=hp.ffn_dim, heads=hp.n_heads, kv_heads=hp.n_kv_heads,
                       head_dim=hp.head_dim, vocab=hp.vocab_size, ctx=ctx, lanes=attention_lanes(hp.head_dim))
    dut = DecodeEngine(lim, num, rom_tables())
    mem = AXIMemory(prog.image.size + 4096, 128, latency=6)
    mem.mem[:prog.image.size] = prog.image.data
    tokens = [3, 77, 200]
    cache = ref.new_cache(ctx)
    results = []
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(mem.read_process(dut.axi_r), background=True)
    sim.add_testbench(mem.write_process(dut.axi_w), background=True)

    async def bench(ctx_):
        for pos, tok in enumerate(tokens):
            ctx_.set(dut.program_addr, prog.program_addr)
            ctx_.set(dut.n_instr, len(prog.instrs))
            ctx_.set(dut.token, tok)
            ctx_.set(dut.pos, pos)
            ctx_.set(dut.start, 1)
            await ctx_.tick()
            ctx_.set(dut.start, 0)
            cycles = 0
            while ctx_.get(dut.busy):
                await ctx_.tick()
                cycles += 1
                assert cycles < 400_000, f"token {pos}: engine did not halt"
            results.append((ctx_.get(dut.next_token), ctx_.get(dut.error), cycles,
                            _i32(mem.mem, prog.logits_addr, hp.vocab_size),
                            _i32(mem.mem, prog.trace_addr, hp.n_layers * hp.dim).view(hp.n_layers, hp.dim)))
    sim.add_testbench(bench)
    sim.run()
    for pos, (tok, (nxt, err, cycles, logits, resid)) in enumerate(zip(tokens, results)):
        trace = {}
        want = ref.step(tok, cache, trace)
        assert not err
        for layer in range(hp.n_layers):
            assert torch.equal(resid[layer], trace["resid"][layer]), f"token {pos}: layer {layer} residual differs"
        assert torch.equal(logits, want), f"token {pos}: logits differ"
        assert nxt == int(torch.nonzero(want == want.max())[0, 0])
