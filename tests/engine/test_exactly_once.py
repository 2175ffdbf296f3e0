"""Exactly-once: outputs, operator state and input offsets commit together; restarts resume exactly.

The kill loop (marked ``crash``) runs the pipeline in a worker process (forked from a fork
server that imported everstream once, so a kill costs no interpreter start), kills it with
SIGKILL at random points at least 20 times (EVERSTREAM_CRASH_ITERATIONS) while more input
arrives, then lets a last incarnation finish; the committed output must equal the batch
reference exactly: DuckDB for the windows, plain Python for the per-key running sum.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pytest
from enginetools import assert_same, engine_output, produce, reference, trades
from hypothesis import given, settings
from hypothesis import strategies as st_h

import everstream as es
from everstream.engine import state
from everstream.engine.checkpoint import changelog_topic_of
from everstream.engine.testing import read_topic
from everstream.errors import ConfigError, EngineError, ProducerFencedError, StateError, StateIncompatibleError
from everstream.log import EmbeddedLog, Log

ITERATIONS = int(os.environ.get("EVERSTREAM_CRASH_ITERATIONS", "20"))
SPEC = es.tumbling("1s")
BAR_AGGS = ("n", "volume", "high")
PIECE = 1500  # input events added before each incarnation of the kill loop


class RunningSum(es.KeyedProcess):
    """Per-key running sum of qty, emitted with every event (in event-time order)."""

    def process(self, event: dict[str, Any], ctx: es.engine.ProcessContext) -> dict[str, Any]:
        st = ctx.state
        st["sum"] = st.get("sum", 0) + int(event["qty"])
        return {"symbol": ctx.key, "ts": ctx.time, "running": st["sum"]}


AGGS = {"n": es.count(), "volume": es.sum("qty"), "high": es.max("price"), "low": es.min("price")}


def build(name: str, source: str, bars: str, sums: str, *, window_name: str = "bars",
          aggs: tuple[str, ...] = BAR_AGGS) -> es.App:
    app = es.App(name)
    s = app.stream(source).with_watermark("ts", max_delay="1s")
    s.window(SPEC, by="symbol", name=window_name).agg(**{a: AGGS[a] for a in aggs}).to(bars)
    s.key_by("symbol").process(RunningSum, name="running").to(sums)
    return app


def sums_reference(df: pl.DataFrame) -> pl.DataFrame:
    return (df.sort("ts").select("symbol", "ts", pl.col("qty").cum_sum().over("symbol").alias("running"))
            .sort("symbol", "ts"))


def check_outputs(log: Log, df: pl.DataFrame, bars: str, sums: str) -> None:
    """The committed outputs equal the batch references: no duplicate, no missing, no wrong result."""
    assert_same(engine_output(log, bars, "symbol"), reference(df, SPEC, "symbol", BAR_AGGS))
    got = read_topic(log, sums).select("symbol", "ts", "running").sort("symbol", "ts")
    ref = sums_reference(df)
    assert got.height == ref.height, f"running sums: {got.height} rows, the reference {ref.height}"
    assert got.with_columns(pl.col("ts", "running").cast(pl.Int64)).equals(ref.cast({"running": pl.Int64}))


def _names(names: Callable[[str], str]) -> tuple[str, str, str, str]:
    return names("eo"), names("trades"), names("bars"), names("sums")


# ---------------------------------------------------------------------- in-process


def test_exactly_once_run_equals_the_reference(log: Log, names: Callable[[str], str]) -> None:
    app_name, src, bars, sums = _names(names)
    df = trades(3000, symbols=4, gap_ms=20, disorder_ms=300)
    produce(log, src, df, partitions=2, chunk=500)
    app = build(app_name, src, bars, sums)
    result = app.run(log, until_idle=True, guarantee="exactly_once", commit_interval=0.0, max_batch_events=400)
    assert result.events_in == df.height
    check_outputs(log, df, bars, sums)
    assert log.describe_topic(changelog_topic_of(app_name, "bars")).spec.compact


def test_restart_discards_uncommitted_work_and_resumes(log: Log, names: Callable[[str], str]) -> None:
    """Work after the last commit is lost with the process; a new runner redoes it exactly once."""
    app_name, src, bars, sums = _names(names)
    df = trades(4000, symbols=5, gap_ms=20, disorder_ms=300)
    first, rest = df.slice(0, 2500), df.slice(2500)
    produce(log, src, first, partitions=2, chunk=500)
    app = build(app_name, src, bars, sums)
    r1 = app.runner(log, guarantee="exactly_once", commit_interval=3600.0, max_batch_events=300)
    for _ in range(4):  # some cycles, then a commit: outputs, state and offsets of this instant
        r1.cycle(timeout=0.2)
    r1.commit()
    for _ in range(3):  # more work, written into the open transaction, never committed
        r1.cycle(timeout=0.2)
    r1.close()  # a crash: the open transaction is discarded
    produce(log, src, rest, partitions=2, chunk=500)
    app.run(log, until_idle=True, guarantee="exactly_once", commit_interval=0.05, max_batch_events=700)
    check_outputs(log, df, bars, sums)


def test_restore_of_state_in_many_chunks(log: Log, names: Callable[[str], str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Snapshots cut into many changelog records (tiny chunks) restore whole, from the changelog's tail."""
    monkeypatch.setattr(state, "CHUNK_BYTES", 300)
    app_name, src, bars, sums = _names(names)
    df = trades(3000, symbols=40, gap_ms=20, disorder_ms=300)
    produce(log, src, df.slice(0, 1500), partitions=2, chunk=500)
    app = build(app_name, src, bars, sums)
    with app.runner(log, guarantee="exactly_once", commit_interval=0.0, max_batch_events=250) as r:
        r.catch_up()
        r.commit()
    records = read_topic(log, changelog_topic_of(app_name, "running"))
    assert records.get_column("chunks").max() > 3  # the process state really spans several records
    produce(log, src, df.slice(1500), partitions=2, chunk=500)
    app.run(log, until_idle=True, guarantee="exactly_once")
    check_outputs(log, df, bars, sums)


