"""The host protocol: framed commands over any byte stream, every frame acknowledged.

Frame (little-endian)::

    magic "LF" (2) | version (1) | opcode (1) | seq (2) | length (4) | hcheck (2) | payload | CRC32 (4)

``length`` counts payload bytes (at most :data:`MAX_PAYLOAD`); ``hcheck`` is the low 16
bits of the CRC32 of the ten header bytes before it, so a corrupted length is caught at
once instead of making the receiver wait for bytes that are not coming; the CRC32 (zlib /
IEEE 802.3) at the end covers the header and the payload. A response carries the request's opcode with
bit 7 set, the same ``seq``, and a payload starting with a status byte (:class:`Status`).

Reliability (the contract in shared/DESIGN.md): the receiver scans for the magic, so a
corrupt, truncated or lost frame costs at most that frame; a frame whose CRC fails is
dropped (a NACK is sent when its header was readable). The host retries a command whose
response does not arrive in time or arrives with a CRC or sequence error, a bounded number
of times, then raises :class:`ProtocolError` naming the command and what went wrong. The
device remembers the last ``seq`` it executed and answers a repeated frame with the stored
response instead of executing it twice (a duplicated RUN does not run twice). The version
byte is checked in both directions: a host and a bitstream that disagree say so.

:class:`Link` is the host side over a :class:`Transport`; :class:`DeviceModel` is the
reference of the device side (the gateware in ``hw/host`` must answer the same bytes).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from enum import IntEnum

from ref_model.errors import LutforgeError

MAGIC = b"LF"
VERSION = 1
HEADER = struct.Struct("<2sBBHIH")
HEADER_BYTES = HEADER.size
CRC_BYTES = 4
#: Largest payload of one frame (bounded so the gateware's frame buffer is a block RAM).
MAX_PAYLOAD = 4096
RESPONSE = 0x80
#: Memory commands move whole 16-byte units (addresses and lengths are multiples).
MEM_ALIGN = 16


class ProtocolError(LutforgeError):
    """The link failed: retries exhausted, version mismatch, device error, bad reply."""


class Op(IntEnum):
    HELLO = 0x01        # -> status, version, config hash (8 bytes)
    WRITE_MEM = 0x02    # addr u64 | data
    READ_MEM = 0x03     # addr u64 | length u32 -> status | data
    WRITE_CSR = 0x04    # index u16 | value u64
    READ_CSR = 0x05     # index u16 -> status | value u64
    RUN = 0x06          # token u32 | pos u32 -> status | next token u32 | cycles u64
    STATUS = 0x07       # -> status | busy u8 | error u8
    RESET = 0x08        # -> status


class Csr(IntEnum):
    PROGRAM_ADDR = 0
    N_INSTR = 1


class Status(IntEnum):
    OK = 0
    CRC_ERROR = 1
    BAD_OPCODE = 2
    BAD_LENGTH = 3
    BAD_ADDRESS = 4
    VERSION_MISMATCH = 5
    BUSY = 6
    DEVICE_ERROR = 7


def encode_frame(op: int, seq: int, payload: bytes = b"", version: int = VERSION) -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds the {MAX_PAYLOAD}-byte frame limit")
    head = HEADER.pack(MAGIC, version, op, seq & 0xFFFF, len(payload), 0)[:-2]
    head += struct.pack("<H", zlib.crc32(head) & 0xFFFF)
    return head + payload + struct.pack("<I", zlib.crc32(head + payload))


@dataclass
class Frame:
    version: int
    op: int
    seq: int
    payload: bytes


class FrameDecoder:
    """Incremental frame parser: ``feed`` bytes, get complete frames; garbage, corrupt and
    truncated frames are skipped (counted in ``crc_errors`` / ``resyncs``). A frame whose
    header is sane but CRC fails is reported through ``bad_headers`` (so a NACK can name
    its ``seq``)."""

    def __init__(self):
        self.buf = bytearray()
        self.crc_errors = 0
        self.resyncs = 0
        self.bad_headers: list[Frame] = []

    def feed(self, data: bytes) -> list[Frame]:
        self.buf += data
        out = []
        while True:
            i = self.buf.find(MAGIC)
            if i < 0:
                keep = 1 if self.buf.endswith(MAGIC[:1]) else 0
                if len(self.buf) > keep:
                    self.resyncs += 1
                del self.buf[:len(self.buf) - keep]
                return out
            if i:
                self.resyncs += 1
                del self.buf[:i]
            if len(self.buf) < HEADER_BYTES:
                return out
            _, version, op, seq, length, hcheck = HEADER.unpack_from(self.buf)
            if length > MAX_PAYLOAD or zlib.crc32(bytes(self.buf[:HEADER_BYTES - 2])) & 0xFFFF != hcheck:
                # not a real header (or a corrupted one): skip this magic
                self.resyncs += 1
                del self.buf[:1]
                continue
            total = HEADER_BYTES + length + CRC_BYTES
            if len(self.buf) < total:
                return out
            body = bytes(self.buf[:HEADER_BYTES + length])
            (crc,) = struct.unpack_from("<I", self.buf, HEADER_BYTES + length)
            if zlib.crc32(body) != crc:
                self.crc_errors += 1
                self.bad_headers.append(Frame(version, op, seq, b""))
                del self.buf[:1]               # resync after this magic
                continue
            del self.buf[:total]
            out.append(Frame(version, op, seq, body[HEADER_BYTES:]))


class Transport:
    """A byte stream to a device. ``send`` writes bytes; ``recv(timeout)`` returns the
    bytes available within ``timeout`` seconds (possibly none); ``close`` ends it."""

    def send(self, data: bytes) -> None:  # pragma: no cover (interface)
        raise NotImplementedError

    def recv(self, timeout: float) -> bytes:  # pragma: no cover (interface)
        raise NotImplementedError

    def close(self) -> None:
        pass


@dataclass
class LinkStats:
    frames_sent: int = 0
    retries: int = 0
    payload_bytes: int = 0
    wire_bytes: int = 0

    @property
    def efficiency(self) -> float:
        """Payload bytes / wire bytes over every frame sent (retries included)."""
        return self.payload_bytes / self.wire_bytes if self.wire_bytes else 0.0


@dataclass
class Link:
    """Host side: one command at a time, each acknowledged, with bounded retries."""

    transport: Transport
    timeout: float = 1.0
    retries: int = 5
    seq: int = 0
    stats: LinkStats = field(default_factory=LinkStats)

    def __post_init__(self):
        self._rx = FrameDecoder()

    def transact(self, op: Op, payload: bytes = b"") -> bytes:
        """Send one command and return its response payload after the status byte."""
        self.seq = (self.seq + 1) & 0xFFFF
        frame = encode_frame(op, self.seq, payload)
        problems = []
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats.retries += 1
            try:
                self.transport.send(frame)
            except OSError as e:
                raise ProtocolError(f"{op.name}: the link is down ({e.strerror or e})") from None
            self.stats.frames_sent += 1
            self.stats.payload_bytes += len(payload)
            self.stats.wire_bytes += len(frame)
            resp, why = self._await(op)
            if resp is not None:
                status = resp.payload[0] if resp.payload else Status.DEVICE_ERROR
                if status == Status.CRC_ERROR:
                    problems.append("the device saw a CRC error")
                    continue
                if resp.version != VERSION or status == Status.VERSION_MISMATCH:
                    raise ProtocolError(f"{op.name}: protocol version mismatch: host speaks {VERSION}, "
                                        f"device {resp.version}; rebuild the bitstream or update the host")
                if status != Status.OK:
                    name = Status(status).name if status in Status._value2member_map_ else str(status)
                    raise ProtocolError(f"{op.name}: device answered {name}")
                return resp.payload[1:]
            problems.append(why)
        raise ProtocolError(f"{op.name} (seq {self.seq}): no valid response after {self.retries + 1} attempts "
                            f"({'; '.join(dict.fromkeys(problems))})")

    def _await(self, op: Op) -> tuple[Frame | None, str]:
        import time
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None, f"timed out after {self.timeout:g} s"
            try:
                data = self.transport.recv(left)
            except OSError as e:
                raise ProtocolError(f"{op.name}: the link is down ({e.strerror or e})") from None
            for f in self._rx.feed(data):
                if f.seq == self.seq and f.op == (op | RESPONSE):
                    return f, ""
                # a stale or duplicated response to an earlier attempt: ignore it
            self._rx.bad_headers.clear()

    # ---- commands ------------------------------------------------------------------
    def hello(self) -> tuple[int, bytes]:
        r = self.transact(Op.HELLO)
        return r[0], r[1:9]

    def write_mem(self, addr: int, data: bytes) -> None:
        step = MAX_PAYLOAD - 8
        for off in range(0, len(data), step):
            self.transact(Op.WRITE_MEM, struct.pack("<Q", addr + off) + data[off:off + step])

    def read_mem(self, addr: int, length: int) -> bytes:
        out = bytearray()
        step = MAX_PAYLOAD - 1
        for off in range(0, length, step):
            n = min(step, length - off)
            r = self.transact(Op.READ_MEM, struct.pack("<QI", addr + off, n))
            if len(r) != n:
                raise ProtocolError(f"READ_MEM: asked for {n} bytes at {addr + off:#x}, got {len(r)}")
            out += r
        return bytes(out)

    def write_csr(self, index: int, value: int) -> None:
        self.transact(Op.WRITE_CSR, struct.pack("<HQ", index, value))

    def read_csr(self, index: int) -> int:
        return struct.unpack("<Q", self.transact(Op.READ_CSR, struct.pack("<H", index)))[0]

    def run(self, token: int, pos: int, timeout: float | None = None) -> tuple[int, int]:
        r = self.transact(Op.RUN, struct.pack("<II", token, pos))
        nxt, cycles = struct.unpack("<IQ", r)
        return nxt, cycles


class DeviceModel:
    """Reference of the device side of the protocol over a memory and CSRs. ``run`` is a
    callback ``(token, pos) -> (next_token, cycles)`` (the engine, or a model of it)."""

    def __init__(self, memory: bytearray, *, config_hash: bytes = bytes(8), run=None, n_csr: int = 64):
        self.mem, self.config_hash, self._run = memory, config_hash, run
        self.csr = [0] * n_csr
        self.rx = FrameDecoder()
        self.last_seq: int | None = None
        self.last_response = b""
        self.executed = 0

    def receive(self, data: bytes) -> bytes:
        """Bytes in from the host; bytes out (responses)."""
        out = bytearray()
        frames = self.rx.feed(data)
        for bad in self.rx.bad_headers:
            out += encode_frame(bad.op | RESPONSE, bad.seq, bytes([Status.CRC_ERROR]))
        self.rx.bad_headers.clear()
        for f in frames:
            if f.seq == self.last_seq:
                out += self.last_response        # a retry of what was executed: answer again
                continue
            resp = self._execute(f)
            self.last_seq, self.last_response = f.seq, resp
            out += resp
        return bytes(out)

    def _execute(self, f: Frame) -> bytes:
        def reply(status, payload=b""):
            return encode_frame(f.op | RESPONSE, f.seq, bytes([status]) + payload)
        if f.version != VERSION:
            return reply(Status.VERSION_MISMATCH)
        p = f.payload
        try:
            op = Op(f.op)
        except ValueError:
            return reply(Status.BAD_OPCODE)
        self.executed += 1
        if op == Op.HELLO:
            return reply(Status.OK, bytes([VERSION]) + self.config_hash)
        if op == Op.WRITE_MEM:
            if len(p) < 8:
                return reply(Status.BAD_LENGTH)
            (addr,) = struct.unpack_from("<Q", p)
            if addr + len(p) - 8 > len(self.mem):
                return reply(Status.BAD_ADDRESS)
            self.mem[addr:addr + len(p) - 8] = p[8:]
            return reply(Status.OK)
        if op == Op.READ_MEM:
            if len(p) != 12:
                return reply(Status.BAD_LENGTH)
            addr, n = struct.unpack("<QI", p)
            if n > MAX_PAYLOAD - 1:
                return reply(Status.BAD_LENGTH)
            if addr + n > len(self.mem):
                return reply(Status.BAD_ADDRESS)
            return reply(Status.OK, bytes(self.mem[addr:addr + n]))
        if op in (Op.WRITE_CSR, Op.READ_CSR):
            need = 10 if op == Op.WRITE_CSR else 2
            if len(p) != need:
                return reply(Status.BAD_LENGTH)
            (idx,) = struct.unpack_from("<H", p)
            if idx >= len(self.csr):
                return reply(Status.BAD_ADDRESS)
            if op == Op.WRITE_CSR:
                self.csr[idx] = struct.unpack_from("<Q", p, 2)[0]
                return reply(Status.OK)
            return reply(Status.OK, struct.pack("<Q", self.csr[idx]))
        if op == Op.RUN:
            if len(p) != 8:
                return reply(Status.BAD_LENGTH)
            if self._run is None:
                return reply(Status.DEVICE_ERROR)
            nxt, cycles = self._run(*struct.unpack("<II", p))
            return reply(Status.OK, struct.pack("<IQ", nxt, cycles))
        if op == Op.STATUS:
            return reply(Status.OK, bytes([0, 0]))
        if op == Op.RESET:
            self.last_seq = None
            return reply(Status.OK)
        return reply(Status.BAD_OPCODE)  # pragma: no cover (every Op handled above)
