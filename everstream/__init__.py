"""everstream: a streaming data platform for financial services, in one Python package."""

from everstream.errors import EverstreamError
from everstream.log import EmbeddedLog, Log, TopicSpec, open_log

__version__ = "0.1.0"

__all__ = ["EmbeddedLog", "EverstreamError", "Log", "TopicSpec", "__version__", "open_log"]
