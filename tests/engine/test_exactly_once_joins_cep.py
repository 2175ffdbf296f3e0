"""Exactly-once for join and CEP steps: their state is checkpointed and restored, results stay exact.

Three kinds of test, on both logs (the ``log`` fixture):

- **stop/restart**: the input arrives in pieces; for each piece a runner processes a few polls,
  commits, processes more, and is closed without committing (a crash: the open transaction and
  the in-memory state are lost); a last runner drains the input. The committed outputs must equal
  the batch references exactly (Polars ``join_asof``, DuckDB, ``es.cep.find``): no duplicate, no
  missing, no wrong row. Without restored state the held rows and partial matches are gone and
  the outputs differ (checked by hand with ``restore_state`` disabled: every one of them fails).
- **kill -9**: one app with an as-of join and the card-testing pattern, run in worker processes
  killed with SIGKILL at random points (``EVERSTREAM_CRASH_ITERATIONS``; a fork server as in
  ``test_exactly_once.py``), then a last run; same references.
- **snapshot round trip** per operator, in-process: an operator is snapshotted mid-stream, encoded,
  decoded and restored into a fresh operator; the fresh one must produce exactly what the original
  produces from there on (same rows, same order).
"""

from __future__ import annotations

import multiprocessing
import os
import random
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from enginetools import BASE_MS, produce, trades
from test_exactly_once import _open
from test_joins import _orders_execs, duck, polars_asof, quotes, same

import everstream as es
from everstream.cep.operator import MatchOp
from everstream.engine import plan as p
from everstream.engine import state
from everstream.engine.aggregates import EVENT_TIME
from everstream.engine.checkpoint import Checkpointer, changelog_topic_of
from everstream.engine.join_base import JoinOperator
from everstream.engine.join_interval import IntervalJoinOp, WindowJoinOp
from everstream.engine.joins import AsofJoinOp, AsofSpec, IntervalSpec, LookupJoinOp, LookupSpec, WindowJoinSpec
from everstream.engine.operators import Ctx
from everstream.engine.testing import FakeServices, read_topic
from everstream.engine.time import MAX_TIME
from everstream.errors import StateIncompatibleError
from everstream.finance import patterns
from everstream.log import EmbeddedLog, Log

DELAY = "1500ms"
KILLS = min(int(os.environ.get("EVERSTREAM_CRASH_ITERATIONS", "6")), 50)
CARD_TESTING = patterns.card_testing(within="60s")


def card_auths(n: int, *, seed: int, cards: int = 40, span_ms: int = 600_000, disorder_ms: int = 1500) -> pl.DataFrame:
    """Dense authorizations (many partial card-testing matches in flight at any moment): ``ts`` (ms,
    unique), ``card``, ``amount`` (30 % under 2.00, 4 % over 500.00), arriving out of order."""
    rng = np.random.default_rng(seed)
    ts = BASE_MS + np.sort(rng.choice(span_ms, size=n, replace=False)).astype(np.int64)
    u = rng.random(n)
    amount = np.where(u < 0.3, np.round(rng.uniform(0.5, 1.99, n), 2),
                      np.where(u > 0.96, np.round(rng.uniform(600, 2000, n), 2), np.round(rng.uniform(5, 400, n), 2)))
    df = pl.DataFrame({"ts": ts, "card": [f"C{i:04d}" for i in rng.integers(0, cards, n)], "amount": amount})
    return df[np.argsort(ts + rng.uniform(0, disorder_ms, n), kind="stable")]


# ---------------------------------------------------------------------- references


def check_asof(log: Log, out: str, t: pl.DataFrame, q: pl.DataFrame) -> None:
    same(read_topic(log, out), polars_asof(t, q, strategy="nearest"), ["ts"])


def check_interval(log: Log, out: str, orders: pl.DataFrame, execs: pl.DataFrame) -> None:
    want = duck("""SELECT o.ts, coalesce(o.order_id, e.order_id) AS order_id, o.qty, e.ts AS ts_right, e.px
                   FROM o FULL JOIN e ON o.order_id = e.order_id AND e.ts BETWEEN o.ts AND o.ts + 5000""",
                o=orders, e=execs)
    same(read_topic(log, out), want, ["order_id", "ts", "ts_right"])


