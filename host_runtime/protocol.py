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
device remembers the ``seq`` and CRC32 of the last frame it executed and answers a repeated
frame (same ``seq``, same CRC: a retry is byte-identical) with the stored response instead
of executing it twice (a duplicated RUN does not run twice); RESET forgets it. The version
byte is checked in both directions: a host and a bitstream that disagree say so.

Memory commands move whole 16-byte units (:data:`MEM_ALIGN`: the gateware's AXI port
writes full beats): a WRITE_MEM / READ_MEM address or length that is not a multiple is
answered BAD_ADDRESS. RUN starts the engine and is answered at once (BUSY if it is
already running; memory commands are answered BUSY too while it runs); the host polls
STATUS until the engine is idle, so a run of any length survives a per-frame timeout.
CSRs are numbered by :class:`Csr`: the engine's program address and instruction count
(read/write) and its status and counters (read-only). Indices from :data:`CSR_EXT_BASE`
up are the *external CSR window*: on a device that has one (a board's control bus, e.g.
LiteDRAM's registers for DRAM initialisation) READ_CSR / WRITE_CSR of index ``i`` are a
Wishbone read / write of the :data:`CSR_EXT_BITS`-bit word at word address
``i - CSR_EXT_BASE``; a bus that does not acknowledge within :data:`CSR_EXT_TIMEOUT`
cycles (or signals an error) makes the command answer DEVICE_ERROR; a device without a
window answers BAD_ADDRESS.

:class:`Link` is the host side over a :class:`Transport`; :class:`DeviceModel` is the
reference of the device side (the gateware in ``hw/host`` must answer the same bytes).
"""

from __future__ import annotations

import struct
import time
import zlib
from dataclasses import dataclass, field
from enum import IntEnum
from typing import NamedTuple

from ref_model.errors import LutforgeError

MAGIC = b"LF"
VERSION = 1
HEADER = struct.Struct("<2sBBHIH")
HEADER_BYTES = HEADER.size
#: Header bytes covered by ``hcheck`` (all but ``hcheck`` itself).
HCHECK_COVERS = HEADER_BYTES - 2
CRC_BYTES = 4
#: Largest payload of one frame (bounded so the gateware's frame buffer is a block RAM).
MAX_PAYLOAD = 4096
RESPONSE = 0x80
#: WRITE_MEM / READ_MEM addresses and lengths are multiples of this many bytes.
MEM_ALIGN = 16
#: Data bytes of one WRITE_MEM frame (after its 8-byte address) and of one READ_MEM
#: response (after its status byte): the largest multiple of MEM_ALIGN that fits.
MEM_CHUNK = (MAX_PAYLOAD - 8) // MEM_ALIGN * MEM_ALIGN


def mem_chunk(max_frame: int | None = None) -> int:
    """Data bytes per WRITE_MEM / READ_MEM frame for a transport whose frames are at most
    ``max_frame`` bytes (:data:`MEM_CHUNK` = 4080 for a stream; 1440 for a 1472-byte UDP
    datagram: a write's address and a read response's status byte fit beside it)."""
    if max_frame is None:
        return MEM_CHUNK
    n = min(MEM_CHUNK, (max_frame - HEADER_BYTES - 4 - 8) // MEM_ALIGN * MEM_ALIGN)
    if n < MEM_ALIGN:
        raise ValueError(f"a transport whose frames are at most {max_frame} bytes cannot carry memory commands")
    return n


class ProtocolError(LutforgeError):
    """The link failed: retries exhausted, version mismatch, device error, bad reply."""


class Op(IntEnum):
    HELLO = 0x01        # -> status, version, config hash (8 bytes)
    WRITE_MEM = 0x02    # addr u64 | data
    READ_MEM = 0x03     # addr u64 | length u32 -> status | data
    WRITE_CSR = 0x04    # index u16 | value u64
    READ_CSR = 0x05     # index u16 -> status | value u64
    RUN = 0x06          # token u32 | pos u32 -> status (OK: started; BUSY: already running)
    STATUS = 0x07       # -> status | busy u8 | error u8 | next_token u32 | cycles u64
    RESET = 0x08        # -> status (forgets the stored response: the next frame executes)


class Status(IntEnum):
    OK = 0
    CRC_ERROR = 1
    BAD_OPCODE = 2
    BAD_LENGTH = 3
    BAD_ADDRESS = 4
    VERSION_MISMATCH = 5
    BUSY = 6
    DEVICE_ERROR = 7


class Csr(IntEnum):
    """CSR indices (READ_CSR / WRITE_CSR). Values are u64 on the wire.

    PROGRAM_ADDR and N_INSTR are read/write (what RUN starts); the rest are read-only
    (a write is answered BAD_ADDRESS). ENGINE_STATUS is busy (bit 0) | error (bit 1).
    The counters are the engine's (``hw.decode.engine.EngineCounters``, a field per
    lower-cased name), counted since the last RUN."""

    PROGRAM_ADDR = 0
    N_INSTR = 1
    ENGINE_STATUS = 2
    NEXT_TOKEN = 3
    CYCLES = 4
    MATVEC_CYCLES = 5
    ATTEND_CYCLES = 6
    KV_CYCLES = 7
    OTHER_CYCLES = 8
    READ_BYTES = 9
    WRITE_BYTES = 10
    READ_IDLE = 11
    WEIGHT_STALL = 12


#: The CSRs a host may write.
CSR_WRITABLE = (Csr.PROGRAM_ADDR, Csr.N_INSTR)
#: The read-only CSRs that are engine counters (name = lower-cased counter field).
CSR_COUNTERS = tuple(c for c in Csr if c >= Csr.CYCLES)

#: First CSR index of the external CSR window (index - CSR_EXT_BASE = Wishbone word address).
CSR_EXT_BASE = 0x8000
#: Bits of an external CSR (the Wishbone data width): a write sends the value's low bits,
#: a read answers the word zero-extended to u64.
CSR_EXT_BITS = 32
#: Cycles the device waits for the external bus to acknowledge before answering DEVICE_ERROR.
CSR_EXT_TIMEOUT = 1024

#: STATUS response payload after the status byte: busy, error, next_token, cycles.
STATUS_REPLY = struct.Struct("<BBIQ")


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
    crc: int = 0            # the frame's CRC32 as received
    crc_ok: bool = True     # False: a readable header whose CRC failed (payload empty)


class FrameDecoder:
    """Incremental frame parser: ``feed`` bytes, get complete frames; garbage, corrupt and
    truncated frames are skipped (counted in ``crc_errors`` / ``resyncs``). A frame whose
    header is sane but CRC fails is reported through ``bad_headers`` (so a NACK can name
    its ``seq``), and, with ``feed(..., include_bad=True)``, in stream order among the good
    frames (``crc_ok=False``).

    Resynchronisation: after a bad header or a CRC failure, scanning resumes one byte
    after that frame's magic, so a good frame inside the bytes a truncated frame swallowed
    is still found."""

    def __init__(self):
        self.buf = bytearray()
        self.crc_errors = 0
        self.resyncs = 0
        self.bad_headers: list[Frame] = []

    def feed(self, data: bytes, *, include_bad: bool = False) -> list[Frame]:
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
            if length > MAX_PAYLOAD or zlib.crc32(bytes(self.buf[:HCHECK_COVERS])) & 0xFFFF != hcheck:
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
                bad = Frame(version, op, seq, b"", crc, crc_ok=False)
                self.bad_headers.append(bad)
                if include_bad:
                    out.append(bad)
                del self.buf[:1]               # resync after this magic
                continue
            del self.buf[:total]
            out.append(Frame(version, op, seq, body[HEADER_BYTES:], crc))


class Transport:
    """A byte stream to a device. ``send`` writes bytes; ``recv(timeout)`` returns the
    bytes available within ``timeout`` seconds (possibly none); ``close`` ends it.
    ``max_frame``: the largest frame (header, payload and CRC) the transport carries in
    one piece (a UDP datagram), or None (a stream: any frame); :class:`Link` sizes its
    memory frames to it (:func:`mem_chunk`)."""

    max_frame: int | None = None

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


class EngineStatus(NamedTuple):
    """What STATUS answers: the engine is running, it flagged an error (memory response
    or bad opcode, sticky until the next RUN), and the last run's result."""

    busy: bool
    error: bool
    next_token: int
    cycles: int


