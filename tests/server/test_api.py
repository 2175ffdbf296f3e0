"""The control plane's REST API and Prometheus endpoint, against a running demo."""

from __future__ import annotations

import time

import httpx
from demotools import Demo


def _wait(demo: Demo, path: str, ok: object, timeout: float = 30.0) -> object:
    deadline = time.monotonic() + timeout
    while True:
        body = demo.get(path).json()
        if ok(body):  # type: ignore[operator]
            return body
        assert time.monotonic() < deadline, f"{path}: condition not met within {timeout} s; last: {body}"
        time.sleep(0.5)


def test_summary_counts_grow_and_match_the_log(demo: Demo) -> None:
    """Events captured go up between two reads and never exceed what the trades topic holds."""
    first = demo.get("/api/summary").json()
    second = _wait(demo, "/api/summary", lambda s: s["events_captured"] > first["events_captured"])
    assert isinstance(second, dict)
    counted = {c["topic"]: c["events"] for c in second["captures"]}
    # what was counted as sent reaches the log (the producer commits shortly after it counts)
    _wait(demo, "/api/topics", lambda ts: all(t["records"] >= counted.get(t["name"], 0) for t in ts))
    topics = {t["name"]: t for t in demo.get("/api/topics").json()}
    assert second["events_captured"] == sum(c["events"] for c in second["captures"])
    assert topics["trades"]["partitions"] == 4


def test_pipelines_report_throughput_latency_and_lag(demo: Demo) -> None:
    pipes = _wait(demo, "/api/pipelines", lambda ps: all(p["events_in"] > 0 and p["latency_p50_ms"] > 0 for p in ps))
    assert isinstance(pipes, list)
    assert {p["name"] for p in pipes} == {"bars", "positions", "surveillance", "fraud", "takeover", "market_abuse"}
    for p in pipes:
        assert p["error"] is None
        assert p["latency_p99_ms"] >= p["latency_p50_ms"] > 0
        assert p["lag"] is not None and p["lag"] >= 0
    bars = next(p for p in pipes if p["name"] == "bars")
    assert {s["kind"] for s in bars["steps"]} >= {"source", "window", "sink"}


def test_topic_browser_returns_newest_records_first(demo: Demo) -> None:
    recs = demo.get("/api/topics/trades/records?limit=15").json()
    assert 0 < len(recs) <= 15
    stamps = [r["_timestamp"] for r in recs]
    assert stamps == sorted(stamps, reverse=True)
    assert {"symbol", "price", "qty", "_partition", "_offset"} <= set(recs[0])
    assert demo.get("/api/topics/no-such-topic/records").status_code == 404
    assert demo.get("/api/topics/trades/records?limit=0").status_code == 422


def test_alerts_include_the_injected_fat_finger_trades(demo: Demo) -> None:
    alerts = _wait(demo, "/api/alerts", lambda a: any(x["key"].startswith("FATFINGER-") for x in a))
    assert isinstance(alerts, list)
    hit = next(x for x in alerts if x["key"].startswith("FATFINGER-"))
    assert hit["alert_type"] == "large_trade" and hit["score"] > 5_000_000
    only = demo.get("/api/alerts?alert_type=large_trade").json()
    assert only and all(a["alert_type"] == "large_trade" for a in only)


def test_produce_control_messages_and_bad_input(demo: Demo) -> None:
    """Good records are written; a non-array body is refused; an unknown topic is a 404; nothing is lost."""
    url = demo.url + "api/produce/alerts"
    ok = httpx.post(url, json=[{"alert_type": "manual", "key": "ops", "detail": "test message"}], timeout=10)
    assert ok.status_code == 200 and ok.json()["received"] == 1
    assert httpx.post(url, json={"not": "a list"}, timeout=10).status_code == 422
    assert httpx.post(url, json=[1, 2], timeout=10).status_code == 422
    assert httpx.post(demo.url + "api/produce/nope", json=[{"a": 1}], timeout=10).status_code == 404
    _wait(demo, "/api/alerts?alert_type=manual", lambda a: any(x["key"] == "ops" for x in a))


def test_prometheus_metrics_and_openapi(demo: Demo) -> None:
    text = demo.get("/metrics").text
    assert "everstream_captured_events_total{topic=\"trades\"}" in text
    assert "everstream_pipeline_events_in_total{pipeline=\"bars\"}" in text
    assert "everstream_pipeline_latency_p99_ms{pipeline=\"surveillance\"}" in text
    spec = demo.get("/openapi.json").json()
    assert {"/api/summary", "/api/pipelines", "/api/topics", "/api/alerts"} <= set(spec["paths"])
    js = demo.get("/static/plotly.min.js")
    assert js.status_code == 200 and len(js.content) > 1_000_000  # served from the plotly wheel
    assert demo.get("/static/../../etc/passwd").status_code == 404
