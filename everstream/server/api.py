"""The control-plane HTTP server: REST API (OpenAPI at ``/docs``), Prometheus ``/metrics``, web console.

``create_app(control)`` returns a FastAPI app over a :class:`ControlPlane`; ``serve`` runs it with
uvicorn in a background thread. The console is this package's own HTML/JS; its chart library is
``plotly.min.js`` served from the installed ``plotly`` wheel (no CDN, nothing vendored).
"""

from __future__ import annotations

import threading
import time
from importlib import resources
from pathlib import Path
from typing import Any

import plotly
import uvicorn
from fastapi import Body, FastAPI, HTTPException, Query
from fastapi.responses import FileResponse, HTMLResponse, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from everstream.errors import ConfigError, EverstreamError
from everstream.server.control import ControlPlane

_STATIC = resources.files("everstream.server") / "static"
_PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def create_app(control: ControlPlane) -> FastAPI:
    """The FastAPI app: ``/api/*`` (JSON), ``/metrics`` (Prometheus text), ``/`` (console)."""
    app = FastAPI(title=f"{control.title} control plane", version="1",
                  description="Topics, pipelines and their metrics, alerts, and control messages.")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(control))

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def console() -> str:
        return (_STATIC / "console.html").read_text()

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        if name == "plotly.min.js":
            return FileResponse(_PLOTLY_JS, media_type="application/javascript")
        if name not in ("console.js", "console.css"):
            raise HTTPException(404, f"no static file {name!r}")
        media = "application/javascript" if name.endswith(".js") else "text/css"
        return Response((_STATIC / name).read_text(), media_type=media)

    @app.get("/api/summary")
    def summary() -> dict[str, Any]:
        """Events captured (total and per capture topic), rates, alerts by type, uptime."""
        return control.summary()

    @app.get("/api/pipelines")
    def pipelines() -> list[dict[str, Any]]:
        """Per pipeline: throughput, processing latency p50/p99, lag, watermark, late events, dead letters."""
        return control.pipelines()

    @app.get("/api/topics")
    def topics() -> list[dict[str, Any]]:
        return control.topics()

    @app.get("/api/topics/{topic}/records")
    def records(topic: str, limit: int = Query(20, ge=1, le=500)) -> list[dict[str, Any]]:
        """The newest records of a topic, newest first (the topic browser)."""
        try:
            return control.records(topic, limit)
        except ConfigError as e:
            raise HTTPException(404, str(e)) from e

    @app.get("/api/alerts")
    def alerts(limit: int = Query(100, ge=1, le=1000), alert_type: str | None = None) -> list[dict[str, Any]]:
        """Recent alerts, newest first (optionally one type)."""
        return control.alerts(limit, alert_type)

    @app.get("/api/tail/{topic}")
    def tail(topic: str, limit: int = Query(200, ge=1, le=5000)) -> list[dict[str, Any]]:
        """The newest rows of a topic the server keeps in memory (bars, positions, scores)."""
        try:
            return control.rows(topic, limit)
        except ConfigError as e:
            raise HTTPException(404, str(e)) from e

    @app.post("/api/produce/{topic}")
    def produce(topic: str, records: list[dict[str, Any]] = Body(..., max_length=10_000)) -> dict[str, Any]:
        """Write JSON records to a topic (control messages, test events); bad records go to ``<topic>.dlq``."""
        if not control.log.has_topic(topic):
            raise HTTPException(404, f"topic {topic!r} does not exist; GET /api/topics lists them")
        if not records or not all(isinstance(r, dict) for r in records):
            raise HTTPException(422, "send a JSON array of objects, e.g. [{\"command\": \"pause\"}]")
        try:
            with control.log.producer(linger_ms=0) as producer:
                for r in records:
                    producer.send(topic, value=r)
                producer.flush()
                dead = producer.dead_letters
        except EverstreamError as e:
            raise HTTPException(422, str(e)) from e
        return {"topic": topic, "received": len(records), "dead_letters": dead}

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/healthz", include_in_schema=False)
    def health() -> dict[str, Any]:
        return {"ok": True, "uptime_s": round(time.time() - control.started, 1)}

    return app


class _Collector(Collector):
    """Prometheus metrics read from the control plane at scrape time."""

    def __init__(self, control: ControlPlane) -> None:
        self.control = control

    def collect(self) -> Any:
        s = self.control.summary()
        cap = CounterMetricFamily("everstream_captured_events", "Events written by capture producers", labels=["topic"])
        for c in s["captures"]:
            cap.add_metric([c["topic"]], c["events"])
        yield cap
        alerts = CounterMetricFamily("everstream_alerts", "Alerts seen on the alerts topic", labels=["type"])
        for t, n in s["alerts"].items():
            alerts.add_metric([t], n)
        yield alerts
        ev_in = CounterMetricFamily("everstream_pipeline_events_in", "Events read by a pipeline", labels=["pipeline"])
        ev_out = CounterMetricFamily("everstream_pipeline_events_out", "Events written by a pipeline",
                                     labels=["pipeline"])
        lag = GaugeMetricFamily("everstream_pipeline_lag", "Input records not yet read", labels=["pipeline"])
        p99 = GaugeMetricFamily("everstream_pipeline_latency_p99_ms", "Processing latency p99 per poll (ms)",
                                labels=["pipeline"])
        for p in self.control.pipelines():
            ev_in.add_metric([p["name"]], p["events_in"])
            ev_out.add_metric([p["name"]], p["events_out"])
            if p["lag"] is not None:
                lag.add_metric([p["name"]], p["lag"])
            p99.add_metric([p["name"]], p["latency_p99_ms"])
        yield from (ev_in, ev_out, lag, p99)


class Server:
    """uvicorn in a background thread; ``url`` once started; ``stop()`` shuts it down."""

    def __init__(self, control: ControlPlane, host: str = "127.0.0.1", port: int = 8000) -> None:
        config = uvicorn.Config(create_app(control), host=host, port=port, log_level="warning", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True, name="control-server")
        self.host, self.port = host, port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def start(self, timeout: float = 10.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ConfigError(f"the console server did not start on {self.host}:{self.port}; is the port "
                                  "in use? pick another with --port")
            time.sleep(0.02)
        if self.port == 0:  # an ephemeral port: read back what the OS gave
            sockets = [s for srv in self._server.servers for s in srv.sockets]
            self.port = int(sockets[0].getsockname()[1])

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)