@settings(max_examples=40, deadline=None)
@given(st_h.lists(st_h.tuples(st_h.integers(0, 5), st_h.binary(max_size=700)), min_size=1, max_size=8),
       st_h.integers(1, 64), st_h.booleans())
def test_latest_picks_the_newest_complete_generation(
        gens: list[tuple[int, bytes]], size: int, torn: bool) -> None:
    """Generations written in order (chunked); a torn (incomplete) newest one is never chosen."""
    rows: dict[str, list[Any]] = {"generation": [], "chunk": [], "chunks": [], "fingerprint": [], "payload": []}
    written: list[tuple[int, bytes]] = []
    for g, (_, data) in enumerate(gens, start=1):
        pieces = state.chunks(data, size)
        for i, piece in enumerate(pieces):
            for k, v in zip(rows, (g, i, len(pieces), f"f{g}", piece), strict=True):
                rows[k].append(v)
        written.append((g, data))
    if torn and len(rows["chunk"]) > 1 and rows["chunks"][-1] > 1:  # drop the newest generation's last chunk
        for v in rows.values():
            v.pop()
        written.pop()
    got = state.latest(pa.table(rows, schema=state.CHANGELOG_SCHEMA))
    if not written:
        assert got is None
    else:
        gen, data = written[-1]
        assert got == (gen, f"f{gen}", data)


def test_snapshot_round_trip_and_bad_bytes() -> None:
    snap = state.Snapshot(tables={"rows": pa.table({"k": ["a", None], "v": [1.5, 2.0]})},
                          values={"watermark": -5, "sources": [["t", 0, 0]]}, blobs={"b": b"\x00\x01"})
    back = state.decode(state.encode(snap))
    assert back.tables["rows"].equals(snap.tables["rows"]) and back.values == snap.values and back.blobs == snap.blobs
    with pytest.raises(StateError, match="not an everstream state snapshot"):
        state.decode(b"nope")


def test_exactly_once_refuses_a_stateful_step_without_the_state_interface(tmp_path: Path) -> None:
    from everstream.engine.checkpoint import Checkpointer

    class Joinish:  # holds input (held_offsets) but cannot snapshot it
        def held_offsets(self) -> dict[tuple[str, int], int]:
            return {}

    log = EmbeddedLog(tmp_path / "d", durability="relaxed")
    tx = log.transactional_producer("t")
    try:
        with pytest.raises(EngineError, match=r"'j'.*at_least_once"):
            Checkpointer("app", log, tx, {"j": Joinish()})  # type: ignore[dict-item]
    finally:
        tx.close()
        log.close()


def test_a_zombie_runner_is_fenced(log: Log, names: Callable[[str], str]) -> None:
    app_name, src, bars, sums = _names(names)
    df = trades(1500, symbols=3, gap_ms=20)
    produce(log, src, df, partitions=1, chunk=500)
    app = build(app_name, src, bars, sums)
    zombie = app.runner(log, guarantee="exactly_once", commit_interval=3600.0, max_batch_events=200)
    zombie.cycle(timeout=0.2)
    successor = app.runner(log, guarantee="exactly_once", commit_interval=0.0)  # the task restarted elsewhere
    try:
        with pytest.raises(ProducerFencedError, match="fenced"):  # at its next write (Kafka) or commit
            zombie.cycle(timeout=0.2)
            zombie.commit()
        successor.catch_up()
        successor.finish()
    finally:
        successor.close()
        try:
            zombie.close()
        except Exception:
            pass
    check_outputs(log, df, bars, sums)


