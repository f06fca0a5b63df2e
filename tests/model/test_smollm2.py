"""The real checkpoint (SmolLM2-135M-Instruct Q4_1): loading, tokenizer, float and integer decode."""

import pytest
import torch

from ref_model.decode import DecodeNumerics
from ref_model.models.float_llama import FloatLlama
from ref_model.models.int_llama import IntLlama

PROMPT = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"


def test_hparams_and_types(smollm2):
    hp = smollm2.hparams
    assert (hp.n_layers, hp.dim, hp.n_heads, hp.n_kv_heads, hp.ffn_dim, hp.vocab_size) == (30, 576, 9, 3, 1536, 49152)
    assert hp.tied_embeddings and hp.rope_base == 100000.0 and hp.context_length == 8192
    assert smollm2.tensor("token_embd.weight").kind == "Q8_0"
    assert smollm2.tensor("blk.0.ffn_down.weight").kind == "Q4_1"


def test_tokenizer(smollm2):
    ids = smollm2.tokenizer.encode(PROMPT).ids
    assert ids[0] == 1 and smollm2.tokenizer.decode(ids, skip_special_tokens=False) == PROMPT
    assert smollm2.tokenizer.encode("12345").ids == [33, 34, 35, 36, 37]  # digits split


@pytest.fixture(scope="module")
def float_model(smollm2):
    return FloatLlama(smollm2)


def _greedy(step, new_cache, prompt_ids, n):
    cache = new_cache(len(prompt_ids) + n)
    for t in prompt_ids:
        logits = step(t, cache)
    out = []
    for _ in range(n):
        nxt = int(logits.argmax())
        out.append(nxt)
        logits = step(nxt, cache)
    return out


def test_float_greedy_answers(smollm2, float_model):
    ids = smollm2.tokenizer.encode(PROMPT).ids
    out = _greedy(float_model.step, float_model.new_cache, ids, 6)
    assert "Paris" in smollm2.tokenizer.decode(out)


def test_int_first_tokens_agree(smollm2, float_model):
    """A few integer decode steps on the real weights track the float model."""
    im = IntLlama(smollm2, DecodeNumerics())
    ids = smollm2.tokenizer.encode("The capital of France is").ids
    il = im.to_float(im.logits(ids))
    fl = float_model.logits(ids)
    assert il[-1].argmax() == fl[-1].argmax()
    assert (il - fl).abs().max() < 0.1 * fl.abs().max()


@pytest.mark.slow
def test_int_greedy_answers(smollm2):
    im = IntLlama(smollm2, DecodeNumerics())
    ids = smollm2.tokenizer.encode(PROMPT).ids
    out = _greedy(im.step, im.new_cache, ids, 6)
    assert "Paris" in smollm2.tokenizer.decode(out)


@pytest.mark.slow
def test_against_transformers(smollm2, float_model):
    """Our float decoder vs Hugging Face transformers loading the same GGUF."""
    # The outside implementation is an optional extra: pip install -e '.[compare]'.
    tr = pytest.importorskip("transformers", reason="needs the [compare] extra")
    pytest.importorskip("accelerate", reason="needs the [compare] extra (transformers loads GGUF with it)")
    import os
    os.environ.setdefault("HF_HUB_OFFLINE", "1")   # a local file; never reach for a hub
    path = smollm2.path
    model = tr.AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=path.name,
                                                    torch_dtype=torch.float32)
    model.eval()
    ids = smollm2.tokenizer.encode(PROMPT).ids
    tok = tr.AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=path.name)
    assert tok(PROMPT)["input_ids"] == ids
    with torch.no_grad():
        ref = model(torch.tensor([ids])).logits[0]
    ours = float_model.logits(ids)
    diff = (ours - ref).abs()
    print(f"max |dlogit| {diff.max().item():.3e}, mean {diff.mean().item():.3e}, "
          f"logit range {ref.abs().max().item():.1f}")
    assert torch.equal(ours.argmax(-1), ref.argmax(-1))
    assert diff.max().item() < 1e-2


@pytest.mark.slow
def test_fidelity_w4(smollm2):
    """Integer decoder vs float on 64 tokens of a real prompt (numbers in docs/reference_decoder.md)."""
    from ref_model.models.fidelity import run
    res = run(smollm2.path, 64, ["W4-KV8", "W4-KV4-win16", "W4-KV4"])["configs"]
    for name, top1, kl in (("W4-KV8", 0.85, 0.03), ("W4-KV4-win16", 0.85, 0.05), ("W4-KV4", 0.8, 0.12)):
        assert res[name]["top1_agreement"] >= top1, (name, res[name])
        assert res[name]["mean_kl"] <= kl, (name, res[name])


def test_quant_generate_paris(smollm2):
    """The quantized reference through the text-generation driver: a sensible greedy answer."""
    from ref_model.models.generate import Backend, generate
    g = generate(Backend(smollm2, "quant"), "The capital of France is", 3)
    assert g.text.startswith(" Paris"), g.text


@pytest.mark.slow
def test_fidelity_english_paragraph(smollm2):
    """Teacher forcing on the shipped English paragraph (figures in README / bench reference)."""
    from ref_model.models.generate import DEFAULT_TEXT, fidelity
    res = fidelity(smollm2, DEFAULT_TEXT.read_text(encoding="utf-8").strip(), (8, 4))
    assert res["kv8"]["agreement"] >= 0.96, res["kv8"]
    assert res["kv4"]["agreement"] >= 0.90, res["kv4"]
    assert abs(res["kv8"]["accuracy"] - res["float"]["accuracy"]) <= 0.03
