"""bench.decode_units: a result names the commit it measured."""

import subprocess
from pathlib import Path

from bench.decode_units import source_commit

ROOT = Path(__file__).resolve().parents[2]


def test_source_commit_is_head():
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        assert source_commit() is None      # not a git checkout: no commit to name
        return
    got = source_commit()
    assert got is not None and got.split("+")[0] == head, (got, head)
