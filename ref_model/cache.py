"""The one cache folder of lutforge: ``$LUTFORGE_CACHE``, default ``~/.cache/lutforge``.

Everything derived and reusable lives under it, each kind in its own subfolder named by
its user: Verilator builds (``sim.verilator``: ``verilator/``, ``verilator-raw/``),
generated LiteDRAM cores (``fpga_boards.litedram``: ``litedram/``), converted model files
(``host_runtime.model_files``: ``models/``). It sits in ``ref_model`` because every other
package may import ``ref_model`` and nothing else in common.
"""

import os
from pathlib import Path


def cache_root() -> Path:
    """The cache root; not created here (each user makes its own subfolder)."""
    return Path(os.environ.get("LUTFORGE_CACHE", Path.home() / ".cache" / "lutforge"))
