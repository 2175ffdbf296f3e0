"""The control plane's view of a running platform: captures, pipelines, topics, alerts.

One :class:`ControlPlane` is shared by whatever runs the platform (``everstream demo``) and the
HTTP server reading it. Producers register a :class:`Capture` and count what they write;
pipelines register their engine :class:`~everstream.engine.Runner`; :class:`TopicTail` threads
keep the latest rows of a topic (alerts, bars) in memory for the console. A sampler turns
counters into rates once a second, so any number of browsers can poll without disturbing them.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

import polars as pl
import pyarrow as pa

from everstream.errors import ConfigError
from everstream.log.contract import META_COLUMNS, Log

if TYPE_CHECKING:
    from everstream.engine.runtime import Runner


@dataclass
class Capture:
    """A producer writing into ``topic``: count what it sends with ``add``."""

    topic: str
    source: str
    events: int = 0
    rate: float = 0.0
    errors: list[str] = field(default_factory=list)

    def add(self, n: int) -> None:
        self.events += n


@dataclass
class _Pipeline:
    name: str
    runner: Runner
    description: str
    rate: float = 0.0
    last_in: int = 0
    error: str | None = None


class TopicTail:
    """The last ``keep`` rows of a topic, read by a background thread from the start (or the end)."""

    def __init__(self, log: Log, topic: str, keep: int = 500, start: str = "earliest") -> None:
        self.topic, self.keep = topic, keep
        self._log, self._start = log, start
        self._rows: deque[dict[str, Any]] = deque(maxlen=keep)
        self._lock = threading.Lock()
        self.total = 0
        self.error: str | None = None

    def run(self, stop: threading.Event) -> None:
        """Read until ``stop`` is set (the thread body); an error is kept and shown, never swallowed."""
        try:
            with self._log.consumer(start=self._start) as consumer:  # type: ignore[arg-type]
                parts = self._log.describe_topic(self.topic).spec.partitions
                consumer.assign([(self.topic, p) for p in range(parts)])
                while not stop.is_set():
                    for batch in consumer.poll(0.2):
                        rows = json_rows(batch)
                        with self._lock:
                            self._rows.extend(rows)
                            self.total += len(rows)
        except Exception as e:  # shown in the console and the summary
            self.error = f"{type(e).__name__}: {e}"

    def rows(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The newest rows first."""
        with self._lock:
            out = list(self._rows)
        out.reverse()
        return out[:limit] if limit is not None else out


