"""The on-arrival step's tiered (LSM-style) state at scale: about a million retained rows per family driven
through hundreds of small batches give exactly the features of the earlier single-sorted-part state (kept
verbatim in ``online_legacy.py``), while runs merge, get capped and age out whole; snapshots cross between
the two layouts both ways. Timing is measured in ``benchmarks/online_bench.py``, never here."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from online_legacy import LegacyFamilyState
from polars.testing import assert_frame_equal

import everstream.engine.online as online
from everstream.engine.features import rolling_count, rolling_sum, time_since_last
from everstream.engine.operators import Ctx
from everstream.engine.time import MIN_TIME
from everstream.errors import StateError

MIN = 60_000
PARTS = (
    online.Family(("card",), {"card_n_10m": rolling_count("10m"), "card_n_1h": rolling_count("1h"),
                              "card_sum_1h": rolling_sum("amount", "1h"), "card_gap": time_since_last()}),
    online.Family(("card", "merchant"), {"pair_gap": time_since_last()}),
    online.Family(("merchant",), {"merchant_n_1h": rolling_count("1h"),
                                  "merchant_sum_10m": rolling_sum("amount", "10m")}),
)
OUTS = ("card_n_10m", "card_n_1h", "card_sum_1h", "card_gap", "pair_gap", "merchant_n_1h", "merchant_sum_10m")
MAX_DELAY = 10 * MIN  # retention: 1 h + 10 min; every event below arrives at most 5 min late (all timely)


def _op(state: type | None = None) -> online.OnlineFeaturesOp:
    spec = online.OnlineSpec(PARTS, OUTS, MAX_DELAY, frozenset(("txn_id",)))
    step = online.OnlineStep(step_id="scale.online", inputs=(), pattern=spec, by=(), timeouts=False)

    class Services:
        app_name = "test"

    return online.OnlineFeaturesOp(step, Services(), spec, state)  # type: ignore[arg-type]


def _payments(n: int, start: int, step_ms: float, late_ms: int, seed: int, first_id: int, hot: float
              ) -> pl.DataFrame:
    """``n`` payments in arrival order, event times ``step_ms`` apart and up to ``late_ms`` late; a share
    ``hot`` of them from 500 hot cards and 200 hot merchants (so small batches find history), the rest
    spread over 200 k cards and 100 k merchants (so big batches do not gather the whole state)."""
    rng = np.random.default_rng(seed)
    card = np.where(rng.random(n) < hot, rng.integers(0, 500, n), rng.integers(0, 200_000, n))
    merchant = np.where(rng.random(n) < hot, rng.integers(0, 200, n), rng.integers(0, 100_000, n))
    ts = (start + np.arange(n) * step_ms).astype(np.int64) - rng.integers(0, late_ms + 1, n)
    return pl.DataFrame({"txn_id": np.arange(first_id, first_id + n, dtype=np.int64), "card": card,
                         "merchant": merchant, "amount": np.round(rng.lognormal(3, 1, n), 2), "_event_time": ts})


def test_a_million_retained_rows_through_small_batches_equal_the_single_part_state(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """1 M warm rows (50 k batches), then 600 batches of 25 over 60 minutes of event time: every feature of
    every event equals the earlier implementation's. Small L0 and run cap so runs flush, merge, get capped
    and the oldest drop whole; half way each side continues from the OTHER layout's snapshot."""
    monkeypatch.setattr(online, "_L0_ROWS", 512)
    monkeypatch.setattr(online, "_RUN_MAX", 1 << 17)
    end = 1_767_225_600_000
    warm = _payments(1_000_000, end - 60 * MIN, 3.6, 0, seed=1, first_id=0, hot=0.02)
    live = _payments(15_000, end, 240.0, 5 * MIN, seed=2, first_id=1_000_000, hot=0.5)  # 60 minutes
    new, old = _op(), _op(LegacyFamilyState)
    got: dict[str, list[pl.DataFrame]] = {"new": [], "old": []}
    ctx = Ctx("pay", 0)

    def feed(part: pl.DataFrame) -> None:
        for name, op in (("new", new), ("old", old)):
            out = op.process(part, ctx)
            assert out is not None
            got[name].append(out.select("txn_id", *OUTS))

    for a in range(0, warm.height, 50_000):
        feed(warm.slice(a, 50_000))
    card, pair, merchant = (f for f in new.families if f is not None)
    assert card.rows == merchant.rows == warm.height and len(card.runs) >= 5
    assert pair.rows < warm.height // 2  # a since-last family keeps max_delay (10 of the 60 minutes)
    for b in range(0, 300 * 25, 25):
        feed(live.slice(b, 25))
    # 30 minutes on, the cut (newest - 80 min) passed the warm's first 10 minutes: the runs merged small,
    # the oldest 100 k run went whole, the keys' pruned times are kept; still about a million rows
    assert 1 < len(card.runs) < 30 and card.delta_rows < 512
    assert len(card.runs[0]) == 100_000 and card.runs[0].tmax > end - 50 * MIN
    assert 880_000 < card.rows < 920_000
    assert (card.pruned_last > MIN_TIME).sum() > 50_000
    # cross the layouts: the new state continues from the legacy snapshot and vice versa
    snap_new, snap_old = new.snapshot_state(), old.snapshot_state()
    new, old = _op(), _op(LegacyFamilyState)
    new.restore_state(snap_old)
    old.restore_state(snap_new)
    for b in range(300 * 25, live.height, 25):
        feed(live.slice(b, 25))

    a_new, a_old = pl.concat(got["new"]), pl.concat(got["old"])
    assert a_new.height == warm.height + live.height
    assert_frame_equal(a_new, a_old, check_exact=False, rel_tol=1e-9, abs_tol=1e-6)
    # a sample checked against plain Python: count of the card's arrivals so far within (t - 1 h, t]
    every = pl.concat([warm, live]).with_row_index("arrival")
    for txn in (1_000_007, 1_007_777, 1_014_999):
        row = every.filter(pl.col("txn_id") == txn).row(0, named=True)
        t, i = row["_event_time"], row["arrival"]
        mine = every.filter((pl.col("card") == row["card"]) & (pl.col("arrival") <= i)
                            & (pl.col("_event_time") <= t) & (pl.col("_event_time") > t - 60 * MIN))
        assert a_new.filter(pl.col("txn_id") == txn).get_column("card_n_1h")[0] == mine.height
        assert a_new.filter(pl.col("txn_id") == txn).get_column("card_sum_1h")[0] == pytest.approx(
            mine.get_column("amount").sum())


