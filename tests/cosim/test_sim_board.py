"""System test: host_runtime over the simulated board (sim/board.py: host link + decode engine +
memory model under Verilator, served on a socket by sim/rtl/board_main.cpp).

A small random llama is compiled, uploaded with Link.write_mem, verified with read_mem,
and run token by token with Link.run; next tokens and logits (read back over the
protocol) equal the integer reference bit for bit. Then the same under injected faults
(flipped bits, dropped bytes, truncated and duplicated frames, both directions): runs
still succeed through retries and memory verifies afterwards; a disconnect mid-transfer
is a clear ProtocolError and a reconnect works. Prints the link's throughput and payload
efficiency and the simulated cycles per second.
"""

from __future__ import annotations

import random
import struct
import time

import numpy as np
import pytest
import torch

from host_runtime import protocol as P
from host_runtime.decode_program import compile_decode
from host_runtime.transports import open_target
from ref_model.decode import DecodeNumerics
from ref_model.errors import LutforgeError
from ref_model.models.gguf_model import load_gguf
from ref_model.models.int_llama import IntLlama
from ref_model.models.tiny import write_tiny_llama
from rtl_gen.config import config_from_dict
from sim.board import config_hash_bytes, start_sim_board

CTX = 8
NUM = dict(kv_bits=8, k_group=4)


def board_config(hp, *, ctx=CTX, size=1 << 20):
    """A decode config sized to the model ``hp``."""
    return config_from_dict({
        "name": "board_tiny", "core": {"kind": "systolic", "rows": 4, "cols": 4, "acc_bits": 32},
        "decode": {"limits": {"layers": hp.n_layers, "dim": hp.dim, "ffn": hp.ffn_dim, "heads": hp.n_heads,
                              "kv_heads": hp.n_kv_heads, "head_dim": hp.head_dim, "vocab": hp.vocab_size,
                              "context": ctx}, "numerics": NUM},
        "memory": {"data_bits": 128, "sim": {"latency": 12, "size_bytes": size}}})


class Faulty(P.Transport):
    """Seeded damage between Link and the real socket, on both directions."""

    def __init__(self, inner, *, seed, rate, kinds=("flip", "drop", "truncate", "duplicate")):
        self.inner, self.rnd, self.rate, self.kinds = inner, random.Random(seed), rate, kinds
        self.faults = 0
        self.on = True

    def _mangle(self, data: bytes) -> bytes:
        if not self.on or not data or self.rnd.random() >= self.rate:
            return data
        self.faults += 1
        d = bytearray(data)
        kind = self.rnd.choice(self.kinds)
        if kind == "flip":
            i = self.rnd.randrange(len(d))
            d[i] ^= 1 << self.rnd.randrange(8)
        elif kind == "drop":
            i = self.rnd.randrange(len(d))
            del d[i:i + self.rnd.randrange(1, 4)]
        elif kind == "truncate":
            del d[self.rnd.randrange(len(d)):]
        else:
            d = d + d
        return bytes(d)

    def send(self, data):
        self.inner.send(self._mangle(data))

    def recv(self, timeout):
        return self._mangle(self.inner.recv(timeout))

    def close(self):
        self.inner.close()


