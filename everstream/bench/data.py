"""Seeded benchmark data: finance trades, quotes and card authorizations, and the Nexmark events.

Every generator is deterministic for a given ``(events, seed)``, vectorized (NumPy/Arrow, no
Python object per event) and returns an Arrow table whose **row order is the arrival order**.
``seq`` is the 0-based arrival position, used only to break ties between equal event times.

Event time ``ts`` (finance) / ``date_time`` (Nexmark) is a millisecond timestamp. Arrival order
differs from event-time order by a bounded disorder: every row's time is at least the highest
time of all earlier rows minus ``disorder_ms`` (2 s by default), so a watermark with
``max_delay >= disorder_ms`` sees no late event.

Finance spacing: ``events`` trades span ``span_s`` seconds of event time (25 minutes by
default, whatever ``events`` is), so 1-minute bars fire about 25 times per symbol and the
5-minute sliding windows about 29 times per account during a run, not only at end of input.

Nexmark follows the nexmark/nexmark Flink port's generator as far as
``docs/benchmarks.md`` (section "Nexmark generator") describes, with the deviations listed there.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from everstream.errors import ConfigError
from everstream.finance.simulator import TradeSimulator

BASE_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
DEFAULT_SPAN_S = 1_500.0
DEFAULT_DISORDER_MS = 2_000


def _check_events(events: int) -> None:
    if events <= 0:
        raise ConfigError(f"events must be positive, got {events}")


def _arrival_order(ts: np.ndarray, disorder_ms: int, rng: np.random.Generator) -> np.ndarray:
    """Permutation that delays each event by U[0, disorder_ms): bounded out-of-orderness."""
    if disorder_ms <= 0:
        return np.argsort(ts, kind="stable")
    arrival = ts.astype(np.float64) + rng.uniform(0.0, float(disorder_ms), size=len(ts))
    return np.argsort(arrival, kind="stable")


def _reorder(table: pa.Table, order: np.ndarray) -> pa.Table:
    table = table.take(pa.array(order))
    return table.add_column(0, "seq", pa.array(np.arange(table.num_rows, dtype=np.int64)))


# ---------------------------------------------------------------------------------------- finance


def trades(events: int, *, seed: int = 7, symbols: int = 500, accounts: int = 10_000,
           span_s: float = DEFAULT_SPAN_S, disorder_ms: int = DEFAULT_DISORDER_MS) -> pa.Table:
    """``seq, ts, trade_id, symbol, price, qty, account, side`` from the TradeSimulator."""
    _check_events(events)
    sim = TradeSimulator(seed=seed, symbols=symbols, accounts=accounts, rate_per_s=events / span_s,
                         start_ms=BASE_MS)
    step = 500_000
    table = pa.Table.from_batches([sim.next_batch(min(step, events - i)) for i in range(0, events, step)])
    ts = table.column("ts").cast(pa.int64()).to_numpy()
    return _reorder(table, _arrival_order(ts, disorder_ms, np.random.default_rng(seed + 1)))


def quotes(trade_table: pa.Table, *, seed: int = 7, per_trade: float = 0.5,
           disorder_ms: int = DEFAULT_DISORDER_MS) -> pa.Table:
    """``seq, ts, symbol, bid, ask``: about ``per_trade`` quotes per trade around the traded prices."""
    rng = np.random.default_rng(seed + 2)
    n = max(1, int(trade_table.num_rows * per_trade))
    pick = np.sort(rng.choice(trade_table.num_rows, size=n, replace=n > trade_table.num_rows))
    base = trade_table.take(pa.array(pick))
    ts = base.column("ts").cast(pa.int64()).to_numpy() - rng.integers(0, 500, size=n)
    mid = base.column("price").to_numpy()
    half = np.round(np.maximum(mid * rng.uniform(0.0001, 0.0005, size=n), 0.01), 2)
    table = pa.table({
        "ts": pa.array(ts, pa.timestamp("ms")),
        "symbol": base.column("symbol"),
        "bid": pa.array(np.round(mid - half, 2)),
        "ask": pa.array(np.round(mid + half, 2)),
    })
    return _reorder(table, _arrival_order(ts, disorder_ms, rng))


def cards(events: int, *, seed: int = 7, cards_n: int = 50_000, merchants: int = 2_000,
          span_s: float = 86_400.0, disorder_ms: int = DEFAULT_DISORDER_MS) -> tuple[pa.Table, list[str]]:
    """Card authorizations ``seq, ts, card, amount, merchant`` and the cards with an injected
    card-testing sequence (3–5 amounts below 2.00 10–90 s apart, then one above 500.00 30–120 s
    later). Background amounts: 97 % lognormal in [2, 500], 2 % below 2.00, 1 % above 500.00."""
    _check_events(events)
    rng = np.random.default_rng(seed + 3)
    n_inj = max(1, events // 5_000)
    inj_cards = rng.choice(cards_n, size=n_inj, replace=False)
    inj_rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for c in inj_cards:
        k = int(rng.integers(3, 6))
        t0 = BASE_MS + rng.uniform(0, span_s * 1000 - 1_200_000)
        gaps = np.cumsum(rng.uniform(10_000, 90_000, size=k))
        t_small = t0 + np.r_[0.0, gaps[:-1]]
        t_big = t_small[-1] + rng.uniform(30_000, 120_000)
        amts = np.r_[np.round(rng.uniform(0.5, 1.99, size=k), 2), np.round(rng.uniform(600, 2_000), 2)]
        inj_rows.append((np.full(k + 1, c), np.r_[t_small, t_big].astype(np.int64), amts))
    n_bg = events - sum(len(r[0]) for r in inj_rows)
    if n_bg < 0:
        raise ConfigError(f"events={events} is too small for the injected card-testing sequences")
    card = rng.integers(0, cards_n, size=n_bg)
    ts = (BASE_MS + np.sort(rng.uniform(0, span_s * 1000, size=n_bg))).astype(np.int64)
    amount = np.clip(np.round(rng.lognormal(3.5, 1.0, size=n_bg), 2), 2.0, 500.0)
    u = rng.random(n_bg)
    injected = np.isin(card, inj_cards)
    amount = np.where(~injected & (u < 0.02), np.round(rng.uniform(0.5, 1.99, size=n_bg), 2), amount)
    amount = np.where(~injected & (u > 0.99), np.round(rng.uniform(500.01, 5_000, size=n_bg), 2), amount)
    all_card = np.concatenate([card, *[r[0] for r in inj_rows]])
    all_ts = np.concatenate([ts, *[r[1] for r in inj_rows]])
    all_amt = np.concatenate([amount, *[r[2] for r in inj_rows]])
    names = pa.array([f"CARD{i:06d}" for i in range(cards_n)])
    mnames = pa.array([f"M{i:05d}" for i in range(merchants)])
    table = pa.table({
        "ts": pa.array(all_ts, pa.timestamp("ms")),
        "card": names.take(pa.array(all_card)),
        "amount": pa.array(all_amt),
        "merchant": mnames.take(pa.array(rng.integers(0, merchants, size=len(all_ts)))),
    })
    order = np.argsort(all_ts, kind="stable")
    table = table.take(pa.array(order))
    ts_sorted = all_ts[order]
    out = _reorder(table, _arrival_order(ts_sorted, disorder_ms, rng))
    return out, sorted(f"CARD{int(c):06d}" for c in inj_cards)


# ---------------------------------------------------------------------------------------- nexmark

FIRST_PERSON_ID = 1000
FIRST_AUCTION_ID = 1000
FIRST_CATEGORY_ID = 10
NUM_CATEGORIES = 5
PERSON_PROPORTION, AUCTION_PROPORTION, BID_PROPORTION = 1, 3, 46
PROPORTION = PERSON_PROPORTION + AUCTION_PROPORTION + BID_PROPORTION
HOT_AUCTION_RATIO, HOT_SELLER_RATIO, HOT_BIDDER_RATIO = 2, 4, 4
IN_FLIGHT_AUCTIONS, ACTIVE_PEOPLE = 100, 1000
HOT_CHANNELS = ("Google", "Facebook", "Baidu", "Apple")
US_STATES = ("AZ", "CA", "ID", "OR", "WA", "WY")
US_CITIES = ("Phoenix", "Los Angeles", "San Francisco", "Boise", "Portland", "Bend", "Redmond",
             "Seattle", "Kent", "Cheyenne")
FIRST_NAMES = ("Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter")
LAST_NAMES = ("Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris")

NEXMARK_SCHEMA = pa.schema([
    ("event_type", pa.int8()), ("date_time", pa.timestamp("ms")),
    ("p_id", pa.int64()), ("p_name", pa.string()), ("p_email", pa.string()), ("p_credit_card", pa.string()),
    ("p_city", pa.string()), ("p_state", pa.string()), ("p_extra", pa.string()),
    ("a_id", pa.int64()), ("a_item_name", pa.string()), ("a_description", pa.string()),
    ("a_initial_bid", pa.int64()), ("a_reserve", pa.int64()), ("a_expires", pa.timestamp("ms")),
    ("a_seller", pa.int64()), ("a_category", pa.int64()), ("a_extra", pa.string()),
    ("b_auction", pa.int64()), ("b_bidder", pa.int64()), ("b_price", pa.int64()), ("b_channel", pa.string()),
    ("b_url", pa.string()), ("b_extra", pa.string()),
])


def _pool(rng: np.random.Generator, n: int, lo: int, hi: int) -> pa.Array:
    """``n`` random lowercase strings with lengths in [lo, hi)."""
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)
    lengths = rng.integers(lo, hi, size=n)
    chars = letters[rng.integers(0, 26, size=int(lengths.sum()))]
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets.tobytes()), pa.py_buffer(chars.tobytes()))


def _take(pool: pa.Array, rng: np.random.Generator, n: int) -> pa.Array:
    return pool.take(pa.array(rng.integers(0, len(pool), size=n)))


def _price(rng: np.random.Generator, n: int) -> np.ndarray:
    """Log-uniform prices in cents, 100 .. 1e8 (the generator's ``nextPrice``)."""
    return np.round(10.0 ** (rng.random(n) * 6.0) * 100.0).astype(np.int64)


def nexmark(events: int, *, seed: int = 7, rate_per_s: float = 10_000.0,
            disorder_ms: int = DEFAULT_DISORDER_MS) -> pa.Table:
    """``events`` Nexmark events (Person:Auction:Bid = 1:3:46 by event number mod 50), one wide row
    each: ``event_type`` (0 person, 1 auction, 2 bid), ``date_time`` and the entity's fields with
    prefixes ``p_``, ``a_``, ``b_`` (null for the other kinds), then ``seq`` (arrival position).

    Event number ``i`` has time ``base + i * 1000 / rate_per_s`` ms (10,000 events/s by default,
    so 1 M events span 100 s: the 10 s windows of q5/q7/q11 fire ten times during a run)."""
    _check_events(events)
    rng = np.random.default_rng(seed)
    i = np.arange(events, dtype=np.int64)
    slot = i % PROPORTION
    epoch = i // PROPORTION
    kind = np.where(slot < PERSON_PROPORTION, 0, np.where(slot < PERSON_PROPORTION + AUCTION_PROPORTION, 1, 2))
    ts = BASE_MS + (i.astype(np.float64) * 1000.0 / rate_per_s).astype(np.int64)
    # ids of the latest person / auction generated at or before each event
    last_person = FIRST_PERSON_ID + epoch  # person of this epoch comes first (slot 0)
    auction_slot = np.clip(slot - PERSON_PROPORTION, -1, AUCTION_PROPORTION - 1)
    last_auction = FIRST_AUCTION_ID + epoch * AUCTION_PROPORTION + auction_slot
    last_auction = np.maximum(last_auction, FIRST_AUCTION_ID)

    is_p, is_a, is_b = kind == 0, kind == 1, kind == 2
    n_p, n_a, n_b = int(is_p.sum()), int(is_a.sum()), int(is_b.sum())
    cols: dict[str, pa.Array] = {}

    def spread(mask: np.ndarray, values: pa.Array, typ: pa.DataType) -> pa.Array:
        """Place ``values`` (one per row where ``mask``) into a column of ``events`` rows, null elsewhere."""
        idx = np.full(events, -1, dtype=np.int64)
        idx[mask] = np.arange(int(mask.sum()))
        return values.cast(typ).take(pa.array(idx, mask=idx < 0))

    # persons
    p_id = last_person[is_p]
    first = pa.array(FIRST_NAMES).take(pa.array(rng.integers(0, len(FIRST_NAMES), n_p)))
    last = pa.array(LAST_NAMES).take(pa.array(rng.integers(0, len(LAST_NAMES), n_p)))
    name = pc.binary_join_element_wise(first, last, " ")
    email = pc.binary_join_element_wise(_take(_pool(rng, 1000, 7, 8), rng, n_p),
                                        _take(_pool(rng, 1000, 5, 6), rng, n_p), "@")
    email = pc.binary_join_element_wise(email, pa.scalar(".com"), "")
    card = pc.binary_join_element_wise(
        *[pa.array(rng.integers(1000, 10000, n_p)).cast(pa.string()) for _ in range(4)], " ")
    cols["p_id"] = spread(is_p, pa.array(p_id), pa.int64())
    cols["p_name"] = spread(is_p, name, pa.string())
    cols["p_email"] = spread(is_p, email, pa.string())
    cols["p_credit_card"] = spread(is_p, card, pa.string())
    cols["p_city"] = spread(is_p, pa.array(US_CITIES).take(pa.array(rng.integers(0, len(US_CITIES), n_p))),
                            pa.string())
    cols["p_state"] = spread(is_p, pa.array(US_STATES).take(pa.array(rng.integers(0, len(US_STATES), n_p))),
                             pa.string())
    cols["p_extra"] = spread(is_p, _take(_pool(rng, 4096, 110, 170), rng, n_p), pa.string())

    # auctions
    a_id = last_auction[is_a]
    a_ts = ts[is_a]
    initial = _price(rng, n_a)
    reserve = initial + _price(rng, n_a)
    horizon_ms = int(100 * PROPORTION / AUCTION_PROPORTION * 1000.0 / rate_per_s) + 1
    expires = a_ts + rng.integers(1, 2 * horizon_ms + 1, size=n_a)
    lp = last_person[is_a]
    hot_seller = (lp - FIRST_PERSON_ID) // 100 * 100 + FIRST_PERSON_ID
    recent_seller = np.maximum(lp - rng.integers(0, ACTIVE_PEOPLE, size=n_a), FIRST_PERSON_ID)
    seller = np.where(rng.integers(0, HOT_SELLER_RATIO, size=n_a) > 0, hot_seller, recent_seller)
    cols["a_id"] = spread(is_a, pa.array(a_id), pa.int64())
    cols["a_item_name"] = spread(is_a, _take(_pool(rng, 4096, 20, 21), rng, n_a), pa.string())
    cols["a_description"] = spread(is_a, _take(_pool(rng, 4096, 100, 101), rng, n_a), pa.string())
    cols["a_initial_bid"] = spread(is_a, pa.array(initial), pa.int64())
    cols["a_reserve"] = spread(is_a, pa.array(reserve), pa.int64())
    cols["a_expires"] = spread(is_a, pa.array(expires), pa.int64())
    cols["a_seller"] = spread(is_a, pa.array(seller), pa.int64())
    cols["a_category"] = spread(is_a, pa.array(FIRST_CATEGORY_ID + rng.integers(0, NUM_CATEGORIES, n_a)),
                                pa.int64())
    cols["a_extra"] = spread(is_a, _take(_pool(rng, 4096, 300, 400), rng, n_a), pa.string())

    # bids
    la = last_auction[is_b]
    hot_auction = (la - FIRST_AUCTION_ID) // 100 * 100 + FIRST_AUCTION_ID
    in_flight = np.maximum(la - IN_FLIGHT_AUCTIONS + rng.integers(0, IN_FLIGHT_AUCTIONS + 10, size=n_b),
                           FIRST_AUCTION_ID)
    auction = np.where(rng.integers(0, HOT_AUCTION_RATIO, size=n_b) > 0, hot_auction, in_flight)
    lpb = last_person[is_b]
    hot_bidder = (lpb - FIRST_PERSON_ID) // 100 * 100 + FIRST_PERSON_ID + 1
    recent_bidder = np.maximum(lpb - rng.integers(0, ACTIVE_PEOPLE, size=n_b), FIRST_PERSON_ID)
    bidder = np.where(rng.integers(0, HOT_BIDDER_RATIO, size=n_b) > 0, hot_bidder, recent_bidder)
    hot = rng.random(n_b) < 0.5
    hot_pick = rng.integers(0, len(HOT_CHANNELS), size=n_b)
    chan_no = rng.integers(0, 10_000, size=n_b)
    chan_text = pa.array(chan_no).cast(pa.string())
    channel = pc.if_else(pa.array(hot), pa.array(HOT_CHANNELS).take(pa.array(hot_pick)),
                         pc.binary_join_element_wise(pa.scalar("channel-"), chan_text, ""))
    dirs = [_take(_pool(rng, 2048, 5, 6), rng, n_b) for _ in range(3)]
    url = pc.binary_join_element_wise(pa.scalar("https://www.nexmark.com"), *dirs,
                                      pa.scalar("item.htm?query=1"), "/")
    with_id = (~hot) & (rng.random(n_b) < 0.9)
    suffix = pc.if_else(pa.array(with_id), pc.binary_join_element_wise(pa.scalar("&channel_id="), chan_text, ""),
                        pa.scalar(""))
    url = pc.binary_join_element_wise(url, suffix, "")
    cols["b_auction"] = spread(is_b, pa.array(auction), pa.int64())
    cols["b_bidder"] = spread(is_b, pa.array(bidder), pa.int64())
    cols["b_price"] = spread(is_b, pa.array(_price(rng, n_b)), pa.int64())
    cols["b_channel"] = spread(is_b, channel, pa.string())
    cols["b_url"] = spread(is_b, url, pa.string())
    cols["b_extra"] = spread(is_b, _take(_pool(rng, 4096, 60, 80), rng, n_b), pa.string())

    arrays = [pa.array(kind.astype(np.int8)), pa.array(ts, pa.timestamp("ms"))]
    for f in list(NEXMARK_SCHEMA)[2:]:
        arrays.append(cols[f.name].cast(f.type))
    table = pa.Table.from_arrays(arrays, schema=NEXMARK_SCHEMA)
    return _reorder(table, _arrival_order(ts, disorder_ms, np.random.default_rng(seed + 9)))


# ---------------------------------------------------------------------------------------- storage


def cached_parquet(directory: Path, name: str, make: object) -> Path:
    """``directory/name.parquet``, written by ``make()`` (a table) unless it exists already."""
    path = directory / f"{name}.parquet"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        table = make() if callable(make) else None
        if not isinstance(table, pa.Table):
            raise ConfigError(f"cannot build benchmark data {name!r}")
        tmp = path.with_suffix(".parquet.tmp")
        pq.write_table(table, tmp, compression="zstd")
        tmp.replace(path)
    return path
