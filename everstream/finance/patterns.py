"""Ready CEP patterns for fraud and market surveillance (definitions: shared/research/finance.md §1–2).

Each function returns an :class:`everstream.cep.Pattern`; run it with
``stream.match(pattern, by=...)`` (the key each docstring names) or over a frame with
``es.cep.find``. Every alert row carries the matched events, one list column per stage.

Input contracts (what the simulators in :mod:`everstream.finance.payments` and
:mod:`everstream.finance.market` produce):

- card authorizations: ``ts, card, amount, merchant``;
- account events: ``ts, account, event`` (``login``, ``credential_change``, ``add_payee``,
  ``transfer``, ...), ``new_device`` (bool, logins), ``amount`` (transfers);
- order events: ``ts, symbol, account, firm, order_id, event`` (``new``, ``cancel``, ``fill``),
  ``side`` (``B``/``S``), ``price``, ``qty``, ``venue``, and the NBBO as of the event ``bid``, ``ask``.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from everstream.cep.pattern import Pattern, pattern, skip_past_last_event
from everstream.engine.time import Duration

Event = dict[str, Any]
Match = dict[str, list[Event]]


def card_testing(small: float = 2.00, large: float = 500.00, count: int = 3, within: Duration = "10m") -> Pattern:
    """Card testing, keyed by ``card``: ``count`` or more authorizations under ``small`` then one over
    ``large`` on the same card within ``within`` (one alert per burst: skip past the last event)."""
    return (pattern("small").where(pl.col("amount") < small).times(count, None)
            .followed_by("large").where(pl.col("amount") > large)
            .within(within).after_match(skip_past_last_event()))


def account_takeover(large: float = 5_000.00, within: Duration = "1h") -> Pattern:
    """Account takeover, keyed by ``account``: a login from a new device, then a credential change,
    then a new payee, then a transfer of at least ``large``, within ``within``."""
    ev = pl.col("event")
    return (pattern("new_device").where((ev == "login") & pl.col("new_device"))
            .followed_by("credential_change").where(ev == "credential_change")
            .followed_by("new_payee").where(ev == "add_payee")
            .followed_by("transfer").where((ev == "transfer") & (pl.col("amount") >= large))
            .within(within).after_match(skip_past_last_event()))


def _at_or_inside_touch() -> pl.Expr:
    buy = pl.col("side") == "B"
    return pl.when(buy).then(pl.col("price") >= pl.col("bid")).otherwise(pl.col("price") <= pl.col("ask"))


def _opposite(stage: str) -> Any:
    return lambda e, m: bool(m[stage]) and e["side"] != m[stage][0]["side"]


def spoofing(large_qty: int = 5_000, within: Duration = "30s") -> Pattern:
    """Spoofing (FINRA / Trillium's five steps), keyed by ``(account, symbol)``: a large visible order
    at or inside the NBBO, an order on the opposite side, that opposite order filling, then the first
    order cancelled — within ``within``."""
    ev = pl.col("event")
    return (pattern("bait").where((ev == "new") & (pl.col("qty") >= large_qty) & _at_or_inside_touch())
            .followed_by("opposite").where(ev == "new").where(_opposite("bait"))
            .followed_by("fill").where(ev == "fill")
            .where(lambda e, m: e["order_id"] == m["opposite"][0]["order_id"])
            .followed_by("cancel").where(ev == "cancel")
            .where(lambda e, m: e["order_id"] == m["bait"][0]["order_id"])
            .within(within).after_match(skip_past_last_event()))


def layering(levels: int = 3, within: Duration = "60s") -> Pattern:
    """Layering (FINRA), keyed by ``(account, symbol)``: ``levels`` or more new orders on one side at
    distinct price levels away from the NBBO, an execution on the opposite side, then cancellation of
    ``levels`` of the layered orders — within ``within``."""
    ev = pl.col("event")
    away = (pl.when(pl.col("side") == "B").then(pl.col("price") < pl.col("bid"))
            .otherwise(pl.col("price") > pl.col("ask")))

    def same_side_new_level(e: Event, m: Match) -> bool:
        layers = m["layers"]
        return not layers or (e["side"] == layers[0]["side"] and all(e["price"] != x["price"] for x in layers))

    def cancels_a_layer(e: Event, m: Match) -> bool:
        ids = {x["order_id"] for x in m["layers"]} - {x["order_id"] for x in m["cancels"]}
        return bool(e["order_id"] in ids)

    return (pattern("layers").where((ev == "new") & away).where(same_side_new_level).times(levels, None)
            .followed_by("execution").where(ev == "fill").where(_opposite("layers"))
            .followed_by("cancels").where(ev == "cancel").where(cancels_a_layer).times(levels)
            .within(within).after_match(skip_past_last_event()))


def wash_trade(within: Duration = "1ms") -> Pattern:
    """Wash / cross trade (Trillium), keyed by ``(symbol, firm)``: two executions on opposite sides
    by the same firm (one account: wash; two: cross) with the same size, price and venue in the same
    millisecond."""
    def mirror(e: Event, m: Match) -> bool:
        a = m["first"][0]
        return bool(e["side"] != a["side"] and e["qty"] == a["qty"] and e["price"] == a["price"]
                and e["venue"] == a["venue"])

    ev = pl.col("event")
    return (pattern("first").where(ev == "fill")
            .followed_by_any("second").where(ev == "fill").where(mirror)
            .within(within).after_match(skip_past_last_event()))


#: pattern factory, key columns and the simulator's case label of each ready pattern
READY: dict[str, tuple[Any, tuple[str, ...]]] = {
    "card_testing": (card_testing, ("card",)),
    "account_takeover": (account_takeover, ("account",)),
    "spoofing": (spoofing, ("account", "symbol")),
    "layering": (layering, ("account", "symbol")),
    "wash_trade": (wash_trade, ("symbol", "firm")),
}
