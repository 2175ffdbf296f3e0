"""The embedded log (SQLite WAL, Arrow IPC batches)."""

from everstream.log.embedded.log import EmbeddedLog

__all__ = ["EmbeddedLog"]