@dataclass
class Link:
    """Host side: one command at a time, each acknowledged, with bounded retries.

    Every method sends its command (retrying up to ``retries`` times when no valid
    response arrives within ``timeout`` seconds or the device saw a CRC error) and raises
    :class:`ProtocolError` naming the command and the problem otherwise. ``stats`` counts
    frames, retries, payload and wire bytes (``stats.efficiency``).

    Public commands: :meth:`hello`, :meth:`write_mem`, :meth:`read_mem`,
    :meth:`write_csr`, :meth:`read_csr`, :meth:`write_ext`, :meth:`read_ext` (the external CSR window),
    :meth:`run`, :meth:`status`, :meth:`reset`.
    """

    transport: Transport
    timeout: float = 1.0
    retries: int = 5
    #: Memory-command frames in flight (the device's receive ring holds two frames).
    window: int = 2
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
                self._check_status(op, resp, status)
                return resp.payload[1:]
            problems.append(why)
        raise ProtocolError(f"{op.name} (seq {self.seq}): no valid response after {self.retries + 1} attempts "
                            f"({'; '.join(dict.fromkeys(problems))})")

    @staticmethod
    def _check_status(op: Op, resp: Frame, status: int) -> None:
        if resp.version != VERSION or status == Status.VERSION_MISMATCH:
            raise ProtocolError(f"{op.name}: protocol version mismatch: host speaks {VERSION}, "
                                f"device {resp.version}; rebuild the bitstream or update the host")
        if status != Status.OK:
            name = Status(status).name if status in Status._value2member_map_ else str(status)
            raise ProtocolError(f"{op.name}: device answered {name}")

    def _await(self, op: Op) -> tuple[Frame | None, str]:
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
        """(protocol version, 8-byte config hash) of the device."""
        r = self.transact(Op.HELLO)
        return r[0], r[1:9]

    @staticmethod
    def _check_aligned(what: str, addr: int, length: int) -> None:
        if addr < 0 or addr % MEM_ALIGN or length % MEM_ALIGN:
            raise ProtocolError(f"{what}: address {addr:#x} and length {length} must be multiples of "
                                f"{MEM_ALIGN} bytes (MEM_ALIGN); pad the data or align the region")

    @property
    def chunk(self) -> int:
        """Memory bytes per frame: :data:`MEM_CHUNK`, less on a transport with a
        ``max_frame`` (UDP: 1440, so a frame and its response each fit one datagram)."""
        return mem_chunk(getattr(self.transport, "max_frame", None))

    def write_mem(self, addr: int, data: bytes) -> None:
        """Write ``data`` at byte address ``addr`` (both multiples of :data:`MEM_ALIGN`),
        in frames of :attr:`chunk` bytes, ``window`` frames in flight."""
        self._check_aligned("WRITE_MEM", addr, len(data))
        c = self.chunk
        self._pipelined(Op.WRITE_MEM, [struct.pack("<Q", addr + off) + data[off:off + c]
                                       for off in range(0, len(data), c)])

    def read_mem(self, addr: int, length: int) -> bytes:
        """Read ``length`` bytes at ``addr`` (both multiples of :data:`MEM_ALIGN`)."""
        self._check_aligned("READ_MEM", addr, length)
        c = self.chunk
        reqs = [(addr + off, min(c, length - off)) for off in range(0, length, c)]
        out = self._pipelined(Op.READ_MEM, [struct.pack("<QI", a, n) for a, n in reqs])
        for (a, n), r in zip(reqs, out):
            if len(r) != n:
                raise ProtocolError(f"READ_MEM: asked for {n} bytes at {a:#x}, got {len(r)}")
        return b"".join(out)

    def _pipelined(self, op: Op, payloads: list[bytes]) -> list[bytes]:
        """Run idempotent commands (WRITE_MEM to distinct addresses, READ_MEM) with up to
        ``window`` frames in flight, so the device receives the next frame while it
        executes one (its receive ring holds two). A frame whose response is missing
        after ``timeout`` or comes back CRC_ERROR is sent again, at most ``retries``
        times; re-execution is harmless because these commands are idempotent and the
        frames of one call touch disjoint memory."""
        if self.window <= 1 or len(payloads) <= 1:
            return [self.transact(op, p) for p in payloads]
        results: list[bytes | None] = [None] * len(payloads)
        pending: dict[int, list] = {}       # seq -> [index, frame, attempts, deadline, problems]
        nxt = 0

        def send(entry) -> None:
            try:
                self.transport.send(entry[1])
            except OSError as e:
                raise ProtocolError(f"{op.name}: the link is down ({e.strerror or e})") from None
            self.stats.frames_sent += 1
            self.stats.payload_bytes += len(payloads[entry[0]])
            self.stats.wire_bytes += len(entry[1])
            entry[3] = time.monotonic() + self.timeout

        def retry(seq: int, why: str) -> None:
            entry = pending[seq]
            entry[4].append(why)
            entry[2] += 1
            if entry[2] > self.retries:
                raise ProtocolError(f"{op.name} (seq {seq}): no valid response after {self.retries + 1} attempts "
                                    f"({'; '.join(dict.fromkeys(entry[4]))})")
            self.stats.retries += 1
            send(entry)

        while nxt < len(payloads) or pending:
            while nxt < len(payloads) and len(pending) < self.window:
                self.seq = (self.seq + 1) & 0xFFFF
                pending[self.seq] = entry = [nxt, encode_frame(op, self.seq, payloads[nxt]), 0, 0.0, []]
                send(entry)
                nxt += 1
            oldest = min(pending, key=lambda q: pending[q][3])
            left = pending[oldest][3] - time.monotonic()
            if left <= 0:
                retry(oldest, f"timed out after {self.timeout:g} s")
                continue
            try:
                data = self.transport.recv(left)
            except OSError as e:
                raise ProtocolError(f"{op.name}: the link is down ({e.strerror or e})") from None
            for f in self._rx.feed(data):
                if f.seq not in pending or f.op != (op | RESPONSE):
                    continue                # stale, duplicated, or not ours
                status = f.payload[0] if f.payload else Status.DEVICE_ERROR
                if status == Status.CRC_ERROR:
                    retry(f.seq, "the device saw a CRC error")
                    continue
                self._check_status(op, f, status)
                results[pending.pop(f.seq)[0]] = f.payload[1:]
            self._rx.bad_headers.clear()
        return results

    def write_csr(self, index: int, value: int) -> None:
        """Write CSR ``index`` (a :class:`Csr`; only :data:`CSR_WRITABLE` ones)."""
        self.transact(Op.WRITE_CSR, struct.pack("<HQ", index, value))

    def read_csr(self, index: int) -> int:
        """Read CSR ``index`` (a :class:`Csr`)."""
        return struct.unpack("<Q", self.transact(Op.READ_CSR, struct.pack("<H", index)))[0]

    @staticmethod
    def _ext_index(what: str, addr: int) -> int:
        if not 0 <= addr < 0x10000 - CSR_EXT_BASE:
            raise ProtocolError(f"{what}: external CSR word address {addr:#x} is outside the window "
                                f"(0..{0xFFFF - CSR_EXT_BASE:#x})")
        return CSR_EXT_BASE + addr

    def write_ext(self, addr: int, value: int) -> None:
        """Write the external CSR at Wishbone word address ``addr`` (the low
        :data:`CSR_EXT_BITS` bits of ``value``); DEVICE_ERROR if the bus does not answer."""
        if not 0 <= value < 1 << CSR_EXT_BITS:
            raise ProtocolError(f"WRITE_CSR: external CSR value {value:#x} does not fit {CSR_EXT_BITS} bits")
        self.write_csr(self._ext_index("WRITE_CSR", addr), value)

    def read_ext(self, addr: int) -> int:
        """Read the external CSR at Wishbone word address ``addr``."""
        return self.read_csr(self._ext_index("READ_CSR", addr))

    def status(self) -> EngineStatus:
        """The engine's state and last result (STATUS)."""
        busy, error, nxt, cycles = STATUS_REPLY.unpack(self.transact(Op.STATUS))
        return EngineStatus(bool(busy), bool(error), nxt, cycles)

    def start(self, token: int, pos: int) -> None:
        """Start one token program (RUN) and return at once; see :meth:`run`."""
        self.transact(Op.RUN, struct.pack("<II", token, pos))

    def run(self, token: int, pos: int, *, timeout: float = 600.0, poll: float = 0.002) -> tuple[int, int]:
        """Run the token program at ``Csr.PROGRAM_ADDR`` / ``Csr.N_INSTR`` for ``token`` at
        position ``pos`` and wait for it: RUN, then STATUS every ``poll`` seconds (growing
        to 50 ms) until the engine is idle. Returns ``(next_token, cycles)``. Raises
        :class:`ProtocolError` when the engine is already running, flags an error, or
        is still running after ``timeout`` seconds."""
        self.start(token, pos)
        deadline = time.monotonic() + timeout
        wait = poll
        while True:
            st = self.status()
            if not st.busy:
                break
            if time.monotonic() >= deadline:
                raise ProtocolError(f"RUN (token {token}, pos {pos}): the engine is still busy after {timeout:g} s "
                                    f"({st.cycles} cycles so far); raise the timeout or check the program")
            time.sleep(wait)
            wait = min(wait * 2, 0.05)
        if st.error:
            raise ProtocolError(f"RUN (token {token}, pos {pos}): the engine flagged an error (a memory response "
                                f"error or an unknown opcode) after {st.cycles} cycles")
        return st.next_token, st.cycles

    def reset(self) -> None:
        """RESET: the device forgets its stored response, so the next frame executes
        whatever its ``seq`` (send it first when a new host session starts)."""
        self.transact(Op.RESET)


