"""bench boards: comparison with the stored baseline (no builds run here)."""

from bench.boards import MATRIX, compare, entry_key, format_change


def _entry(lut4=20000, ff=14000, dsp=64, bram=40, fmax=60.0, ok=True):
    return {"ok": ok, "resources": {"lut4": lut4, "ff": ff, "dsp": dsp, "bram": bram},
            "clocks": {"sync": fmax}}


def test_within_tolerance_is_quiet():
    base = {"k": _entry()}
    assert compare({"k": _entry(lut4=20900, fmax=55.0)}, base) == []      # +4.5 % LUT4, -8 % Fmax


def test_changes_beyond_tolerance_are_reported():
    base = {"k": _entry()}
    ch = compare({"k": _entry(lut4=21200, dsp=60, fmax=70.0)}, base)
    got = {c["what"]: c for c in ch}
    assert set(got) == {"lut4", "dsp", "fmax sync"}
    assert got["lut4"]["regression"] and not got["dsp"]["regression"] and not got["fmax sync"]["regression"]
    assert "REGRESSION k: lut4 20000 -> 21200 (+6.0%, tolerance 5%)" == format_change(got["lut4"])
    ch = compare({"k": _entry(fmax=50.0)}, base)
    assert [c["regression"] for c in ch] == [True]


def test_failed_build_is_a_regression():
    ch = compare({"k": {"ok": False, "error": "does not fit"}}, {"k": _entry()})
    assert ch[0]["what"] == "build" and ch[0]["regression"]
    assert compare({"new": _entry()}, {}) == []     # no baseline for it: nothing to compare


def test_matrix_keys_unique():
    keys = [entry_key(b, c, o, m) for b, c, o, _, m in MATRIX]
    assert len(set(keys)) == len(keys)


def test_saved_manifest_compared_without_building(tmp_path, monkeypatch):
    """--report-from: a saved build manifest stands in for its matrix entry; a regression
    against the baseline makes the exit status 1."""
    import json
    from types import SimpleNamespace

    import bench.boards as bb
    from rtl_gen.config import load_config
    board, config, overrides, clock, memory = MATRIX[0]
    man = {"board": board, "memory": {"kind": memory}, "clock_mhz": clock, "design": "gemm",
           "config_hash": load_config(config, overrides).hash(), "seconds": {},
           "resources": {k: {"used": v, "available": 100000} for k, v in
                         {"lut4": 30000, "ff": 12000, "dsp": 64, "bram": 70}.items()},
           "clocks": {"$glbnet$x": {"achieved_mhz": 64.0, "target_mhz": clock, "met": True}}}
    path = tmp_path / "m.json"
    path.write_text(json.dumps(man))
    base = tmp_path / "baseline.json"
    key = entry_key(board, config, overrides, memory)
    base.write_text(json.dumps({"entries": {key: _entry(lut4=15000, ff=12000, dsp=64, bram=70, fmax=64.0)
                                            | {"clocks": {"design": 64.0}}}}))
    monkeypatch.setattr(bb, "BASELINE", base)
    args = SimpleNamespace(quick=True, report_from=[str(path)], no_report=True, update_baseline=False)
    out = tmp_path / "boards.json"
    assert bb.run(args, out) == 1
    res = json.loads(out.read_text())
    assert [c["what"] for c in res["changes"]] == ["lut4"]
    assert res["entries"][key]["clocks"] == {"design": 64.0}
