"""Host protocol: round trips, payload efficiency, and fault injection (no silent corruption,
bounded retries, clear errors)."""

from __future__ import annotations

import random

import pytest

from host_runtime import protocol as P


class Loopback(P.Transport):
    """Host <-> DeviceModel with seeded faults on both directions."""

    def __init__(self, device, *, seed=0, flip=0.0, drop=0.0, truncate=0.0, duplicate=0.0, disconnect_after=None):
        self.dev, self.rnd = device, random.Random(seed)
        self.flip, self.drop, self.truncate, self.duplicate = flip, drop, truncate, duplicate
        self.disconnect_after = disconnect_after
        self.sent = 0
        self.rx = bytearray()
        self.faults = 0

    def _mangle(self, data: bytes) -> bytes:
        r = self.rnd
        d = bytearray(data)
        if d and r.random() < self.flip:
            i = r.randrange(len(d))
            d[i] ^= 1 << r.randrange(8)
            self.faults += 1
        if d and r.random() < self.drop:
            i = r.randrange(len(d))
            del d[i:i + r.randrange(1, 4)]
            self.faults += 1
        if d and r.random() < self.truncate:
            del d[r.randrange(len(d)):]
            self.faults += 1
        if d and r.random() < self.duplicate:
            d = d + d
            self.faults += 1
        return bytes(d)

    def send(self, data: bytes) -> None:
        self.sent += 1
        if self.disconnect_after is not None and self.sent > self.disconnect_after:
            raise ConnectionResetError(104, "Connection reset by peer")
        self.rx += self._mangle(self.dev.receive(self._mangle(data)))

    def recv(self, timeout: float) -> bytes:
        out, self.rx = bytes(self.rx), bytearray()
        return out


def _device(size=1 << 20, **kw):
    return P.DeviceModel(bytearray(size), config_hash=b"\x01\x02\x03\x04\x05\x06\x07\x08", **kw)


def test_round_trip_and_efficiency():
    dev = _device()
    link = P.Link(Loopback(dev), timeout=0.01)
    data = random.Random(1).randbytes(300_000)
    link.write_mem(4096, data)
    assert link.stats.efficiency >= 0.95, link.stats
    assert link.read_mem(4096, len(data)) == data
    assert link.hello() == (P.VERSION, b"\x01\x02\x03\x04\x05\x06\x07\x08")
    link.write_csr(P.Csr.PROGRAM_ADDR, 0xDEADBEEF12345678)
    assert link.read_csr(P.Csr.PROGRAM_ADDR) == 0xDEADBEEF12345678


@pytest.mark.parametrize("fault", ["flip", "drop", "truncate", "duplicate"])
def test_faults_are_retried_and_nothing_is_corrupted(fault):
    runs = []
    dev = _device(run=lambda tok, pos: (runs.append((tok, pos)) or (tok + 1, 1000)))
    tr = Loopback(dev, seed=7, **{fault: 0.15})
    link = P.Link(tr, timeout=0.005, retries=12)
    data = random.Random(2).randbytes(60_000)
    link.write_mem(0, data)
    assert link.read_mem(0, len(data)) == data                  # verified after the faults
    for pos in range(20):
        assert link.run(100 + pos, pos) == (101 + pos, 1000)
    assert runs == [(100 + pos, pos) for pos in range(20)]      # each RUN executed exactly once
    assert tr.faults > 0 and (link.stats.retries > 0 or fault == "duplicate")  # duplicates need no retry


def test_disconnect_mid_transfer_is_a_clear_error():
    link = P.Link(Loopback(_device(), disconnect_after=3), timeout=0.01)
    with pytest.raises(P.ProtocolError, match="WRITE_MEM: the link is down"):
        link.write_mem(0, bytes(50_000))


def test_retries_are_bounded():
    class Silent(P.Transport):
        def send(self, data):
            pass

        def recv(self, timeout):
            return b""
    link = P.Link(Silent(), timeout=0.002, retries=3)
    with pytest.raises(P.ProtocolError, match=r"HELLO \(seq 1\): no valid response after 4 attempts \(timed out"):
        link.hello()


def test_version_mismatch_is_named():
    dev = _device()
    tr = Loopback(dev)
    link = P.Link(tr, timeout=0.01)
    real = P.encode_frame
    # the device answers with version 2
    dev_receive = dev.receive
    dev.receive = lambda data: b"".join(  # noqa: E731
        real(f.op, f.seq, f.payload, version=2) for f in P.FrameDecoder().feed(dev_receive(data)))
    with pytest.raises(P.ProtocolError, match="version mismatch: host speaks 1, device 2"):
        link.hello()