class DeviceModel:
    """Reference of the device side of the protocol over a memory and CSRs.

    ``run`` is a callback ``(token, pos) -> (next_token, cycles)`` (the engine, or a model
    of it); it completes at once, so STATUS after RUN says not busy. The read-only CSRs
    are the engine status, the last next token and cycles; the other counters read 0.

    ``ctrl`` is the external CSR window's bus (None: no window, BAD_ADDRESS): an object
    with ``read(addr) -> int | None`` and ``write(addr, value) -> bool`` over Wishbone
    word addresses; ``None`` / ``False`` mean the bus did not acknowledge (timeout or
    error), answered DEVICE_ERROR. ``write`` gets the value's low :data:`CSR_EXT_BITS`
    bits; a read value is truncated to them.
    """

    def __init__(self, memory: bytearray, *, config_hash: bytes = bytes(8), run=None, ctrl=None):
        self.mem, self.config_hash, self._run, self.ctrl = memory, config_hash, run, ctrl
        self.csr = {c: 0 for c in Csr}
        self.rx = FrameDecoder()
        self.last_key: tuple[int, int] | None = None    # (seq, crc) of the last executed frame
        self.last_response = b""
        self.executed = 0
        self.next_token = 0
        self.cycles = 0

    def receive(self, data: bytes) -> bytes:
        """Bytes in from the host; bytes out (responses, in the order of the frames)."""
        out = bytearray()
        for f in self.rx.feed(data, include_bad=True):
            if not f.crc_ok:
                out += encode_frame(f.op | RESPONSE, f.seq, bytes([Status.CRC_ERROR]))
                continue
            if (f.seq, f.crc) == self.last_key:
                out += self.last_response        # a retry of what was executed: answer again
                continue
            resp = self._execute(f)
            out += resp
            if f.op == Op.RESET and f.version == VERSION:
                self.last_key, self.last_response = None, b""
            else:
                self.last_key, self.last_response = (f.seq, f.crc), resp
        self.rx.bad_headers.clear()
        return bytes(out)

    def _mem_check(self, addr: int, n: int) -> Status | None:
        if addr % MEM_ALIGN or n % MEM_ALIGN or addr + n > len(self.mem):
            return Status.BAD_ADDRESS
        return None

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
            if (bad := self._mem_check(addr, len(p) - 8)) is not None:
                return reply(bad)
            self.mem[addr:addr + len(p) - 8] = p[8:]
            return reply(Status.OK)
        if op == Op.READ_MEM:
            if len(p) != 12:
                return reply(Status.BAD_LENGTH)
            addr, n = struct.unpack("<QI", p)
            if n > MAX_PAYLOAD - 1:
                return reply(Status.BAD_LENGTH)
            if (bad := self._mem_check(addr, n)) is not None:
                return reply(bad)
            return reply(Status.OK, bytes(self.mem[addr:addr + n]))
        if op in (Op.WRITE_CSR, Op.READ_CSR):
            need = 10 if op == Op.WRITE_CSR else 2
            if len(p) != need:
                return reply(Status.BAD_LENGTH)
            (idx,) = struct.unpack_from("<H", p)
            if idx >= CSR_EXT_BASE and self.ctrl is not None:
                mask = (1 << CSR_EXT_BITS) - 1
                if op == Op.WRITE_CSR:
                    ok = self.ctrl.write(idx - CSR_EXT_BASE, struct.unpack_from("<Q", p, 2)[0] & mask)
                    return reply(Status.OK if ok else Status.DEVICE_ERROR)
                v = self.ctrl.read(idx - CSR_EXT_BASE)
                return reply(Status.DEVICE_ERROR) if v is None else reply(Status.OK, struct.pack("<Q", v & mask))
            if idx not in Csr._value2member_map_ or (op == Op.WRITE_CSR and idx not in CSR_WRITABLE):
                return reply(Status.BAD_ADDRESS)
            if op == Op.WRITE_CSR:
                self.csr[Csr(idx)] = struct.unpack_from("<Q", p, 2)[0]
                return reply(Status.OK)
            return reply(Status.OK, struct.pack("<Q", self.csr[Csr(idx)]))
        if op == Op.RUN:
            if len(p) != 8:
                return reply(Status.BAD_LENGTH)
            if self._run is None:
                return reply(Status.DEVICE_ERROR)
            self.next_token, self.cycles = self._run(*struct.unpack("<II", p))
            self.csr[Csr.NEXT_TOKEN], self.csr[Csr.CYCLES] = self.next_token, self.cycles
            return reply(Status.OK)
        if op == Op.STATUS:
            return reply(Status.OK, STATUS_REPLY.pack(0, 0, self.next_token, self.cycles))
        if op == Op.RESET:
            return reply(Status.OK)
        return reply(Status.BAD_OPCODE)  # pragma: no cover (every Op handled above)
