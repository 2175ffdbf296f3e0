"""The ready fraud and surveillance patterns find every injected case and nothing on clean background."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq
import pytest
from brute import RStage, matches

import everstream as es
from everstream.finance import market, patterns, payments


def _find(name: str, events: pl.DataFrame) -> pl.DataFrame:
    factory, by = patterns.READY[name]
    out = es.cep.find(factory(), events, by=list(by), time="ts")
    assert isinstance(out, pl.DataFrame)
    return out


@pytest.fixture(scope="module")
def orders() -> payments.Simulated:
    return market.order_events(12_000, cases=4, seed=11)


@pytest.mark.parametrize("name", ["spoofing", "layering", "wash_trade"])
def test_market_patterns_find_every_injected_case(orders: payments.Simulated, name: str) -> None:
    _, by = patterns.READY[name]
    got = _find(name, orders.events)
    want = orders.cases.filter(pl.col("kind") == name).select(*by).sort(list(by))
    assert got.select(*by).sort(list(by)).equals(want)
    stages = [s.name for s in patterns.READY[name][0]().stages]
    assert all(got[s].list.len().min() >= 1 for s in stages)  # every alert carries its events


def test_market_patterns_are_silent_on_clean_background() -> None:
    clean = market.order_events(12_000, cases=0, seed=5)
    for name in ("spoofing", "layering", "wash_trade"):
        assert _find(name, clean.events).height == 0, name


def test_spoofing_alert_carries_the_four_events(orders: payments.Simulated) -> None:
    got = _find("spoofing", orders.events).row(0, named=True)
    assert [e["event"] for s in ("bait", "opposite", "fill", "cancel") for e in got[s]] == \
        ["new", "new", "fill", "cancel"]
    assert got["bait"][0]["order_id"] == got["cancel"][0]["order_id"]
    assert got["opposite"][0]["side"] != got["bait"][0]["side"]


def test_account_takeover() -> None:
    sim = payments.account_events(1_500, takeovers=6, seed=2)
    got = _find("account_takeover", sim.events)
    assert sorted(got["account"].to_list()) == sorted(sim.cases["account"].to_list())
    assert all(t[0]["amount"] >= 5_000 for t in got["transfer"].to_list())
    clean = payments.account_events(1_500, takeovers=0, seed=2)
    assert _find("account_takeover", clean.events).height == 0


def test_card_testing_and_its_clean_background() -> None:
    sim = payments.card_authorizations(30_000, seed=4, cards=3_000)
    got = _find("card_testing", sim.events)
    assert sorted(got["card"].to_list()) == sim.cases["card"].to_list()
    clean = sim.events.filter(~pl.col("card").is_in(sim.cases["card"].implode()))
    assert _find("card_testing", clean).height == 0


def test_w5_benchmark_reference_agrees_with_the_matcher(tmp_path: Path) -> None:
    """The benchmark's plain-Python card-testing scan and the NFA agree on dense data (few cards)."""
    from everstream.bench import data
    from everstream.bench.queries import _w5_reference

    table, _ = data.cards(20_000, seed=9, cards_n=40, span_s=3_600.0)
    pq.write_table(table, tmp_path / "cards.parquet")
    want = _w5_reference({"cards": tmp_path / "cards.parquet"})
    got = es.cep.find(patterns.card_testing(), pl.from_arrow(table), by="card", time="ts")  # type: ignore[arg-type]
    assert isinstance(got, pl.DataFrame)
    got = got.select("card", pl.col("match_start").dt.epoch("ms"), pl.col("match_end").dt.epoch("ms"),
                     n_small=pl.col("small").list.len().cast(pl.Int64))
    key = ["card", "match_start"]
    assert want.height > 10  # background bursts as well as the injected ones
    assert got.sort(key).equals(want.drop("large_amount").sort(key))


# ---------------------------------------------------------------------- the ready patterns vs the brute-force reference

Ev = dict[str, Any]
SoFar = dict[str, list[Ev]]


def _touch(e: Ev) -> bool:
    return bool(e["price"] >= e["bid"]) if e["side"] == "B" else bool(e["price"] <= e["ask"])


def _away(e: Ev) -> bool:
    return bool(e["price"] < e["bid"]) if e["side"] == "B" else bool(e["price"] > e["ask"])


