"""A model on a device: upload, prefill, decode, and KV-cache save/restore over the host link.

:class:`Session` is the host runtime's user-facing API. It holds a compiled model
(:class:`~host_runtime.decode_program.DecodeProgram`) and a :class:`~host_runtime.protocol.Link`
to a device (the simulated board or an FPGA board; the transport is chosen by the target
string, :func:`host_runtime.transports.open_target`) and:

* **connects**: HELLO, then the device's protocol version and config hash must equal the
  host's (a bitstream built from another config is refused with both hashes named);
* **uploads** the memory image (weights packed to the hardware layout, program, KV
  region) in bursts with a progress bar, verifies it by reading it back and comparing
  CRC32 per chunk, and finally writes an *image tag* (SHA-256 of the image) just past the
  image: a later session finds the tag and skips the upload (board memory keeps its
  contents between host sessions);
* **decodes**: one RUN per token (position = tokens so far), the device's ARGMAX is the
  greedy token; for top-k / temperature sampling the int32 logits are read back and
  sampled on the host (:func:`ref_model.models.generate.generate` drives the loop, so
  the reference decoder and the board share one generation routine);
* **saves and restores the KV cache** (:class:`KVSnapshot`): the per-layer KV regions,
  the last logits and the token history, read over the link; restoring writes them back
  and verifies them, so a prompt that extends a saved prefix resumes after it.

The device state the host mirrors is only the position and the token history; everything
else lives in device memory. Errors are :class:`SessionError` (or the link's
:class:`~host_runtime.protocol.ProtocolError`) with one-line messages.
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ref_model.errors import LutforgeError

from .decode_program import DecodeProgram, compile_decode
from .protocol import MEM_ALIGN, VERSION, Csr, Link, ProtocolError

__all__ = ["SessionError", "Session", "DeviceCache", "KVSnapshot", "UploadStats", "image_tag"]

#: Bytes per upload/verify chunk (one progress step; many frames).
CHUNK = 1 << 18
#: Marker of the image tag written after a verified upload.
TAG_MAGIC = b"LFIMAGE1"
TAG_BYTES = 64


class SessionError(LutforgeError):
    """A session request the device or the model cannot satisfy (mismatch, misfit, bad snapshot)."""


def image_tag(image: bytes) -> bytes:
    """The 64-byte tag that marks a verified upload of ``image``: magic, size, SHA-256."""
    return (TAG_MAGIC + struct.pack("<Q", len(image)) + hashlib.sha256(image).digest()).ljust(TAG_BYTES, b"\0")


def _align(n: int) -> int:
    return -(-n // MEM_ALIGN) * MEM_ALIGN


@dataclass
class UploadStats:
    bytes: int
    seconds: float
    skipped: bool           # the device already held this image (tag matched)
    verified: bool
    wire_bytes: int = 0     # bytes on the link for the upload (frames, both ways not counted)

    @property
    def bytes_per_s(self) -> float:
        return self.bytes / self.seconds if self.seconds > 0 else 0.0


@dataclass
class DeviceCache:
    """The device's KV cache as the host sees it: the tokens it holds (position = len)."""

    capacity: int
    tokens: list[int] = field(default_factory=list)
    last_token: int | None = None       # the device's ARGMAX after the last token

    @property
    def pos(self) -> int:
        return len(self.tokens)


@dataclass
class KVSnapshot:
    """A saved device KV cache: token history, the per-layer KV regions, the last logits.

    ``image_digest`` ties it to one compiled model (same weights, numerics, context); a
    snapshot of another model is refused at restore. File format (:meth:`save`): magic
    ``LFKV``, u32 header length, JSON header, the region bytes in order, CRC32 of all
    bytes before it."""

    tokens: list[int]
    last_token: int
    image_digest: str
    regions: list[bytes]        # one per layer, then the logits region

    MAGIC = b"LFKV"

    def save(self, path) -> None:
        head = json.dumps({"tokens": self.tokens, "last_token": self.last_token, "image_digest": self.image_digest,
                           "sizes": [len(r) for r in self.regions]}).encode()
        body = self.MAGIC + struct.pack("<I", len(head)) + head + b"".join(self.regions)
        Path(path).write_bytes(body + struct.pack("<I", zlib.crc32(body)))

    @classmethod
    def load(cls, path) -> "KVSnapshot":
        p = Path(path)
        if not p.is_file():
            raise SessionError(f"KV snapshot {p} does not exist")
        raw = p.read_bytes()
        if len(raw) < 12 or raw[:4] != cls.MAGIC:
            raise SessionError(f"{p} is not a lutforge KV snapshot (no LFKV magic)")
        if zlib.crc32(raw[:-4]) != struct.unpack("<I", raw[-4:])[0]:
            raise SessionError(f"KV snapshot {p} is corrupt or truncated (CRC32 mismatch)")
        (n,) = struct.unpack_from("<I", raw, 4)
        try:
            head = json.loads(raw[8:8 + n])
            sizes = [int(s) for s in head["sizes"]]
            regions, off = [], 8 + n
            for s in sizes:
                regions.append(raw[off:off + s])
                off += s
            if off != len(raw) - 4:
                raise ValueError("sizes disagree with the file length")
            return cls([int(t) for t in head["tokens"]], int(head["last_token"]), str(head["image_digest"]), regions)
        except (ValueError, KeyError, TypeError) as e:
            raise SessionError(f"KV snapshot {p} has a bad header ({e})") from None


