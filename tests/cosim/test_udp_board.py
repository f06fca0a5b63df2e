"""System test over UDP: ``lutforge sim-board decode_tiny --udp --loss 0.05`` (the simulated
board of sim/board.py served one frame per datagram by sim/udp_device.py, 5 % of the
datagrams lost each way) and ``lutforge run --target udp://127.0.0.1:PORT``: the host
compiles a small random llama, checks the config hash, uploads and verifies the image in
1440-byte frames and decodes; the printed text equals the reference decoder's, the lost
datagrams cost retries only."""

from __future__ import annotations

import re
import sys
import time

import pytest

from ref_model.models.generate import Backend, generate
from ref_model.models.gguf_model import load_gguf
from rtl_gen.cli import main
from rtl_gen.config import load_config
from sim.board import SimBoard, start_process

SETS = ["decode.limits.context=32", "memory.sim.size_bytes=1048576"]
READY = re.compile(r"^lutforge sim-board listening on (udp://\S+)")


@pytest.fixture(scope="module")
def board():
    cmd = [sys.executable, "-m", "rtl_gen.cli", "sim-board", "decode_tiny", *[a for s in SETS for a in ("--set", s)],
           "--udp", "--loss", "0.05", "--seed", "3"]
    # the first run builds the Verilator model before the ready line (minutes on a loaded machine)
    proc, target = start_process(cmd, READY, ready_timeout=1200)
    with SimBoard(proc, target, target=target) as b:
        yield b


def test_run_over_udp_prints_the_reference_text(capsys, tiny_path, board):
    assert re.fullmatch(r"udp://127\.0\.0\.1:\d+", board.target), board.target
    cfg = load_config("decode_tiny", SETS)
    want = generate(Backend(load_gguf(tiny_path), "quant", cfg.decode.decode_numerics()), "hello world", 4)
    t0 = time.perf_counter()
    rc = main(["run", "--config", "decode_tiny", *[a for s in SETS for a in ("--set", s)], "--model", str(tiny_path),
               "--target", board.target, "--prompt", "hello world", "--tokens", "4", "--timeout", "1",
               "--force-upload"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert out == "hello world" + want.text + "\n"
    assert "verified" in err, err
    print(f"\nlutforge run over UDP (5 % loss each way): {time.perf_counter() - t0:.1f} s; "
          f"{err.strip().splitlines()[-1]}")
