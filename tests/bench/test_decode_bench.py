"""bench.decode: the projected tokens/s use the routed engine's Fmax and name where it came from."""

import json

from bench.decode import ENGINE_FMAX, routed_engine_fmax


def test_routed_engine_fmax_names_its_run(tmp_path):
    f = tmp_path / "units.json"
    f.write_text(json.dumps({"engine": {"fmax_mhz": 62.73, "config": "decode_tiny", "commit": "abc1234",
                                        "date": "2026-12-03 17:00 UTC", "lut4": 66113, "ff": 37238, "dsp": 106,
                                        "bram": 47, "device": "LFE5U-85F"},
                             "kv": {"fmax_mhz": 85.0, "config": "decode_tiny"}}))
    fmax, src = routed_engine_fmax("decode_tiny", f)
    assert fmax == 62.73
    assert src == {"file": "units.json", "config": "decode_tiny", "commit": "abc1234",
                   "date": "2026-12-03 17:00 UTC", "proxy": False, "device": "LFE5U-85F", "speed": 6,
                   "area": {"lut4": 66113, "ff": 37238, "dsp": 106, "bram": 47}}
    fmax, src = routed_engine_fmax("decode_smollm2", f)
    assert fmax == 62.73 and src["proxy"] is True     # another config's engine: said so
    e = json.loads(f.read_text())
    e["engine"]["speed"] = 8
    f.write_text(json.dumps(e))
    assert routed_engine_fmax("decode_tiny", f)[1]["speed"] == 8


def test_routed_engine_fmax_absent_or_unreadable(tmp_path):
    assert routed_engine_fmax("decode_tiny", tmp_path / "missing.json") == (None, None)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert routed_engine_fmax("decode_tiny", bad) == (None, None)
    bad.write_text(json.dumps({"kv": {"fmax_mhz": 80.0}}))
    assert routed_engine_fmax("decode_tiny", bad) == (None, None)
    bad.write_text(json.dumps({"engine": {"fmax_mhz": "fast"}}))
    assert routed_engine_fmax("decode_tiny", bad) == (None, None)


def test_shipped_results_hold_a_routed_engine():
    fmax, src = routed_engine_fmax("decode_tiny", ENGINE_FMAX)
    assert fmax is not None and 10 < fmax < 500 and src["commit"]