def test_snapshot_rows_keep_the_single_part_order_and_a_shuffled_snapshot_restores() -> None:
    """Snapshots list rows by (key id, arrival) whatever the runs (the earlier format); a snapshot whose rows
    come in another order is sorted on restore; a snapshot without a family's tables is refused by name."""
    data = _payments(6_000, 1_767_225_600_000, 50.0, 2 * MIN, seed=4, first_id=0, hot=0.5)
    op = _op()
    old = online._L0_ROWS
    online._L0_ROWS = 100
    try:
        for a in range(0, data.height, 37):
            op.process(data.slice(a, 37), Ctx("pay", 0))
    finally:
        online._L0_ROWS = old
    assert len(next(f for f in op.families if f is not None).runs) > 2
    snap = op.snapshot_state()
    rows = pl.from_arrow(snap.tables["f0.rows"])
    assert isinstance(rows, pl.DataFrame)
    assert rows.height == data.height and rows.equals(rows.sort("kid", "seq"))
    rest = data.slice(3_000, 600).with_columns((pl.col("txn_id") + 10_000).alias("txn_id"),
                                               (pl.col("_event_time") + 300_000).alias("_event_time"))
    want = op.process(rest, Ctx("pay", 0))
    shuffled = dict(snap.tables)
    shuffled["f0.rows"] = rows.sample(fraction=1.0, shuffle=True, seed=3).to_arrow()
    again = _op()
    again.restore_state(type(snap)(tables=shuffled, values=snap.values))
    assert want is not None
    assert_frame_equal(again.process(rest, Ctx("pay", 0)), want)  # type: ignore[arg-type]
    del shuffled["f2.last"]
    with pytest.raises(StateError, match="f2"):
        _op().restore_state(type(snap)(tables=shuffled, values=snap.values))


def test_time_since_last_stays_exact_when_runs_prune_at_different_cuts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs prune at their own merge, so a key may keep an older row in a capped run while a newer one of it
    is pruned from a later run: its next event's time since last is the newer one (plain Python and the
    whole-state pruning of the earlier layout agree)."""
    monkeypatch.setattr(online, "_L0_ROWS", 1)
    monkeypatch.setattr(online, "_RUN_MAX", 2)
    parts = (online.Family(("k",), {"gap": time_since_last()}),)
    spec = online.OnlineSpec(parts, ("gap",), 800, None)  # retention: 800 ms; the cut: newest - 1600 ms
    step = online.OnlineStep(step_id="gap.online", inputs=(), pattern=spec, by=(), timeouts=False)

    class Services:
        app_name = "test"

    ops = [online.OnlineFeaturesOp(step, Services(), spec)]  # type: ignore[arg-type]
    monkeypatch.setattr(online, "_FamilyState", LegacyFamilyState)
    ops.append(online.OnlineFeaturesOp(step, Services(), spec))  # type: ignore[arg-type]
    # K@100 and X@1000 make a capped run; K@200 (800 ms late, timely) is pruned when its run merges after Y@2000
    events = [("K", 100), ("X", 1000), ("K", 200), ("Y", 2000), ("K", 1500)]
    for op in ops:
        gaps = []
        for k, t in events:
            out = op.process(pl.DataFrame({"k": [k], "_event_time": [t]}), Ctx("pay", 0))
            assert out is not None
            gaps.append(out.get_column("gap")[0])
        assert gaps == [None, None, 100.0, None, 1300.0]  # 1500 - 200, not 1500 - 100
    lsm = ops[0].families[0]
    assert lsm is not None and [len(r) for r in lsm.runs] == [2, 2]  # the scenario happened: K@100 kept, K@200 not
    assert 100 in lsm.runs[0].ts and lsm.pruned_last[lsm.keys["K"]] == 200
