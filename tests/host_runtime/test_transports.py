"""Transports by target string: a device model served on a local socket, UDP, errors."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from host_runtime import protocol as P
from host_runtime.transports import TargetError, open_target


def _serve_stream(listener: socket.socket, device: P.DeviceModel) -> None:
    conn, _ = listener.accept()
    with conn:
        while True:
            data = conn.recv(1 << 16)
            if not data:
                return
            out = device.receive(data)
            if out:
                conn.sendall(out)


@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_stream_socket_target(tmp_path, kind):
    dev = P.DeviceModel(bytearray(1 << 16))
    if kind == "tcp":
        lst = socket.create_server(("127.0.0.1", 0))
        target = f"sim://127.0.0.1:{lst.getsockname()[1]}"
    else:
        path = str(tmp_path / "board.sock")
        lst = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        lst.bind(path)
        lst.listen(1)
        target = f"sim://{path}"
    th = threading.Thread(target=_serve_stream, args=(lst, dev), daemon=True)
    th.start()
    tr = open_target(target)
    link = P.Link(tr, timeout=2.0)
    data = os.urandom(20_000)  # a multiple of MEM_ALIGN
    link.write_mem(256, data)
    assert link.read_mem(256, len(data)) == data
    tr.close()
    th.join(timeout=5)
    lst.close()


def test_udp_target():
    dev = P.DeviceModel(bytearray(1 << 16))
    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind(("127.0.0.1", 0))
    stop = threading.Event()

    def serve():
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                data, peer = srv.recvfrom(1 << 16)
            except socket.timeout:
                continue
            out = dev.receive(data)
            if out:
                srv.sendto(out, peer)
    th = threading.Thread(target=serve, daemon=True)
    th.start()
    link = P.Link(open_target(f"udp://127.0.0.1:{srv.getsockname()[1]}"), timeout=2.0)
    link.write_mem(0, b"hello board, hi!")
    assert link.read_mem(0, 16) == b"hello board, hi!"
    stop.set()
    th.join(timeout=2)


@pytest.mark.parametrize("target,msg", [
    ("ftp://x", "unknown scheme 'ftp'; allowed: sim://, tcp://, serial://, udp://"),
    ("tcp://127.0.0.1", "expected tcp://HOST:PORT"),
    ("sim:///nonexistent/board.sock", "cannot connect to the socket /nonexistent/board.sock"),
    ("serial://", "no device path"),
    ("serial:///dev/nonexistent-tty?baud=115200", "serial:///dev/nonexistent-tty: cannot open the port"),
])
def test_bad_targets_are_clear(target, msg):
    with pytest.raises(TargetError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        open_target(target)


def test_unreachable_tcp_target():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(TargetError, match=f"cannot connect to 127.0.0.1:{port}"):
        open_target(f"tcp://127.0.0.1:{port}", connect_timeout=1)
