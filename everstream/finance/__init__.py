"""Finance domain: schemas, simulators and ready pipelines."""

from everstream.finance.simulator import TRADE_SCHEMA, TradeSimulator

__all__ = ["TRADE_SCHEMA", "TradeSimulator"]
