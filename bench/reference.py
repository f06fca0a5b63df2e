"""``lutforge bench reference``: the reference decoders on SmolLM2-135M on this CPU.

* decode speed (tokens/s) of the quantized (bit-exact integer) and the float reference,
  greedy from a short prompt, prompt excluded, one torch thread by default;
* teacher-forced fidelity on the shipped English paragraph
  (``ref_model/models/data/english.txt``) at KV8 and KV4: top-1 agreement of quant vs
  float, max / mean |logit difference|, mean KL, and each backend's accuracy on the true
  next token.

Writes JSON (default ``bench/results/reference.json``) and a plot next to it. The machine
load (``os.getloadavg``) is recorded: on a shared 2-core machine the speeds are noisy.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch

PROMPT = "The capital of France is"


def _decode_speed(backend, ids: list[int], n: int) -> tuple[float, list[int]]:
    cache = backend.new_cache(len(ids) + n)
    for t in ids:
        logits = backend.step(t, cache)
    out = []
    t0 = time.perf_counter()
    for _ in range(n):
        out.append(int(torch.argmax(logits)))
        logits = backend.step(out[-1], cache)
    return n / (time.perf_counter() - t0), out


def run(args, json_path: Path) -> int:
    """``lutforge bench reference [--quick] [--threads N]``."""
    return run_suite(args.quick, json_path, threads=max(1, args.threads))


def run_suite(quick: bool, json_path: Path, threads: int = 1, model: str | None = None) -> int:
    from ref_model.models.generate import DEFAULT_TEXT, Backend, fidelity, quant_numerics, resolve_model

    torch.set_num_threads(threads)
    m = resolve_model(model)
    load0 = os.getloadavg()
    n_new = 8 if quick else 32
    ids = m.tokenizer.encode(PROMPT).ids
    speed = {}
    for kind in ("quant", "float"):
        b = Backend(m, kind, quant_numerics(8) if kind == "quant" else None)
        tps, out = _decode_speed(b, ids, n_new)
        speed[kind] = {"tokens_per_s": tps, "new_tokens": n_new,
                       "greedy_text": m.tokenizer.decode(out, skip_special_tokens=False)}
        print(f"decode {kind:5s}: {tps:6.2f} tokens/s   {PROMPT!r} -> {speed[kind]['greedy_text']!r}", flush=True)
    text = DEFAULT_TEXT.read_text(encoding="utf-8").strip()
    if quick:
        text = " ".join(text.split()[:40])
    fid = fidelity(m, text, (8, 4))
    for kv in (8, 4):
        r = fid[f"kv{kv}"]
        print(f"KV{kv}: agreement {r['agreement']:.4f}  max|dlogit| {r['max_abs_logit_diff']:.3f}  "
              f"mean KL {r['mean_kl']:.4f}  accuracy quant {r['accuracy']:.4f} float {fid['float']['accuracy']:.4f}  "
              f"({r['tokens_per_s']:.2f} tokens/s teacher-forced)", flush=True)
    res = {
        "suite": "reference", "model": m.path.name, "quick": quick, "threads": threads,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                    "loadavg_before": load0, "loadavg_after": os.getloadavg()},
        "decode": {"prompt": PROMPT, **speed},
        "fidelity": {"text_file": str(DEFAULT_TEXT.relative_to(Path(__file__).resolve().parent.parent))
                     if not quick else "first 40 words of " + DEFAULT_TEXT.name, **fid},
    }
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {json_path}")
    _plot(res, json_path.with_suffix(".png"))
    return 0


def _plot(res: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fid = res["fidelity"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.6))
    names = ["KV8", "KV4"]
    agree = [fid["kv8"]["agreement"], fid["kv4"]["agreement"]]
    a1.bar(names, agree, color=["tab:blue", "tab:orange"])
    a1.axhline(0.964, color="gray", ls="--", lw=1, label="llama.cpp (~96.4%)")
    a1.set_ylim(0.8, 1.0)
    a1.set_ylabel("top-1 agreement quant vs float")
    a1.set_title(f"teacher forcing, {fid['tokens']} tokens")
    a1.legend(loc="lower right", fontsize=8)
    for i, v in enumerate(agree):
        a1.text(i, v + 0.003, f"{v:.3f}", ha="center", fontsize=9)
    tps = [res["decode"]["quant"]["tokens_per_s"], res["decode"]["float"]["tokens_per_s"]]
    a2.bar(["quant (int)", "float32"], tps, color=["tab:green", "tab:gray"])
    a2.set_ylabel("decode tokens/s")
    a2.set_title(f"SmolLM2-135M, {res['threads']} thread(s), {res['machine']['cpus']} CPUs")
    for i, v in enumerate(tps):
        a2.text(i, v, f"{v:.1f}", ha="center", va="bottom", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")
