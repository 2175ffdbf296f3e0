"""The ready fraud and surveillance patterns find every injected case and nothing on clean background."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

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
