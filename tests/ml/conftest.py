"""ML tests use the engine tests' fixtures (``log`` over both logs, ``names``), imported, not copied."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_ENGINE = Path(__file__).resolve().parent.parent / "engine"
if str(_ENGINE) not in sys.path:  # enginetools (produce)
    sys.path.insert(0, str(_ENGINE))
_spec = importlib.util.spec_from_file_location("_engine_conftest_ml", _ENGINE / "conftest.py")
assert _spec is not None and _spec.loader is not None
_engine = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_engine)

log = _engine.log
names = _engine.names
