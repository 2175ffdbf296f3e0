"""The same keys land on the same partition numbers on the embedded log and on Kafka."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest

from everstream.log import EmbeddedLog, Log, TopicSpec
from everstream.log.kafka import KafkaLog

pytestmark = pytest.mark.kafka


def _placement(log: Log, topic: str, n: int) -> dict[int, int]:
    """id -> partition, read back."""
    out: dict[int, int] = {}
    with log.consumer() as c:
        c.assign([(topic, p) for p in range(log.describe_topic(topic).spec.partitions)])
        deadline = time.monotonic() + 20
        while len(out) < n and time.monotonic() < deadline:
            for b in c.poll(0.2):
                out.update(zip(b.column("id").to_pylist(), b.column("_partition").to_pylist(), strict=True))
    return out


def test_same_keys_same_partitions_on_both_logs(kafka: KafkaLog, names: Callable[[str], str], tmp_path: Path) -> None:
    rng = random.Random(5)
    keys: list[str | bytes | int] = [rng.choice([f"ACC{rng.randrange(10**6)}", rng.randrange(-10**9, 10**9),
                                                 rng.randbytes(rng.randrange(0, 12))]) for _ in range(1500)]
    topic = names("both")
    with EmbeddedLog(tmp_path / "data") as embedded:
        placements = []
        for log in (embedded, kafka):
            log.create_topic(TopicSpec(topic, partitions=7))
            with log.producer() as p:
                for i, k in enumerate(keys[:1000]):  # one record at a time ...
                    p.send(topic, {"id": i}, key=k)
                rest = [k if isinstance(k, bytes) else str(k).encode() for k in keys[1000:]]
                p.send_batch(topic, pa.table({"id": list(range(1000, 1500))}), key=pa.array(rest, pa.binary()))
            placements.append(_placement(log, topic, len(keys)))
    assert len(placements[0]) == len(placements[1]) == len(keys)
    assert placements[0] == placements[1]
    assert len(set(placements[0].values())) == 7
