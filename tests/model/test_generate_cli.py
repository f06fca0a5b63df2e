"""Text generation and fidelity: library drivers and the ``lutforge generate`` /
``lutforge fidelity`` commands, including their one-line errors on bad inputs."""

import json

import pytest

from ref_model.errors import LutforgeError
from ref_model.models.generate import (DEFAULT_TEXT, Backend, GenerateError, fidelity, generate,
                                       resolve_model)
from ref_model.models.tiny import write_tiny_llama
from rtl_gen.cli import build_parser, main


def _cli(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_greedy_is_deterministic_and_streams(tiny_model):
    pieces = []
    b = Backend(tiny_model, "quant")
    g1 = generate(b, "hello world", 6, on_text=pieces.append, stop_at_eos=False)
    g2 = generate(b, "hello world", 6, stop_at_eos=False)
    assert g1.new_tokens == g2.new_tokens and len(g1.new_tokens) == 6
    assert "".join(pieces) == g1.text and g1.prompt_tokens == 2


def test_sampling_is_seeded(tiny_model):
    b = Backend(tiny_model, "float")
    runs = [generate(b, "hello", 8, top_k=20, temperature=1.5, seed=s, stop_at_eos=False).new_tokens
            for s in (1, 1, 2)]
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_generation_stops_at_the_context(tiny_model):
    b = Backend(tiny_model, "float")
    prompt = "hello " * 126 + "hello"
    assert len(tiny_model.tokenizer.encode(prompt).ids) == 253
    g = generate(b, prompt, 10, stop_at_eos=False)
    assert g.stop == "context" and len(g.new_tokens) == 256 - 253


def test_cli_generate(capsys, tiny_path):
    rc, out, err = _cli(capsys, "generate", "--model", str(tiny_path), "--prompt", "hello world", "--tokens", "4")
    assert rc == 0 and out.startswith("hello world") and "tokens/s" in err
    rc, out2, _ = _cli(capsys, "generate", "--model", str(tiny_path), "--prompt", "hello world", "--tokens", "4",
                       "--backend", "float", "--top-k", "5", "--temperature", "0.7", "--seed", "3", "--kv", "4")
    assert rc == 0 and out2.startswith("hello world")


def test_cli_fidelity_json(capsys, tiny_path, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("hello world hello world 12 12 hello")
    js = tmp_path / "f.json"
    rc, out, _ = _cli(capsys, "fidelity", "--model", str(tiny_path), "--text-file", str(text), "--json", str(js))
    assert rc == 0 and "agreement" in out
    res = json.loads(js.read_text())
    assert {"agreement", "max_abs_logit_diff", "tokens", "accuracy_quant", "accuracy_float"} <= set(res)
    assert 0 <= res["agreement"] <= 1 and res["tokens"] == len(
        resolve_model(tiny_path).tokenizer.encode(text.read_text()).ids)


def test_library_fidelity_keys(tiny_model):
    r = fidelity(tiny_model, "hello world hello world", (8, 4))
    assert r["tokens"] == len(tiny_model.tokenizer.encode("hello world hello world").ids)
    assert set(r) >= {"float", "kv8", "kv4"}
    assert r["kv8"]["max_abs_logit_diff"] >= 0 and 0 <= r["float"]["accuracy"] <= 1


def _one_line(capsys, argv, match):
    rc, out, err = _cli(capsys, *argv)
    assert rc == 1, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lutforge: error:") and match in lines[0], err
    return lines[0]


def test_cli_bad_inputs(capsys, tiny_path, tmp_path):
    gen = ["generate", "--prompt", "hello", "--model"]
    _one_line(capsys, gen + [str(tmp_path / "missing.gguf")], "does not exist")
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_path.read_bytes()[:5000])
    _one_line(capsys, gen + [str(cut)], "truncated")
    gpt2 = write_tiny_llama(tmp_path / "gpt2.gguf", arch="gpt2")
    _one_line(capsys, gen + [str(gpt2)], "architecture 'gpt2' is not supported")
    _one_line(capsys, gen + ["no-such-model"], "unknown model")
    _one_line(capsys, ["generate", "--model", str(tiny_path), "--prompt", "hello " * 300],
              "longer than the model context of 256 tokens")
    _one_line(capsys, ["generate", "--model", str(tiny_path), "--prompt", "hello", "--tokens", "-1"], "--tokens")
    _one_line(capsys, ["fidelity", "--model", str(tiny_path), "--text-file", str(tmp_path / "none.txt")],
              "cannot read text file")
    long = tmp_path / "long.txt"
    long.write_text("hello " * 300)
    _one_line(capsys, ["fidelity", "--model", str(tiny_path), "--text-file", str(long)], "longer than the model context")
    short = tmp_path / "short.txt"
    short.write_text("hello")
    _one_line(capsys, ["fidelity", "--model", str(tiny_path), "--text-file", str(short)], "at least 2 tokens")


def test_errors_are_lutforge_errors(tiny_model):
    with pytest.raises(LutforgeError):
        Backend(tiny_model, "fp8")
    with pytest.raises(GenerateError, match="empty"):
        generate(Backend(tiny_model, "float"), "", 3)


def test_verilog_subcommand_and_bench_suite():
    p = build_parser()
    assert p.parse_args(["verilog", "systolic_8x8_int8"]).func.__name__ == "cmd_verilog"
    assert p.parse_args(["generate", "--prompt", "x"]).func.__name__ == "cmd_generate"
    assert p.parse_args(["bench", "reference", "--quick"]).suite == "reference"


def test_default_text_is_shipped():
    text = DEFAULT_TEXT.read_text(encoding="utf-8")
    assert 100 < len(text.split()) < 250
