"""Every file in examples/ runs as documented (python examples/X.py, and `everstream run` where it applies)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.py"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs(path: Path, tmp_path: Path) -> None:
    """The example runs to completion on a fresh embedded log and prints its summary."""
    env = {**os.environ, "EVERSTREAM_DATA": str(tmp_path / "data"), "EVERSTREAM_BROKER": "embedded"}
    proc = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "'stopped': 'idle'" in proc.stdout
    assert "'dead_letters': 3" in proc.stdout if path.stem == "payments" else "'late_events': 0" in proc.stdout
    # the same file also runs under the CLI, on the data it left behind
    again = subprocess.run([sys.executable, "-m", "everstream.cli", "run", str(path), "--until-idle"],
                           capture_output=True, text=True, timeout=120, env=env)
    assert again.returncode == 0, again.stderr