class DropsDead(P.Transport):
    """Sends ``after`` frames, then half of the next one and closes the real socket (a
    cable pulled mid-frame)."""

    def __init__(self, inner, after):
        self.inner, self.after, self.sent = inner, after, 0

    def send(self, data):
        self.sent += 1
        if self.sent > self.after:
            self.inner.send(data[:len(data) // 2])
            self.inner.close()
            raise ConnectionResetError(104, "Connection reset by peer")
        self.inner.send(data)

    def recv(self, timeout):
        return self.inner.recv(timeout)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return load_gguf(write_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny.gguf", seed=8))


@pytest.fixture(scope="module")
def board(tiny):
    cfg = board_config(tiny.hparams)
    with start_sim_board(cfg, ready_timeout=60) as b:
        yield cfg, b
    st = b.stats
    assert st and st["cycles"] > 0
    print(f"\nsim board process: {st['cycles']} cycles ({st['busy_cycles']} engine busy) in "
          f"{st['tick_seconds']:.2f} s of clock = {st['cycles'] / st['tick_seconds'] / 1e3:.0f} k cycles/s")


def _engine_written(prog) -> list[tuple[int, int]]:
    return [r for name, r in prog.image.regions.items() if name.endswith(".kv") or name == "logits"]


def _compare_image(link, prog):
    got = link.read_mem(0, prog.image.size)
    want = bytearray(prog.image.data)
    gotb = bytearray(got)
    for a, n in _engine_written(prog):
        want[a:a + n] = bytes(n)
        gotb[a:a + n] = bytes(n)
    assert gotb == want, "the memory image differs after upload"


def _logits(link, prog):
    n = prog.shape.vocab_size * 4
    raw = link.read_mem(prog.logits_addr, -(-n // P.MEM_ALIGN) * P.MEM_ALIGN)[:n]
    return torch.from_numpy(np.frombuffer(raw, dtype="<i4").astype(np.int64))


def test_sim_board_end_to_end(tiny, board):
    cfg, b = board
    hp = tiny.hparams
    ref = IntLlama(tiny, DecodeNumerics(**NUM), max_context=CTX)
    prog = compile_decode(ref, context=CTX)
    cache = ref.new_cache(CTX)
    g = torch.Generator().manual_seed(3)
    tokens = torch.randint(0, hp.vocab_size, (CTX,), generator=g).tolist()

    tr = open_target(b.target)
    link = P.Link(tr, timeout=2.0)
    assert link.hello() == (P.VERSION, config_hash_bytes(cfg))
    t0 = time.perf_counter()
    link.write_mem(0, bytes(prog.image.data))
    upload_s = time.perf_counter() - t0
    _compare_image(link, prog)
    link.write_csr(P.Csr.PROGRAM_ADDR, prog.program_addr)
    link.write_csr(P.Csr.N_INSTR, len(prog.instrs))
    assert link.read_csr(P.Csr.N_INSTR) == len(prog.instrs)

    # clean runs: next token and logits bit-exact
    run_cycles, run_wall = 0, 0.0
    for pos in range(4):
        want = ref.step(tokens[pos], cache)
        t0 = time.perf_counter()
        nxt, cycles = link.run(tokens[pos], pos, timeout=60)
        run_wall += time.perf_counter() - t0
        run_cycles += cycles
        assert nxt == int(torch.nonzero(want == want.max())[0, 0]), f"token {pos}: next token differs"
        assert torch.equal(_logits(link, prog), want), f"token {pos}: logits differ"
        assert link.read_csr(P.Csr.CYCLES) == cycles and link.read_csr(P.Csr.READ_BYTES) >= prog.weight_bytes
    st = link.status()
    assert not st.busy and not st.error

    # throughput of a large WRITE_MEM (scratch memory above the image)
    scratch = 1 << 19
    data = random.Random(4).randbytes(256 * 1024)
    before = (link.stats.wire_bytes, link.stats.payload_bytes)
    t0 = time.perf_counter()
    link.write_mem(scratch, data)
    dt = time.perf_counter() - t0
    wire = link.stats.wire_bytes - before[0]
    payload = link.stats.payload_bytes - before[1]
    assert link.read_mem(scratch, len(data)) == data
    print(f"\nsim board: upload {prog.image.size} B in {upload_s:.2f} s; WRITE_MEM {len(data)} B: "
          f"{wire / dt / 1e3:.0f} kB/s on the wire, payload efficiency {payload / wire:.4f} "
          f"(all frames so far {link.stats.efficiency:.4f}); engine: {run_cycles} cycles in {run_wall:.2f} s "
          f"= {run_cycles / run_wall / 1e6:.2f} M simulated cycles/s (RUN + STATUS polls included)")
    assert payload / wire > 0.99

    # faults on both directions: runs succeed through retries, memory verifies afterwards
    faulty = Faulty(tr, seed=11, rate=0.08)
    flink = P.Link(faulty, timeout=0.5, retries=15, seq=link.seq)
    junk = random.Random(5).randbytes(40 * 1024)
    flink.write_mem(scratch, junk)
    for pos in range(4, CTX):
        want = ref.step(tokens[pos], cache)
        nxt, _ = flink.run(tokens[pos], pos, timeout=60)
        assert nxt == int(torch.nonzero(want == want.max())[0, 0]), f"token {pos} (faults): next token differs"
        assert torch.equal(_logits(flink, prog), want), f"token {pos} (faults): logits differ"
    assert faulty.faults > 5 and flink.stats.retries > 0, (faulty.faults, flink.stats)
    faulty.on = False
    assert flink.read_mem(scratch, len(junk)) == junk
    _compare_image(flink, prog)

    # a disconnect mid-transfer is a clear error; a new connection works (memory kept)
    dlink = P.Link(DropsDead(tr, after=3), timeout=0.5, seq=flink.seq)
    with pytest.raises(P.ProtocolError, match="WRITE_MEM: the link is down"):
        dlink.write_mem(scratch, bytes(64 * 1024))
    # (the board drops the half frame when the new client connects: without that, the
    # first 2 kB of the new client's frames would complete it and be lost)
    link2 = P.Link(open_target(b.target), timeout=1.0, retries=2)
    assert link2.hello() == (P.VERSION, config_hash_bytes(cfg))
    _compare_image(link2, prog)
    link2.transport.close()


def test_sim_board_without_decode_section_is_clear(capsys):
    from rtl_gen.cli import main
    assert main(["sim-board", "systolic_8x8_int8"]) == 1
    err = capsys.readouterr().err
    assert "has no decode section" in err and "Traceback" not in err


def test_sim_board_bad_listen_address_is_clear(tiny):
    cfg = board_config(tiny.hparams)
    with pytest.raises(LutforgeError, match="expected tcp://127.0.0.1:PORT"):
        start_sim_board(cfg, listen="http://localhost")


def test_sim_board_unix_socket(tiny, board, tmp_path):
    """A second board on a Unix socket (the model is cached): HELLO and a memory round trip."""
    cfg, _ = board
    path = tmp_path / "board.sock"
    with start_sim_board(cfg, listen=f"unix://{path}") as b2:
        assert b2.target == f"sim://{path}"
        link = P.Link(open_target(b2.target), timeout=2.0)
        assert link.hello()[1] == config_hash_bytes(cfg)
        data = bytes(range(256)) * 4
        link.write_mem(4096, data)
        assert link.read_mem(4096, len(data)) == data
        assert struct.unpack("<Q", struct.pack("<Q", link.read_csr(P.Csr.ENGINE_STATUS)))[0] == 0
        link.transport.close()
    assert not path.exists()


def test_session_on_sim_board(tiny, board, tmp_path):
    """The session API over the gateware: upload under injected faults verifies, greedy and
    sampled generation equal the reference decoder, and a KV snapshot saved after a prefix
    restores bit-exact (after the device's KV regions were overwritten) and resumes the
    same continuation as decoding from scratch."""
    from host_runtime.session import KVSnapshot, Session
    from ref_model.models.generate import Backend, generate
    cfg, b = board
    faulty = Faulty(open_target(b.target), seed=21, rate=0.05)
    link = P.Link(faulty, timeout=0.5, retries=15)
    s = Session.open(link, cfg, tiny, force_upload=True)
    assert s.upload_stats.verified and faulty.faults > 0
    faulty.on = False
    ref = Backend(tiny, "quant", cfg.decode.decode_numerics())
    prompt = "hello world 1"
    for kw in ({}, {"top_k": 4, "temperature": 0.7, "seed": 2}):
        want = generate(ref, prompt, 3, stop_at_eos=False, **kw)
        got = generate(s, prompt, 3, stop_at_eos=False, **kw)
        assert got.new_tokens == want.new_tokens, f"{kw}: board {got.new_tokens} vs reference {want.new_tokens}"
    snap_file = tmp_path / "prefix.lfkv"
    generate(s, "hello world", 0, on_cache=lambda c: s.save_kv(c).save(snap_file))
    full = generate(s, prompt, 3, stop_at_eos=False)
    for a in s.prog.kv_addrs:
        link.write_mem(a, bytes([0xA5]) * (-(-s.prog.kv.size // P.MEM_ALIGN) * P.MEM_ALIGN))
    snap = KVSnapshot.load(snap_file)
    faulty.on = True
    cache = s.restore_kv(snap)                      # writes and reads back under faults
    faulty.on = False
    assert generate(s, prompt, 3, stop_at_eos=False, cache=cache).new_tokens == full.new_tokens
    assert all(c > 0 for c in s.cycles)
    faulty.close()
