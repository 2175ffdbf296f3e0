"""Kafka-compatible partitioning: murmur2 bit for bit, and the vectorized column path."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from everstream.errors import ConfigError
from everstream.log.partitioner import (
    key_bytes,
    keys_to_binary,
    murmur2,
    murmur2_many,
    partition_for,
    partitions_for_column,
)

# Apache Kafka, clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java (testMurmur2)
KAFKA_VECTORS = [
    (b"21", -973932308),
    (b"foobar", -790332482),
    (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    (b"abc", 479470107),
]


@pytest.mark.parametrize(("data", "expected"), KAFKA_VECTORS)
def test_murmur2_matches_kafka(data: bytes, expected: int) -> None:
    assert murmur2(data) == expected


@pytest.mark.parametrize(("data", "expected"), KAFKA_VECTORS)
@pytest.mark.parametrize("n", [1, 3, 6, 7, 100])
def test_partition_for_is_kafka_to_positive_mod(data: bytes, expected: int, n: int) -> None:
    # Kafka: Utils.toPositive(murmur2(key)) % numPartitions, toPositive = x & 0x7fffffff
    assert partition_for(data, n) == (expected & 0x7FFFFFFF) % n
    assert 0 <= partition_for(data, n) < n


def test_murmur2_every_tail_length_is_a_signed_int32() -> None:
    rng = random.Random(7)
    for length in range(0, 40):
        h = murmur2(rng.randbytes(length))
        assert -(2**31) <= h < 2**31


def _random_keys(rng: random.Random, n: int) -> list[bytes]:
    pool = [rng.randbytes(rng.randrange(0, 30)) for _ in range(n // 3 + 1)]
    pool += [b"", b"\x00", b"\xff" * 9, "ключ-é".encode()]
    return [rng.choice(pool) for _ in range(n)]


@pytest.mark.parametrize("n_parts", [1, 2, 6, 13])
def test_partitions_for_column_equals_per_key(n_parts: int) -> None:
    rng = random.Random(n_parts)
    keys = _random_keys(rng, 3000)
    got = partitions_for_column(pa.array(keys, pa.binary()), n_parts)
    assert got.dtype == np.int32
    assert got.tolist() == [partition_for(k, n_parts) for k in keys]


def test_partitions_for_column_string_int_dictionary_chunked_and_nulls() -> None:
    words = ["AAPL", "MSFT", "", "ü-key", None, "AAPL", "x" * 100]
    ref = [-1 if w is None else partition_for(w.encode(), 6) for w in words]
    assert partitions_for_column(pa.array(words, pa.string()), 6).tolist() == ref
    assert partitions_for_column(pa.array(words, pa.large_string()), 6).tolist() == ref
    assert partitions_for_column(pa.array(words).dictionary_encode(), 6).tolist() == ref
    chunked = pa.chunked_array([pa.array(words[:3]), pa.array(words[3:])])
    assert partitions_for_column(chunked, 6).tolist() == ref

    ints = [0, 1, -5, 2**40, None, 42]
    ref_int = [-1 if i is None else partition_for(str(i).encode(), 6) for i in ints]
    assert partitions_for_column(pa.array(ints, pa.int64()), 6).tolist() == ref_int
    assert partitions_for_column(pa.array([1, 2, 3], pa.int8()), 6).tolist() == [
        partition_for(str(i).encode(), 6) for i in (1, 2, 3)
    ]


def test_key_normalization_is_the_same_for_single_records_and_columns() -> None:
    assert key_bytes("abc") == b"abc"
    assert key_bytes(b"\x00a") == b"\x00a"
    assert key_bytes(-17) == b"-17"
    assert key_bytes(None) is None
    assert keys_to_binary(pa.array([-17, 5])).to_pylist() == [b"-17", b"5"]
    with pytest.raises(ConfigError):
        key_bytes(True)
    with pytest.raises(ConfigError):
        key_bytes(1.5)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        keys_to_binary(pa.array([1.5]))


@given(st.lists(st.binary(max_size=40), max_size=300))
def test_vectorized_murmur2_equals_the_scalar_one(keys: list[bytes]) -> None:
    """murmur2_many (NumPy, by key length) is bit-identical to Kafka's scalar murmur2."""
    assert murmur2_many(keys).tolist() == [murmur2(k) for k in keys]


def test_partitions_for_column_matches_partition_for() -> None:
    """The column path (vectorized hash, nulls -> -1) agrees with the per-key rule for 1 and 7 partitions."""
    keys = pa.array([f"acct-{i}" for i in range(500)] + [None, "x"])
    for n in (1, 7):
        got = partitions_for_column(keys, n).tolist()
        want = [-1 if k is None else partition_for(k.encode(), n) for k in keys.to_pylist()]
        assert got == want


def test_record_partition_hashes_caches_up_to_the_limit_and_refuses_keyless_compacted(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from everstream.log import partitioner

    monkeypatch.setattr(partitioner, "KEY_CACHE_MAX", 3)
    cache: dict[bytes, int] = {}
    keys = [f"acct-{i}".encode() for i in range(10)]
    got = [partitioner.record_partition("t", k, 7, 5, False, cache) for k in keys]
    assert got == [partition_for(k, 7) for k in keys]  # the Kafka partition of each key
    assert cache == {k: partition_for(k, 7) for k in keys[:3]}  # the cache stops at its limit
    cache[keys[0]] = 6  # a cached key is looked up, not hashed again
    assert partitioner.record_partition("t", keys[0], 7, 5, False, cache) == 6
    assert partitioner.record_partition("t", None, 7, 5, False, cache) == 5  # no key: the sticky partition
    with pytest.raises(ConfigError, match=r"topic 'ledger' is compacted .* every record needs a key"):
        partitioner.record_partition("ledger", None, 7, 5, True, cache)
