"""The host's UdpTransport against a device served over UDP on 127.0.0.1
(sim/udp_device.py around the protocol's DeviceModel), with datagrams lost and duplicated
in both directions: memory written and read back bit-exact, every RUN executed exactly
once (a retransmission with the same seq gets the stored response), every datagram within
1472 bytes (memory moves 1440 bytes per frame)."""

from __future__ import annotations

import random
import socket
import struct

import pytest

from host_runtime import protocol as P
from host_runtime.transports import LoopbackTransport, UdpTransport, open_target
from sim.udp_device import UdpDeviceServer

HASH = bytes(range(8))


class _Device:
    def __init__(self, size=1 << 18):
        self.runs = []
        self.model = P.DeviceModel(bytearray(size), config_hash=HASH, run=self.run)

    def run(self, tok, pos):
        self.runs.append((tok, pos))
        return (tok + pos) & 0xFFFF, 10


def test_udp_transport_sizes_frames_to_a_datagram():
    t = open_target("udp://127.0.0.1:9")
    try:
        assert isinstance(t, UdpTransport) and t.max_frame == 1472
        link = P.Link(t)
        assert link.chunk == 1440
        assert len(P.encode_frame(P.Op.WRITE_MEM, 1, bytes(8 + link.chunk))) <= 1472
        assert len(P.encode_frame(P.Op.READ_MEM | P.RESPONSE, 1, bytes(1 + link.chunk))) <= 1472
    finally:
        t.close()
    assert P.Link(LoopbackTransport(None)).chunk == P.MEM_CHUNK


@pytest.mark.parametrize("seed,loss,dup", [(1, 0.0, 0.0), (2, 0.15, 0.05), (3, 0.3, 0.1)])
def test_udp_link_survives_loss_and_duplication(seed, loss, dup):
    rnd = random.Random(seed)
    dev = _Device()
    with UdpDeviceServer(LoopbackTransport(dev.model), loss=loss, dup=dup, seed=seed) as srv:
        link = P.Link(open_target(srv.target), timeout=0.1, retries=40)
        try:
            link.reset()
            assert link.hello() == (P.VERSION, HASH)
            data = rnd.randbytes(48 * 1024)
            link.write_mem(4096, data)
            assert link.read_mem(4096, len(data)) == data, f"seed {seed}: read back differs"
            assert bytes(dev.model.mem[4096:4096 + len(data)]) == data, f"seed {seed}: device memory differs"
            started = []
            for k in range(12):
                link.start(100 + k, k)
                started.append((100 + k, k))
                assert link.status().next_token == (100 + 2 * k) & 0xFFFF
            link.write_csr(P.Csr.N_INSTR, 77)
            assert link.read_csr(P.Csr.N_INSTR) == 77
        finally:
            link.transport.close()
    assert dev.runs == started, f"seed {seed}: the device ran {dev.runs}, the host started {started}"
    st = srv.stats
    assert st["largest_in"] <= 1472 and st["largest_out"] <= 1472, f"seed {seed}: {st}"
    if loss:
        assert link.stats.retries > 0 and st["lost_in"] + st["lost_out"] > 0, f"seed {seed}: {st}"
    else:
        assert link.stats.retries == 0, f"seed {seed}: {link.stats}"


def test_a_retransmitted_frame_gets_the_stored_response():
    dev = _Device()
    with UdpDeviceServer(LoopbackTransport(dev.model)) as srv:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(2.0)
        try:
            run = P.encode_frame(P.Op.RUN, 7, struct.pack("<II", 5, 6))
            answers = []
            for _ in range(3):
                s.sendto(run, (srv.host, srv.port))
                answers.append(s.recvfrom(2048)[0])
            assert answers[0] == answers[1] == answers[2]
            assert P.FrameDecoder().feed(answers[0])[0].seq == 7
            assert dev.runs == [(5, 6)]
            s.sendto(P.encode_frame(P.Op.RESET, 8), (srv.host, srv.port))
            s.recvfrom(2048)
            s.sendto(run, (srv.host, srv.port))         # RESET forgot it: runs again
            s.recvfrom(2048)
            assert dev.runs == [(5, 6), (5, 6)]
        finally:
            s.close()


def test_datagrams_from_elsewhere_are_ignored():
    dev = _Device()
    with UdpDeviceServer(LoopbackTransport(dev.model)) as srv:
        t = open_target(srv.target)
        other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            port = t.sock.getsockname()[1]
            other.sendto(P.encode_frame(P.Op.HELLO | P.RESPONSE, 1, b"\x00" + bytes(9)), ("127.0.0.1", port))
            link = P.Link(t, timeout=0.5)
            assert link.hello() == (P.VERSION, HASH)
            assert t.ignored == 1
        finally:
            other.close()
            t.close()


def test_sim_board_udp_bad_arguments_are_clear(capsys):
    from rtl_gen.cli import main
    assert main(["sim-board", "decode_tiny", "--udp", "--uart"]) == 1
    assert "--udp and --uart are two transports" in capsys.readouterr().err
    assert main(["sim-board", "decode_tiny", "--loss", "0.1"]) == 1
    assert "--loss only applies with --udp" in capsys.readouterr().err
    assert main(["sim-board", "decode_tiny", "--udp", "--loss", "1.5"]) == 1
    assert "a probability in [0, 1)" in capsys.readouterr().err
