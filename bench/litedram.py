"""``lutforge bench litedram``: the board DRAM controllers (LiteDRAM cores) on every board.

Per board (``fpga_boards.litedram.BOARDS``): the generated core's size (``dram_size``, AXI
width), yowasp Yosys ``synth_ecp5`` of the core alone (LUT4, FF and the other cells), and
(not with ``--quick``) the core on its board's pins through nextpnr-ecp5 and ecppack (Fmax
of each clock against its constraint; exit 1 if one is missed). Result:
``bench/results/litedram.json``. About 5 minutes (``--quick``: synthesis only, 1.5 min).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path


def run(args, json_path: Path) -> int:
    from fpga_boards.litedram import BOARDS, generate_litedram
    from fpga_boards.litedram_measure import place_core, synth_core

    quick = getattr(args, "quick", False)
    out = {"suite": "litedram", "boards": {}}
    t0 = time.perf_counter()
    for board in BOARDS:
        b = generate_litedram(board)
        entry = {"memtype": b.phy.memtype, "phy": b.phy.name, "dram_bytes": b.dram_size, "axi_data_bits": b.data_bits,
                 "sys_clk_mhz": b.sys_clk_hz / 1e6}
        with tempfile.TemporaryDirectory(prefix=f"litedram-{board}-") as tmp:
            entry["synth"] = synth_core(board, Path(tmp) / "synth")
            if not quick:
                entry["placed"] = place_core(board, Path(tmp) / "place")
        out["boards"][board] = entry
        s = entry["synth"]
        line = f"[bench litedram] {board}: {s['lut4']:,} LUT4, {s['ff']:,} FF"
        if "placed" in entry:
            line += "; placed " + ", ".join(f"{n} {c['fmax_mhz']:.1f} MHz ({'met' if c['met'] else 'MISSED'} "
                                            f"{c['target_mhz']:.0f})" for n, c in entry["placed"]["clocks"].items())
        print(line, flush=True)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"[bench litedram] wrote {json_path}")
    missed = [b for b, e in out["boards"].items() if not all(c["met"] for c in e.get("placed", {}).get("clocks", {}).values())]
    return 1 if missed else 0
