"""System test over a bit-level UART: the simulated board of decode_tiny with the host link
behind the gateware UART (sim/uart_board.py, sim/rtl/uart_board_main.cpp: the serial pins
driven and sampled bit by bit under Verilator, 8 clock cycles per bit), served on a pty and
reached with pyserial as serial:///dev/pts/N, the transport of a real board.

``lutforge run --target serial://...`` compiles a small random llama, checks the config
hash, uploads and verifies the image and decodes: the printed text equals the reference
decoder's. A host compiled for another config is refused at HELLO with both hashes named.
With bit errors injected on the line (both directions) memory round trips still verify
through CRC and retries. Prints the link's throughput over the simulated UART.
"""

from __future__ import annotations

import random
import re
import time

import pytest

from host_runtime import protocol as P
from host_runtime.transports import open_target
from ref_model.models.generate import Backend, generate
from ref_model.models.gguf_model import load_gguf
from rtl_gen.cli import main
from rtl_gen.config import load_config
from sim.uart_board import start_uart_board

SETS = ["decode.limits.context=32", "memory.sim.size_bytes=1048576"]
#: Seconds per response before a retry: a 4 kB frame takes about 2 s on the simulated line.
TIMEOUT = "10"


@pytest.fixture(scope="module")
def cfg():
    return load_config("decode_tiny", SETS)


@pytest.fixture(scope="module")
def board(cfg):
    with start_uart_board(cfg, ready_timeout=60) as b:
        yield b
    st = b.stats
    assert st and st["cycles"] > 0 and st["framing_errors"] == 0 and st["flipped_bits"] == 0
    print(f"\nuart board: {st['cycles']} cycles in {st['tick_seconds']:.2f} s of clock = "
          f"{st['cycles'] / st['tick_seconds'] / 1e3:.0f} k cycles/s; {st['rx_bytes']} bytes in, "
          f"{st['tx_bytes']} out on the line")


def _run(capsys, *args):
    rc = main(["run", "--config", "decode_tiny", *[a for s in SETS for a in ("--set", s)], *args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_run_over_serial_prints_the_reference_text(capsys, cfg, tiny_path, board):
    assert re.fullmatch(r"serial:///dev/pts/\d+\?baud=\d+", board.target), board.target
    want = generate(Backend(load_gguf(tiny_path), "quant", cfg.decode.decode_numerics()), "hello world", 4)
    t0 = time.perf_counter()
    rc, out, err = _run(capsys, "--model", str(tiny_path), "--target", board.target, "--prompt", "hello world",
                        "--tokens", "4", "--timeout", TIMEOUT, "--force-upload")
    assert rc == 0, err
    assert out == "hello world" + want.text + "\n"
    assert "verified" in err and "0 retries" in err, err
    print(f"\nlutforge run over the UART board: {time.perf_counter() - t0:.1f} s; {err.strip().splitlines()[-1]}")


def test_link_throughput_over_serial(board):
    link = P.Link(open_target(board.target), timeout=float(TIMEOUT))
    data = random.Random(2).randbytes(8160)         # two full frames
    t0 = time.perf_counter()
    link.write_mem(1 << 19, data)
    w = time.perf_counter() - t0
    t0 = time.perf_counter()
    assert link.read_mem(1 << 19, len(data)) == data
    r = time.perf_counter() - t0
    assert link.stats.retries == 0
    link.transport.close()
    print(f"\nuart board at 8 cycles/bit: WRITE_MEM {len(data) / w / 1e3:.2f} kB/s, READ_MEM {len(data) / r / 1e3:.2f} "
          f"kB/s (payload)")


def test_config_hash_mismatch_is_refused(capsys, tiny_path, board):
    rc, _, err = _run(capsys, "--set", "decode.limits.context=16", "--model", str(tiny_path),
                      "--target", board.target, "--prompt", "hello", "--timeout", TIMEOUT)
    assert rc == 1
    assert "lutforge: error: the device runs a design of config hash" in err and "rebuild the bitstream" in err
    assert "Traceback" not in err


def test_line_noise_is_absorbed(cfg):
    """Bits flipped on the line (60 per million, both directions): frames fail their CRC
    or vanish, the link retries, memory round trips verify."""
    with start_uart_board(cfg, flip_ppm=60, seed=7) as b:
        # (a 512-byte frame takes ~0.3 s on the line: a lost response costs the timeout)
        link = P.Link(open_target(b.target), timeout=1.5, retries=20)
        rnd = random.Random(3)
        for i in range(8):
            data = rnd.randbytes(512)
            link.write_mem(4096 * i, data)
            assert link.read_mem(4096 * i, len(data)) == data, f"round {i}"
        assert link.hello() == (P.VERSION, cfg.hash_bytes())
        link.transport.close()
    assert b.stats["flipped_bits"] > 0 and link.stats.retries > 0, (b.stats, link.stats)
    print(f"\nline noise: {b.stats['flipped_bits']} bits flipped, {link.stats.retries} retries, "
          f"{b.stats['framing_errors']} framing errors seen by the host side")


def test_uart_board_bad_arguments_are_clear(capsys, cfg):
    from ref_model.errors import LutforgeError
    with pytest.raises(LutforgeError, match="--flip-ppm -1: a bit error rate"):
        start_uart_board(cfg, flip_ppm=-1)
    assert main(["sim-board", "decode_tiny", "--flip-ppm", "5"]) == 1
    assert "only apply with --uart" in capsys.readouterr().err
    assert main(["sim-board", "decode_tiny", "--uart", "--baud", "7e6", "--clock-mhz", "50"]) == 1
    assert "cannot make 7e+06 baud within 2%" in capsys.readouterr().err
