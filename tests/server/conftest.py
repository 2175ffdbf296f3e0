"""A real ``everstream demo`` process for the server and browser tests (module-scoped: one run serves them all)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from demotools import DEMO_SECONDS, Demo


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="package")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """``everstream demo --duration 40 --no-browser`` on a fresh embedded log, console reachable."""
    data = tmp_path_factory.mktemp("demo") / "data"
    port = _free_port()
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("EVERSTREAM_BROKER", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "everstream.cli", "--data-dir", str(data), "demo", "--duration", str(DEMO_SECONDS),
         "--port", str(port), "--no-browser", "--plain", "--rate", "3000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    d = Demo(f"http://127.0.0.1:{port}/", proc, data)
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"the demo exited early ({proc.returncode}): {proc.stderr.read()[-3000:]}")
        try:
            if d.get("/healthz").status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("the demo's console did not come up within 60 s")
        time.sleep(0.2)
    yield d
    if proc.poll() is None:
        proc.kill()
        proc.wait()
