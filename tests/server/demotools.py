"""The running demo as the server and browser tests see it."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import httpx

DEMO_SECONDS = 40


@dataclass
class Demo:
    url: str
    proc: subprocess.Popen[str]
    data_dir: Path

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path.lstrip("/"), timeout=10)

    def summary(self, timeout: float = DEMO_SECONDS + 60) -> dict[str, object]:
        """Wait for the process to end; its last stdout line is the JSON summary."""
        out, err = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, f"demo exited {self.proc.returncode}: {err[-3000:]}"
        result: dict[str, object] = json.loads(out.strip().splitlines()[-1])
        return result
