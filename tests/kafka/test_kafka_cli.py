"""Every log command of the CLI against the real broker (``--broker kafka://...``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from everstream.log.kafka import KafkaLog
from everstream.log.partitioner import partition_for

pytestmark = pytest.mark.kafka


def _cli(bootstrap: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "everstream.cli", "--broker", f"kafka://{bootstrap}", *args]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    try:
        out, err = proc.communicate(stdin, timeout=90)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)  # faulthandler prints every thread's stack
        out, err = proc.communicate()
        raise AssertionError(f"`{' '.join(args)}` hung for 90 s; its stacks:\n{err[-6000:]}") from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def test_cli_log_commands_on_kafka(bootstrap: str, names: Callable[[str], str], kafka: KafkaLog,
                                   tmp_path: Path) -> None:
    topic, group = names("cli"), names("cli")
    r = _cli(bootstrap, "topics", "create", topic, "-p", "3", "--retention", "7d", "--compression", "zstd",
             "--replication-factor", "1")
    assert r.returncode == 0, r.stderr
    assert _cli(bootstrap, "topics", "create", topic).returncode == 2  # exists
    assert _cli(bootstrap, "topics", "create", topic, "--if-missing").returncode == 0

    listed = json.loads(_cli(bootstrap, "topics", "list", "--json").stdout)
    mine = [t for t in listed if t["name"] == topic]
    assert mine and mine[0]["partitions"] == 3 and mine[0]["retention_ms"] == 7 * 86_400_000
    assert mine[0]["compression"] == "zstd"
    assert not any(t["name"].startswith("_") for t in listed)

    src = tmp_path / "in.jsonl"
    base = int(time.time() * 1000) - 3_600_000  # event times inside the topic's 7-day retention
    lines = [json.dumps({"id": i, "sym": f"S{i % 5}", "ts": base + i}) for i in range(50)]
    lines.insert(10, "{not json")
    src.write_text("\n".join(lines) + "\n")
    r = _cli(bootstrap, "produce", topic, str(src), "--key", "sym", "--time", "ts")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"topic": topic, "produced": 50, "dead_letters": 1}

    d = json.loads(_cli(bootstrap, "topics", "describe", topic, "--json").stdout)
    assert d["records"] == 50 and len(d["partition_offsets"]) == 3

    r = _cli(bootstrap, "consume", topic, "--from-beginning", "--max", "50", "--meta")
    assert r.returncode == 0, r.stderr
    out = [json.loads(x) for x in r.stdout.splitlines()]
    assert sorted(o["id"] for o in out) == list(range(50))
    for o in out:
        assert o["_partition"] == partition_for(o["sym"].encode(), 3)
        assert o["_timestamp"] == base + o["id"] and o["_key"] == o["sym"]

    r = _cli(bootstrap, "consume", f"{topic}.dlq", "--from-beginning", "--idle-timeout", "2")
    letters = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(letters) == 1 and letters[0]["raw"] == "{not json" and letters[0]["source_line"] == 11

    # a group consumes part, commits, and the next run of the same group continues
    first = _cli(bootstrap, "consume", topic, "--group", group, "--from-beginning", "--max", "20")
    rest = _cli(bootstrap, "consume", topic, "--group", group, "--from-beginning", "--idle-timeout", "3")
    got = [json.loads(x)["id"] for x in first.stdout.splitlines() + rest.stdout.splitlines()]
    assert sorted(got) == list(range(50)), (first.stderr, rest.stderr)

    csv = _cli(bootstrap, "consume", topic, "--from-beginning", "--max", "5", "--format", "csv")
    assert csv.returncode == 0 and csv.stdout.splitlines()[0].replace('"', "") == "id,sym,ts"

    for cmd in (("log", "check"), ("log", "maintain")):
        r = _cli(bootstrap, *cmd)
        assert r.returncode == 2 and "embedded log only" in r.stderr

    assert _cli(bootstrap, "topics", "delete", topic).returncode == 0
    assert not kafka.has_topic(topic)
    r = _cli(bootstrap, "topics", "describe", topic)
    assert r.returncode == 2 and "does not exist" in r.stderr
