"""The `everstream` command line on the embedded log, run as real processes."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from everstream.log.partitioner import partition_for

EVERSTREAM = [sys.executable, "-m", "everstream.cli"]


def run(data: Path, *args: str, stdin: bytes | None = None, timeout: float = 300) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "EVERSTREAM_DATA": str(data)}
    env.pop("EVERSTREAM_BROKER", None)
    return subprocess.run([*EVERSTREAM, *args], input=stdin, capture_output=True, env=env, timeout=timeout)


def test_million_line_jsonl_round_trip(tmp_path: Path) -> None:
    """1,000,000 JSON lines in, every record back intact, per-partition order kept."""
    rng = random.Random(42)
    n = 1_000_000
    src = tmp_path / "trades.jsonl"
    accounts = [f"ACC{i:04d}" for i in range(500)]
    with src.open("w") as f:
        for i in range(n):
            rec = {
                "id": i,
                "account": accounts[rng.randrange(500)],
                "price": round(rng.uniform(1, 500), 2),
                "qty": rng.randrange(1, 100) * 100,
                "side": "B" if rng.random() < 0.5 else "S",
                "note": "é✓" if i % 1000 == 0 else "",
            }
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    data = tmp_path / "data"
    r = run(data, "topics", "create", "trades", "--partitions", "4")
    assert r.returncode == 0, r.stderr
    r = run(data, "produce", "trades", str(src), "--format", "jsonl", "--key", "account")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"topic": "trades", "produced": n, "dead_letters": 0}
    r = run(data, "consume", "trades", "--from-beginning", "--max", str(n), "--meta")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == n
    originals = [json.loads(x) for x in src.read_text().splitlines()]
    seen_by_partition: dict[int, list[int]] = {}
    ids = set()
    for line in lines:
        out = json.loads(line)
        p, off, key = out.pop("_partition"), out.pop("_offset"), out.pop("_key")
        out.pop("_timestamp")
        rec = originals[out["id"]]
        assert out == rec
        assert key == rec["account"]
        assert p == partition_for(key.encode(), 4)
        seen_by_partition.setdefault(p, []).append(out["id"])
        assert off == len(seen_by_partition[p]) - 1  # dense offsets from 0
        ids.add(out["id"])
    assert len(ids) == n
    for p, seq in seen_by_partition.items():
        assert seq == sorted(seq), f"partition {p} out of order"


def test_bad_lines_go_to_the_dead_letter_topic(tmp_path: Path) -> None:
    data = tmp_path / "data"
    good = [{"a": i, "b": f"x{i}"} for i in range(10)]
    lines = [json.dumps(g) for g in good]
    lines.insert(3, "{not json")
    lines.insert(6, json.dumps({"a": "text-not-int", "b": "y"}))
    lines.insert(8, "[1, 2, 3]")
    lines.insert(9, json.dumps({"a": 99, "b": "z" * 5000}))  # over --max-record-bytes
    r = run(data, "produce", "t", "-", "--max-record-bytes", "1000", stdin=("\n".join(lines) + "\n").encode())
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"topic": "t", "produced": 10, "dead_letters": 4}
    r = run(data, "consume", "t", "--from-beginning", "--max", "10")
    assert [json.loads(x) for x in r.stdout.splitlines()] == good
    r = run(data, "consume", "t.dlq", "--from-beginning", "--max", "4")
    dead = [json.loads(x) for x in r.stdout.splitlines()]
    assert sorted(d["source_line"] for d in dead) == [4, 7, 9, 10]
    by_line = {d["source_line"]: d for d in dead}
    assert by_line[4]["raw"] == "{not json" and "invalid JSON" in by_line[4]["error"]
    assert "int64" in by_line[7]["error"]
    assert "JSON object" in by_line[9]["error"]
    assert "over the limit" in by_line[10]["error"]


def test_csv_bad_rows(tmp_path: Path) -> None:
    data = tmp_path / "data"
    csv_text = "sym,px,qty\nAAA,1.5,100\nBBB,2.5\nCCC,3.5,300\nDDD,4.5,400,extra\nEEE,5.5,500\n"
    r = run(data, "produce", "q", "-", "--format", "csv", "--key", "sym", stdin=csv_text.encode())
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"topic": "q", "produced": 3, "dead_letters": 2}
    r = run(data, "consume", "q", "--from-beginning", "--max", "3")
    assert [json.loads(x) for x in r.stdout.splitlines()] == [
        {"sym": "AAA", "px": 1.5, "qty": 100},
        {"sym": "CCC", "px": 3.5, "qty": 300},
        {"sym": "EEE", "px": 5.5, "qty": 500},
    ]
    r = run(data, "consume", "q.dlq", "--from-beginning", "--max", "2")
    dead = sorted((json.loads(x) for x in r.stdout.splitlines()), key=lambda d: d["source_line"])
    assert [(d["source_line"], d["raw"]) for d in dead] == [(3, "BBB,2.5"), (5, "DDD,4.5,400,extra")]


def test_time_field_and_parquet(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = tmp_path / "data"
    table = pa.table({"k": ["a", "b", "c"], "ts": ["2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z", "nope"]})
    pq.write_table(table, tmp_path / "in.parquet")
    r = run(data, "produce", "p", str(tmp_path / "in.parquet"), "--format", "parquet", "--time", "ts")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"topic": "p", "produced": 2, "dead_letters": 1}
    r = run(data, "consume", "p", "--from-beginning", "--max", "2", "--meta")
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert [x["_timestamp"] for x in rows] == [1767225600000, 1767225601000]


@pytest.mark.parametrize(
    "args, needle",
    [
        (["topics", "create", "bad name"], "invalid topic name"),
        (["topics", "create", "ok", "--partitions", "0"], "at least 1"),
        (["topics", "describe", "missing"], "does not exist"),
        (["consume", "missing", "--max", "1"], "does not exist"),
        (["topics", "delete", "missing"], "does not exist"),
        (["produce", "t", "/nonexistent/file.jsonl"], "cannot open"),
        (["produce", "t", "-", "--format", "xml"], "unknown format"),
        (["topics", "create", "t2", "--retention", "forever"], "invalid duration"),
    ],
)
def test_errors_exit_2_with_a_clear_message(tmp_path: Path, args: list[str], needle: str) -> None:
    r = run(tmp_path / "data", *args, stdin=b"")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert needle in r.stderr.decode()
    assert b"Traceback" not in r.stderr


def test_topics_admin_and_log_check(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert run(data, "topics", "create", "a", "-p", "3", "--compact").returncode == 0
    assert run(data, "topics", "create", "b", "--retention", "7d", "--retention-bytes", "1MiB").returncode == 0
    assert run(data, "topics", "create", "a").returncode == 2  # exists
    assert run(data, "topics", "create", "a", "--if-missing").returncode == 0
    listed = json.loads(run(data, "topics", "list", "--json").stdout)
    assert {t["name"]: t["partitions"] for t in listed} == {"a": 3, "b": 1}
    b = json.loads(run(data, "topics", "describe", "b", "--json").stdout)
    assert b["retention_ms"] == 7 * 86_400_000 and b["retention_bytes"] == 1 << 20
    run(data, "produce", "b", "-", stdin=b'{"x": 1}\n{"x": 2}\n')
    check = run(data, "log", "check")
    assert check.returncode == 0 and json.loads(check.stdout)["damaged"] == 0
    assert run(data, "topics", "delete", "a").returncode == 0
    assert [t["name"] for t in json.loads(run(data, "topics", "list", "--json").stdout)] == ["b"]


def test_demo_runs_and_pipelines_catch_up(tmp_path: Path) -> None:
    """A short headless demo: history replayed, live trades, every pipeline reads everything, no error."""
    r = run(tmp_path / "data", "demo", "--duration", "4", "--rate", "20000", "--plain", "--no-browser",
            "--port", "0", timeout=180)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.splitlines()[-1])
    assert summary["produced"] > summary["backfilled"] > 0
    assert summary["console"].startswith("http://127.0.0.1:")
    assert summary["produced"] == sum(summary["captured"].values())
    for name, p in summary["pipelines"].items():
        assert p["error"] is None, name
        assert p["events_in"] > 0, name
        assert p["lag"] == 0, name
    assert summary["pipelines"]["bars"]["events_in"] == summary["captured"]["trades"]
    assert all(c["alerted"] for c in summary["injected"])
