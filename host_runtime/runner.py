"""`lutforge run`: a model, a config and a target to generated text, end to end.

:func:`connect` turns a target string into a :class:`~host_runtime.protocol.Link`:

* ``sim://`` (no address) -- start a simulated board of the config (``lutforge
  sim-board``, a Verilator process) and connect to it; it stops when the run ends;
* ``isa://`` -- the Python board (protocol device model + instruction-level engine,
  :mod:`sim.isa_board`): same frames and tokens, no Verilator build, no cycle counts;
* anything else -- :func:`host_runtime.transports.open_target` (``sim://HOST:PORT`` or
  ``sim:///socket`` of a running simulated board, ``serial://``, ``udp://``, ``tcp://``).

:func:`run_model` loads the model file, opens a :class:`~host_runtime.session.Session`
(compile, check the device's config hash, upload + verify or find the image), optionally
restores a saved KV cache, generates, optionally saves the KV cache, and returns the
generation and the numbers (upload rate, device cycles per token, link statistics).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Callable

from .protocol import Link
from .session import KVSnapshot, Session, SessionError, UploadStats


@contextlib.contextmanager
def connect(target: str, cfg, *, timeout: float = 2.0, retries: int = 5):
    """A :class:`Link` to ``target`` for a device built from ``cfg`` (see the module docstring)."""
    from .transports import open_target
    if cfg.decode is None:
        raise SessionError(f"config {cfg.name!r} has no decode section: it builds no decode engine to run a model on")
    if target in ("isa://", "isa:"):
        from sim.isa_board import isa_target
        yield Link(isa_target(cfg), timeout=timeout, retries=retries)
        return
    if target in ("sim://", "sim:"):
        from sim.board import start_sim_board
        with start_sim_board(cfg) as board:
            transport = open_target(board.target)
            try:
                yield Link(transport, timeout=timeout, retries=retries)
            finally:
                transport.close()
        return
    transport = open_target(target)
    try:
        yield Link(transport, timeout=timeout, retries=retries)
    finally:
        transport.close()


@dataclass
class RunResult:
    generation: object          # ref_model.models.generate.Generation
    upload: UploadStats
    resumed_tokens: int         # prompt tokens taken from a restored KV snapshot
    cycles: list[int]           # device cycles of every token run
    payload_efficiency: float   # link payload bytes / wire bytes
    retries: int
    seconds: float


def run_model(cfg, model, prompt: str, *, target: str = "sim://", tokens: int = 32, top_k: int = 0,
              temperature: float = 0.0, seed: int = 0, context: int | None = None, verify: bool = True,
              force_upload: bool = False, load_kv: str | None = None, save_kv: str | None = None,
              progress: bool = False, on_text: Callable[[str], None] | None = None,
              timeout: float = 2.0, retries: int = 5, memory_bytes: int | None = None,
              memory_name: str = "the device") -> RunResult:
    """Generate ``tokens`` after ``prompt`` with ``model`` (a loaded
    :class:`~ref_model.models.gguf_model.LlamaGGUF`) on the device at ``target``."""
    from ref_model.models.generate import generate
    t0 = time.perf_counter()
    with connect(target, cfg, timeout=timeout, retries=retries) as link:
        s = Session.open(link, cfg, model, context=context, progress=progress, verify=verify,
                         force_upload=force_upload, memory_bytes=memory_bytes, memory_name=memory_name)
        cache = s.restore_kv(KVSnapshot.load(load_kv)) if load_kv else None
        resumed = len(cache.tokens) if cache else 0
        on_cache = (lambda c: s.save_kv(c).save(save_kv)) if save_kv else None
        g = generate(s, prompt, tokens, top_k=top_k, temperature=temperature, seed=seed, on_text=on_text,
                     echo_prompt=True, cache=cache, on_cache=on_cache)
        return RunResult(g, s.upload_stats, resumed, list(s.cycles), link.stats.efficiency, link.stats.retries,
                         time.perf_counter() - t0)