def test_changed_pipeline_keeps_compatible_state_and_refuses_incompatible(
        log: Log, names: Callable[[str], str]) -> None:
    app_name, src, bars, sums = _names(names)
    df = trades(2000, symbols=3, gap_ms=20)
    first = df.slice(0, 1000)
    produce(log, src, first, partitions=1)
    with build(app_name, src, bars, sums).runner(log, guarantee="exactly_once") as r:
        r.catch_up()
        r.commit()
    # the window step's aggregates changed: its state cannot be read any more
    changed = build(app_name, src, bars, sums, aggs=("n", "volume", "low"))
    with pytest.raises(StateIncompatibleError, match=r"'bars'.*name="):
        changed.runner(log, guarantee="exactly_once")
    # the same change under a new step name: that step starts empty, `running` keeps its sums
    renamed = build(app_name, src, names("bars2"), sums, window_name="bars_v2", aggs=("n", "volume", "low"))
    produce(log, src, df.slice(1000), partitions=1)
    renamed.run(log, until_idle=True, guarantee="exactly_once")
    got = read_topic(log, sums).select("symbol", "ts", "running").sort("symbol", "ts")
    assert got.with_columns(pl.col("ts", "running").cast(pl.Int64)).equals(
        sums_reference(df).cast({"running": pl.Int64}))


def test_bad_guarantee_and_interval_are_refused(log: Log, names: Callable[[str], str]) -> None:
    app_name, src, bars, sums = _names(names)
    produce(log, src, trades(10), partitions=1)
    app = build(app_name, src, bars, sums)
    with pytest.raises(ConfigError, match="exactly_once"):
        app.runner(log, guarantee="exactly-twice")
    with pytest.raises(ConfigError, match="commit_interval"):
        app.runner(log, guarantee="exactly_once", commit_interval=-1)


def test_damaged_changelog_is_a_clear_error(tmp_path: Path, names: Callable[[str], str]) -> None:
    log = EmbeddedLog(tmp_path / "data", durability="relaxed")
    app_name, src, bars, sums = _names(names)
    produce(log, src, trades(300, symbols=2, gap_ms=20), partitions=1)
    build(app_name, src, bars, sums).run(log, duration=0.5, guarantee="exactly_once")
    from everstream.engine.state import CHANGELOG_SCHEMA

    with log.producer() as p:  # a record that is not a snapshot, as the newest generation
        p.send_batch(changelog_topic_of(app_name, "bars"), pa.table(
            {"generation": [1 << 40], "chunk": [0], "chunks": [1], "fingerprint": ["x"], "payload": [b"junk"]},
            schema=CHANGELOG_SCHEMA), key=pa.array(["chunk-0"]))
    with pytest.raises(StateIncompatibleError, match="fingerprint"):
        build(app_name, src, bars, sums).runner(log, guarantee="exactly_once")
    log.close()


# ---------------------------------------------------------------------- kill -9 loop


def _open(target: str) -> Log:
    if target.startswith("kafka:"):
        from everstream.log.kafka import KafkaLog

        return KafkaLog(target.removeprefix("kafka:"))
    return EmbeddedLog(target, durability="relaxed")


def worker(target: str, app_name: str, src: str, bars: str, sums: str, mode: str, seed: int,
           say: Callable[[str], None] = lambda line: print(line, flush=True)) -> None:
    """One incarnation: restore, say "ready", process; ``final`` runs until idle and says "done"."""
    rng = random.Random(seed)
    log = _open(target)
    app = build(app_name, src, bars, sums)
    runner = app.runner(log, guarantee="exactly_once", commit_interval=rng.choice([0.0, 0.005, 0.02, 0.05]),
                        max_batch_events=rng.choice([40, 100, 200]))
    say("ready")
    if mode == "final":
        runner.run(until_idle=True)
        say("done")
    else:
        while True:  # until killed; says how much each cycle read
            n = runner.cycle()
            if n:
                say(f"read {n}")
    runner.close()
    log.close()


def _child(conn: Connection, args: tuple[Any, ...]) -> None:
    """Entry of a worker process forked from the fork server (imports done once, there)."""
    worker(*args, say=conn.send)


def _spawn(ctx: BaseContext, args: tuple[Any, ...]) -> tuple[BaseProcess, Connection]:
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, args), daemon=True)  # type: ignore[attr-defined]
    proc.start()
    child.close()
    return proc, parent


