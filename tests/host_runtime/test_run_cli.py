"""`lutforge run` end to end against the Python board (isa://): the printed text equals the
reference decoder's, a saved KV cache resumes a longer prompt, and bad requests are one
clear line with exit status 1."""

from __future__ import annotations

import pytest

from ref_model.models.generate import Backend, generate
from ref_model.models.gguf_model import load_gguf
from ref_model.models.tiny import write_tiny_llama
from rtl_gen.cli import main
from rtl_gen.config import load_config

SETS = ["--set", "decode.limits.context=32", "--set", "memory.sim.size_bytes=1048576"]


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    return write_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny.gguf", seed=11)


def _run(capsys, tiny_path, *extra):
    rc = main(["run", "--config", "decode_tiny", *SETS, "--model", str(tiny_path), "--target", "isa://", *extra])
    out, err = capsys.readouterr()
    return rc, out, err


def test_run_prints_the_reference_text(capsys, tiny_path):
    cfg = load_config("decode_tiny", ["decode.limits.context=32"])
    want = generate(Backend(load_gguf(tiny_path), "quant", cfg.decode.decode_numerics()), "hello world", 6)
    rc, out, err = _run(capsys, tiny_path, "--prompt", "hello world", "--tokens", "6")
    assert rc == 0, err
    assert out == "hello world" + want.text + "\n"
    assert f"{len(want.new_tokens)} tokens after a 2-token prompt" in err and "verified" in err


def test_run_saves_and_resumes_kv(capsys, tiny_path, tmp_path):
    kv = tmp_path / "prefix.lfkv"
    rc, _, err = _run(capsys, tiny_path, "--prompt", "hello world", "--tokens", "0", "--save-kv", str(kv))
    assert rc == 0 and kv.is_file(), err
    rc, full, _ = _run(capsys, tiny_path, "--prompt", "hello world 12", "--tokens", "5")
    rc2, resumed, err = _run(capsys, tiny_path, "--prompt", "hello world 12", "--tokens", "5", "--load-kv", str(kv))
    assert rc == rc2 == 0
    assert resumed == full
    assert "(2 from the KV snapshot)" in err


@pytest.mark.parametrize("args,message", [
    (["--target", "sim://127.0.0.1:1"], "cannot connect to 127.0.0.1:1"),
    (["--target", "ftp://x"], "unknown scheme 'ftp'"),
    (["--model", "/nonexistent/model.gguf"], "model file /nonexistent/model.gguf does not exist"),
    (["--config", "systolic_8x8_int8"], "decode.limits.layers: required field is missing"),
    (["--set", "decode.limits.layers=1"], "needs n_layers = 2, the engine allows at most 1"),
    (["--tokens", "-1"], "--tokens -1: must be 0 or more"),
    (["--load-kv", "/nonexistent.lfkv"], "KV snapshot /nonexistent.lfkv does not exist"),
])
def test_run_bad_requests(capsys, tiny_path, args, message):
    rc, _, err = _run(capsys, tiny_path, "--prompt", "hello", *args)
    assert rc == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err


def test_image_larger_than_the_board_memory_is_refused_before_sending(tiny_path):
    """A board's DRAM bounds the image: refused with the shortfall, nothing sent (no link)."""
    from host_runtime.session import Session, SessionError
    cfg = load_config("decode_tiny", ["decode.limits.context=32"])
    with pytest.raises(SessionError) as e:
        Session.open(None, cfg, load_gguf(tiny_path), memory_bytes=4096, memory_name="Test board (4 KiB)")
    msg = str(e.value)
    assert msg.startswith("the model's image needs ") and "Test board (4 KiB) has 0 MiB" in msg
    assert "bytes over): use a board with more memory" in msg


def test_run_on_a_board_config_checks_its_memory(capsys, tiny_path):
    """A config built for a board (target.board) runs over a real link with that board's DRAM
    as the bound; the tiny model fits ECPIX-5's 512 MiB, so the run gets as far as the link."""
    rc = main(["run", "--config", "ecpix5_decode_tiny", "--model", str(tiny_path), "--prompt", "hi",
               "--target", "serial:///dev/lutforge-no-such-port"])
    _, err = capsys.readouterr()
    assert rc == 1 and "cannot open the port" in err and "Traceback" not in err
