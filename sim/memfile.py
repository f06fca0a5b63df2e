"""Memory images as ``$readmemh`` files for the RTL memory model's backdoor, and its dumps."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def hex_lines(base_word: int, raw: bytes, bpb: int) -> str:
    """``raw`` (a whole number of ``bpb``-byte words) placed at word ``base_word``: one
    ``@address`` line, then one big-endian hex word per line."""
    if len(raw) % bpb:
        raw = raw + bytes(bpb - len(raw) % bpb)
    words = np.frombuffer(raw, dtype=np.uint8).reshape(-1, bpb)[:, ::-1]
    text = words.tobytes().hex()
    step = 2 * bpb
    body = "\n".join(text[i:i + step] for i in range(0, len(text), step))
    return f"@{base_word:x}\n{body}\n"


def read_dump(path: Path) -> bytes:
    """The bytes of a ``$writememh`` dump (words in address order)."""
    words = [w.strip() for w in Path(path).read_text().splitlines()]
    return b"".join(bytes.fromhex(w)[::-1] for w in words if w and not w.startswith(("//", "@")))
