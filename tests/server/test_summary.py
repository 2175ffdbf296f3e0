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
    assert isinstance(alerts, dict) and alerts.get("large_trade", 0) >= len(injected)
    pipelines = s["pipelines"]
    assert isinstance(pipelines, dict)
    for name, p in pipelines.items():
        assert p["error"] is None, f"pipeline {name} failed: {p['error']}"
        assert p["events_in"] == s["produced"], f"{name} did not read every trade"
        assert p["lag"] == 0
    assert s["events_captured"] == s["produced"] > 0
