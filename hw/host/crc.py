"""CRC32 (IEEE 802.3 / zlib: polynomial 0x04C11DB7 reflected = 0xEDB88320) one byte per step.

:func:`crc32_step` is combinational: it builds, for each of the 32 output bits, the XOR
of the state and data bits it depends on (the CRC is linear over GF(2), so the matrix is
worked out here in Python once, by feeding unit vectors through the bit-serial update).
The state is kept the zlib way: start from :data:`CRC_INIT`, step every byte, and the
CRC of the bytes is the state's complement (``~state``).
"""

from amaranth.hdl import Cat, Const, Value

POLY = 0xEDB88320
CRC_INIT = 0xFFFFFFFF


def _step_int(crc: int, byte: int) -> int:
    crc ^= byte
    for _ in range(8):
        crc = (crc >> 1) ^ (POLY if crc & 1 else 0)
    return crc


def _matrix() -> list[tuple[list[int], list[int]]]:
    """For each output bit: (state bits, data bits) that XOR into it."""
    cols_state = [_step_int(1 << i, 0) for i in range(32)]
    cols_data = [_step_int(0, 1 << j) for j in range(8)]
    return [([i for i in range(32) if cols_state[i] >> k & 1], [j for j in range(8) if cols_data[j] >> k & 1])
            for k in range(32)]


_MATRIX = _matrix()


def crc32_step(state, byte) -> Value:
    """The CRC state after ``byte`` (8 bits) given ``state`` (32 bits): combinational,
    a 32-output XOR network of at most 40 inputs per bit."""
    state, byte = Value.cast(state), Value.cast(byte)
    bits = []
    for s_bits, d_bits in _MATRIX:
        terms = [state[i] for i in s_bits] + [byte[j] for j in d_bits]
        v = Const(0, 1)
        for t in terms:
            v = v ^ t
        bits.append(v)
    return Cat(*bits)


def crc32_step_int(state: int, byte: int) -> int:
    """Integer reference of :func:`crc32_step` (``zlib.crc32(b) == ~fold(step) & MASK``)."""
    return _step_int(state, byte)