def check_image_fits(image_bytes: int, memory_bytes: int | None, memory_name: str = "the device") -> None:
    """Refuse a compiled image (weights, KV cache, program) larger than the device's memory."""
    if memory_bytes is not None and image_bytes > memory_bytes:
        raise SessionError(f"the model's image needs {image_bytes / 2**20:.1f} MiB of memory; {memory_name} has "
                           f"{memory_bytes / 2**20:.0f} MiB ({image_bytes - memory_bytes:,} bytes over): use a board "
                           f"with more memory, a smaller model or a shorter --context")


class Session:
    """A compiled model on a device behind ``link``. Use :meth:`open` to compile, connect
    and upload in one step.

    It also is a generation backend for :func:`ref_model.models.generate.generate`:
    ``model``, ``context``, ``new_cache(n)``, ``step(token, cache)`` (returns the device's
    greedy token), ``pick(result, top_k, temperature, gen)`` and ``check_fits``.
    """

    def __init__(self, link: Link, program: DecodeProgram, model, decoder, *, config_hash: bytes,
                 run_timeout: float = 600.0):
        self.link, self.prog, self.model, self.decoder = link, program, model, decoder
        self.config_hash = config_hash
        self.run_timeout = run_timeout
        self.image = bytes(program.image.data)
        self.digest = hashlib.sha256(self.image).hexdigest()
        self.tag_addr = _align(len(self.image))
        self.cycles: list[int] = []          # device cycles of every RUN, in order

    # ------------------------------------------------------------------ set-up ------
    @classmethod
    def open(cls, link: Link, cfg, model, *, context: int | None = None, progress: bool = False,
             verify: bool = True, force_upload: bool = False, memory_bytes: int | None = None,
             memory_name: str = "the device") -> "Session":
        """Compile ``model`` (:class:`ref_model.models.gguf_model.LlamaGGUF`) for the
        decode engine of ``cfg`` (its decode section: limits and numerics), check the
        device behind ``link``, upload (or find) the image. ``memory_bytes``: the device's
        external memory (a board's DRAM), when known: an image that does not fit is refused
        before anything is sent."""
        from ref_model.models.int_llama import IntLlama
        if cfg.decode is None:
            raise SessionError(f"config {cfg.name!r} has no decode section: it builds no decode engine to run a model on")
        limits = cfg.decode.shape_limits()
        ctx = context or min(limits.max_context, model.hparams.context_length)
        decoder = IntLlama(model, cfg.decode.decode_numerics(), max_context=ctx)
        prog = compile_decode(decoder, limits, context=ctx)
        check_image_fits(prog.image.size, memory_bytes, memory_name)
        s = cls(link, prog, model, decoder, config_hash=cfg.hash_bytes())
        s.check_device(cfg.name)
        s.upload_stats = s.upload(progress=progress, verify=verify, force=force_upload)
        return s

    def check_device(self, config_name: str = "") -> None:
        """HELLO: refuse a device that speaks another protocol version or whose bitstream
        was built from another config."""
        version, got = self.link.hello()
        if version != VERSION:
            raise SessionError(f"the device speaks host protocol version {version}, this host {VERSION}; rebuild the "
                               f"bitstream or update the host runtime")
        if got != self.config_hash:
            raise SessionError(f"the device runs a design of config hash {got.hex()}, the host compiled for "
                               f"{self.config_hash.hex()}{f' ({config_name})' if config_name else ''}; "
                               f"rebuild the bitstream (or start the simulated board) from the same config")

    def device_has_image(self) -> bool:
        try:
            return self.link.read_mem(self.tag_addr, TAG_BYTES) == image_tag(self.image)
        except ProtocolError:
            return False

    def upload(self, *, progress: bool = False, verify: bool = True, force: bool = False) -> UploadStats:
        """Write the memory image, read it back (CRC32 per chunk), then the image tag."""
        t0 = time.perf_counter()
        if not force and self.device_has_image():
            return UploadStats(len(self.image), time.perf_counter() - t0, True, True)
        end = self.tag_addr + TAG_BYTES
        try:
            self.link.read_mem(end - MEM_ALIGN, MEM_ALIGN)
        except ProtocolError as e:
            if "BAD_ADDRESS" in str(e):
                raise SessionError(f"the model image needs {end:,} bytes of device memory; the device has less "
                                   f"(a smaller model, a shorter context or a board with more memory)") from None
            raise
        # invalidate the tag first: an interrupted upload must not look complete
        self.link.write_mem(self.tag_addr, bytes(TAG_BYTES))
        wire0 = self.link.stats.wire_bytes
        data = self.image + bytes(_align(len(self.image)) - len(self.image))
        bar = _progress(len(data) * (2 if verify else 1), "upload" + (" + verify" if verify else ""), progress)
        for off in range(0, len(data), CHUNK):
            chunk = data[off:off + CHUNK]
            self.link.write_mem(off, chunk)
            bar(len(chunk))
        wire = self.link.stats.wire_bytes - wire0
        if verify:
            for off in range(0, len(data), CHUNK):
                chunk = data[off:off + CHUNK]
                back = self.link.read_mem(off, len(chunk))
                if zlib.crc32(back) != zlib.crc32(chunk):
                    bad = next(i for i in range(len(chunk)) if back[i] != chunk[i])
                    raise SessionError(f"upload verification failed: device memory at {off + bad:#x} differs from "
                                       f"the image (wrote {chunk[bad]:#04x}, read {back[bad]:#04x})")
                bar(len(chunk))
        bar(None)
        self.link.write_mem(self.tag_addr, image_tag(self.image))
        return UploadStats(len(data), time.perf_counter() - t0, False, verify, wire)

    # --------------------------------------------------------------- decoding -------
    @property
    def context(self) -> int:
        return self.prog.shape.max_context

    def check_fits(self, n: int, what: str = "the text") -> None:
        if n > self.context:
            from ref_model.models.generate import GenerateError
            raise GenerateError(f"{what} is {n} tokens, longer than the compiled context of {self.context} tokens "
                                f"(decode.limits.context of the config, or --context)")

    def new_cache(self, n: int = 0) -> DeviceCache:
        """An empty device KV cache (positions restart at 0; old contents are never read)."""
        return DeviceCache(self.context)

    def step(self, token: int, cache: DeviceCache) -> int:
        """Run one token at position ``cache.pos``; returns the device's ARGMAX token."""
        if cache.pos >= cache.capacity:
            raise SessionError(f"the KV cache is full ({cache.capacity} positions)")
        if not 0 <= token < self.prog.shape.vocab_size:
            raise SessionError(f"token {token} is outside the vocabulary (0..{self.prog.shape.vocab_size - 1})")
        self.link.write_csr(Csr.PROGRAM_ADDR, self.prog.program_addr)
        self.link.write_csr(Csr.N_INSTR, len(self.prog.instrs))
        nxt, cycles = self.link.run(token, cache.pos, timeout=self.run_timeout)
        cache.tokens.append(token)
        cache.last_token = nxt
        self.cycles.append(cycles)
        return nxt

    def logits(self) -> torch.Tensor:
        """The last token's int32 logits (``Q.act_frac``), read from device memory."""
        n = self.prog.shape.vocab_size
        raw = self.link.read_mem(self.prog.logits_addr, _align(n * 4))[:n * 4]
        return torch.frombuffer(bytearray(raw), dtype=torch.int32).to(torch.int64)

    def pick(self, greedy_token: int, top_k: int, temperature: float, gen: torch.Generator) -> int:
        """Next token: the device's ARGMAX when greedy, else sampled from the read-back logits."""
        if temperature <= 0 or top_k == 1:
            return greedy_token
        from ref_model.models.generate import sample
        return sample(self.decoder.to_float(self.logits()), top_k, temperature, gen)

    # ------------------------------------------------------------ KV streaming ------
    def _regions(self) -> list[tuple[int, int]]:
        kv = [(a, _align(self.prog.kv.size)) for a in self.prog.kv_addrs]
        return kv + [(self.prog.logits_addr, _align(self.prog.shape.vocab_size * 4))]

    def save_kv(self, cache: DeviceCache) -> KVSnapshot:
        """Read the device's KV cache (every layer's region) and the last logits."""
        if cache.last_token is None:
            raise SessionError("nothing to save: the cache holds no tokens")
        regions = [self.link.read_mem(a, n) for a, n in self._regions()]
        return KVSnapshot(list(cache.tokens), cache.last_token, self.digest, regions)

    def restore_kv(self, snap: KVSnapshot) -> DeviceCache:
        """Write a snapshot back to the device, verify it by reading back, return its cache."""
        if snap.image_digest != self.digest:
            raise SessionError("the KV snapshot was saved from another compiled model (weights, numerics or "
                               "context differ); it cannot be restored here")
        regions = self._regions()
        if [n for _, n in regions] != [len(r) for r in snap.regions]:
            raise SessionError("the KV snapshot's regions do not match this model's KV layout")
        if len(snap.tokens) > self.context:
            raise SessionError(f"the KV snapshot holds {len(snap.tokens)} tokens, more than the context {self.context}")
        for (a, _), data in zip(regions, snap.regions):
            self.link.write_mem(a, data)
        for (a, n), data in zip(regions, snap.regions):
            if self.link.read_mem(a, n) != data:
                raise SessionError(f"KV restore verification failed at {a:#x}: device memory differs from the snapshot")
        return DeviceCache(self.context, list(snap.tokens), snap.last_token)


def _progress(total: int, what: str, enabled: bool):
    """A byte progress bar on stderr (tqdm); ``bar(n)`` advances, ``bar(None)`` closes."""
    if not enabled:
        return lambda n: None
    from tqdm import tqdm
    t = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=what, file=sys.stderr, leave=True)

    def bar(n):
        if n is None:
            t.close()
        else:
            t.update(n)
    return bar
