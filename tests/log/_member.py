"""A consumer-group member run as a separate process by test_groups.py.

Usage: python _member.py DATA_DIR TOPIC GROUP NAME SESSION_MS HEARTBEAT_MS [stale|slow]

Prints one JSON line per event on stdout: ready, assign (when the assignment changes), poll
(the (partition, offset, id) of every record it got), commit / commit_failed after each poll.
In ``stale`` mode it stops after its first non-empty poll, waits for a line on stdin, then
commits what it read (the parent freezes it with SIGSTOP in between). In ``slow`` mode it
"processes" each poll for 150 ms before committing. SIGTERM: leave and exit.
"""

from __future__ import annotations

import json
import signal
import sys
import time

from everstream.errors import CommitFailedError
from everstream.log import EmbeddedLog


def say(**ev: object) -> None:
    ev["t"] = time.time()
    sys.stdout.write(json.dumps(ev) + "\n")
    sys.stdout.flush()


def main() -> None:
    data_dir, topic, group, name = sys.argv[1:5]
    session_ms, heartbeat_ms = int(sys.argv[5]), int(sys.argv[6])
    mode = sys.argv[7] if len(sys.argv) > 7 else "normal"
    stale = mode == "stale"
    stop = False

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    log = EmbeddedLog(data_dir)
    c = log.consumer(group, session_timeout_ms=session_ms, heartbeat_ms=heartbeat_ms)
    c.subscribe([topic])
    say(ev="ready", name=name, member=c.member_id)
    last: list[int] | None = None
    while not stop:
        batches = c.poll(0.1, max_records=200)
        parts = sorted(p for _, p in c.assignment())
        if parts != last:
            say(ev="assign", name=name, parts=parts)
            last = parts
        recs = [
            [p, o, i]
            for b in batches
            for p, o, i in zip(
                b.column("_partition").to_pylist(), b.column("_offset").to_pylist(),
                b.column("id").to_pylist(), strict=True,
            )
        ]
        if not recs:
            continue
        say(ev="poll", name=name, recs=recs)
        if stale:
            say(ev="waiting", name=name)
            sys.stdin.readline()
            stale = False
        if mode == "slow":
            time.sleep(0.15)
        try:
            c.commit()
            say(ev="commit", name=name)
        except CommitFailedError as e:
            say(ev="commit_failed", name=name, error=str(e))
    c.close()
    log.close()
    say(ev="closed", name=name)


if __name__ == "__main__":
    main()
