"""Load the ``App`` a pipeline file defines (for ``everstream run PIPELINE.py``)."""

from __future__ import annotations

import runpy
from pathlib import Path

from everstream.engine.app import App
from everstream.errors import ConfigError


def load_app(path: str | Path, name: str | None = None) -> App:
    """Execute ``path`` and return its App: the variable ``name`` (default ``app``), or its only App."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"pipeline file {str(file)!r} does not exist")
    namespace = runpy.run_path(str(file), run_name="__everstream__")
    if name is not None:
        found = namespace.get(name)
        if not isinstance(found, App):
            raise ConfigError(f"{file} has no App named {name!r}; define {name} = es.App('...')")
        return found
    if isinstance(namespace.get("app"), App):
        return namespace["app"]  # type: ignore[no-any-return]
    apps = [v for v in namespace.values() if isinstance(v, App)]
    if len(apps) == 1:
        return apps[0]
    if not apps:
        raise ConfigError(f"{file} defines no App: add `app = es.App('name')` and its steps")
    raise ConfigError(f"{file} defines {len(apps)} Apps: name the one to run with --app")
