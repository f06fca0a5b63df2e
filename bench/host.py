"""``lutforge bench host``: the host runtime against a board over the framed protocol.

Per (config, model, target):

* **weight load**: the whole memory image written with WRITE_MEM frames (bytes/s of image
  data), then read back for verification (bytes/s), wall-clock on this machine;
* **protocol overhead**: image bytes / wire bytes the host sent for the upload (headers,
  addresses, CRCs and any retries included; the device's acknowledgements travel the
  other direction and are reported separately);
* **decode**: greedy tokens after a short prompt, wall tokens/s of the whole system
  (simulator included) and the device's own cycles per token (from the engine's
  counter), and whether the tokens equal the integer reference decoder's.

Targets: ``sim://`` (the Verilator simulated board, started by the bench) and ``isa://``
(the Python board: protocol device model + instruction-level engine). Writes JSON
(default ``bench/results/host.json``) and a plot next to it.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path

PROMPT = "The capital of France is"


def _measure(cfg, model, target: str, *, tokens: int, verify: bool) -> dict:
    from host_runtime.runner import connect
    from host_runtime.session import Session
    from ref_model.models.generate import Backend, generate

    with connect(target, cfg, timeout=5.0) as link:
        t0 = time.perf_counter()
        s = Session.open(link, cfg, model, verify=False, force_upload=True)
        t_write = time.perf_counter() - t0
        up = s.upload_stats
        read_s = None
        if verify:
            t1 = time.perf_counter()
            back = link.read_mem(0, len(s.image) // 16 * 16)
            read_s = time.perf_counter() - t1
            assert back == s.image[:len(back)], "read-back differs from the image"
        g = generate(s, PROMPT, tokens, stop_at_eos=False)
        cycles = [c for c in s.cycles if c]
    ref = generate(Backend(model, "quant", cfg.decode.decode_numerics()), PROMPT, tokens, stop_at_eos=False)
    return {
        "target": target, "image_bytes": up.bytes, "upload_seconds": up.seconds, "setup_seconds": t_write,
        "upload_bytes_per_s": up.bytes_per_s, "upload_wire_bytes": up.wire_bytes,
        "payload_efficiency": up.bytes / up.wire_bytes if up.wire_bytes else None,
        "readback_bytes_per_s": (len(s.image) / read_s) if read_s else None,
        "retries": link.stats.retries, "prompt_tokens": g.prompt_tokens, "new_tokens": len(g.new_tokens),
        "tokens_per_s": g.tokens_per_s, "device_cycles_per_token": sum(cycles) / len(cycles) if cycles else None,
        "tokens": g.new_tokens, "tokens_match_reference": g.new_tokens == ref.new_tokens,
    }


def _plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = results["runs"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    names = [f"{r['config']}\n{r['target']}" for r in rows]
    axes[0].bar(names, [r["upload_bytes_per_s"] / 1e6 for r in rows], color="#58c")
    for i, r in enumerate(rows):
        if r["payload_efficiency"]:
            axes[0].text(i, r["upload_bytes_per_s"] / 1e6, f"{100 * r['payload_efficiency']:.1f}% payload",
                         ha="center", va="bottom", fontsize=8)
    axes[0].set_ylabel("weight load, MB/s (wall clock)")
    axes[1].bar(names, [r["tokens_per_s"] for r in rows], color="#3a7")
    axes[1].set_ylabel("tokens/s (wall clock, simulation included)")
    for ax in axes:
        ax.tick_params(axis="x", labelsize=7)
    fig.suptitle("host runtime over the framed protocol", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args, json_path: Path) -> int:
    """``lutforge bench host [--quick]``."""
    from ref_model.models.generate import resolve_model
    from ref_model.models.gguf_model import load_gguf
    from ref_model.models.tiny import write_tiny_llama
    from rtl_gen.config import load_config

    results = {"suite": "host", "quick": args.quick, "host": platform.node(), "load": os.getloadavg(), "runs": []}
    with tempfile.TemporaryDirectory(prefix="lutforge_bench_host_") as tmp:
        tiny = load_gguf(write_tiny_llama(Path(tmp) / "tiny.gguf", seed=8))
        plan = [("decode_tiny", "tiny random llama", tiny, ["sim://", "isa://"], 8)]
        if not args.quick:
            plan.append(("decode_smollm2", "SmolLM2-135M Q4_1", resolve_model(None), ["sim://"], 4))
        for name, model_name, model, targets, n in plan:
            cfg = load_config(name)
            for target in targets:
                r = {"config": name, "model": model_name,
                     **_measure(cfg, model, target, tokens=n, verify=name == "decode_tiny")}
                results["runs"].append(r)
                print(f"{name:>15} {target:7} load {r['upload_bytes_per_s'] / 1e6:7.3f} MB/s "
                      f"({r['image_bytes'] / 1e6:.1f} MB, payload {100 * (r['payload_efficiency'] or 0):.1f}%), "
                      f"{r['tokens_per_s']:.3f} tokens/s, tokens {'=' if r['tokens_match_reference'] else '!='} "
                      f"reference")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    _plot(results, json_path.with_suffix(".png"))
    print(f"wrote {json_path} and {json_path.with_suffix('.png')}")
    return 0