def _kill_loop(target: str, log: Log, names: Callable[[str], str]) -> None:
    seed = int(os.environ.get("EVERSTREAM_CRASH_SEED", str(random.randrange(1 << 30))))
    print(f"exactly-once kill loop on {target}: {ITERATIONS} kills, EVERSTREAM_CRASH_SEED={seed}")
    rng = random.Random(seed)
    app_name, src, bars, sums = _names(names)
    df = trades(PIECE * (ITERATIONS + 1), symbols=6, gap_ms=15, disorder_ms=400, seed=seed % 1000)
    pieces = [df.slice(i * PIECE, PIECE) for i in range(ITERATIONS + 1)]
    log.create_topic(es.TopicSpec(src, 2), exist_ok=True)
    # workers fork from a fork server that imported everstream once: a kill costs no interpreter start
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["everstream", "everstream.log.kafka", __name__])
    args = (target, app_name, src, bars, sums)
    killed_busy = progressed = 0
    for it in range(ITERATIONS):
        produce(log, src, pieces[it], partitions=2, chunk=150)
        proc, conn = _spawn(ctx, (*args, "kill", rng.randrange(1 << 30)))
        ready = threading.Event()
        seen: dict[str, float] = {"read": 0, "at": 0.0}

        def read(c: Connection = conn, ev: threading.Event = ready, seen: dict[str, float] = seen) -> None:
            try:
                while True:
                    line = c.recv()
                    if line == "ready":
                        ev.set()
                    elif line.startswith("read "):
                        seen["read"] += int(line.split()[1])
                        seen["at"] = time.monotonic()
            except (EOFError, OSError):  # killed
                return

        t = threading.Thread(target=read, daemon=True)
        t.start()
        t0 = time.monotonic()
        assert ready.wait(60), f"worker {it} never got ready (exit code {proc.exitcode})"
        print(f"kill {it}: ready after {time.monotonic() - t0:.2f} s")
        if rng.random() < 0.2:  # sometimes while it restores state and starts reading
            time.sleep(rng.uniform(0.0, 0.5))
        else:  # mostly while it processes: after its first read (Kafka's first fetch takes a while)
            deadline = time.monotonic() + 20
            while not seen["read"] and proc.is_alive() and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.3))
        alive = proc.is_alive()
        kill_at = time.monotonic()
        proc.kill()  # type: ignore[attr-defined]
        proc.join(10)
        conn.close()
        t.join(5)
        assert alive, f"worker {it} died by itself (exit code {proc.exitcode}); see its traceback above"
        # reading when killed (a cycle ended in the last 50 ms)? did this incarnation read anything?
        killed_busy += seen["at"] > 0 and kill_at - seen["at"] < 0.05
        progressed += seen["read"] > 0
    produce(log, src, pieces[-1], partitions=2, chunk=150)
    proc, conn = _spawn(ctx, (*args, "final", 1))
    proc.join(300)
    said = []
    try:
        while conn.poll():
            said.append(conn.recv())
    except EOFError:
        pass
    assert proc.exitcode == 0 and "done" in said, f"the final run failed (exit code {proc.exitcode}): {said}"
    check_outputs(log, df, bars, sums)
    print(f"{killed_busy} of {ITERATIONS} kills hit a worker while it was reading input, {progressed} incarnations "
          "read input; the output equals the reference")
    assert killed_busy >= ITERATIONS // 4, "too few kills hit a busy worker: the loop tests little"
    assert progressed >= ITERATIONS // 2, "too few incarnations read anything: the loop tests little"


@pytest.mark.crash
@pytest.mark.timeout(max(300, ITERATIONS * 15))
def test_kill_9_loop_exactly_once(log: Log, names: Callable[[str], str], tmp_path: Path) -> None:
    if log.kind == "embedded":
        assert isinstance(log, EmbeddedLog)
        target = str(log.data_dir)
    else:
        target = "kafka:" + log.bootstrap  # type: ignore[attr-defined]
    _kill_loop(target, log, names)


def test_benchmark_runs_and_both_guarantees_agree(tmp_path: Path) -> None:
    """The benchmark's fields (no timing asserted: numbers belong to `everstream bench exactly-once`)."""
    from everstream.bench.exactly_once import run

    got = run(20_000, symbols=20, repeat=1, restore_keys=5_000, latency_seconds=0.5, tmp=str(tmp_path))
    assert got["same_result"] is True
    assert got["restore_keys"] == 5_000
    for k in ("eo_events_per_s", "alo_events_per_s", "eo_latency_p99_ms", "restore_seconds_1m_keys"):
        assert got[k] > 0, k
