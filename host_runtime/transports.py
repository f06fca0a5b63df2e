"""Byte transports for the host protocol, chosen by URL-like target strings.

* ``sim://HOST:PORT`` or ``sim:///path/to/socket`` -- the simulated board's socket (TCP on
  loopback, or a Unix socket);
* ``tcp://HOST:PORT`` -- the same over any TCP connection;
* ``serial:///dev/ttyUSB1?baud=3000000`` -- a board's UART (pyserial);
* ``udp://HOST:PORT`` -- a board with Ethernet (:class:`UdpTransport`: one frame per
  datagram; the board's address and port are in docs/host_link.md "The UDP link").

Every transport has the :class:`host_runtime.protocol.Transport` interface; opening a
target that is not there is a :class:`TargetError` that names it and says what was tried.
"""

from __future__ import annotations

import select
import socket
from urllib.parse import parse_qs, urlparse

from ref_model.errors import LutforgeError

from .protocol import Transport

SCHEMES = ("sim", "tcp", "serial", "udp")
#: Targets that :func:`host_runtime.runner.connect` starts in-process or as a child process.
LOCAL_TARGETS = ("sim://", "isa://")


class TargetError(LutforgeError):
    """A target string that is malformed or names a device that cannot be reached."""


class SocketTransport(Transport):
    """A stream socket (TCP or Unix)."""

    def __init__(self, sock: socket.socket):
        self.sock = sock

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self, timeout: float) -> bytes:
        ready, _, _ = select.select([self.sock], [], [], max(timeout, 0))
        if not ready:
            return b""
        data = self.sock.recv(1 << 16)
        if not data:
            raise ConnectionResetError(104, "the device closed the connection")
        return data

    def close(self) -> None:
        self.sock.close()


class UdpTransport(Transport):
    """UDP to a board's host link (``hw.host.udp``, or ``sim.udp_device`` on a host).

    ``send`` sends what it is given (one frame: :class:`~host_runtime.protocol.Link` sends
    frames one call each) in one datagram, split into datagrams of :attr:`max_frame` bytes
    only if it is longer (the device joins them; the board's Ethernet core does not
    reassemble IP fragments, so nothing larger may go out). :attr:`max_frame` = 1472, the
    UDP payload of a 1500-byte Ethernet MTU, makes ``Link`` move 1440 bytes of memory per
    frame, so every request and response is one datagram. ``recv`` returns the payloads of
    the datagrams that came from the target within ``timeout`` (others are ignored). Loss
    and reordering are the protocol's business: a frame without a response is retried with
    the same ``seq`` after ``Link.timeout``, and the device answers a retransmission from
    its stored response without executing it again; a stale or duplicated response is
    dropped by ``seq``."""

    max_frame = 1472

    def __init__(self, host: str, port: int):
        try:
            infos = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_DGRAM)
        except socket.gaierror as e:
            raise TargetError(f"udp://{host}:{port}: cannot resolve {host!r} ({e.strerror or e})") from None
        self.addr = infos[0][4]
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("0.0.0.0", 0))
        self.ignored = 0            # datagrams from anyone but the target

    def send(self, data: bytes) -> None:
        for off in range(0, max(len(data), 1), self.max_frame):
            self.sock.sendto(data[off:off + self.max_frame], self.addr)

    def recv(self, timeout: float) -> bytes:
        ready, _, _ = select.select([self.sock], [], [], max(timeout, 0))
        out = bytearray()
        while ready:
            try:
                data, peer = self.sock.recvfrom(1 << 16)
            except (ConnectionRefusedError, BlockingIOError):
                break               # an ICMP "port unreachable" for an earlier datagram: keep waiting
            if peer == self.addr:
                out += data
            else:
                self.ignored += 1
            ready, _, _ = select.select([self.sock], [], [], 0)
        return bytes(out)

    def close(self) -> None:
        self.sock.close()


class SerialTransport(Transport):
    def __init__(self, port: str, baud: int):
        try:
            import serial
        except ImportError:
            raise TargetError("serial targets need pyserial (installed by setup.sh; `pip install pyserial`)") from None
        try:
            self.port = serial.Serial(port, baudrate=baud, timeout=0)
        except (serial.SerialException, OSError) as e:
            raise TargetError(f"serial://{port}: cannot open the port ({e}); is the board connected and is "
                              f"the port right?") from None

    def send(self, data: bytes) -> None:
        self.port.write(data)

    def recv(self, timeout: float) -> bytes:
        import time
        end = time.monotonic() + timeout
        while True:
            data = self.port.read(self.port.in_waiting or 1)
            if data or time.monotonic() >= end:
                return data
            time.sleep(0.0005)

    def close(self) -> None:
        self.port.close()


def open_target(target: str, *, connect_timeout: float = 5.0) -> Transport:
    """Open the transport a target string names (see the module docstring)."""
    u = urlparse(target)
    if u.scheme not in SCHEMES:
        raise TargetError(f"target {target!r}: unknown scheme {u.scheme!r}; allowed: "
                          f"{', '.join(s + '://' for s in SCHEMES)} (and {' '.join(LOCAL_TARGETS)} for `lutforge run`)")
    if u.scheme == "serial":
        if not u.path:
            raise TargetError(f"target {target!r}: no device path (e.g. serial:///dev/ttyUSB1?baud=3000000)")
        q = parse_qs(u.query)
        try:
            baud = int(q.get("baud", ["3000000"])[0])
        except ValueError:
            raise TargetError(f"target {target!r}: baud must be an integer") from None
        return SerialTransport(u.path, baud)
    if u.scheme in ("sim", "tcp") and u.path and not u.netloc:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(connect_timeout)
        try:
            s.connect(u.path)
        except OSError as e:
            s.close()
            raise TargetError(f"target {target!r}: cannot connect to the socket {u.path} ({e.strerror or e}); "
                              f"is the simulated board running (`lutforge sim-board CONFIG`)?") from None
        s.settimeout(None)
        return SocketTransport(s)
    if not u.hostname or not u.port:
        raise TargetError(f"target {target!r}: expected {u.scheme}://HOST:PORT")
    if u.scheme == "udp":
        return UdpTransport(u.hostname, u.port)
    try:
        s = socket.create_connection((u.hostname, u.port), timeout=connect_timeout)
    except OSError as e:
        raise TargetError(f"target {target!r}: cannot connect to {u.hostname}:{u.port} ({e.strerror or e}); "
                          f"is the device (or `lutforge sim-board`) running?") from None
    s.settimeout(None)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return SocketTransport(s)


class LoopbackTransport(Transport):
    """An in-process device: ``device.receive(bytes) -> bytes`` (e.g. the protocol's
    :class:`~host_runtime.protocol.DeviceModel`); what it answers is read back by ``recv``."""

    def __init__(self, device):
        self.device = device
        self.pending = bytearray()

    def send(self, data: bytes) -> None:
        self.pending += self.device.receive(data)

    def recv(self, timeout: float) -> bytes:
        out, self.pending = bytes(self.pending), bytearray()
        return out
