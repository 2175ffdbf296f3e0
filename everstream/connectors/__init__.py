"""Connectors: files (JSON Lines, CSV, Parquet) and more."""
