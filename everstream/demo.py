"""``everstream demo``: trade capture and fan-out on the embedded log, with a live view.

A seeded simulator writes trades into the ``trades`` topic (keyed by symbol). Two consumer groups
read them independently, as a trading firm's downstream systems would:

- ``risk`` (two members sharing the partitions): gross notional and position per account;
- ``surveillance`` (one member): large trades (notional over 2,000,000) per symbol.

A Rich live view shows the produce rate, each group's rate and lag, until Ctrl-C or ``duration``.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from everstream.finance.simulator import TRADE_SCHEMA, TradeSimulator
from everstream.log.contract import Consumer, Log, TopicSpec
from everstream.log.open import open_log

TOPIC = "trades"
LARGE_NOTIONAL = 2_000_000.0


@dataclass
class _GroupStats:
    name: str
    members: int
    consumed: int = 0
    large: int = 0
    notional: float = 0.0
    errors: list[str] = field(default_factory=list)


def _consume(log: Log, stats: _GroupStats, stop: threading.Event, lock: threading.Lock) -> None:
    consumer: Consumer = log.consumer(stats.name, start="earliest", heartbeat_ms=500, session_timeout_ms=5000)
    try:
        consumer.subscribe([TOPIC])
        while not stop.is_set():
            batches = consumer.poll(0.2)
            n = large = 0
            notional = 0.0
            for b in batches:
                value = pc.multiply(b.column("price"), pc.cast(b.column("qty"), pa.float64()))
                n += b.num_rows
                notional += float(pc.sum(value).as_py() or 0.0)
                large += int(pc.sum(pc.greater(value, LARGE_NOTIONAL)).as_py() or 0)
            if batches:
                consumer.commit()
            with lock:
                stats.consumed += n
                stats.large += large
                stats.notional += notional
    except Exception as e:  # shown in the view and the summary: never silent
        with lock:
            stats.errors.append(f"{type(e).__name__}: {e}")
    finally:
        consumer.close()


def _lag(log: Log, group: str, ends: dict[int, int]) -> int:
    consumer = log.consumer(group)
    try:
        total = 0
        for p, end in ends.items():
            c = consumer.committed(TOPIC, p)
            total += end - (c or 0)
        return total
    finally:
        consumer.close()


def run_demo(
    data_dir: Path | None,
    broker: str | None,
    duration: float | None,
    rate: int,
    partitions: int,
    seed: int,
    live: bool = True,
) -> dict[str, Any]:
    data_dir = data_dir or Path(os.environ.get("EVERSTREAM_DATA") or "./everstream-data")
    log = open_log(broker, data_dir)
    log.create_topic(TopicSpec(TOPIC, partitions, schema=TRADE_SCHEMA), exist_ok=True)
    start_info = log.describe_topic(TOPIC)
    already = sum(p.end_offset for p in start_info.partitions)
    stop = threading.Event()
    lock = threading.Lock()
    groups = [_GroupStats("risk", 2), _GroupStats("surveillance", 1)]
    threads = [
        threading.Thread(target=_consume, args=(log, g, stop, lock), daemon=True, name=f"{g.name}-{i}")
        for g in groups
        for i in range(g.members)
    ]
    for t in threads:
        t.start()
    sim = TradeSimulator(seed=seed, rate_per_s=float(rate))
    produced = 0
    t0 = time.monotonic()
    last_view = 0.0
    console = Console(stderr=True)
    chunk = max(rate // 50, 1)  # 50 commits a second
    view = Live(console=console, refresh_per_second=4, transient=False) if live else None
    if view is not None:
        view.start()
    try:
        with log.producer(linger_ms=2) as producer:
            while duration is None or time.monotonic() - t0 < duration:
                due = int((time.monotonic() - t0) * rate) - produced
                if due <= 0:
                    time.sleep(0.005)
                else:
                    batch = sim.next_batch(min(due, chunk * 5))
                    producer.send_batch(TOPIC, batch, key="symbol", timestamp="ts")
                    produced += batch.num_rows
                now = time.monotonic()
                if now - last_view >= 0.5:
                    last_view = now
                    ends = {p.partition: p.end_offset for p in log.describe_topic(TOPIC).partitions}
                    snapshot = _snapshot(log, groups, lock, ends, produced, now - t0)
                    if view is not None:
                        view.update(_render(snapshot))
                    else:
                        console.print(_line(snapshot))
            producer.flush()
    except KeyboardInterrupt:
        pass
    finally:
        elapsed = time.monotonic() - t0
        deadline = time.monotonic() + 5  # let consumers catch up before the summary
        total = already + produced
        while time.monotonic() < deadline and any(g.consumed < total - already and not g.errors for g in groups):
            time.sleep(0.05)
        stop.set()
        for t in threads:
            t.join(timeout=5)
        ends = {p.partition: p.end_offset for p in log.describe_topic(TOPIC).partitions}
        snapshot = _snapshot(log, groups, lock, ends, produced, elapsed)
        if view is not None:
            view.update(_render(snapshot))
            view.stop()
        log.close()
    summary = {
        "produced": produced,
        "seconds": round(elapsed, 2),
        "produce_rate": round(produced / elapsed) if elapsed else 0,
        "groups": {g.name: {"consumed": g.consumed, "lag": snapshot["lag"][g.name], "large_trades": g.large,
                            "errors": g.errors} for g in groups},
        "data_dir": str(data_dir),
    }
    console.print(
        f"demo: produced {produced:,} trades in {elapsed:.1f}s ({summary['produce_rate']:,}/s); "
        + "; ".join(f"{g.name} consumed {g.consumed:,} (lag {snapshot['lag'][g.name]:,})" for g in groups)
    )
    return summary


def _snapshot(
    log: Log, groups: list[_GroupStats], lock: threading.Lock, ends: dict[int, int], produced: int, elapsed: float
) -> dict[str, Any]:
    with lock:
        rows = [(g.name, g.members, g.consumed, g.large, g.notional, list(g.errors)) for g in groups]
    return {
        "elapsed": elapsed,
        "produced": produced,
        "rows": rows,
        "lag": {g.name: _lag(log, g.name, ends) for g in groups},
    }


def _render(s: dict[str, Any]) -> Group:
    head = Table.grid(padding=(0, 2))
    rate = s["produced"] / s["elapsed"] if s["elapsed"] else 0
    head.add_row("[bold]everstream demo[/]", f"trades produced {s['produced']:,}", f"{rate:,.0f}/s",
                 f"{s['elapsed']:.1f}s")
    t = Table("group", "members", "consumed", "rate/s", "lag", "large trades", "notional", "errors")
    for name, members, consumed, large, notional, errors in s["rows"]:
        t.add_row(name, str(members), f"{consumed:,}", f"{consumed / s['elapsed'] if s['elapsed'] else 0:,.0f}",
                  f"{s['lag'][name]:,}", f"{large:,}", f"{notional:,.0f}", "; ".join(errors)[:60] or "-")
    return Group(head, t)


def _line(s: dict[str, Any]) -> str:
    parts = [f"t={s['elapsed']:.1f}s produced={s['produced']:,}"]
    for name, _m, consumed, large, _n, errors in s["rows"]:
        parts.append(f"{name}: consumed={consumed:,} lag={s['lag'][name]:,} large={large:,}"
                     + (f" errors={errors}" if errors else ""))
    return " | ".join(parts)


