"""The host link: the gateware side of the host protocol (``host_runtime.protocol``).

:class:`HostLink` takes a byte stream from the host (``rx``), finds and checks frames
exactly as :class:`host_runtime.protocol.FrameDecoder` does, executes each command and
sends back a response frame byte-identical to :class:`host_runtime.protocol.DeviceModel`'s
for the same input (``tx``). Every constant of the protocol (magic, version, opcodes,
status codes, the 4096-byte payload bound, the 16-byte memory alignment, the CSR
numbering) is imported from ``host_runtime.protocol``: one place per fact.

Interface
---------
``rx``: In(stream of 8 bits), ``tx``: Out(stream of 8 bits): the byte transport
(UART, socket bridge, ...). ``axi_r`` / ``axi_w``: AXI4 master ports for WRITE_MEM /
READ_MEM (a :class:`~hw.mem.writer.BurstWriter` and :class:`~hw.mem.reader.BurstReader`,
full beats, so addresses and lengths are multiples of ``MEM_ALIGN`` = 16 bytes);
``idle``: the link waits for
bytes (everything received is processed, no command or response in progress).
``flush``: while ``idle``, drop a partly received frame (a transport that knows a new
connection starts, e.g. the simulated board's socket, pulses it, so a frame cut off by a
disconnect does not swallow the next client's first frames); ignored otherwise.
``mem_active`` is high while the link uses them (a board top muxes the memory between
the link and the engine with it: the link only touches memory while the engine is idle,
because memory commands and RUN are answered BUSY while ``busy``). Engine controls:
``start`` (one-cycle pulse on RUN), ``program_addr`` / ``n_instr`` (the CSRs),
``token`` / ``pos`` (RUN's arguments); engine state: ``busy``, ``error``, ``next_token``,
``counters`` (a struct whose field names are the lower-cased :class:`Csr` counter names;
fields it lacks read 0). With ``ctrl=True``: ``ctrl``, a Wishbone master
(:class:`~hw.host.wishbone.WishboneSignature`, 32-bit data) for the external CSR window:
READ_CSR / WRITE_CSR of an index ``i >= CSR_EXT_BASE`` is one classic Wishbone cycle at word
address ``i - CSR_EXT_BASE`` (all byte selects); ``ack`` completes it (OK, a read answers
``dat_r`` zero-extended), ``err`` or no ``ack`` within ``CSR_EXT_TIMEOUT`` cycles answers
DEVICE_ERROR, so a dead bus never hangs the link. Without ``ctrl`` those indices are
BAD_ADDRESS, as for :class:`~host_runtime.protocol.DeviceModel` without ``ctrl``.

Structure and latency
---------------------
Incoming bytes go into an 8 KiB ring (one block RAM) that also is the frame buffer: the
parser reads the ring one byte per cycle (header, payload fields, CRC32 computed on the
fly by :func:`hw.host.crc.crc32_step`), and a WRITE_MEM's data is streamed from the ring
to the writer after the frame's CRC has been checked. A bad header or a CRC failure
rescans from the byte after the frame's magic (the ring still holds those bytes), so a
good frame swallowed by a truncated one is found, as in the reference decoder. The ring
accepts bytes whenever it has room, also while a command executes or a response goes
out. Responses are generated at one byte per cycle while ``tx.ready`` (READ_MEM data:
one byte per cycle from the reader's beats).

Duplicates: the ``seq`` and CRC32 of the last executed frame and its response's recipe
(op, seq, status, length, up to 14 payload bytes, READ_MEM's address) are kept; a frame
with the same ``seq`` and CRC is answered from them without executing (a READ_MEM reply is
read again from memory: nothing can have changed it, since any command that could would
have replaced the stored response). RESET clears them.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from host_runtime.protocol import (CSR_COUNTERS, CSR_EXT_BASE, CSR_EXT_BITS, CSR_EXT_TIMEOUT, CSR_WRITABLE,
                                   HCHECK_COVERS, HEADER_BYTES, MAGIC, MAX_PAYLOAD, MEM_ALIGN, RESPONSE, VERSION, Csr,
                                   Op, Status)

from ..mem.axi4 import AXI4ReadSignature, AXI4WriteSignature
from ..mem.reader import BurstReader
from ..mem.writer import BurstWriter
from .crc import CRC_INIT, crc32_step
from .wishbone import WishboneSignature

#: Bytes of the receive ring (a power of two; holds the largest frame with room to spare).
RING_BYTES = 8192
#: Bytes of response payload after the status byte kept in registers (STATUS's 14).
SMALL_BYTES = 14

assert RING_BYTES >= HEADER_BYTES + MAX_PAYLOAD + 4


class HostLink(wiring.Component):
    """See the module docstring.

    Parameters
    ----------
    config_hash : 8 bytes HELLO reports (the config hash of the bitstream).
    mem_size : bytes of external memory (a request past it is BAD_ADDRESS).
    addr_bits, data_bits, max_burst, outstanding : the AXI4 ports (as the engine's).
    counters : the layout of ``counters`` (e.g. ``hw.decode.engine.EngineCounters()``).
    ctrl : add the ``ctrl`` Wishbone master of the external CSR window.
    """

    def __init__(self, *, config_hash: bytes, mem_size: int, counters: data.StructLayout, addr_bits: int = 32,
                 data_bits: int = 128, max_burst: int = 16, outstanding: int = 2, ctrl: bool = False):
        if len(config_hash) != 8:
            raise ValueError(f"config_hash must be 8 bytes, got {len(config_hash)}")
        if data_bits // 8 > MEM_ALIGN or MEM_ALIGN % (data_bits // 8):
            raise ValueError(f"a {data_bits}-bit port does not divide the {MEM_ALIGN}-byte memory alignment")
        self.config_hash, self.mem_size = bytes(config_hash), mem_size
        self.addr_bits, self.data_bits, self.max_burst, self.outstanding = addr_bits, data_bits, max_burst, outstanding
        self.counter_layout = counters
        self.has_ctrl = ctrl
        ports = {"ctrl": Out(WishboneSignature(data_bits=CSR_EXT_BITS))} if ctrl else {}
        super().__init__({**ports,
            "rx": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
            "axi_r": Out(AXI4ReadSignature(addr_bits=addr_bits, data_bits=data_bits)),
            "axi_w": Out(AXI4WriteSignature(addr_bits=addr_bits, data_bits=data_bits)),
            "mem_active": Out(1), "idle": Out(1), "flush": In(1),
            "start": Out(1), "program_addr": Out(addr_bits), "n_instr": Out(16), "token": Out(32), "pos": Out(32),
            "busy": In(1), "error": In(1), "next_token": In(32), "counters": In(counters),
        })

    def elaborate(self, platform):
        m = Module()
        bpb = self.data_bits // 8
        ptr_bits = (RING_BYTES * 2).bit_length() - 1        # ring index plus a wrap bit

        # ---- the receive ring -----------------------------------------------------------
        m.submodules.ring = ring = Memory(shape=8, depth=RING_BYTES, init=[])
        wport = ring.write_port()
        rport = ring.read_port(transparent_for=(wport,))
        wp = Signal(ptr_bits)       # next byte written
        fs = Signal(ptr_bits)       # start of the frame being parsed (bytes before it are free)
        rp = Signal(ptr_bits)       # byte the parser sees on rport.data
        next_rp = Signal(ptr_bits)
        used = Signal(ptr_bits)
        m.d.comb += [used.eq(wp - fs),
                     self.rx.ready.eq(used != RING_BYTES),
                     wport.addr.eq(wp), wport.data.eq(self.rx.payload),
                     wport.en.eq(self.rx.valid & self.rx.ready),
                     rport.addr.eq(next_rp), rport.en.eq(1),
                     next_rp.eq(rp)]
        m.d.sync += rp.eq(next_rp)
        with m.If(wport.en):
            m.d.sync += wp.eq(wp + 1)
        byte = rport.data
        avail = Signal()
        m.d.comb += avail.eq(rp != wp)

        # ---- parser state --------------------------------------------------------------
        crc = Signal(32)            # running CRC state over the frame's bytes
        hdr = Signal(HEADER_BYTES * 8)
        hc = Signal(16)             # header check computed over bytes 0..9
        pf = Signal(12 * 8)         # the payload's first 12 bytes (the command's fields)
        rcrc = Signal(32)           # the CRC the frame carries
        cnt = Signal(range(MAX_PAYLOAD + 1))
        fend = Signal(ptr_bits)
        h_ver, h_op, h_seq = hdr[16:24], hdr[24:32], hdr[32:48]
        h_len, h_chk = hdr[48:80], hdr[80:96]
        length = h_len[:13]        # valid once the header passed its check (<= MAX_PAYLOAD)

        # ---- the stored response (its recipe) and the duplicate key ------------------------
        r_op, r_seq, r_status = Signal(8), Signal(16), Signal(8)
        r_len = Signal(13)          # response payload bytes, status included
        r_small = Signal(SMALL_BYTES * 8)
        r_mem = Signal()            # payload after the status byte comes from memory
        r_addr = Signal(self.addr_bits)
        k_valid, k_seq, k_crc = Signal(), Signal(16), Signal(32)
        nack = Signal()             # the response being sent is a CRC_ERROR NACK

        # ---- CSRs and engine controls ------------------------------------------------------
        csr_prog, csr_n = Signal(64), Signal(64)
        tok, pos = Signal(32), Signal(32)
        m.d.comb += [self.program_addr.eq(csr_prog), self.n_instr.eq(csr_n), self.token.eq(tok), self.pos.eq(pos)]
        m.d.sync += self.start.eq(0)
        fields = dict(self.counter_layout)

        def counter(name):
            return self.counters[name] if name in fields else Const(0, 1)

        csr_value = Signal(64)
        with m.Switch(pf[:16]):
            with m.Case(Csr.PROGRAM_ADDR):
                m.d.comb += csr_value.eq(csr_prog)
            with m.Case(Csr.N_INSTR):
                m.d.comb += csr_value.eq(csr_n)
            with m.Case(Csr.ENGINE_STATUS):
                m.d.comb += csr_value.eq(Cat(self.busy, self.error))
            with m.Case(Csr.NEXT_TOKEN):
                m.d.comb += csr_value.eq(self.next_token)
            for c in CSR_COUNTERS:
                with m.Case(c):
                    m.d.comb += csr_value.eq(counter(c.name.lower()))
        csr_exists = Signal()
        csr_writable = Signal()
        m.d.comb += [csr_exists.eq(pf[:16] < len(Csr)),
                     csr_writable.eq(sum((pf[:16] == c) for c in CSR_WRITABLE) != 0)]
        # the external CSR window (a Wishbone cycle in state EXT)
        csr_ext = Signal()
        ext_we = Signal()
        ext_wait = Signal(range(CSR_EXT_TIMEOUT))
        if self.has_ctrl:
            m.d.comb += csr_ext.eq(pf[:16] >= CSR_EXT_BASE)

        def ext_start(we):
            m.d.sync += [ext_we.eq(we), ext_wait.eq(0)]
            m.next = "EXT"

        # ---- command fields and checks (valid in EXEC) ------------------------------------
        addr = pf[:64]
        rd_n = pf[64:96]
        wr_n = Signal(13)
        m.d.comb += wr_n.eq(length - 8)

        def mem_bad(n):
            return (addr[:4] != 0) | (n[:4] != 0) | (addr + n > self.mem_size)

        # ---- memory masters ----------------------------------------------------------------
        m.submodules.reader = reader = BurstReader(addr_bits=self.addr_bits, data_bits=self.data_bits,
                                                   max_burst=self.max_burst, outstanding=self.outstanding)
        m.submodules.writer = writer = BurstWriter(addr_bits=self.addr_bits, data_bits=self.data_bits,
                                                   max_burst=self.max_burst)
        wiring.connect(m, reader.axi, wiring.flipped(self.axi_r))
        wiring.connect(m, writer.axi, wiring.flipped(self.axi_w))
        shift = bpb.bit_length() - 1

        # WRITE_MEM: ring bytes -> beats (little-endian: the first byte is the low one)
        wbeat = Signal(self.data_bits)
        wfull, wlast = Signal(), Signal()
        wb_i = Signal(range(bpb))
        left = Signal(13)
        m.d.comb += [writer.data.valid.eq(wfull), writer.data.payload.data.eq(wbeat),
                     writer.data.payload.last.eq(wlast), writer.start.payload.eq(addr)]
        with m.If(writer.data.valid & writer.data.ready):
            m.d.sync += wfull.eq(0)

        # READ_MEM: reader beats -> bytes
        rbeat = Signal(self.data_bits)
        have = Signal()
        rb_i = Signal(range(bpb))
        issued = Signal()
        m.d.comb += [reader.cmd.payload.addr.eq(r_addr), reader.cmd.payload.beats.eq(r_len[shift:])]

        # ---- response generation state ---------------------------------------------------
        tcrc = Signal(32)
        ti = Signal(13)
        hc_hi = Signal(8)
        t_op = Mux(nack, h_op | RESPONSE, r_op)
        t_seq = Mux(nack, h_seq, r_seq)
        t_len = Mux(nack, 1, r_len)
        t_status = Mux(nack, Status.CRC_ERROR, r_status)
        t_mem = ~nack & r_mem
        head = Cat(Const(MAGIC[0], 8), Const(MAGIC[1], 8), Const(VERSION, 8), t_op, t_seq, t_len, Const(0, 19))
        body = Cat(t_status, r_small)
        tx_take = Signal()
        in_tx = Signal()            # sending a response (the reader may be fetching for it)
        m.d.comb += tx_take.eq(self.tx.valid & self.tx.ready)

        def tx_crc_step():
            with m.If(tx_take):
                m.d.sync += tcrc.eq(crc32_step(tcrc, self.tx.payload))

        def begin_tx():
            m.d.sync += [ti.eq(0), tcrc.eq(CRC_INIT), issued.eq(0)]

        def reply(status, small=None, n_small=0, mem=False):
            """Set the stored response (the executed frame's) and send it."""
            m.d.sync += [r_op.eq(h_op | RESPONSE), r_seq.eq(h_seq), r_status.eq(status),
                         r_len.eq(1 + n_small), r_mem.eq(mem), k_valid.eq(1), k_seq.eq(h_seq), k_crc.eq(rcrc)]
            if small is not None:
                m.d.sync += r_small.eq(small)
            begin_tx()

        def waiting():
            """In a parse state: idle when nothing is available; ``flush`` then forgets a
            partly received frame (a new connection starts)."""
            m.d.comb += self.idle.eq(~avail)
            with m.If(self.flush & ~avail):
                m.d.comb += next_rp.eq(wp)
                m.d.sync += fs.eq(wp)
                m.next = "MAGIC0"

        with m.FSM():
            with m.State("MAGIC0"):            # invariant: fs == rp
                waiting()
                with m.If(avail):
                    m.d.comb += next_rp.eq(rp + 1)
                    m.d.sync += crc.eq(crc32_step(CRC_INIT, byte))
                    with m.If(byte == MAGIC[0]):
                        m.next = "MAGIC1"
                    with m.Else():
                        m.d.sync += fs.eq(rp + 1)
            with m.State("MAGIC1"):
                waiting()
                with m.If(avail):
                    m.d.comb += next_rp.eq(rp + 1)
                    with m.If(byte == MAGIC[1]):
                        m.d.sync += [crc.eq(crc32_step(crc, byte)), cnt.eq(2)]
                        m.next = "HEADER"
                    with m.Elif(byte == MAGIC[0]):
                        m.d.sync += [fs.eq(rp), crc.eq(crc32_step(CRC_INIT, byte))]
                    with m.Else():
                        m.d.sync += fs.eq(rp + 1)
                        m.next = "MAGIC0"
            with m.State("HEADER"):
                waiting()
                with m.If(avail):
                    m.d.comb += next_rp.eq(rp + 1)
                    m.d.sync += [hdr.word_select(cnt[:4], 8).eq(byte), crc.eq(crc32_step(crc, byte)),
                                 cnt.eq(cnt + 1)]
                    with m.If(cnt == HCHECK_COVERS):
                        m.d.sync += hc.eq(~crc)
                    with m.If(cnt == HEADER_BYTES - 1):
                        m.next = "HCHECK"
            with m.State("HCHECK"):
                with m.If((h_len <= MAX_PAYLOAD) & (h_chk == hc)):
                    m.d.sync += cnt.eq(0)
                    m.next = "PAYLOAD"
                    with m.If(h_len == 0):
                        m.next = "CRC"
                with m.Else():                  # not a header: rescan after its magic
                    m.d.comb += next_rp.eq(fs + 1)
                    m.d.sync += fs.eq(fs + 1)
                    m.next = "MAGIC0"
            with m.State("PAYLOAD"):
                waiting()
                with m.If(avail):
                    m.d.comb += next_rp.eq(rp + 1)
                    m.d.sync += [crc.eq(crc32_step(crc, byte)), cnt.eq(cnt + 1)]
                    with m.If(cnt < 12):
                        m.d.sync += pf.word_select(cnt[:4], 8).eq(byte)
                    with m.If(cnt == length - 1):
                        m.d.sync += cnt.eq(0)
                        m.next = "CRC"
            with m.State("CRC"):
                waiting()
                with m.If(avail):
                    m.d.comb += next_rp.eq(rp + 1)
                    m.d.sync += [rcrc.word_select(cnt[:2], 8).eq(byte), cnt.eq(cnt + 1)]
                    with m.If(cnt == 3):
                        m.next = "CHECK"
            with m.State("CHECK"):
                m.d.sync += fend.eq(rp)
                with m.If(rcrc != ~crc):
                    m.d.sync += nack.eq(1)
                    begin_tx()
                    m.next = "TX_HEAD"
                with m.Elif(k_valid & (k_seq == h_seq) & (k_crc == rcrc)):
                    begin_tx()                  # a retry: answer the stored response again
                    m.next = "TX_HEAD"
                with m.Else():
                    m.next = "EXEC"
            with m.State("EXEC"):
                m.next = "TX_HEAD"
                with m.If(h_ver != VERSION):
                    reply(Status.VERSION_MISMATCH)
                with m.Else():
                    with m.Switch(h_op):
                        with m.Case(Op.HELLO):
                            reply(Status.OK, Cat(Const(VERSION, 8), Const(int.from_bytes(self.config_hash, "little"), 64)), 9)
                        with m.Case(Op.WRITE_MEM):
                            with m.If(length < 8):
                                reply(Status.BAD_LENGTH)
                            with m.Elif(mem_bad(wr_n)):
                                reply(Status.BAD_ADDRESS)
                            with m.Elif(self.busy):
                                reply(Status.BUSY)
                            with m.Elif(wr_n == 0):
                                reply(Status.OK)
                            with m.Else():
                                reply(Status.OK)
                                m.d.comb += next_rp.eq(fs + HEADER_BYTES + 8)
                                m.d.sync += [left.eq(wr_n), wb_i.eq(0)]
                                m.next = "WSTART"
                        with m.Case(Op.READ_MEM):
                            with m.If((length != 12) | (rd_n > MAX_PAYLOAD - 1)):
                                reply(Status.BAD_LENGTH)
                            with m.Elif(mem_bad(rd_n)):
                                reply(Status.BAD_ADDRESS)
                            with m.Elif(self.busy):
                                reply(Status.BUSY)
                            with m.Else():
                                reply(Status.OK, mem=True)
                                m.d.sync += [r_len.eq(1 + rd_n), r_addr.eq(addr)]
                        with m.Case(Op.WRITE_CSR):
                            with m.If(length != 10):
                                reply(Status.BAD_LENGTH)
                            with m.Elif(csr_ext):
                                ext_start(1)
                            with m.Elif(~csr_writable):
                                reply(Status.BAD_ADDRESS)
                            with m.Else():
                                reply(Status.OK)
                                with m.If(pf[:16] == Csr.PROGRAM_ADDR):
                                    m.d.sync += csr_prog.eq(pf[16:80])
                                with m.If(pf[:16] == Csr.N_INSTR):
                                    m.d.sync += csr_n.eq(pf[16:80])
                        with m.Case(Op.READ_CSR):
                            with m.If(length != 2):
                                reply(Status.BAD_LENGTH)
                            with m.Elif(csr_ext):
                                ext_start(0)
                            with m.Elif(~csr_exists):
                                reply(Status.BAD_ADDRESS)
                            with m.Else():
                                reply(Status.OK, csr_value, 8)
                        with m.Case(Op.RUN):
                            with m.If(length != 8):
                                reply(Status.BAD_LENGTH)
                            with m.Elif(self.busy):
                                reply(Status.BUSY)
                            with m.Else():
                                reply(Status.OK)
                                m.d.sync += [tok.eq(pf[:32]), pos.eq(pf[32:64]), self.start.eq(1)]
                        with m.Case(Op.STATUS):
                            reply(Status.OK, Cat(self.busy, Const(0, 7), self.error, Const(0, 7),
                                                 self.next_token, counter("cycles")), SMALL_BYTES)
                        with m.Case(Op.RESET):
                            reply(Status.OK)
                            m.d.sync += k_valid.eq(0)
                        with m.Default():
                            reply(Status.BAD_OPCODE)
            # ---- the external CSR window: one Wishbone classic cycle ------------------------
            with m.State("EXT"):
                if self.has_ctrl:
                    wb = self.ctrl
                    m.d.comb += [wb.cyc.eq(1), wb.stb.eq(1), wb.we.eq(ext_we), wb.adr.eq(pf[:16] - CSR_EXT_BASE),
                                 wb.dat_w.eq(pf[16:16 + CSR_EXT_BITS]), wb.sel.eq(-1)]
                    m.d.sync += ext_wait.eq(ext_wait + 1)
                    with m.If(wb.ack):
                        reply(Status.OK, Mux(ext_we, 0, wb.dat_r), Mux(ext_we, 0, 8))
                        m.next = "TX_HEAD"
                    with m.Elif(wb.err | (ext_wait == CSR_EXT_TIMEOUT - 1)):
                        reply(Status.DEVICE_ERROR)
                        m.next = "TX_HEAD"
            # ---- WRITE_MEM: the payload's data from the ring to the writer -----------------
            with m.State("WSTART"):
                m.d.comb += [writer.start.valid.eq(1), self.mem_active.eq(1)]
                with m.If(writer.start.ready):
                    m.next = "WDATA"
            with m.State("WDATA"):
                m.d.comb += self.mem_active.eq(1)
                with m.If(left == 0):
                    with m.If(~wfull):
                        m.next = "WWAIT"
                with m.Elif(~wfull | writer.data.ready):     # the full beat leaves this cycle
                    m.d.comb += next_rp.eq(rp + 1)
                    m.d.sync += [wbeat.eq(Cat(wbeat[8:], byte)), wb_i.eq(wb_i + 1), left.eq(left - 1)]
                    with m.If(wb_i == bpb - 1):
                        m.d.sync += [wfull.eq(1), wlast.eq(left == 1), wb_i.eq(0)]
            with m.State("WWAIT"):
                m.d.comb += self.mem_active.eq(1)
                with m.If(writer.idle):
                    m.next = "TX_HEAD"
            # ---- the response ---------------------------------------------------------------
            with m.State("TX_HEAD"):
                m.d.comb += [self.tx.valid.eq(1), in_tx.eq(1)]
                tx_crc_step()
                with m.Switch(ti):
                    for i in range(HCHECK_COVERS):
                        with m.Case(i):
                            m.d.comb += self.tx.payload.eq(head.word_select(i, 8))
                    with m.Case(HCHECK_COVERS):
                        m.d.comb += self.tx.payload.eq((~tcrc)[:8])
                    with m.Default():
                        m.d.comb += self.tx.payload.eq(hc_hi)
                with m.If(tx_take):
                    m.d.sync += ti.eq(ti + 1)
                    with m.If(ti == HCHECK_COVERS):
                        m.d.sync += hc_hi.eq((~tcrc)[8:16])
                    with m.If(ti == HEADER_BYTES - 1):
                        m.d.sync += ti.eq(0)
                        m.next = "TX_BODY"
            with m.State("TX_BODY"):
                m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(body.word_select(ti[:4], 8)), in_tx.eq(1)]
                tx_crc_step()
                with m.If(tx_take):
                    m.d.sync += ti.eq(ti + 1)
                    with m.If(t_mem & (t_len > 1)):
                        m.d.sync += [ti.eq(t_len - 1), have.eq(0), rb_i.eq(0)]
                        m.next = "TX_MEM"
                    with m.Elif(ti == t_len - 1):
                        m.d.sync += ti.eq(0)
                        m.next = "TX_CRC"
            with m.State("TX_MEM"):
                m.d.comb += [self.tx.valid.eq(have), self.tx.payload.eq(rbeat.word_select(rb_i, 8)),
                             reader.data.ready.eq(~have), in_tx.eq(1)]
                tx_crc_step()
                with m.If(reader.data.valid & reader.data.ready):
                    m.d.sync += [rbeat.eq(reader.data.payload), have.eq(1), rb_i.eq(0)]
                with m.If(tx_take):
                    m.d.sync += [rb_i.eq(rb_i + 1), ti.eq(ti - 1)]
                    with m.If(rb_i == bpb - 1):
                        m.d.sync += have.eq(0)
                    with m.If(ti == 1):
                        m.d.sync += ti.eq(0)
                        m.next = "TX_CRC"
            with m.State("TX_CRC"):
                m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq((~tcrc).word_select(ti[:2], 8))]
                with m.If(tx_take):
                    m.d.sync += ti.eq(ti + 1)
                    with m.If(ti == 3):
                        m.next = "MAGIC0"
                        with m.If(nack):        # rescan after the bad frame's magic
                            m.d.comb += next_rp.eq(fs + 1)
                            m.d.sync += [fs.eq(fs + 1), nack.eq(0)]
                        with m.Else():          # the frame is done: free its bytes
                            m.d.comb += next_rp.eq(fend)
                            m.d.sync += fs.eq(fend)

        # READ_MEM: one reader command per response (also for a replayed one); TX_CRC does
        # not step tcrc, so its four bytes are the CRC of everything before them.
        m.d.comb += reader.cmd.valid.eq(in_tx & t_mem & (t_len > 1) & ~issued)
        with m.If(reader.cmd.valid & reader.cmd.ready):
            m.d.sync += issued.eq(1)
        with m.If(in_tx & t_mem):
            m.d.comb += self.mem_active.eq(1)
        return m
