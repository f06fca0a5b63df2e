"""``lutforge bench decode``: the decode engine under Verilator, from its own counters.

Two parts per config (SmolLM2-135M with its real weights on ``decode_smollm2``; the
random tiny llama on ``decode_tiny``):

1. **prompt**: the first tokens of a real prompt from position 0, every token's logits
   checked against the integer reference (a mismatch is an error, not a number);
2. **context sweep**: one token at positions 127, 255 and 1023 (KV4), to see how cycles
   grow with the cached context. The KV cache there holds zeros: the engine reads every
   cached row whatever its values, so timing is that of a full cache.

Per token: cycles (and per unit class), bytes read, read-port idle cycles, and
**bandwidth efficiency** = (bytes read / port bytes per cycle) / cycles (weights, gains,
KV and the program: everything the port moved; the weight bytes alone are also given).
Projected tokens/s: at the clock the config states, and at a stated DDR3-800 x16 board
(1.6 GB/s = one 128-bit beat per cycle at 100 MHz), ``min(Fmax, 100 MHz) / cycles``.
Fmax comes from the report flow: a ``--report-from`` JSON of the config (``lutforge report
--json``), else the routed whole engine in ``bench/results/decode_units.json`` (``python
-m bench.decode_units engine``, ``decode_tiny``'s engine). The SmolLM2 engine has no routed
Fmax of its own (it does not fit the ECP5-85's multipliers), so its projection uses the
tiny engine's, and says so (``fmax_source``).
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch

from ref_model.errors import LutforgeError, SimulationError
from rtl_gen.config import load_config

PROMPT = "The capital of France is Paris, and the capital of Germany is"
#: A 16-bit DDR3-800 board: 1.6 GB/s, i.e. one 16-byte beat per cycle at 100 MHz.
BOARD_BYTES_PER_S = 1.6e9
#: Routed whole-engine runs (``python -m bench.decode_units engine``).
ENGINE_FMAX = Path(__file__).resolve().parent / "results" / "decode_units.json"


def routed_engine_fmax(cfg_name: str, path: Path = ENGINE_FMAX) -> tuple[float | None, dict | None]:
    """The latest routed whole-engine Fmax in ``path`` (its ``engine`` entry) and where it
    came from: ``(fmax_mhz, {"file", "config", "commit", "date", "proxy", "area", "device", "speed"})``
    (``area``: the routed LUT4 / FF / DSP / BRAM); ``proxy`` is True when the run routed
    another config's engine than ``cfg_name``. ``(None, None)``
    when there is no such run or the file cannot be read."""
    try:
        e = json.loads(path.read_text()).get("engine")
    except (OSError, ValueError):
        return None, None
    if not isinstance(e, dict) or not isinstance(e.get("fmax_mhz"), (int, float)):
        return None, None
    src = {"file": path.name, "config": e.get("config"), "commit": e.get("commit"), "date": e.get("date"),
           "proxy": e.get("config") != cfg_name,
           "area": {k: e.get(k) for k in ("lut4", "ff", "dsp", "bram")}, "device": e.get("device"),
           "speed": e.get("speed", 6)}     # runs before the field: nextpnr's default grade
    return float(e["fmax_mhz"]), src


def _model(cfg_name: str, tmp: Path):
    from ref_model.models.gguf_model import load_gguf, smollm2_path
    from ref_model.models.tiny import write_tiny_llama
    if cfg_name == "decode_smollm2":
        return load_gguf(smollm2_path())
    return load_gguf(write_tiny_llama(tmp / "tiny.gguf", seed=8))


def _token_entry(run, bpb: int, weight_bytes: int) -> dict:
    c = run.counters
    cyc = max(c["cycles"], 1)
    return {"cycles": c["cycles"], "matvec_cycles": c["matvec_cycles"], "attend_cycles": c["attend_cycles"],
            "kv_cycles": c["kv_cycles"], "other_cycles": c["other_cycles"], "read_bytes": c["read_bytes"],
            "write_bytes": c["write_bytes"], "read_idle_cycles": c["read_idle"],
            "weight_stall_cycles": c["weight_stall"],
            "bandwidth_efficiency": c["read_bytes"] / bpb / cyc,
            "weight_bandwidth_efficiency": weight_bytes / bpb / cyc, "wall_seconds": run.wall_seconds}


def _bench(cfg_name: str, tmp: Path, *, prompt_tokens: int, contexts: list[int], fmax: float | None,
           fmax_source: dict | None = None) -> dict:
    from host_runtime.decode_program import compile_decode
    from ref_model.decode import argmax as ref_argmax
    from ref_model.fixedpoint import rom_tables
    from ref_model.models.int_llama import IntLlama
    from rtl_gen.generate import engine_limits
    from sim.decode_runner import run_decode

    cfg = load_config(cfg_name)
    num = cfg.decode.decode_numerics()
    bpb = cfg.bytes_per_beat
    model = _model(cfg_name, tmp)
    hp = model.hparams
    ctx = max([prompt_tokens] + contexts)
    if ctx > cfg.decode.limits.context:
        raise LutforgeError(f"context {ctx} exceeds {cfg_name}'s decode.limits.context")
    ref = IntLlama(model, num, max_context=ctx)
    prog = compile_decode(ref, context=ctx)
    limits = engine_limits(cfg)
    tables = rom_tables()
    ids = model.tokenizer.encode(PROMPT).ids
    ids = (ids * prompt_tokens)[:prompt_tokens]
    steps = list(zip(ids, range(prompt_tokens)))
    t0 = time.perf_counter()
    runs = run_decode(prog, limits, tables, steps, sim=cfg.memory.sim, data_bits=cfg.memory.data_bits,
                      workdir=tmp / f"{cfg_name}_prompt")
    cache = ref.new_cache(ctx)
    prompt = []
    for (tok, pos), run in zip(steps, runs):
        want = ref.step(tok, cache)
        if not torch.equal(run.logits, want):
            raise SimulationError(f"{cfg_name}: token {pos} logits differ from the integer reference")
        if run.next_token != ref_argmax(want):
            raise SimulationError(f"{cfg_name}: token {pos}: the engine's ARGMAX gave {run.next_token}, "
                                  f"the reference {ref_argmax(want)}")
        prompt.append({"position": pos, "token": tok, "next_token": run.next_token,
                       **_token_entry(run, bpb, prog.weight_bytes)})
        print(f"{cfg_name:>15} prompt pos {pos:4d}: {run.counters['cycles']:>10,} cycles  "
              f"bandwidth eff {prompt[-1]['bandwidth_efficiency']:.3f}  next {run.next_token}  (bit-exact)")
    sweep = []
    if contexts:
        # a fresh image: the KV region is zeros, positions jump to the end of each context
        prog2 = compile_decode(ref, context=ctx)
        runs = run_decode(prog2, limits, tables, [(ids[0], c - 1) for c in contexts], sim=cfg.memory.sim,
                          data_bits=cfg.memory.data_bits, workdir=tmp / f"{cfg_name}_sweep")
        for c, run in zip(contexts, runs):
            sweep.append({"context": c, **_token_entry(run, bpb, prog.weight_bytes)})
            print(f"{cfg_name:>15} context {c:5d}: {run.counters['cycles']:>10,} cycles  "
                  f"bandwidth eff {sweep[-1]['bandwidth_efficiency']:.3f}")
    sim_s = time.perf_counter() - t0
    clock = cfg.clock.mhz * 1e6
    board_clock = min(fmax * 1e6 if fmax else clock, BOARD_BYTES_PER_S / bpb)
    for e in prompt + sweep:
        e["tokens_per_s_at_config_clock"] = clock / e["cycles"]
        e["tokens_per_s_on_ddr3_800_x16"] = board_clock / e["cycles"]
    return {"config": cfg_name, "config_hash": cfg.hash(), "model": model.path.name,
            "shape": {"layers": hp.n_layers, "dim": hp.dim, "ffn": hp.ffn_dim, "heads": hp.n_heads,
                      "kv_heads": hp.n_kv_heads, "vocab": hp.vocab_size},
            "numerics": num.to_dict(), "port_bytes_per_cycle": bpb, "weight_bytes_per_token": prog.weight_bytes,
            "memory_bound_tokens_per_s_on_ddr3_800_x16": BOARD_BYTES_PER_S / prog.weight_bytes,
            "fmax_mhz": fmax, "fmax_source": fmax_source, "prompt": prompt, "context_sweep": sweep,
            "simulation_seconds": sim_s}


def _plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(results["configs"]), figsize=(5 * len(results["configs"]), 4), squeeze=False)
    for ax, e in zip(axes[0], results["configs"]):
        rows = [("pos 0", e["prompt"][0])] if e["prompt"] else []
        rows += [(f"ctx {s['context']}", s) for s in e["context_sweep"]]
        bottom = [0] * len(rows)
        for key, color in (("matvec_cycles", "#3a7"), ("attend_cycles", "#d83"), ("kv_cycles", "#58c"),
                           ("other_cycles", "#999")):
            vals = [r[key] / 1e6 for _, r in rows]
            ax.bar([n for n, _ in rows], vals, bottom=bottom, color=color, label=key.replace("_cycles", ""))
            bottom = [b + v for b, v in zip(bottom, vals)]
        for i, (_, r) in enumerate(rows):
            ax.text(i, bottom[i], f"{100 * r['bandwidth_efficiency']:.0f}%", ha="center", va="bottom", fontsize=8)
        ax.set_ylabel("Mcycles per token")
        ax.set_title(f"{e['config']} ({e['model']}): cycles per token\n(label: port bandwidth efficiency)",
                     fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args, json_path: Path) -> int:
    """``lutforge bench decode [--quick] [--report-from JSON]``."""
    import tempfile
    reports = {}
    for p in (args.report_from or []):
        try:
            rep = json.loads(Path(p).read_text())
        except (OSError, ValueError) as e:
            raise LutforgeError(f"--report-from {p}: cannot read a report ({e})") from None
        reports[rep.get("config_hash")] = rep
    plan = [("decode_tiny", 4, [16, 64])] if args.quick else \
        [("decode_tiny", 8, [16, 64]), ("decode_smollm2", 8, [128, 256, 1024])]
    results = {"suite": "decode", "quick": args.quick, "host": platform.node(), "configs": []}
    with tempfile.TemporaryDirectory(prefix="lutforge_bench_decode_") as tmp:
        for name, n_prompt, contexts in plan:
            cfg = load_config(name)
            rep = reports.get(cfg.hash())
            if rep and rep.get("pnr"):
                fmax, source = rep["pnr"]["fmax_mhz"], {"file": "--report-from", "config": name, "proxy": False}
            else:
                fmax, source = routed_engine_fmax(name)
            entry = _bench(name, Path(tmp), prompt_tokens=n_prompt, contexts=contexts, fmax=fmax,
                           fmax_source=source)
            if rep:
                entry["report"] = {k: rep.get(k) for k in ("synth", "pnr", "fit", "tools")}
            results["configs"].append(entry)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    _plot(results, json_path.with_suffix(".png"))
    print(f"wrote {json_path} and {json_path.with_suffix('.png')}")
    return 0
