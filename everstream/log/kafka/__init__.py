"""The Log contract on Apache Kafka (confluent-kafka / librdkafka).

Wire format
    One Kafka message per record: key = the record key bytes, value = one JSON object (see
    :mod:`everstream.log.kafka.codec` for how Arrow types map to JSON), message timestamp = the
    record's event time in ms, headers passed through. Other Kafka tools read and write it as is.
    The partition is computed with everstream's Kafka-compatible murmur2 partitioner
    (:mod:`everstream.log.partitioner`) and passed explicitly, so a key lands on the same
    partition number as on the embedded log (and as with the Java client's default partitioner).

Topic metadata
    Compaction, retention and compression are Kafka topic configs. The declared Arrow schema
    lives in the compacted topic ``_everstream_schemas`` (:mod:`everstream.log.kafka.registry`).
    Topics whose names start with ``_`` are internal and not listed.

Transactions
    ``log.transactional_producer(id)`` (or ``log.producer(transactional_id=id)``, or
    ``producer.transactional(id)``) returns a :class:`KafkaTransactionalProducer` with
    ``begin()``, ``send``/``send_batch``, ``send_offsets(consumer, offsets=None)``, ``commit()``,
    ``abort()`` and ``with tx.transaction(): ...``. Every everstream consumer reads with
    ``read_committed`` isolation, so aborted records are never seen.
"""

from everstream.log.kafka.consumer import KafkaConsumer
from everstream.log.kafka.log import KafkaLog
from everstream.log.kafka.producer import KafkaProducer
from everstream.log.kafka.transaction import KafkaTransactionalProducer

__all__ = ["KafkaConsumer", "KafkaLog", "KafkaProducer", "KafkaTransactionalProducer"]