def _matches(df: pl.DataFrame, end: str = "match_end") -> list[tuple[Any, ...]]:
    """(card, start, end, small amounts, large amounts) per match, sorted: comparable across logs."""
    rows = df.with_columns(pl.col("match_start", end).dt.epoch("ms")).select(
        "card", "match_start", end, pl.col("small").list.eval(pl.element().struct.field("amount")),
        pl.col("large").list.eval(pl.element().struct.field("amount")))
    return sorted(tuple(tuple(v) if isinstance(v, list) else v for v in r) for r in rows.iter_rows())


def check_cep(log: Log, out: str, timeouts: str, df: pl.DataFrame) -> None:
    want = es.cep.find(CARD_TESTING, df, by="card", time="ts", timeouts=True)
    assert isinstance(want, tuple)
    found, gone = want
    assert found.height > 10 and gone.height > 100  # the data exercises matches and time-outs
    got = read_topic(log, out)
    assert got.height == found.height, f"engine gave {got.height} matches, es.cep.find {found.height}"
    assert _matches(got) == _matches(found)
    got_gone = read_topic(log, timeouts)
    assert got_gone.height == gone.height, f"engine gave {got_gone.height} time-outs, es.cep.find {gone.height}"
    assert _matches(got_gone, "timed_out_at") == _matches(gone, "timed_out_at")


# ---------------------------------------------------------------------- stop/restart


def _busy_cycles(runner: Any, k: int) -> int:
    """Cycle until ``k`` polls brought events, or one brought none after some did (Kafka's first fetch can
    take a while); returns events read."""
    read, busy, deadline = 0, 0, time.monotonic() + 15
    while busy < k and time.monotonic() < deadline:
        n = runner.cycle(timeout=0.2)
        if not n and read:
            break
        read += n
        busy += n > 0
    return read


def run_with_crashes(log: Log, app: es.App, pieces: list[list[tuple[str, pl.DataFrame, str]]]) -> int:
    """Each piece but the last: produce it, a runner commits after 3 busy polls, reads 2 more and dies
    uncommitted. Then the last piece and a runner to the end. Returns events read by the dead runners
    after their last commit (work that had to be redone)."""
    redone = 0
    for piece in pieces[:-1]:
        for topic, df, key in piece:
            produce(log, topic, df, partitions=2, chunk=150, key=key)
        r = app.runner(log, guarantee="exactly_once", commit_interval=3600.0, max_batch_events=60)
        _busy_cycles(r, 3)
        r.commit()
        redone += _busy_cycles(r, 2)
        r.close()  # the open transaction is discarded, the state in memory lost
    for topic, df, key in pieces[-1]:
        produce(log, topic, df, partitions=2, chunk=150, key=key)
    app.run(log, until_idle=True, guarantee="exactly_once", commit_interval=0.02, max_batch_events=300)
    return redone