def test_bad_requests_get_device_errors():
    link = P.Link(Loopback(_device(size=4096)), timeout=0.01)
    with pytest.raises(P.ProtocolError, match="WRITE_MEM: device answered BAD_ADDRESS"):
        link.write_mem(4000, bytes(208))
    with pytest.raises(P.ProtocolError, match="READ_MEM: device answered BAD_ADDRESS"):
        link.read_mem(4080, 32)
    with pytest.raises(P.ProtocolError, match="WRITE_CSR: device answered BAD_ADDRESS"):
        link.write_csr(P.Csr.CYCLES, 5)             # read-only
    with pytest.raises(P.ProtocolError, match="READ_CSR: device answered BAD_ADDRESS"):
        link.read_csr(1000)
    with pytest.raises(P.ProtocolError, match="RUN: device answered DEVICE_ERROR"):
        link.run(1, 0)


def test_decoder_resyncs_over_garbage():
    dec = P.FrameDecoder()
    f1, f2 = P.encode_frame(P.Op.HELLO, 1), P.encode_frame(P.Op.STATUS, 2, b"xyz")
    frames = dec.feed(b"garbageLF\xff" + f1[:5]) + dec.feed(f1[5:] + b"\x00LF" + f2)
    assert [(f.op, f.seq, f.payload) for f in frames] == [(P.Op.HELLO, 1, b""), (P.Op.STATUS, 2, b"xyz")]
    assert dec.resyncs > 0


def test_memory_commands_are_aligned():
    """Misaligned requests: the host refuses them before sending; the device (for a host
    that sends them anyway) answers BAD_ADDRESS."""
    dev = _device(size=8192)
    link = P.Link(Loopback(dev), timeout=0.01)
    for call in (lambda: link.write_mem(8, bytes(16)), lambda: link.write_mem(16, bytes(20)),
                 lambda: link.read_mem(4, 16), lambda: link.read_mem(0, 17)):
        with pytest.raises(P.ProtocolError, match="must be multiples of 16 bytes"):
            call()
    assert link.stats.frames_sent == 0
    for op, payload in [(P.Op.WRITE_MEM, (8).to_bytes(8, "little") + bytes(16)),
                        (P.Op.WRITE_MEM, bytes(8) + bytes(20)),
                        (P.Op.READ_MEM, (4).to_bytes(8, "little") + (16).to_bytes(4, "little")),
                        (P.Op.READ_MEM, bytes(8) + (24).to_bytes(4, "little"))]:
        with pytest.raises(P.ProtocolError, match="device answered BAD_ADDRESS"):
            link.transact(op, payload)
    link.write_mem(8192 - 4080, bytes(range(256)) * 15 + bytes(240))   # one full aligned chunk at the end
    assert link.read_mem(8192 - 16, 16) == bytes(16)


def test_run_status_and_csrs():
    dev = _device(run=lambda tok, pos: (tok * 3 + pos, 777 + pos))
    link = P.Link(Loopback(dev), timeout=0.01)
    assert link.status() == P.EngineStatus(False, False, 0, 0)
    link.write_csr(P.Csr.N_INSTR, 42)
    assert link.run(5, 2) == (17, 779)
    assert link.status() == P.EngineStatus(False, False, 17, 779)
    assert link.read_csr(P.Csr.N_INSTR) == 42
    assert link.read_csr(P.Csr.NEXT_TOKEN) == 17 and link.read_csr(P.Csr.CYCLES) == 779
    assert link.read_csr(P.Csr.ENGINE_STATUS) == 0


def test_duplicates_answer_the_stored_response_and_reset_forgets_it():
    runs = []
    dev = _device(run=lambda tok, pos: (runs.append(tok) or (tok, 1)))
    run = P.encode_frame(P.Op.RUN, 9, (1).to_bytes(4, "little") + bytes(4))
    first = dev.receive(run)
    assert dev.receive(run) == first and runs == [1]                  # a retry: not run again
    other = P.encode_frame(P.Op.RUN, 9, (2).to_bytes(4, "little") + bytes(4))
    dev.receive(other)                                                # same seq, another frame: runs
    assert runs == [1, 2]
    dev.receive(P.encode_frame(P.Op.RESET, 10))
    dev.receive(other)                                                # RESET forgot frame 9
    assert runs == [1, 2, 2]


def test_device_answers_in_frame_order():
    """A NACK for a corrupt frame comes between the responses of its neighbours."""
    dev = _device()
    good1, good2 = P.encode_frame(P.Op.HELLO, 1), P.encode_frame(P.Op.STATUS, 3)
    bad = bytearray(P.encode_frame(P.Op.HELLO, 2, b"abcd"))
    bad[13] ^= 1
    out = P.FrameDecoder().feed(dev.receive(good1 + bytes(bad) + good2))
    assert [(f.seq, f.payload[0]) for f in out] == [(1, P.Status.OK), (2, P.Status.CRC_ERROR), (3, P.Status.OK)]
