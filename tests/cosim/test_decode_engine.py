"""Full decode of a small random llama on the decode engine under Verilator (cocotb):
every layer's residual, the logits and the argmax token equal the integer reference,
token after token, for KV8 and KV4, from position 0 to the end of the context."""

from __future__ import annotations

import pytest
import torch

from host_runtime.decode_program import compile_decode
from hw.decode.engine import EngineLimits
from hw.decode.isa import INSTR_BYTES, Buf, Instr, Op
from ref_model.decode import DecodeNumerics
from ref_model.fixedpoint import rom_tables
from ref_model.models.gguf_model import load_gguf
from ref_model.models.int_llama import IntLlama
from ref_model.models.tiny import write_tiny_llama
from rtl_gen.config import SimMemoryConfig
from sim.decode_runner import run_decode


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return load_gguf(write_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny.gguf", seed=8))


@pytest.fixture(scope="module")
def tiny_hd32(tmp_path_factory):
    """head_dim 32 (2 heads sharing 1 KV head): room for 32 attention lanes."""
    return load_gguf(write_tiny_llama(tmp_path_factory.mktemp("tiny32") / "tiny.gguf", seed=9, heads=2, kv_heads=1))


@pytest.mark.parametrize("kv_bits,k_group,window,stall,lanes,model,data_bits,ecp5", [
    (8, 4, 0, 0, 16, "tiny", 128, False), (8, 4, 0, 0, 4, "tiny", 128, True), (4, 2, 1, 20, 4, "tiny", 128, False),
    (4, 4, 1, 10, 32, "tiny_hd32", 128, False), (8, 4, 0, 10, 4, "tiny", 64, False)])
def test_engine_decode_bit_exact(kv_bits, k_group, window, stall, lanes, model, data_bits, ecp5, tmp_path,
                                 request):
    """KV8 with 16 attention lanes (one K/V vector per head), KV8 with 4 (the shipped
    decode_tiny engine: one beat of int32 channels per vector; here with 16 of the matvec's
    lane products in LUTs, ``decode.matvec_lut_lanes``), KV4 with 4 lanes, KV4 with 32
    lanes (a KV4 row per 128-bit beat), and the ECPIX-5 board's engine (KV8, 4 lanes, a
    64-bit memory port: 16 matvec products, half a beat of int32 channels per vector).

    The 64-bit case ARGMAXes the final residual X instead of the logits: not the last
    MATVEC's result, so the engine streams the buffer on channel A (the other cases take
    the argmax the unit snooped from the LM head's MATVEC).

    The decode_tiny-shaped case runs the engine as elaborated for an ECP5 (``ecp5``: what
    ``lutforge report`` and the board builds synthesize, the registered products as
    MULT18X18D instances, ``sim/rtl/ecp5_mult18x18d.sv``); the others portable Verilog."""
    tiny = request.getfixturevalue(model)
    hp = tiny.hparams
    ctx = 8
    num = DecodeNumerics(kv_bits=kv_bits, k_group=k_group, kv_window=window)
    ref = IntLlama(tiny, num, max_context=ctx)
    prog = compile_decode(ref, trace=True, context=ctx)
    argmax_x = data_bits == 64
    if argmax_x:
        k = next(i for i, ins in enumerate(prog.instrs) if ins.op == Op.ARGMAX)
        prog.instrs[k] = Instr(Op.ARGMAX, src=Buf.X, cols=hp.dim)
        a = prog.program_addr + k * INSTR_BYTES
        prog.image.data[a:a + INSTR_BYTES] = prog.instrs[k].to_bytes()
    limits = EngineLimits(dim=hp.dim, ffn=hp.ffn_dim, heads=hp.n_heads, kv_heads=hp.n_kv_heads,
                          head_dim=hp.head_dim, vocab=hp.vocab_size, ctx=ctx, lanes=lanes,
                          # one case with half the matvec products in LUTs (decode_tiny ships with none)
                          matvec_lut_lanes=16 if (kv_bits, lanes, data_bits) == (8, 4, 128) else 0)
    sim = SimMemoryConfig(latency=12, size_bytes=1 << 20, stall_percent=stall, refresh_period=500 if stall else 0,
                          refresh_cycles=20 if stall else 0)
    g = torch.Generator().manual_seed(kv_bits)
    tokens = torch.randint(0, hp.vocab_size, (ctx,), generator=g).tolist()
    runs = run_decode(prog, limits, rom_tables(), list(zip(tokens, range(ctx))), sim=sim, data_bits=data_bits,
                      workdir=tmp_path, ecp5=ecp5)
    cache = ref.new_cache(ctx)
    for pos, (tok, run) in enumerate(zip(tokens, runs)):
        trace = {}
        want = ref.step(tok, cache, trace)
        for layer in range(hp.n_layers):
            assert torch.equal(run.residuals[layer], trace["resid"][layer]), \
                f"KV{kv_bits} token {pos}: layer {layer} residual differs"
        assert torch.equal(run.logits, want), f"KV{kv_bits} token {pos}: logits differ"
        top = trace["resid"][hp.n_layers - 1] if argmax_x else want
        assert run.next_token == int(torch.nonzero(top == top.max())[0, 0]), f"token {pos}: argmax differs"
        c = run.counters
        assert c["cycles"] > 0 and c["read_bytes"] >= prog.weight_bytes
        # the counters are exact: every cycle from start to HALT (busy falls a cycle later,
        # once the last cycle's events are counted), each in one phase, each read or idle
        assert c["cycles"] == run.busy_edges - 1, f"token {pos}: cycles {c['cycles']}, busy for {run.busy_edges}"
        assert c["matvec_cycles"] + c["attend_cycles"] + c["kv_cycles"] + c["other_cycles"] == c["cycles"]
        assert c["read_idle"] + c["read_bytes"] // (data_bits // 8) == c["cycles"], f"token {pos}: {c}"
