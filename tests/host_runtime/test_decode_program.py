"""The decode-engine contract: compiler + memory layout + token program == IntLlama.

The instruction-level model (sim/decode_isa.py) sees only the memory image and the
program words; its logits and per-layer residuals must equal the integer reference bit
for bit, token after token, for every KV format and at the context limit."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from host_runtime.decode_program import compile_decode, pack_codes
from hw.decode.isa import Buf, Instr, KVLayout, Op, WeightKind, kv_quantized_counts
from ref_model.decode import ATTENTION_LANES, DecodeNumerics, DecodeShape, attention_lanes
from ref_model.errors import ConfigError
from ref_model.models.gguf_model import load_gguf
from ref_model.models.int_llama import IntLlama
from ref_model.models.tiny import write_tiny_llama
from sim.decode_isa import DecodeISAModel


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return load_gguf(write_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny.gguf", seed=3))


def _run(model, numerics, tokens, context):
    ref = IntLlama(model, numerics, max_context=context)
    prog = compile_decode(ref, trace=True, context=context)
    isa = DecodeISAModel(prog.image.data, ref.num)
    cache = ref.new_cache(context)
    hp = ref.hp
    for pos, tok in enumerate(tokens):
        trace = {}
        want = ref.step(tok, cache, trace)
        nxt = isa.step(prog.program_addr, len(prog.instrs), tok, pos)
        got = isa.peek_i32(prog.logits_addr, hp.vocab_size)
        resid = isa.peek_i32(prog.trace_addr, hp.n_layers * hp.dim).view(hp.n_layers, hp.dim)
        for layer in range(hp.n_layers):
            assert torch.equal(resid[layer], trace["resid"][layer]), f"token {pos}: layer {layer} residual differs"
        assert torch.equal(got, want), f"token {pos} ({tok}): logits differ"
        assert nxt == int(torch.argmax(want)) or want[nxt] == want.max()
    return prog, isa


@pytest.mark.parametrize("kv_bits,k_group,kv_window", [(8, 4, 0), (4, 4, 2), (2, 8, 0), (16, 32, 0)])
def test_program_matches_reference(tiny, kv_bits, k_group, kv_window):
    num = DecodeNumerics(kv_bits=kv_bits, k_group=k_group, kv_window=kv_window)
    g = torch.Generator().manual_seed(kv_bits)
    tokens = torch.randint(0, tiny.hparams.vocab_size, (11,), generator=g).tolist()
    tokens[3] = 0  # the lowest and highest token ids
    tokens[4] = tiny.hparams.vocab_size - 1
    _run(tiny, num, tokens, context=16)


def test_context_at_maximum(tiny):
    # the last position of the laid-out context, K groups complete exactly at the end
    num = DecodeNumerics(kv_bits=4, k_group=4, kv_window=0)
    _run(tiny, num, list(range(1, 9)), context=8)


def test_weight_formats_w2_ternary(tiny):
    for w in ("w2", "ternary"):
        _run(tiny, DecodeNumerics(weights=w, kv_bits=8, k_group=4), [5, 6, 7], context=8)


def test_every_weight_byte_once(tiny):
    ref = IntLlama(tiny, DecodeNumerics(k_group=4), max_context=8)
    prog = compile_decode(ref, context=8)
    isa = DecodeISAModel(prog.image.data, ref.num)
    isa.step(prog.program_addr, len(prog.instrs), 7, 0)
    # reads of a token = streamed weights/gains/constants + program + KV (+ the embedding row)
    hp = ref.hp
    emb_row = hp.dim + hp.dim // 32 * 2
    kv_reads = isa.traffic["read"] - prog.weight_bytes - len(prog.instrs) * 16 - emb_row
    assert 0 <= kv_reads <= hp.n_layers * 2 * hp.n_kv_heads * hp.head_dim * 4 * 2
    mats = [r for r in prog.image.regions if r.endswith(".codes") and r.startswith("blk.")]
    assert len(mats) == hp.n_layers * 7


def test_instruction_encoding_round_trip():
    ins = Instr(Op.MATVEC, dst=Buf.Q, src=Buf.H, mode=WeightKind.Q4_1 | 8, layer=29, rows=576, cols=1536,
                addr=0xDEADBEEF, addr2=0x12345678)
    assert Instr.decode(ins.to_bytes()) == ins
    with pytest.raises(ValueError, match="rows=70000 does not fit 16 bits"):
        Instr(Op.MATVEC, rows=70000).encode()
    with pytest.raises(ValueError, match="unknown opcode 15"):
        Instr.decode(15)


def test_code_packing_layout():
    codes = torch.tensor([[1, 2, 15, 0]])
    assert pack_codes(codes, WeightKind.Q4_1) == bytes([0x21, 0x0F])
    assert pack_codes(torch.tensor([[-1, 0, 1, -1]]), WeightKind.TERNARY) == bytes([0b11_01_00_11])
    assert pack_codes(torch.tensor([[-128, 127]]), WeightKind.Q8_0) == bytes([0x80, 0x7F])


def test_kv_layout_and_counts():
    L = KVLayout(max_ctx=64, n_kv_heads=2, head_dim=16, kv_bits=4, k_group=8, kv_window=3)
    assert L.ring == 16 and L.code_row_bytes == 16
    assert kv_quantized_counts(2, 4, 8, 3) == (0, 0)
    assert kv_quantized_counts(12, 4, 8, 3) == (8, 9)
    assert kv_quantized_counts(12, 16, 8, 3) == (0, 0)
    offs = [L.offset(n) for n in ("k_raw", "v_raw", "k_codes", "k_params", "v_codes", "v_params")]
    assert offs == sorted(offs) and L.size >= offs[-1]


def test_model_over_the_limits_is_a_clear_error(tiny):
    ref = IntLlama(tiny, DecodeNumerics(), max_context=8)
    hp = tiny.hparams
    small = DecodeShape(1, hp.dim, hp.n_heads, hp.n_kv_heads, hp.head_dim, hp.ffn_dim, hp.vocab_size, 8)
    with pytest.raises(ConfigError, match="needs n_layers = 2, the engine allows at most 1"):
        compile_decode(ref, small)
    ok = DecodeShape(2, hp.dim, hp.n_heads, hp.n_kv_heads, hp.head_dim, hp.ffn_dim, hp.vocab_size, 8)
    with pytest.raises(ConfigError, match="max_context = 9, the engine allows at most 8"):
        compile_decode(ref, ok, context=9)


def test_smollm2_program_streams_its_weights_once_and_matches():
    """The real checkpoint: 96.6 MB streamed per token (Q4_1 layers + tied Q8_0 head),
    first tokens of a prompt bit-exact against the reference."""
    from ref_model.models.gguf_model import smollm2_path
    m = load_gguf(smollm2_path())
    ref = IntLlama(m, DecodeNumerics(kv_bits=4), max_context=32)
    prog = compile_decode(ref, context=32)
    assert abs(prog.weight_bytes - 96.6e6) < 0.1e6
    isa = DecodeISAModel(prog.image.data, ref.num)
    cache = ref.new_cache(32)
    for pos, tok in enumerate(m.tokenizer.encode("The capital of France is").ids[:2]):
        want = ref.step(tok, cache)
        isa.step(prog.program_addr, len(prog.instrs), tok, pos)
        assert torch.equal(isa.peek_i32(prog.logits_addr, m.hparams.vocab_size), want), f"token {pos}"


def test_model_beyond_the_attention_datapath_is_a_clear_error(tiny):
    """The engine serves the limits' heads/kv_heads query heads per KV vector and reads
    K/V in vectors of attention_lanes(head_dim) channels."""
    ref = IntLlama(tiny, DecodeNumerics(), max_context=8)
    hp = tiny.hparams                                        # 4 heads / 2 KV heads, head_dim 16
    mha = DecodeShape(2, hp.dim, hp.n_heads, hp.n_heads, hp.head_dim, hp.ffn_dim, hp.vocab_size, 8)
    with pytest.raises(ConfigError, match="2 query heads per KV head, engine serves at most 1"):
        compile_decode(ref, mha)
    compile_decode(ref, DecodeShape(2, hp.dim, hp.n_heads, hp.n_kv_heads, 48, hp.ffn_dim, hp.vocab_size, 8))
    narrow = SimpleNamespace(**{**vars(hp), "head_dim": ATTENTION_LANES // 2})    # a K/V vector over two heads
    with pytest.raises(ConfigError, match=f"head_dim = {ATTENTION_LANES // 2} is not a multiple of the engine's "
                                          f"{ATTENTION_LANES} attention lanes"):
        DecodeShape(2, hp.dim, hp.n_heads, hp.n_kv_heads, 4 * ATTENTION_LANES, hp.ffn_dim, hp.vocab_size,
                    8).check_fits(narrow, 8)
    assert [attention_lanes(d) for d in (64, 48, 24, 6, 2)] == [ATTENTION_LANES, 16, 8, 2, 2]
