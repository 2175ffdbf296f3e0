"""Consumer-group timings the conformance tests use on both logs (Kafka's minimum session is 6 s)."""

SESSION_MS = 6000
HEARTBEAT_MS = 500
