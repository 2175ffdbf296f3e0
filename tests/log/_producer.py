"""A producer process for test_groups.py and test_crash.py.

Usage: python _producer.py DATA_DIR TOPIC WRITER START [COUNT] [SEED]

Sends self-describing records ``{"writer": WRITER, "seq": s}`` with key ``k{s % 13}``, starting at
seq START, in random-size groups of send() calls each followed by flush(). After every flush()
returns it prints ``ack <last seq>`` (so a printed ack means durable). Stops after COUNT records
(default: never; the parent kills it).
"""

from __future__ import annotations

import random
import sys

from everstream.log import EmbeddedLog


def key_of(seq: int) -> str:
    return f"k{seq % 13}"


def main() -> None:
    data_dir, topic, writer = sys.argv[1], sys.argv[2], int(sys.argv[3])
    seq = int(sys.argv[4])
    count = int(sys.argv[5]) if len(sys.argv) > 5 and sys.argv[5] != "-" else None
    rng = random.Random(int(sys.argv[6]) if len(sys.argv) > 6 else None)
    end = None if count is None else seq + count
    log = EmbeddedLog(data_dir)
    p = log.producer(linger_ms=2, batch_events=256)
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    while end is None or seq < end:
        n = rng.randrange(1, 120)
        if end is not None:
            n = min(n, end - seq)
        for _ in range(n):
            p.send(topic, {"writer": writer, "seq": seq, "pad": "p" * (seq % 40)}, key=key_of(seq))
            seq += 1
        p.flush()
        out.write(f"ack {seq - 1}\n")
        out.flush()
    p.close()
    log.close()
    out.write("done\n")
    out.flush()


if __name__ == "__main__":
    main()