def _split(df: pl.DataFrame, n: int) -> list[pl.DataFrame]:
    size = -(-df.height // n)
    return [df.slice(i * size, size) for i in range(n)]


def test_asof_join_stop_restart_equals_polars(log: Log, names: Callable[[str], str]) -> None:
    """Nearest as-of join (waiting trades, right rows kept per key) across 3 crashes: Polars join_asof."""
    t = trades(1600, seed=21, disorder_ms=1500)
    q = quotes(1200, seed=22, exact_from=t)
    tt, qt, out = names("trades"), names("quotes"), names("out")
    app = es.App(names("asof-eo"))
    left = app.stream(tt).with_watermark("ts", max_delay=DELAY)
    right = app.stream(qt).with_watermark("ts", max_delay=DELAY)
    left.join_asof(right, on="ts", by="symbol", direction="nearest", name="enrich").to(out)
    pieces = [[(tt, a, "symbol"), (qt, b, "symbol")] for a, b in zip(_split(t, 4), _split(q, 4), strict=True)]
    assert run_with_crashes(log, app, pieces) > 0
    check_asof(log, out, t, q)
    assert read_topic(log, changelog_topic_of(app.name, "enrich")).height > 0


def test_interval_join_stop_restart_equals_duckdb(log: Log, names: Callable[[str], str]) -> None:
    """Full outer interval join (both sides held, matched flags) across 3 crashes: DuckDB's FULL JOIN."""
    orders, execs = _orders_execs(23)
    ot, et, out = names("orders"), names("execs"), names("out")
    app = es.App(names("interval-eo"))
    o = app.stream(ot).with_watermark("ts", max_delay=DELAY)
    e = app.stream(et).with_watermark("ts", max_delay=DELAY)
    o.join_interval(e, on=("ts", "ts"), by="order_id", lower="0s", upper="5s", how="full").to(out)
    pieces = [[(ot, a, "order_id"), (et, b, "order_id")]
              for a, b in zip(_split(orders, 4), _split(execs, 4), strict=True)]
    assert run_with_crashes(log, app, pieces) > 0
    check_interval(log, out, orders, execs)


def test_card_testing_stop_restart_equals_find(log: Log, names: Callable[[str], str]) -> None:
    """Card testing (3+ small then a large within 60 s, skip past last event) across 3 crashes: the
    matches and the time-outs equal es.cep.find over the whole frame."""
    df = card_auths(3000, seed=24)
    src, out, gone = names("auths"), names("alerts"), names("timeouts")
    app = es.App(names("cep-eo"))
    app.stream(src).with_watermark("ts", max_delay="2s").match(CARD_TESTING, by="card", name="card_testing",
                                                                timeouts=gone).to(out)
    assert run_with_crashes(log, app, [[(src, piece, "card")] for piece in _split(df, 4)]) > 0
    check_cep(log, out, gone, df)


def test_changed_pattern_is_refused(log: Log, names: Callable[[str], str]) -> None:
    """The stored partial matches belong to the pattern: a changed pattern (or changed join) is refused."""
    df = card_auths(400, seed=25)
    src, t2 = names("auths"), names("other")
    produce(log, src, df, key="card")
    produce(log, t2, df, key="card")

    def build(pattern: es.cep.Pattern, within: str) -> es.App:
        app = es.App(names("refuse"))
        s = app.stream(src).with_watermark("ts", max_delay="2s")
        s.match(pattern, by="card", name="m").to(names("alerts"))
        s.join_interval(app.stream(t2).with_watermark("ts"), by="card", lower="0s", upper=within,
                        name="j").to(names("pairs"))
        return app

    with build(CARD_TESTING, "1s").runner(log, guarantee="exactly_once") as r:
        r.catch_up()
        r.commit()
    with pytest.raises(StateIncompatibleError, match=r"'m'"):
        build(patterns.card_testing(within="90s"), "1s").runner(log, guarantee="exactly_once")
    with pytest.raises(StateIncompatibleError, match=r"'j'"):
        build(CARD_TESTING, "2s").runner(log, guarantee="exactly_once")
    build(CARD_TESTING, "1s").runner(log, guarantee="exactly_once").close()  # unchanged: restores


# ---------------------------------------------------------------------- kill -9


def build_combined(app_name: str, tt: str, qt: str, src: str, joined: str, alerts: str, gone: str) -> es.App:
    """An as-of join and the card-testing pattern in one app (two changelogged stateful steps)."""
    app = es.App(app_name)
    left = app.stream(tt).with_watermark("ts", max_delay=DELAY)
    left.join_asof(app.stream(qt).with_watermark("ts", max_delay=DELAY), on="ts", by="symbol",
                   direction="nearest", name="enrich").to(joined)
    app.stream(src).with_watermark("ts", max_delay="2s").match(CARD_TESTING, by="card", name="card_testing",
                                                                timeouts=gone).to(alerts)
    return app


def _worker(conn: Connection, target: str, topics: tuple[str, ...], mode: str, seed: int) -> None:
    """One incarnation in a forked process: restore, say "ready", then cycle until killed (or, ``final``,
    to the end of the input)."""
    rng = random.Random(seed)
    log = _open(target)
    runner = build_combined(*topics).runner(log, guarantee="exactly_once",
                                             commit_interval=rng.choice([0.0, 0.01, 0.05]),
                                             max_batch_events=rng.choice([50, 150]))
    conn.send("ready")
    if mode == "final":
        runner.run(until_idle=True)
        conn.send("done")
    else:
        while True:
            n = runner.cycle()
            if n:
                conn.send(n)
    runner.close()
    log.close()


@pytest.mark.crash
@pytest.mark.timeout(300)
def test_kill_9_asof_join_and_cep(log: Log, names: Callable[[str], str]) -> None:
    """SIGKILL the worker at random points KILLS times while input arrives, then a last run: the join's
    and the pattern's committed outputs (time-outs included) equal the batch references."""
    seed = int(os.environ.get("EVERSTREAM_CRASH_SEED", str(random.randrange(1 << 30))))
    print(f"join/CEP kill loop on {log.kind}: {KILLS} kills, EVERSTREAM_CRASH_SEED={seed}")
    rng = random.Random(seed)
    target = str(log.data_dir) if isinstance(log, EmbeddedLog) else "kafka:" + log.bootstrap  # type: ignore[attr-defined]
    topics = (names("eo"), names("trades"), names("quotes"), names("auths"), names("joined"), names("alerts"),
              names("timeouts"))
    _, tt, qt, src, joined, alerts, gone = topics
    t = trades(2400, seed=seed % 1000, disorder_ms=1500)
    q = quotes(1800, seed=seed % 1000 + 1)
    cards = card_auths(3500, seed=seed % 1000 + 2)
    parts = [_split(x, KILLS + 1) for x in (t, q, cards)]
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["everstream", "everstream.log.kafka", __name__])
    busy = 0
    for it in range(KILLS + 1):
        for topic, df, key in ((tt, parts[0][it], "symbol"), (qt, parts[1][it], "symbol"), (src, parts[2][it], "card")):
            produce(log, topic, df, partitions=2, chunk=100, key=key)
        final = it == KILLS
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_worker, args=(child, target, topics, "final" if final else "kill",  # type: ignore[attr-defined]
                                                 rng.randrange(1 << 30)), daemon=True)
        proc.start()
        child.close()
        if final:
            proc.join(120)
            said = []
            try:
                while parent.poll():
                    said.append(parent.recv())
            except EOFError:
                pass
            assert proc.exitcode == 0 and "done" in said, f"the final run failed (exit code {proc.exitcode})"
            break
        seen = {"read": 0, "ready": False}

        def listen(c: Connection = parent, seen: dict[str, Any] = seen) -> None:
            try:
                while True:
                    msg = c.recv()
                    if msg == "ready":
                        seen["ready"] = True
                    else:
                        seen["read"] += int(msg)
            except (EOFError, OSError):
                return

        th = threading.Thread(target=listen, daemon=True)
        th.start()
        deadline = time.monotonic() + 60
        while not seen["read"] and proc.is_alive() and time.monotonic() < deadline:  # processing: then kill
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.25))
        alive = proc.is_alive()
        proc.kill()  # type: ignore[attr-defined]
        proc.join(10)
        parent.close()
        th.join(5)
        assert alive, f"worker {it} died by itself (exit code {proc.exitcode}); see its traceback above"
        busy += seen["read"] > 0
    assert busy >= KILLS // 2, "too few incarnations read anything before their kill: the loop tests little"
    check_asof(log, joined, t, q)
    check_cep(log, alerts, gone, cards)


