"""The demo's end-of-run summary (runs last: it waits for the demo process to finish)."""

from __future__ import annotations

from demotools import Demo


def test_summary_lists_every_injected_case_as_alerted(demo: Demo) -> None:
    s = demo.summary()
    injected = s["injected"]
    assert isinstance(injected, list) and len(injected) >= 5  # one every 5 s over 40 s
    missed = [c for c in injected if not c["alerted"]]
    assert not missed, f"injected cases without an alert: {missed}"
    alerts = s["alerts"]
    assert isinstance(alerts, dict)
    for kind in {c["alert_type"] for c in injected}:
        assert alerts.get(kind, 0) >= sum(c["alert_type"] == kind for c in injected), kind
    pipelines = s["pipelines"]
    captured = s["captured"]
    assert isinstance(pipelines, dict) and isinstance(captured, dict)
    reads = {"bars": "trades", "positions": "trades", "surveillance": "trades", "fraud": "payments",
             "takeover": "account_events", "market_abuse": "orders"}
    assert set(pipelines) == set(reads)
    for name, p in pipelines.items():
        assert p["error"] is None, f"pipeline {name} failed: {p['error']}"
        assert p["events_in"] == captured[reads[name]] > 0, f"{name} did not read every event of {reads[name]}"
        assert p["lag"] == 0
    kinds = {c["alert_type"] for c in injected}
    assert kinds == {"large_trade", "card_testing", "account_takeover", "spoofing", "layering", "wash_trade"}
    assert s["events_captured"] == s["produced"] == sum(captured.values())
