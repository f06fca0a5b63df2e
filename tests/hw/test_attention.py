"""The decode engine's attention unit in the Amaranth simulator against ref_model.decode.attention."""

from __future__ import annotations

import pytest
import torch

from hw.decode.attention import AttentionUnit
from ref_model import decode as U
from ref_model import fixedpoint as fx

from .test_vector_units import _drive

T = fx.rom_tables()
F = 12


@pytest.mark.parametrize("nh,nkv,hd,n,seed", [(4, 2, 16, 5, 1), (2, 2, 8, 1, 2), (3, 1, 8, 9, 3), (4, 2, 16, 16, 4)])
def test_attention_matches_reference(nh, nkv, hd, n, seed):
    g = torch.Generator().manual_seed(seed)
    q = (torch.randn(nh, hd, generator=g) * (1 << 14)).to(torch.int64)
    k = (torch.randn(n, nkv, hd, generator=g) * (1 << 13)).to(torch.int64)
    v = (torch.randn(n, nkv, hd, generator=g) * (1 << 15)).to(torch.int64)
    if nh > 2:
        q[1] = 0                                   # an all-zero query head (sh = -16)
        q[2, 0] = (1 << 31) - 1                    # an extreme query
        q[0] = q[0] % 4000
        q[0, 3] = 4088                             # amax whose rounding carries: sh + 1
    if n > 8:
        k[1] = (1 << 20)                           # a dominating key: saturating scores
        v[2] = -(1 << 31)
    want = U.attention(q, k, v, F).reshape(-1)
    dut = AttentionUnit(max_heads=4, max_head_dim=16, max_ctx=16, frac=F, exp_table=T["exp2"],
                        log2e_q30=T["log2e_q30"][0], rcp_table=T["reciprocal"])
    c = round((1 << 16) / hd ** 0.5)
    got = _drive(dut, {"heads": nh, "kv_heads": nkv, "head_dim": hd, "n": n, "c": c},
                 {"q": q.reshape(-1).tolist(), "k": k.reshape(-1).tolist(), "v": v.reshape(-1).tolist()},
                 nh * hd, seed)
    assert got == want.tolist(), f"seed {seed}"