# ---------------------------------------------------------------------- snapshot round trips (in-process)


def _services() -> FakeServices:
    """Round trips expect neither late rows nor dead letters: either fails the test at once."""
    return FakeServices("roundtrip", late="fail", dead="fail")


def _feed(make: Callable[[], Any], batches: list[tuple[int, pl.DataFrame]], cut: int | None,
          lag: int = 1500) -> tuple[pl.DataFrame, list[pl.DataFrame], state.Snapshot | None]:
    """Drive an operator over (side, batch) pairs, advancing after each with the watermarks the batches
    imply; at ``cut``, continue on a fresh operator restored from the encoded snapshot. Returns the
    outputs, the side outputs and the snapshot taken."""
    op = make()
    wm = [-MAX_TIME, -MAX_TIME]
    outs: list[pl.DataFrame] = []
    snap = None

    def advance(o: Any) -> None:
        if isinstance(o, JoinOperator):
            o.side_watermarks = lambda: (wm[0], wm[1])
        got = o.advance(min(wm) if isinstance(o, JoinOperator) else wm[0])
        if got is not None and got.height:
            outs.append(got)

    for i, (side, df) in enumerate(batches):
        if i == cut:
            snap = op.snapshot_state()
            fresh = make()
            assert fresh.state_fingerprint() == op.state_fingerprint()
            fresh.restore_state(state.decode(state.encode(snap)))
            fresh.services.side = op.services.side
            op = fresh
        op.process(df, Ctx("in", side, ("left", "right")[side]))
        wm[side] = max(wm[side], int(df[EVENT_TIME].max()) - lag)  # type: ignore[arg-type]
        advance(op)
    wm[0] = wm[1] = MAX_TIME
    advance(op)
    return pl.concat(outs, how="diagonal_relaxed"), op.services.side, snap


