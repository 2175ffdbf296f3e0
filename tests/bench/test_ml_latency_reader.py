"""``bench ml``'s live-latency reader: the times it saw per offset are mapped to transactions from the
topic's records; a transaction written twice (at-least-once) counts at its first offset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from everstream.bench.ml import _by_txn
from everstream.log import EmbeddedLog, TopicSpec


def test_offsets_map_to_the_first_record_of_each_transaction(tmp_path: Path) -> None:
    txns = [3, 0, 1, 1, 4, 0, 2, 6]  # out of order, 0 and 1 twice, 5 never written
    with EmbeddedLog(tmp_path, durability="relaxed") as log:
        log.create_topic(TopicSpec("decisions", 1))
        with log.producer(linger_ms=0.0) as producer:
            for part in (txns[:3], txns[3:6], txns[6:]):  # several stored batches
                producer.send_batch("decisions", pa.table({"txn_id": pa.array(part, pa.int64())}))
                producer.flush()
        at_offset = np.arange(len(txns), dtype=np.float64) * 10.0  # the time each offset became readable
        at_offset[-1] = np.nan  # the last offset was never seen readable
        got = _by_txn(log, "decisions", at_offset, 7)
    want = np.full(7, np.nan)  # plain Python reference: the first offset of each transaction
    for offset, txn in reversed(list(enumerate(txns))):
        want[txn] = at_offset[offset]
    np.testing.assert_array_equal(got, want)
    assert np.isnan(got[5]) and got[0] == 10.0 and got[1] == 20.0
