"""A device served over UDP on a host: what a board's Ethernet link looks like to the host
runtime, for tests and for ``lutforge sim-board CONFIG --udp``.

:class:`UdpDeviceServer` relays between a UDP socket and a byte-stream device ``backend``
(any :class:`host_runtime.protocol.Transport`: a ``LoopbackTransport`` around the
protocol's ``DeviceModel``, or the socket of a running simulated board), doing what the
gateware bridge (``hw.host.udp.UdpLinkBridge``) does: every received datagram's payload is
appended to the device's input; every response frame (cut by its header's length) goes
back in its own datagram, split at 1472 bytes, to the sender of the last datagram. It can
lose (``loss``) and duplicate (``dup``) datagrams in both directions, seeded, to exercise
the protocol's retransmission and ``seq`` replay; ``stats`` counts what happened.
"""

from __future__ import annotations

import random
import select
import socket
import struct
import threading

from host_runtime.protocol import HEADER_BYTES, MAGIC
from hw.host.udp import MAX_DATAGRAM

READY_PREFIX = "lutforge sim-board listening on udp://"


class UdpDeviceServer:
    """Serve ``backend`` on ``udp://host:port`` (port 0: a free one; ``self.port`` says
    which) in a thread, until :meth:`close`. A context manager."""

    def __init__(self, backend, *, host: str = "127.0.0.1", port: int = 0, loss: float = 0.0, dup: float = 0.0,
                 seed: int = 0, poll: float = 0.002):
        self.backend, self.loss, self.dup, self.poll = backend, loss, dup, poll
        self.rnd = random.Random(seed)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.host, self.port = self.sock.getsockname()
        self.peer = None
        self.stats = {"datagrams_in": 0, "datagrams_out": 0, "lost_in": 0, "lost_out": 0, "duplicated": 0,
                      "largest_in": 0, "largest_out": 0}
        self._buf = bytearray()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="udp-device", daemon=True)
        self._thread.start()

    @property
    def target(self) -> str:
        return f"udp://{self.host}:{self.port}"

    def _copies(self, direction: str) -> int:
        if self.rnd.random() < self.loss:
            self.stats[f"lost_{direction}"] += 1
            return 0
        if self.rnd.random() < self.dup:
            self.stats["duplicated"] += 1
            return 2
        return 1

    def _frames(self) -> list[bytes]:
        """Cut whole frames off the device's output (a device sends only whole frames; any
        byte before a magic is passed on as it is, in its own datagram)."""
        out = []
        while len(self._buf) >= HEADER_BYTES:
            at = self._buf.find(MAGIC)
            if at != 0:
                cut = len(self._buf) if at < 0 else at
                out.append(bytes(self._buf[:cut]))
                del self._buf[:cut]
                continue
            n = HEADER_BYTES + 4 + struct.unpack_from("<I", self._buf, 6)[0]
            if len(self._buf) < n:
                break
            out.append(bytes(self._buf[:n]))
            del self._buf[:n]
        return out

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select([self.sock], [], [], self.poll)
                if ready:
                    data, peer = self.sock.recvfrom(1 << 16)
                    self.stats["datagrams_in"] += 1
                    self.stats["largest_in"] = max(self.stats["largest_in"], len(data))
                    for _ in range(self._copies("in")):
                        self.peer = peer
                        self.backend.send(data)
                self._buf += self.backend.recv(0)
                for frame in self._frames():
                    for off in range(0, len(frame), MAX_DATAGRAM):
                        dg = frame[off:off + MAX_DATAGRAM]
                        for _ in range(self._copies("out")):
                            if self.peer is not None:
                                self.sock.sendto(dg, self.peer)
                                self.stats["datagrams_out"] += 1
                                self.stats["largest_out"] = max(self.stats["largest_out"], len(dg))
        except BaseException as e:     # reported by close()
            self._error = e

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()
        if self._error is not None:
            raise self._error

    def __enter__(self) -> "UdpDeviceServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def serve_udp(cfg, listen: str | None = None, *, loss: float = 0.0, seed: int = 1) -> int:
    """``lutforge sim-board CONFIG --udp``: start the simulated board (its socket on a free
    loopback port) and serve it on ``udp://HOST:PORT`` (``listen``, default
    ``udp://127.0.0.1:0``, a free port) until SIGINT / SIGTERM. Prints
    ``lutforge sim-board listening on udp://HOST:PORT`` when ready."""
    import signal
    from urllib.parse import urlparse

    from host_runtime.transports import open_target
    from ref_model.errors import LutforgeError

    from .board import start_sim_board
    u = urlparse(listen or "udp://127.0.0.1:0")
    if u.scheme != "udp" or not u.hostname:
        raise LutforgeError(f"--listen {listen!r}: with --udp the address is udp://HOST:PORT")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with start_sim_board(cfg) as board:
        backend = open_target(board.target)
        try:
            with UdpDeviceServer(backend, host=u.hostname, port=u.port or 0, loss=loss, seed=seed) as srv:
                print(f"{READY_PREFIX}{srv.host}:{srv.port}", flush=True)
                while not stop.wait(0.2):
                    if board.process.poll() is not None:
                        raise LutforgeError("the simulated board stopped")
        finally:
            backend.close()
    return 0