def _sides(left: pl.DataFrame, right: pl.DataFrame, chunk: int) -> list[tuple[int, pl.DataFrame]]:
    """Both inputs (arrival order) as alternating batches with event time and offsets."""
    out: list[tuple[int, pl.DataFrame]] = []
    for side, df in ((0, left), (1, right)):
        df = df.with_columns(pl.col("ts").alias(EVENT_TIME), pl.int_range(pl.len(), dtype=pl.Int64).alias("_offset"))
        out += [(side, df.slice(i, chunk)) for i in range(0, df.height, chunk)]
    return sorted(out, key=lambda x: (x[1]["ts"][0], x[0]))  # interleaved by time, as a runtime would see them


def _roundtrip(make: Callable[[], Any], batches: list[tuple[int, pl.DataFrame]], frames: tuple[str, ...]) -> None:
    whole, side, _ = _feed(make, batches, None)
    assert whole.height > 0
    held: dict[str, int] = dict.fromkeys(frames, 0)
    for cut in range(3, len(batches) - 2, max(1, len(batches) // 6)):
        got, got_side, snap = _feed(make, batches, cut)
        assert snap is not None
        for f in frames:
            held[f] += snap.tables[f].num_rows if f in snap.tables else 0
        assert got.equals(whole), f"restored at batch {cut}: the output differs from the uninterrupted run"
        assert len(got_side) == len(side) and all(a.equals(b) for a, b in zip(got_side, side, strict=True))
    assert all(held.values()), f"rows held at the cuts: {held}: the test tests little"


def _join(spec: Any, cls: type) -> Callable[[], Any]:
    return lambda: cls(p.Join("j", ("left", "right"), spec=spec), _services(), lambda: (-MAX_TIME, -MAX_TIME))


@pytest.mark.parametrize("direction", ["backward", "forward", "nearest"])
def test_asof_snapshot_round_trip(direction: str) -> None:
    t = trades(1200, seed=31, disorder_ms=1500)
    q = quotes(900, seed=32)
    spec = AsofSpec(("symbol",), "ts", "ts", direction, True, 2000)  # type: ignore[arg-type]
    _roundtrip(_join(spec, AsofJoinOp), _sides(t, q, 100), ("waiting", "right"))
    other = AsofSpec(("symbol",), "ts", "ts", direction, True, 3000)  # type: ignore[arg-type]
    assert _join(spec, AsofJoinOp)().state_fingerprint() != _join(other, AsofJoinOp)().state_fingerprint()


def test_stream_table_snapshot_round_trip() -> None:
    t = trades(1200, seed=33, disorder_ms=1500)
    lim = quotes(300, seed=34, gap_ms=1000).rename({"symbol": "account"}).with_columns(
        pl.col("account").str.replace("S", "A"))
    spec = AsofSpec(("account",), "ts", "ts", "backward", True, None, grace_ms=3000, table=True)
    _roundtrip(_join(spec, AsofJoinOp), _sides(t, lim, 100), ("waiting", "right"))


def test_interval_snapshot_round_trip() -> None:
    orders, execs = _orders_execs(35)
    for how in ("inner", "full"):
        spec = IntervalSpec(("order_id",), "ts", "ts", -1000, 5000, how)  # type: ignore[arg-type]
        _roundtrip(_join(spec, IntervalJoinOp), _sides(orders, execs, 60), ("left", "right"))


def test_window_join_snapshot_round_trip() -> None:
    t = trades(800, seed=36, disorder_ms=1500, gap_ms=300)
    q = quotes(600, seed=37, gap_ms=400)
    for window in (es.tumbling("10s"), es.hopping("10s", every="5s")):
        spec = WindowJoinSpec(window, ("symbol",), "left")
        _roundtrip(_join(spec, WindowJoinOp), _sides(t, q, 80), ("left", "right"))


@pytest.mark.parametrize("pattern", [
    CARD_TESTING,
    patterns.card_testing(within="60s").after_match(es.cep.no_skip()),
    es.pattern("a").where(pl.col("amount") < 2).next("b").where(pl.col("amount") < 100).times(2)
    .followed_by("c").where(lambda e: e["amount"] > 500).within("90s"),
], ids=["card_testing", "no_skip", "strict_with_python_condition"])
def test_match_snapshot_round_trip(pattern: es.cep.Pattern) -> None:
    """Buffered events, candidate rows, partial matches (shared event chains), per-key positions (strict
    contiguity) and the time-out heap survive a snapshot: matches and time-outs continue identically."""
    df = card_auths(2500, seed=38, cards=60, span_ms=300_000).with_columns(pl.col("ts").alias(EVENT_TIME))
    step = p.Match("m", ("src",), pattern=pattern, by=("card",), timeouts="t")
    batches = [(0, df.slice(i, 100)) for i in range(0, df.height, 100)]
    whole, side, _ = _feed(lambda: MatchOp(step, _services()), batches, None, lag=2000)
    assert whole.height > 10 and side
    for cut in (5, len(batches) // 2, len(batches) - 3):
        got, got_side, snap = _feed(lambda: MatchOp(step, _services()), batches, cut, lag=2000)
        assert snap is not None and snap.tables["partials"].num_rows > 0 and snap.tables["waiting"].num_rows > 0
        assert got.equals(whole), f"restored at batch {cut}: the matches differ from the uninterrupted run"
        assert pl.concat(got_side).equals(pl.concat(side)), f"restored at batch {cut}: the time-outs differ"
    changed = p.Match("m", ("src",), pattern=patterns.card_testing(within="61s"), by=("card",))
    assert MatchOp(changed, _services()).state_fingerprint() != MatchOp(step, _services()).state_fingerprint()


def test_match_snapshot_without_keys_and_with_two_keys() -> None:
    df = card_auths(1500, seed=39, cards=20, span_ms=200_000).with_columns(
        pl.col("ts").alias(EVENT_TIME), (pl.col("card").str.slice(-1) == "1").alias("flag"))
    batches = [(0, df.slice(i, 100)) for i in range(0, df.height, 100)]
    for by in ((), ("card", "flag")):
        step = p.Match("m", ("src",), pattern=CARD_TESTING, by=by, timeouts=False)

        def make(s: p.Match = step) -> MatchOp:
            return MatchOp(s, _services())

        whole, _, _ = _feed(make, batches, None, lag=2000)
        got, _, snap = _feed(make, batches, len(batches) // 2, lag=2000)
        assert snap is not None and snap.tables["partials"].num_rows > 0
        assert got.equals(whole), f"by={by}: restored output differs"


def test_lookup_join_is_stateless_and_joins_and_matches_are_checkpointed(tmp_path: Path) -> None:
    """A lookup join holds nothing between batches (its lookup's cache is not checkpointed): exactly-once
    takes it without state; join and match steps are tracked with their changelogs. (Operators that hold
    input without the state interface are still refused: test_exactly_once.py.)"""

    class Table:
        def get(self, keys: pl.DataFrame) -> pl.DataFrame:
            return keys.with_columns(pl.lit(1).alias("limit"))

    lookup = LookupJoinOp(p.Join("lk", ("left",), spec=LookupSpec(Table(), ("a",), ("a",))), _services())
    assert state.state_of(lookup) is None
    join: Any = _join(IntervalSpec(("k",), "ts", "ts", 0, 1, "inner"), IntervalJoinOp)()
    match: Any = MatchOp(p.Match("m", ("src",), pattern=CARD_TESTING, by=("card",)), _services())
    assert state.state_of(join) is join and state.state_of(match) is match
    log = EmbeddedLog(tmp_path / "d", durability="relaxed")
    tx = log.transactional_producer("t")
    try:
        ops: dict[str, Any] = {"lk": lookup, "j": join, "m": match}
        cp = Checkpointer("app", log, tx, ops)
        assert sorted(t.step_id for t in cp.tracked) == ["j", "m"]
    finally:
        tx.close()
        log.close()
