"""The log: topics, producers and consumers, embedded or on Apache Kafka."""

from everstream.log.contract import (
    META_COLUMNS,
    Consumer,
    Log,
    PartitionInfo,
    Producer,
    TopicInfo,
    TopicSpec,
    dead_letter_topic,
)
from everstream.log.embedded import EmbeddedLog
from everstream.log.open import open_log

__all__ = [
    "META_COLUMNS",
    "Consumer",
    "EmbeddedLog",
    "Log",
    "PartitionInfo",
    "Producer",
    "TopicInfo",
    "TopicSpec",
    "dead_letter_topic",
    "open_log",
]
