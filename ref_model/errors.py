"""The one exception family that users can cause.

Every error a user can trigger (a bad config, model file, CLI argument, host frame...)
derives from :class:`LutforgeError`; the CLI catches this family and prints one line.
It lives in ``ref_model`` because that package is the root of the dependency graph
(it imports nothing of the others), so every package can raise it.
"""


class LutforgeError(Exception):
    """An error caused by user input, reported as one line without a traceback."""


class ConfigError(LutforgeError):
    """An accelerator config that fails validation."""


class ToolchainError(LutforgeError):
    """A required tool (Verilator, Yosys, nextpnr...) is missing or failed."""


class SimulationError(LutforgeError):
    """A simulation that failed to build, timed out or mismatched the reference."""
