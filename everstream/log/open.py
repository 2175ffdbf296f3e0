"""Open the log named by a broker URL: embedded (default) or ``kafka://host:port``."""

from __future__ import annotations

import os
from pathlib import Path

from everstream.errors import ConfigError
from everstream.log.contract import Log
from everstream.log.embedded import EmbeddedLog


def open_log(broker: str | None = None, data_dir: str | os.PathLike[str] | None = None) -> Log:
    """``broker``: None/"embedded" (env ``EVERSTREAM_BROKER``) or ``kafka://host:port[,host:port]``."""
    url = broker if broker is not None else os.environ.get("EVERSTREAM_BROKER", "")
    if url in ("", "embedded") or url.startswith("embedded://"):
        path = url.removeprefix("embedded://") if url.startswith("embedded://") else None
        return EmbeddedLog(Path(path) if path else data_dir)
    if url.startswith("kafka://"):
        from everstream.log.kafka import KafkaLog  # imported lazily: librdkafka is optional here

        kafka_log: Log = KafkaLog(url.removeprefix("kafka://"))
        return kafka_log
    raise ConfigError(
        f"unknown broker {url!r}: use 'embedded' (default, data in --data-dir) or kafka://host:port"
    )
