"""`lutforge dram-init`: init over a host link's external CSR window, the memtest, and the
one-line errors (no window, bus timeout, leveling failure with the scan table)."""

import contextlib

import pytest

import fpga_boards.dram_link as dram_link
from fpga_boards.dram_init import DramInitError
from fpga_boards.litedram import generate_litedram
from host_runtime.protocol import ProtocolError
from rtl_gen.cli import main

from .fake_litedram import FakeLiteDRAM


class FakeLink:
    """Link.read_ext/write_ext over a FakeLiteDRAM, write_mem/read_mem over a bytearray that
    only answers after init_done (as the core's blocked AXI port)."""

    def __init__(self, fake, *, size=1 << 16, flip_bit=None, ext_error=None):
        self.fake, self.mem, self.flip_bit, self.ext_error = fake, bytearray(size), flip_bit, ext_error

    def read_ext(self, addr):
        if self.ext_error:
            raise ProtocolError(f"READ_CSR: device answered {self.ext_error}")
        return self.fake.read(addr)

    def write_ext(self, addr, value):
        if self.ext_error:
            raise ProtocolError(f"WRITE_CSR: device answered {self.ext_error}")
        self.fake.write(addr, value)

    def _ready(self):
        assert self.fake.regs["ddrctrl_init_done"] and not self.fake.regs["ddrctrl_init_error"], "AXI port blocked"

    def write_mem(self, addr, data):
        self._ready()
        self.mem[addr:addr + len(data)] = data
        if self.flip_bit is not None:
            self.mem[self.flip_bit // 8] ^= 1 << self.flip_bit % 8

    def read_mem(self, addr, n):
        self._ready()
        return bytes(self.mem[addr:addr + n])


@pytest.fixture
def link_to(monkeypatch):
    def install(link):
        monkeypatch.setattr(dram_link, "connect", lambda target, **kw: contextlib.nullcontext(link))
        monkeypatch.setattr(dram_link.time, "sleep", lambda s: None)
        import fpga_boards.dram_init as di
        monkeypatch.setattr(di.time, "sleep", lambda s: None)
    return install


GOOD = {0: (2, {2, 3, 4, 5}), 1: (1, {3, 4, 5, 6, 7})}


def test_cli_init_and_memtest(link_to, capsys):
    b = generate_litedram("ecpix5")
    fake = FakeLiteDRAM(b, GOOD)
    link_to(FakeLink(fake))
    assert main(["dram-init", "--board", "ecpix5", "--target", "udp://10.0.0.2:1234", "--memtest", "4000"]) == 0
    out, err = capsys.readouterr()
    assert "ecpix5: DRAM initialised" in out and "m0: bitslip 2 delay 3, m1: bitslip 1 delay 5" in out
    assert "memtest 4000 bytes at 0x0: OK" in out
    assert "m0, b02: |00111100| delays: 03+-01" in err          # the scan, unless --quiet
    assert fake.delay == [3, 5] and fake.regs["ddrctrl_init_done"] == 1


def test_cli_memtest_failure_sets_init_error(link_to, capsys):
    fake = FakeLiteDRAM(generate_litedram("ulx3s"))
    link_to(FakeLink(fake, flip_bit=8 * 100 + 3))
    assert main(["dram-init", "--board", "ulx3s", "--target", "udp://10.0.0.2:1234", "--memtest", "1024",
                 "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lutforge: error: ulx3s: memtest 1024 bytes at 0x0:" in err
    assert "first at 0x64" in err and fake.regs["ddrctrl_init_error"] == 1


def test_cli_leveling_failure(link_to, capsys):
    fake = FakeLiteDRAM(generate_litedram("ecpix5"), {0: GOOD[0]})
    link_to(FakeLink(fake))
    assert main(["dram-init", "--board", "ecpix5", "--target", "udp://10.0.0.2:1234", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("lutforge: error: ecpix5: read leveling failed on byte lane(s) 1")
    assert "m1, b00: |00000000| delays: -" in err


@pytest.mark.parametrize("answer, says", [("BAD_ADDRESS", "no external CSR window"),
                                          ("DEVICE_ERROR", "did not acknowledge a read of word")])
def test_cli_window_errors(link_to, capsys, answer, says):
    link_to(FakeLink(None, ext_error=answer))
    assert main(["dram-init", "--board", "orangecrab", "--target", "udp://10.0.0.2:1234"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err


def test_link_without_window():
    with pytest.raises(DramInitError, match="no external CSR window"):
        dram_link.LinkCtrl(object())


def test_cli_bad_target_and_board(capsys):
    assert main(["dram-init", "--board", "ecpix5", "--target", "tcp://127.0.0.1:1"]) == 1
    assert capsys.readouterr().err.startswith("lutforge: error: target 'tcp://127.0.0.1:1'")
    assert main(["dram-init", "--board", "arty", "--target", "tcp://127.0.0.1:1"]) == 1
    assert capsys.readouterr().err == ("lutforge: error: board 'arty' has no LiteDRAM configuration; "
                                       "allowed: ecpix5, butterstick, orangecrab, ulx3s\n")


def test_memtest_bounds(link_to):
    fake = FakeLiteDRAM(generate_litedram("ulx3s"))
    with pytest.raises(DramInitError, match="runs past the 32 MiB"):
        dram_link.init_over_link(FakeLink(fake), "ulx3s", memtest_bytes=1 << 20, memtest_base=63 << 19,
                                 sleep=lambda s: None)


def _serve(lst, device):
    conn, _ = lst.accept()
    with conn:
        while data := conn.recv(65536):
            if out := device.receive(data):
                conn.sendall(out)


def test_cli_over_the_protocol(tmp_path, monkeypatch, capsys):
    """The whole path: CLI -> Link -> frames on a Unix socket -> DeviceModel's external CSR
    window -> the fake core."""
    import socket
    import threading

    from host_runtime import protocol as P
    import fpga_boards.dram_init as di
    monkeypatch.setattr(di.time, "sleep", lambda s: None)
    fake = FakeLiteDRAM(generate_litedram("ecpix5"), GOOD)
    dev = P.DeviceModel(bytearray(1 << 16), ctrl=fake)
    path = str(tmp_path / "board.sock")
    lst = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lst.bind(path)
    lst.listen(1)
    th = threading.Thread(target=_serve, args=(lst, dev), daemon=True)
    th.start()
    assert main(["dram-init", "--board", "ecpix5", "--target", f"sim://{path}", "--memtest", "8192", "--quiet"]) == 0
    th.join(timeout=5)
    lst.close()
    out = capsys.readouterr().out
    assert "m0: bitslip 2 delay 3, m1: bitslip 1 delay 5" in out and "memtest 8192 bytes at 0x0: OK" in out
    assert fake.regs["ddrctrl_init_done"] == 1 and fake.delay == [3, 5]