class ControlPlane:
    """What the console and the REST API show; thread-safe for reading."""

    def __init__(self, log: Log, *, alerts_topic: str = "alerts", title: str = "everstream") -> None:
        self.log = log
        self.title = title
        self.alerts_topic = alerts_topic
        self.started = time.time()
        self._captures: dict[str, Capture] = {}
        self._pipelines: dict[str, _Pipeline] = {}
        self._tails: dict[str, TopicTail] = {}
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._last_sample = time.monotonic()
        self._last_events: dict[str, int] = {}

    # ------------------------------------------------------------------ registration

    def capture(self, topic: str, source: str) -> Capture:
        cap = self._captures[topic] = Capture(topic, source)
        return cap

    def pipeline(self, name: str, runner: Runner, description: str = "") -> None:
        self._pipelines[name] = _Pipeline(name, runner, description)

    def pipeline_failed(self, name: str, error: str) -> None:
        self._pipelines[name].error = error

    def tail(self, topic: str, keep: int = 500) -> TopicTail:
        """Start keeping the newest rows of ``topic`` (which must exist)."""
        t = self._tails[topic] = TopicTail(self.log, topic, keep)
        self._spawn(t.run, f"tail-{topic}")
        return t

    def start(self) -> None:
        """Start the once-a-second sampler (rates)."""
        self._spawn(self._sampler, "sampler")

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)

    def _spawn(self, target: Any, name: str) -> None:
        t = threading.Thread(target=target, args=(self._stop,) if target != self._sampler else (), daemon=True,
                             name=f"control-{name}")
        t.start()
        self._threads.append(t)

    def _sampler(self) -> None:
        while not self._stop.wait(1.0):
            self.sample()

    def sample(self) -> None:
        """Turn counters into per-second rates (called by the sampler thread)."""
        now = time.monotonic()
        dt = max(now - self._last_sample, 1e-6)
        with self._lock:
            for c in self._captures.values():
                key = f"capture:{c.topic}"
                c.rate = (c.events - self._last_events.get(key, 0)) / dt
                self._last_events[key] = c.events
            for pl_ in self._pipelines.values():
                events = pl_.runner.result().events_in
                pl_.rate = (events - pl_.last_in) / dt
                pl_.last_in = events
            self._last_sample = now

    # ------------------------------------------------------------------ views

    def summary(self) -> dict[str, Any]:
        """Headline numbers: events captured, rates, alerts by type, uptime."""
        with self._lock:
            captures = [{"topic": c.topic, "source": c.source, "events": c.events, "rate": round(c.rate),
                         "errors": list(c.errors)} for c in self._captures.values()]
        return {
            "title": self.title,
            "uptime_s": round(time.time() - self.started, 1),
            "events_captured": sum(c["events"] for c in captures),
            "capture_rate": sum(c["rate"] for c in captures),
            "captures": captures,
            "alerts": self.alert_counts(),
            "alerts_total": sum(self.alert_counts().values()),
        }

    def pipelines(self) -> list[dict[str, Any]]:
        """Per pipeline: events in/out, rate, processing latency percentiles, lag, watermark, errors."""
        out = []
        for pl_ in self._pipelines.values():
            r = pl_.runner
            res = r.result()
            hist = r.cycle_latency.to_dict()
            steps = res.metrics
            wms = [m["watermark"] for m in steps.values() if m.get("watermark") is not None]
            try:
                lag: int | None = r.lag()
            except Exception:  # the log is closing
                lag = None
            out.append({
                "name": pl_.name, "description": pl_.description, "events_in": res.events_in,
                "events_out": sum(m["events_in"] for m in steps.values() if m["kind"] == "sink"),
                "rate": round(pl_.rate), "latency_p50_ms": hist["p50_ms"], "latency_p99_ms": hist["p99_ms"],
                "latency_max_ms": round(hist["max_ms"], 2), "lag": lag,
                "watermark": max(wms) if wms else None, "late_events": res.late_events,
                "dead_letters": res.dead_letters, "windows_fired": res.windows_fired, "error": pl_.error,
                "steps": [{"step": sid, "kind": m["kind"], "events_in": m["events_in"], "events_out": m["events_out"],
                           "p99_ms": m["latency"]["p99_ms"]} for sid, m in steps.items()],
            })
        return out

    def topics(self) -> list[dict[str, Any]]:
        out = []
        for info in self.log.list_topics():
            out.append({"name": info.name, "partitions": info.spec.partitions,
                        "records": sum(p.end_offset for p in info.partitions),
                        "compact": info.spec.compact})
        return sorted(out, key=lambda t: str(t["name"]))

    def records(self, topic: str, limit: int = 20) -> list[dict[str, Any]]:
        """The newest ``limit`` records of ``topic`` (all partitions), newest first, JSON-ready."""
        if not self.log.has_topic(topic):
            raise ConfigError(f"topic {topic!r} does not exist; GET /api/topics lists them")
        limit = max(1, min(limit, 500))
        info = self.log.describe_topic(topic)
        rows: list[dict[str, Any]] = []
        with self.log.consumer(start="earliest") as consumer:
            consumer.assign([(topic, p.partition) for p in info.partitions])
            for p in info.partitions:
                consumer.seek(topic, p.partition, max(p.start_offset, p.end_offset - limit))
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline and any(
                    consumer.position(topic, p.partition) < p.end_offset for p in info.partitions):
                for b in consumer.poll(0.1):
                    rows.extend(json_rows(b, meta=True))
        rows.sort(key=lambda r: (r.get("_timestamp") or "", r.get("_offset") or 0), reverse=True)
        return rows[:limit]

    def alert_counts(self) -> dict[str, int]:
        tail = self._tails.get(self.alerts_topic)
        if tail is None:
            return {}
        counts: Counter[str] = Counter()
        with tail._lock:
            for r in tail._rows:
                counts[str(r.get("alert_type", "?"))] += 1
        return dict(counts)

    def alerts(self, limit: int = 100, alert_type: str | None = None) -> list[dict[str, Any]]:
        tail = self._tails.get(self.alerts_topic)
        if tail is None:
            return []
        rows = tail.rows()
        if alert_type:
            rows = [r for r in rows if r.get("alert_type") == alert_type]
        return rows[:limit]

    def rows(self, topic: str, limit: int = 200) -> list[dict[str, Any]]:
        """The newest rows of a tailed topic (``tail(topic)`` first)."""
        tail = self._tails.get(topic)
        if tail is None:
            raise ConfigError(f"topic {topic!r} is not tailed by this server; tailed: {sorted(self._tails)}")
        return tail.rows(limit)


def json_rows(batch: pa.RecordBatch | pa.Table, meta: bool = False) -> list[dict[str, Any]]:
    """Rows as JSON-ready dicts: datetimes as ISO text, bytes as text, NaN as None."""
    df = pl.from_arrow(batch)
    assert isinstance(df, pl.DataFrame)
    if not meta:
        df = df.select([c for c in df.columns if c not in META_COLUMNS])
    drop = [c for c in df.columns if c in ("_headers", "_topic")]
    df = df.drop(drop)
    return [{k: _jsonable(v) for k, v in row.items()} for row in df.iter_rows(named=True)]


def _jsonable(v: Any) -> Any:
    if isinstance(v, (datetime, date)):
        return v.isoformat()
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    return v
