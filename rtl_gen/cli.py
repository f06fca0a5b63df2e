"""Command line: ``lutforge SUBCOMMAND`` and ``generate-verilog``.

The CLI is thin: it parses arguments, calls one library function and prints. Errors a
user can cause are :class:`~ref_model.errors.LutforgeError` and print as one line with
a non-zero exit status; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ref_model.errors import LutforgeError


class _Parser(argparse.ArgumentParser):
    # argparse exits with status 2 and a usage line on bad arguments: that is the
    # one-line error we want, so keep it, but name the program consistently.
    pass


def _add_config_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("config", nargs=None if required else "?", default=None,
                   help="YAML config file or the name of a shipped config (default: systolic_8x8_int8)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override one config field, e.g. --set core.rows=16 (repeatable)")


def _load(args):
    from .config import load_config
    return load_config(args.config, args.overrides)


# ------------------------------------------------------------------ commands ------

def cmd_generate(args) -> int:
    from .generate import generate_verilog
    cfg = _load(args)
    manifest = generate_verilog(cfg, Path(args.output))
    print(f"wrote {manifest['verilog']} (top {manifest['top']}, config hash {manifest['config_hash']})")
    return 0


def cmd_demo(args) -> int:
    from sim.demo import run_demo
    cfg = _load(args)
    for name in ("m", "k", "n"):
        if getattr(args, name) < 1:
            raise LutforgeError(f"--{name} {getattr(args, name)}: GEMM dimensions must be at least 1")
    return run_demo(cfg, m=args.m, k=args.k, n=args.n, seed=args.seed, outdir=Path(args.output))


def cmd_report(args) -> int:
    from .report import run_report, format_report
    cfg = _load(args)
    rep = run_report(cfg, dsp=not args.nodsp, workdir=Path(args.workdir) if args.workdir else None)
    print(format_report(rep))
    if args.json:
        Path(args.json).write_text(json.dumps(rep, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def cmd_bench(args) -> int:
    from bench import run_bench
    return run_bench(args.suite, quick=args.quick, json_path=args.json, extra=args)


def cmd_config(args) -> int:
    cfg = _load(args)
    print(json.dumps(cfg.model_dump(mode="json"), indent=2))
    print(f"# config hash {cfg.hash()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="lutforge", description="Low-bit LLM accelerator generator and verifier")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    g = sub.add_parser("generate", help="emit Verilog and a JSON manifest for a config")
    _add_config_args(g)
    g.add_argument("-o", "--output", default="build/verilog", help="output folder")
    g.set_defaults(func=cmd_generate)

    d = sub.add_parser("demo", help="generate the accelerator, run a GEMM under Verilator, check it")
    _add_config_args(d)
    d.add_argument("--m", type=int, default=24)
    d.add_argument("--k", type=int, default=40)
    d.add_argument("--n", type=int, default=20)
    d.add_argument("--seed", type=int, default=1)
    d.add_argument("-o", "--output", default="build", help="folder for the generated Verilog")
    d.set_defaults(func=cmd_demo)

    r = sub.add_parser("report", help="synthesize (yowasp Yosys) and place-and-route (nextpnr-ecp5): area and Fmax")
    _add_config_args(r)
    r.add_argument("--json", metavar="PATH", help="also write the numbers as JSON")
    r.add_argument("--nodsp", action="store_true", help="map multipliers to LUTs (synth_ecp5 -nodsp)")
    r.add_argument("--workdir", help="keep the synthesis files here")
    r.set_defaults(func=cmd_report)

    b = sub.add_parser("bench", help="benchmarks: JSON results and a plot")
    b.add_argument("suite", choices=["systolic"], help="which benchmark")
    b.add_argument("--quick", action="store_true", help="small shapes only")
    b.add_argument("--json", metavar="PATH", default=None, help="result file (default bench/results/SUITE.json)")
    b.add_argument("--no-report", action="store_true", help="skip synthesis and place-and-route")
    b.add_argument("--report-from", action="append", metavar="JSON",
                   help="attach a saved `lutforge report --json` result instead of rerunning the flow (repeatable)")
    b.set_defaults(func=cmd_bench)

    c = sub.add_parser("config", help="validate a config and print it with defaults filled in")
    _add_config_args(c)
    c.set_defaults(func=cmd_config)
    return p


def _run(parser: argparse.ArgumentParser, argv) -> int:
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except LutforgeError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130


def main(argv=None) -> int:
    return _run(build_parser(), argv)


def generate_verilog_main(argv=None) -> int:
    p = _Parser(prog="generate-verilog", description="Emit Verilog and a JSON manifest for an accelerator config")
    _add_config_args(p, required=True)
    p.add_argument("-o", "--output", default="build/verilog", help="output folder")
    p.set_defaults(func=cmd_generate)
    return _run(p, argv)


if __name__ == "__main__":
    sys.exit(main())