def _layer(e: Ev, m: SoFar) -> bool:
    ls = m["layers"]
    return e["event"] == "new" and _away(e) and (
        not ls or (e["side"] == ls[0]["side"] and all(e["price"] != x["price"] for x in ls)))


def _cancels_layer(e: Ev, m: SoFar) -> bool:
    live = {x["order_id"] for x in m["layers"]} - {x["order_id"] for x in m["cancels"]}
    return e["event"] == "cancel" and e["order_id"] in live


def _mirror(e: Ev, m: SoFar) -> bool:
    a = m["first"][0] if m["first"] else None
    return e["event"] == "fill" and a is not None and (e["side"], e["qty"], e["price"], e["venue"]) == (
        "S" if a["side"] == "B" else "B", a["qty"], a["price"], a["venue"])


#: each ready pattern restated from research/finance.md §1–2 as plain-Python stages for brute.matches:
#: (stages, within ms, skip); the skip is skip_past_last_event for all five
REFERENCE: dict[str, tuple[list[RStage], int]] = {
    "card_testing": ([RStage("small", lambda e: e["amount"] < 2.0, min=3, max=None),
                      RStage("large", lambda e: e["amount"] > 500.0)], 600_000),
    "account_takeover": ([RStage("new_device", lambda e: e["event"] == "login" and bool(e["new_device"])),
                          RStage("credential_change", lambda e: e["event"] == "credential_change"),
                          RStage("new_payee", lambda e: e["event"] == "add_payee"),
                          RStage("transfer", lambda e: e["event"] == "transfer" and e["amount"] >= 5_000)], 3_600_000),
    "spoofing": ([RStage("bait", lambda e: e["event"] == "new" and e["qty"] >= 5_000 and _touch(e)),
                  RStage("opposite", lambda e, m: e["event"] == "new" and e["side"] != m["bait"][0]["side"]),
                  RStage("fill", lambda e, m: e["event"] == "fill" and e["order_id"] == m["opposite"][0]["order_id"]),
                  RStage("cancel", lambda e, m: e["event"] == "cancel" and e["order_id"] == m["bait"][0]["order_id"])],
                 30_000),
    "layering": ([RStage("layers", _layer, min=3, max=None),
                  RStage("execution", lambda e, m: e["event"] == "fill" and e["side"] != m["layers"][0]["side"]),
                  RStage("cancels", _cancels_layer, min=3, max=3)], 60_000),
    "wash_trade": ([RStage("first", lambda e: e["event"] == "fill"),
                    RStage("second", _mirror, contig="any")], 1),
}


def _brute_all(name: str, events: pl.DataFrame) -> list[tuple[Any, ...]]:
    stages, within = REFERENCE[name]
    by = list(patterns.READY[name][1])
    rows = events.with_row_index("_i").with_columns(pl.col("ts").dt.epoch("ms").alias("_t")) \
        .sort([*by, "_t", "_i"])
    out = []
    for key, group in rows.group_by(by, maintain_order=True):
        evs = group.to_dicts()
        for _, _, pairs in matches(stages, evs, time="_t", within=within, skip=("skip_past_last_event", None)):
            out.append((*key, tuple(sorted((evs[x]["_i"], s) for x, s in pairs))))
    return sorted(out)


def _found_all(name: str, events: pl.DataFrame) -> list[tuple[Any, ...]]:
    by = list(patterns.READY[name][1])
    stages = [s.name for s in patterns.READY[name][0]().stages if not s.negative]
    got = _find(name, events.with_row_index("_i"))
    out = []
    for row in got.iter_rows(named=True):
        pairs = sorted((e["_i"], s) for s in stages for e in row[s])
        out.append((*(row[k] for k in by), tuple(pairs)))
    return sorted(out)


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_ready_patterns_equal_the_brute_force_reference(name: str, orders: payments.Simulated) -> None:
    """Every match of each ready pattern (all its events, by stage) equals the brute-force matcher's
    over the same simulated data (injected cases and background), per key."""
    if name == "card_testing":
        sim = payments.card_authorizations(20_000, seed=4, cards=2_000)
        events = sim.events.drop("seq")
    elif name == "account_takeover":
        events = payments.account_events(400, takeovers=3, seed=2).events
    else:
        events = orders.events
    want = _brute_all(name, events)
    assert len(want) >= 3, f"{name}: the simulated data holds too few cases to test anything"
    assert _found_all(name, events) == want
