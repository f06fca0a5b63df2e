"""The session API over the protocol against the Python board (protocol device model +
instruction-level engine): upload with verification, greedy and sampled generation equal
to the reference decoder, KV save/restore bit-exact, and the clear errors."""

from __future__ import annotations

import pytest
import torch

from host_runtime.protocol import Link, ProtocolError
from host_runtime.session import KVSnapshot, Session, SessionError, image_tag
from host_runtime.transports import LoopbackTransport
from ref_model.errors import ConfigError
from ref_model.models.generate import Backend, GenerateError, generate
from ref_model.models.gguf_model import load_gguf
from ref_model.models.tiny import write_tiny_llama
from rtl_gen.config import load_config
from sim.isa_board import IsaBoard

PROMPT = "hello world 12 hello"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return load_gguf(write_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny.gguf", seed=3))


@pytest.fixture(scope="module")
def cfg():
    return load_config("decode_tiny", ["decode.limits.context=32", "memory.sim.size_bytes=1048576"])


def _session(cfg, tiny, board=None, **kw):
    board = board or IsaBoard(cfg)
    return Session.open(Link(LoopbackTransport(board)), cfg, tiny, **kw), board


def test_generate_equals_reference(cfg, tiny):
    s, board = _session(cfg, tiny)
    assert not s.upload_stats.skipped and s.upload_stats.verified
    assert bytes(board.mem[:len(s.image)]) == s.image
    ref = Backend(tiny, "quant", cfg.decode.decode_numerics())
    for kw in ({}, {"top_k": 5, "temperature": 0.8, "seed": 7}):
        want = generate(ref, PROMPT, 6, stop_at_eos=False, **kw)
        got = generate(s, PROMPT, 6, stop_at_eos=False, **kw)
        assert got.new_tokens == want.new_tokens, f"{kw}: board {got.new_tokens} vs reference {want.new_tokens}"
        assert got.text == want.text
    # the logits read back are the reference's int32 logits
    cache, rcache = s.new_cache(), ref.impl.new_cache(8)
    for t in tiny.tokenizer.encode(PROMPT).ids:
        s.step(t, cache)
        want = ref.impl.step(t, rcache)
    assert torch.equal(s.logits(), want)


def test_upload_skipped_when_device_holds_image(cfg, tiny):
    s, board = _session(cfg, tiny)
    s2, _ = _session(cfg, tiny, board)
    assert s2.upload_stats.skipped
    board.mem[100] ^= 0xFF                       # the tag only vouches for a verified upload...
    s3, _ = _session(cfg, tiny, board, force_upload=True)
    assert not s3.upload_stats.skipped and board.mem[100] == s.image[100]
    assert bytes(board.mem[s.tag_addr:s.tag_addr + 64]) == image_tag(s.image)


def test_kv_save_restore_resumes_bit_exact(cfg, tiny, tmp_path):
    s, board = _session(cfg, tiny)
    prefix = "hello world"
    snap_file = tmp_path / "kv.lfkv"
    generate(s, prefix, 0, on_cache=lambda c: s.save_kv(c).save(snap_file))
    full = generate(s, PROMPT, 5, stop_at_eos=False)            # from scratch
    # clobber the device's KV regions, then resume from the snapshot
    for a in s.prog.kv_addrs:
        board.mem[a:a + s.prog.kv.size] = bytes([0x5A]) * s.prog.kv.size
    snap = KVSnapshot.load(snap_file)
    cache = s.restore_kv(snap)
    assert [bytes(board.mem[a:a + n]) for a, n in s._regions()] == snap.regions
    resumed = generate(s, PROMPT, 5, stop_at_eos=False, cache=cache)
    assert resumed.new_tokens == full.new_tokens
    # the snapshot of the whole prompt resumes without any prompt step
    snap2 = s.save_kv(cache)
    assert snap2.tokens[:len(snap.tokens)] == snap.tokens


def test_snapshot_errors(cfg, tiny, tmp_path):
    s, _ = _session(cfg, tiny)
    cache = s.new_cache()
    with pytest.raises(SessionError, match="nothing to save"):
        s.save_kv(cache)
    s.step(5, cache)
    snap = s.save_kv(cache)
    path = tmp_path / "kv.lfkv"
    snap.save(path)
    raw = bytearray(path.read_bytes())
    raw[40] ^= 1
    path.write_bytes(bytes(raw))
    with pytest.raises(SessionError, match="corrupt or truncated"):
        KVSnapshot.load(path)
    path.write_bytes(bytes(raw[:100]))
    with pytest.raises(SessionError, match="corrupt or truncated"):
        KVSnapshot.load(path)
    with pytest.raises(SessionError, match="does not exist"):
        KVSnapshot.load(tmp_path / "missing.lfkv")
    other = KVSnapshot(snap.tokens, snap.last_token, "0" * 64, snap.regions)
    with pytest.raises(SessionError, match="another compiled model"):
        s.restore_kv(other)
    with pytest.raises(GenerateError, match="not a prefix"):
        generate(s, "world hello", 1, cache=s.restore_kv(snap))


def test_bad_requests(cfg, tiny, tmp_path):
    # a device built from another config
    other = load_config("decode_tiny", ["decode.limits.context=16", "memory.sim.size_bytes=1048576"])
    with pytest.raises(SessionError, match="config hash"):
        _session(cfg, tiny, IsaBoard(other))
    # a model that does not fit the engine's limits
    small = load_config("decode_tiny", ["decode.limits.layers=1", "memory.sim.size_bytes=1048576"])
    with pytest.raises(ConfigError, match="n_layers = 2, the engine allows at most 1"):
        _session(small, tiny)
    # an image larger than the device memory
    with pytest.raises(SessionError, match="bytes of device memory"):
        _session(cfg, tiny, IsaBoard(cfg, memory_bytes=65536))
    # a prompt longer than the compiled context
    s, _ = _session(cfg, tiny)
    with pytest.raises(GenerateError, match="longer than the compiled context"):
        generate(s, "hello " * 40, 1)
    with pytest.raises(SessionError, match="outside the vocabulary"):
        s.step(10_000, s.new_cache())


def test_device_of_another_protocol_version(cfg, tiny):
    """HELLO answered by a device speaking version 2 (in the header, as a real one would, or
    only in HELLO's payload): refused with both versions named."""
    from host_runtime import protocol as P

    class Other:
        def __init__(self, header):
            self.header, self.rx = header, P.FrameDecoder()

        def receive(self, data):
            out = b""
            for f in self.rx.feed(data):
                if self.header:
                    out += P.encode_frame(f.op | P.RESPONSE, f.seq, bytes([P.Status.VERSION_MISMATCH]), version=2)
                else:
                    out += P.encode_frame(f.op | P.RESPONSE, f.seq, bytes([P.Status.OK, 2]) + cfg.hash_bytes())
            return out
    with pytest.raises(ProtocolError, match="protocol version mismatch: host speaks 1, device 2"):
        Session.open(Link(LoopbackTransport(Other(True))), cfg, tiny)
    with pytest.raises(SessionError, match="the device speaks host protocol version 2, this host 1"):
        Session.open(Link(LoopbackTransport(Other(False))), cfg, tiny)


def test_device_that_does_not_answer(cfg, tiny):
    class Mute:
        def receive(self, data):
            return b""
    with pytest.raises(ProtocolError, match="no valid response after 3 attempts"):
        Session.open(Link(LoopbackTransport(Mute()), timeout=0.01, retries=2), cfg, tiny)
