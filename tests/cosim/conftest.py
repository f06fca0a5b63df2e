"""Shared fixtures of the simulated-board system tests (UART and UDP links)."""

import pytest

from ref_model.models.tiny import write_tiny_llama


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    """One layer, dim 32: a 19 kB image, so upload + verify take seconds over a slow link."""
    return write_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny.gguf", seed=11, layers=1, dim=32, heads=2,
                            kv_heads=1, ffn=64)
