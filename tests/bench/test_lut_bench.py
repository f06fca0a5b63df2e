"""The LUT bench's plan: every compared design has the same peak at the precisions it serves."""

import pytest

from bench.lut import PRECISIONS, _cfg, area, designs, peak_macs


@pytest.mark.parametrize("peak", [16, 64])
def test_designs_have_equal_peak_throughput(peak):
    prec = {p: (wb, tern) for p, wb, tern in PRECISIONS}
    served = {"lut": set(), "bitserial": set()}
    for d in designs(peak):
        cfg = _cfg("bench-test", d["core"])
        for p in d["serves"]:
            assert peak_macs(cfg, *prec[p]) == peak, (d["label"], p)
            if d["kind"] in served:
                served[d["kind"]].add((p, d["act"]))
    every = {(p, a) for p in prec for a in (8, 16)}
    assert served == {"lut": every, "bitserial": every}


def test_area_measures():
    ecp5 = {"lut4_slots": 120}
    assert area("ecp5_nodsp", ecp5) == 120
    xcup = {"lut": 100, "carry": 5, "cells": {"RAM32M": 3, "RAM64X1D": 2, "LUT6": 100}}
    assert area("xcup_nodsp", xcup) == 100 + 5 + 3 * 4 + 2 * 2
