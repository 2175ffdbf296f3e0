"""The one exception tree of everstream.

Every error raised on purpose by everstream derives from :class:`EverstreamError`. Errors caused by
the caller's input also derive from :class:`ValueError` or :class:`TypeError`, so generic handlers
keep working. Messages name the topic, partition and offset involved and say what to do.
"""

from __future__ import annotations


class EverstreamError(Exception):
    """Root of every error raised by everstream."""


class ConfigError(EverstreamError, ValueError):
    """An argument or setting is invalid (bad name, zero partitions, unknown option)."""


class TopicError(EverstreamError):
    """A topic-level problem."""


class UnknownTopicError(TopicError, KeyError):
    """The topic does not exist."""

    def __init__(self, topic: str, hint: str = "") -> None:
        self.topic = topic
        msg = f"topic {topic!r} does not exist"
        msg += f"; {hint}" if hint else f"; create it first: everstream topics create {topic}"
        super().__init__(msg)

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0])


class TopicExistsError(TopicError, ValueError):
    """The topic already exists (and exist_ok was not given)."""


class SchemaError(EverstreamError, TypeError):
    """A record or table does not match the topic's declared schema."""


class RecordTooLargeError(EverstreamError, ValueError):
    """A record is larger than the log accepts."""


class LogClosedError(EverstreamError):
    """The log, producer or consumer was used after close()."""


class StorageError(EverstreamError):
    """The storage under a log failed (disk full, I/O error, locked database)."""


class CorruptBatchError(StorageError):
    """A stored batch failed its checksum or could not be decoded; it is never served."""

    def __init__(self, topic: str, partition: int, first: int, last: int, reason: str) -> None:
        self.topic, self.partition, self.first, self.last = topic, partition, first, last
        super().__init__(
            f"corrupt batch in topic {topic!r} partition {partition} offsets {first}..{last}: "
            f"{reason}. It is not served. Run `everstream log check` to list every damaged "
            f"batch, then `everstream log check --repair` to drop them (their records are lost: "
            f"re-produce them from the source) or restore the data directory from a backup."
        )


class ProducerError(EverstreamError):
    """A background flush failed; the records it carried were not acknowledged."""


class ProducerFencedError(ProducerError):
    """A newer producer with the same transactional id took over; this (zombie) one may not commit.

    Its open transaction is discarded: nothing of it becomes visible. Close it; the newer
    instance carries on from the last committed transaction.
    """


class ConsumerError(EverstreamError):
    """Consumer misuse or failure."""


class CommitFailedError(ConsumerError):
    """Offsets could not be committed because the partition now belongs to another member."""


class OffsetOutOfRangeError(ConsumerError, ValueError):
    """A seek or a position points outside the partition's stored offsets."""


class BrokerError(EverstreamError):
    """The Kafka broker is unreachable or refused a request."""


# ---------------------------------------------------------------------- stream engine


class EngineError(EverstreamError):
    """The stream engine failed while running a pipeline."""


class PlanError(EngineError, ValueError):
    """A pipeline definition is invalid (duplicate step id, window without event time, ...)."""


class StepError(EngineError):
    """A step failed on data; names the step and where the data came from, and what to do.

    Attributes: ``step_id``, ``topic``, ``partition``, ``offset`` (first offset involved),
    ``key`` and ``event_time`` (epoch ms) when known.
    """

    def __init__(
        self,
        message: str,
        *,
        step_id: str,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
        key: bytes | str | None = None,
        event_time: int | None = None,
        fix: str = "",
    ) -> None:
        self.step_id, self.topic, self.partition, self.offset = step_id, topic, partition, offset
        self.key, self.event_time = key, event_time
        where = [f"step {step_id!r}"]
        if topic is not None:
            where.append(f"topic {topic!r}")
        if partition is not None:
            where.append(f"partition {partition}")
        if offset is not None:
            where.append(f"offset {offset}")
        if key is not None:
            where.append(f"key {key!r}")
        if event_time is not None:
            where.append(f"event time {event_time} ms")
        text = f"{', '.join(where)}: {message}"
        if fix:
            text += f". {fix[:1].upper()}{fix[1:]}"
        super().__init__(text)


class StateError(EngineError):
    """Operator state could not be saved to or restored from its changelog topic."""


class StateIncompatibleError(StateError, ValueError):
    """A step's stored state has another shape than the step now has (the pipeline changed).

    Raised on start instead of restoring state into an operator that would misread it.
    """


class UserFunctionError(StepError):
    """A user function (map, flat_map, map_batches) raised; ``location`` is its file:line."""

    def __init__(self, message: str, *, location: str, **where: object) -> None:
        self.location = location
        super().__init__(message, **where)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- machine learning (everstream.ml)


class ModelError(EverstreamError):
    """A model could not be trained, loaded or applied (wrong feature columns, corrupt artifact)."""


class RegistryError(EverstreamError):
    """The model registry topic has no such model or version, or a record could not be stored."""
