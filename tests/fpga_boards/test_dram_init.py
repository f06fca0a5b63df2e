"""DRAM init and read leveling (a port of the LiteX BIOS's sdram_init) against a fake core
whose read-back is right only inside a per-lane bitslip/delay window."""

import pytest

from fpga_boards.dram_init import (DFII_CONTROL_HARDWARE, DFII_CONTROL_SOFTWARE, DramInitError, dram_init, lane_bytes,
                                   lfsr32, pattern_burst)
from fpga_boards.litedram import generate_litedram

from .fake_litedram import FakeLiteDRAM


@pytest.fixture(scope="module")
def ecpix5():
    return generate_litedram("ecpix5")


def no_sleep(_s):
    pass


def test_lfsr_and_pattern():
    # the BIOS's Galois LFSR (taps 0x80200003) and its byte packing
    assert lfsr32(1) == 0x80200003 and lfsr32(2) == 1
    rows = pattern_burst(42, 2, 8)
    assert len(rows) == 2 and all(len(r) == 8 for r in rows) and rows != pattern_burst(84, 2, 8)
    prv, first = 42, 0
    for bit in range(8):
        prv = lfsr32(prv)
        first |= (prv & 1) << bit
    assert rows[0][0] == first


def test_lane_bytes():
    # ECP5 x16: a 64-bit phase word, big-endian bytes; lane m is LE byte m (rising edge) and 4+m
    assert lane_bytes(0, nbytes=8, xdr=2) == [7, 3] and lane_bytes(1, nbytes=8, xdr=2) == [6, 2]


def test_ecp5_leveling_finds_windows(ecpix5):
    fake = FakeLiteDRAM(ecpix5, {0: (2, {2, 3, 4, 5}), 1: (1, {3, 4, 5, 6, 7})})
    lines = []
    rep = dram_init(fake, ecpix5, sleep=no_sleep, log=lines.append)
    # each lane ends on its bitslip, at the middle of its window
    assert [(lane.bitslip, lane.delay, lane.window, lane.ok) for lane in rep.lanes] == \
        [(2, 3, (2, 5), True), (1, 5, (3, 7), True)]
    assert fake.bitslip == [2, 1] and fake.delay == [3, 5]
    # the scan: 4 bitslips x 8 taps per lane; only the right bitslip has working taps
    assert len(rep.scan) == 8
    assert rep.scan[2].line() == "m0, b02: |00111100| delays: 03+-01"
    assert all(e for r in rep.scan if (r.module, r.bitslip) not in ((0, 2), (1, 1)) for e in r.errors)
    assert "best: m1, b01 delay 5 (window 3..7)" in lines
    # the mode register sequence of the generated header (MR2, MR3, MR1, MR0), ZQ after it
    assert [b for b, _ in fake.mrs] == [2, 3, 1, 0]
    assert fake.mrs == [(2, 0x200), (3, 0), (1, 0x6), (0, 0x320)]    # CWL=5; RTT/ODS; CL=6, BL=8
    # software control first, hardware control last; init done without error
    assert fake.controls[0] == DFII_CONTROL_SOFTWARE and fake.controls[-1] == DFII_CONTROL_HARDWARE
    assert fake.regs["ddrctrl_init_done"] == 1 and fake.regs["ddrctrl_init_error"] == 0
    assert rep.writes + rep.reads == fake.accesses and "read leveling m0: bitslip 2 delay 3" in rep.summary()


def test_ecp5_spotty_edge(ecpix5):
    """A tap that reads back only every other time at the window's edge does not start the
    window (the BIOS needs two working taps in a row)."""
    fake = FakeLiteDRAM(ecpix5, {0: (0, {1, 2, 3, 4, 5, 6}), 1: (3, {0, 1, 2, 3})}, flaky={(0, 1)})
    rep = dram_init(fake, ecpix5, sleep=no_sleep)
    assert rep.lanes[0].bitslip == 0 and rep.lanes[0].window[1] == 6 and rep.lanes[0].delay in (3, 4)
    assert rep.lanes[1].bitslip == 3 and rep.lanes[1].window == (0, 3) and rep.lanes[1].delay == 1


def test_ecp5_burst_detector_counts(ecpix5):
    """The pattern alone is not enough on ECP5: without the burst detector a tap fails."""
    fake = FakeLiteDRAM(ecpix5, {0: (1, {2, 3, 4}), 1: (1, {2, 3, 4})})
    dram_init(fake, ecpix5, sleep=no_sleep)
    assert fake.delay == [3, 3]
    fake = FakeLiteDRAM(ecpix5, {0: (1, {2, 3, 4}), 1: (1, {2, 3, 4})})
    fake._read_burst_orig = fake._read_burst

    def no_burstdet():
        fake._read_burst_orig()
        fake.burstdet &= ~0b10
    fake._read_burst = no_burstdet
    with pytest.raises(DramInitError, match=r"byte lane\(s\) 1 "):
        dram_init(fake, ecpix5, sleep=no_sleep)


def test_ecp5_no_window_fails_with_table(ecpix5):
    fake = FakeLiteDRAM(ecpix5, {0: (2, {2, 3, 4, 5})})       # lane 1 never reads back
    with pytest.raises(DramInitError) as e:
        dram_init(fake, ecpix5, sleep=no_sleep)
    msg = str(e.value)
    assert "read leveling failed on byte lane(s) 1" in msg
    assert "m0, b02: |00111100| delays: 03+-01" in msg and "m1, b03: |00000000| delays: -" in msg
    # the user port stays blocked: init_error with init_done
    assert fake.regs["ddrctrl_init_error"] == 1 and fake.regs["ddrctrl_init_done"] == 1
    assert fake.controls[-1] == DFII_CONTROL_HARDWARE


@pytest.mark.parametrize("board", ["butterstick", "orangecrab"])
def test_other_ddr3_boards(board):
    b = generate_litedram(board)
    fake = FakeLiteDRAM(b, {0: (3, {4, 5, 6, 7}), 1: (0, {0, 1, 2})})
    rep = dram_init(fake, b, sleep=no_sleep)
    assert [(lane.bitslip, lane.delay) for lane in rep.lanes] == [(3, 5), (0, 1)]


def test_sdr_no_leveling():
    b = generate_litedram("ulx3s")
    fake = FakeLiteDRAM(b)
    slept = []
    rep = dram_init(fake, b, sleep=slept.append)
    # SDR: precharge, mode register with DLL reset, precharge, 2 refreshes, mode register
    assert fake.mrs == [(0, 0x120), (0, 0x20)] and fake.commands == 6
    assert rep.lanes == [] and rep.scan == [] and "no read leveling" in rep.summary()
    assert fake.regs["ddrctrl_init_done"] == 1 and fake.controls[-1] == DFII_CONTROL_HARDWARE
    assert sum(slept) == pytest.approx((20000 + 200 + 4 + 4 + 200) * 1e-6)
