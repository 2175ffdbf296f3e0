"""The model registry: versioned model artifacts and promotions in one compacted topic.

Every record is keyed, so compaction keeps exactly what the registry needs:

- ``<name>@<version>`` (``record="version"``): the artifact (:meth:`Model.to_bytes`) and its
  metadata: model kind, feature list, training window (event time, epoch ms), metrics (JSON),
  creation time;
- ``<name>@champion`` (``record="promotion"``): which version scoring steps must use now.

Any process reads the topic from the start to know every version and the champion; scoring
steps (:class:`everstream.ml.scoring.Scorer`) re-read it while running and switch to a newly
promoted version between two micro-batches, without stopping. The log is the registry: it is
replicated and durable on Kafka, and the same code runs on the embedded log. One trainer
process should write a model name (version numbers are allocated from what it has read).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from everstream.errors import RegistryError
from everstream.log.contract import Log, TopicSpec
from everstream.ml.models import Model, model_from_bytes

#: Largest artifact accepted (compressed bytes); Kafka's default message limit is 1 MiB and
#: binary travels as base64 in Kafka's JSON wire format.
MAX_ARTIFACT_BYTES = 700_000

RECORD_SCHEMA = pa.schema([
    pa.field("key", pa.string()),
    pa.field("record", pa.string()),
    pa.field("name", pa.string()),
    pa.field("version", pa.int64()),
    pa.field("model_kind", pa.string()),
    pa.field("features", pa.string()),
    pa.field("train_start_ms", pa.int64()),
    pa.field("train_end_ms", pa.int64()),
    pa.field("metrics", pa.string()),
    pa.field("created_ms", pa.int64()),
    pa.field("reason", pa.string()),
    pa.field("artifact", pa.binary()),
])


@dataclass(frozen=True)
class ModelVersion:
    """Metadata of one registered version (the artifact is loaded on demand)."""

    name: str
    version: int
    kind: str
    features: tuple[str, ...]
    train_start_ms: int | None
    train_end_ms: int | None
    metrics: dict[str, Any] = field(default_factory=dict)
    created_ms: int = 0


@dataclass(frozen=True)
class Promotion:
    name: str
    version: int
    reason: str
    created_ms: int


class ModelRegistry:
    """Register, promote and load models through the compacted topic ``topic`` on ``log``.

    ``ModelRegistry(log)`` creates the topic when missing. Reads are incremental:
    :meth:`refresh` picks up what other processes wrote since the last call.
    """

    def __init__(self, log: Log, topic: str = "models") -> None:
        self.log = log
        self.topic = topic
        log.create_topic(TopicSpec(topic, 1, compact=True), exist_ok=True)
        self._versions: dict[tuple[str, int], ModelVersion] = {}
        self._artifacts: dict[tuple[str, int], bytes] = {}
        self._champions: dict[str, Promotion] = {}
        self._lock = threading.Lock()
        self._consumer = log.consumer(start="earliest")
        self._consumer.assign([(topic, 0)])
        self.refresh()

    def __repr__(self) -> str:
        return f"ModelRegistry(topic={self.topic!r}, versions={len(self._versions)})"

    # ------------------------------------------------------------------ reading

    def refresh(self, timeout: float = 5.0) -> bool:
        """Read registry records written since the last refresh; True if the champion of any model changed."""
        with self._lock:
            end = self.log.describe_topic(self.topic).partitions[0].end_offset
            before = dict(self._champions)
            deadline = time.monotonic() + timeout
            while self._consumer.position(self.topic, 0) < end:
                for batch in self._consumer.poll(0.05):
                    for row in batch.to_pylist():
                        self._apply(row)
                if time.monotonic() > deadline:
                    raise RegistryError(f"registry topic {self.topic!r}: could not read up to offset {end} within "
                                        f"{timeout:g} s; is the log reachable?")
            return before != self._champions

    def _apply(self, row: dict[str, Any]) -> None:
        name, version = str(row["name"]), int(row["version"])
        if row["record"] == "version":
            self._versions[(name, version)] = ModelVersion(
                name, version, str(row["model_kind"]), tuple(json.loads(row["features"] or "[]")),
                row["train_start_ms"], row["train_end_ms"], json.loads(row["metrics"] or "{}"),
                int(row["created_ms"] or 0))
            self._artifacts[(name, version)] = bytes(row["artifact"])
        elif row["record"] == "promotion":
            self._champions[name] = Promotion(name, version, str(row["reason"] or ""), int(row["created_ms"] or 0))

    def versions(self, name: str) -> list[ModelVersion]:
        """Registered versions of ``name``, oldest first."""
        return sorted((v for (n, _), v in self._versions.items() if n == name), key=lambda v: v.version)

    def champion(self, name: str) -> ModelVersion | None:
        """The promoted version of ``name`` (None before the first promotion)."""
        p = self._champions.get(name)
        return None if p is None else self._versions.get((name, p.version))

    def promotion(self, name: str) -> Promotion | None:
        return self._champions.get(name)

    def load(self, name: str, version: int | None = None) -> Model:
        """The model of ``name`` at ``version`` (default: the champion)."""
        if version is None:
            champ = self.champion(name)
            if champ is None:
                raise RegistryError(f"model {name!r} has no promoted version in registry topic {self.topic!r}; "
                                    f"promote one with registry.promote({name!r}, version)")
            version = champ.version
        art = self._artifacts.get((name, version))
        if art is None:
            have = [v.version for v in self.versions(name)]
            raise RegistryError(f"model {name!r} has no version {version} in registry topic {self.topic!r} "
                                f"(versions: {have or 'none'}); register it first")
        return model_from_bytes(art)

    # ------------------------------------------------------------------ writing

    def register(self, name: str, model: Model, *, train_start_ms: int | None = None,
                 train_end_ms: int | None = None, metrics: dict[str, Any] | None = None) -> ModelVersion:
        """Store ``model`` as the next version of ``name``; returns its metadata (not promoted yet)."""
        if not isinstance(model, Model):
            raise RegistryError(f"register({name!r}, ...) takes an everstream.ml Model, got {type(model).__name__}")
        self.refresh()
        art = model.to_bytes()
        if len(art) > MAX_ARTIFACT_BYTES:
            raise RegistryError(f"model {name!r}: the artifact is {len(art):,} bytes compressed, over the registry "
                                f"limit of {MAX_ARTIFACT_BYTES:,}; train fewer or smaller trees")
        version = max((v.version for v in self.versions(name)), default=0) + 1
        mv = ModelVersion(name, version, model.kind, model.features, train_start_ms, train_end_ms,
                          dict(metrics or {}), int(time.time() * 1000))
        self._write({"key": f"{name}@{version}", "record": "version", "name": name, "version": version,
                     "model_kind": model.kind, "features": json.dumps(list(model.features)),
                     "train_start_ms": train_start_ms, "train_end_ms": train_end_ms,
                     "metrics": json.dumps(mv.metrics, default=float), "created_ms": mv.created_ms,
                     "reason": None, "artifact": art})
        self.refresh()
        return mv

    def promote(self, name: str, version: int, reason: str = "") -> None:
        """Make ``version`` the champion of ``name``: running scoring steps switch to it."""
        self.refresh()
        if (name, version) not in self._versions:
            have = [v.version for v in self.versions(name)]
            raise RegistryError(f"cannot promote {name!r} version {version}: not in registry topic {self.topic!r} "
                                f"(versions: {have or 'none'})")
        self._write({"key": f"{name}@champion", "record": "promotion", "name": name, "version": version,
                     "model_kind": None, "features": None, "train_start_ms": None, "train_end_ms": None,
                     "metrics": None, "created_ms": int(time.time() * 1000), "reason": reason, "artifact": None})
        self.refresh()

    def _write(self, row: dict[str, Any]) -> None:
        table = pa.Table.from_pylist([row], schema=RECORD_SCHEMA)
        with self.log.producer(linger_ms=0.0) as producer:
            written = producer.send_batch(self.topic, table, key="key")
            producer.flush()
        if written != 1:
            raise RegistryError(f"registry topic {self.topic!r}: record {row['key']!r} was not stored (too large for "
                                "the log's max_record_bytes?); see the topic's dead-letter topic")

    # ------------------------------------------------------------------ scoring

    def scorer(self, name: str, **options: Any) -> Any:
        """A hot-swapping scoring function for ``Stream.score`` / ``map_batches`` (see :class:`Scorer`)."""
        from everstream.ml.scoring import Scorer

        return Scorer(self, name, **options)

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> ModelRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["MAX_ARTIFACT_BYTES", "ModelRegistry", "ModelVersion", "Promotion"]
