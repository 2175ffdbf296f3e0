"""Record schemas: dataclasses and pydantic models to Arrow, and Arrow schema serialization."""

from everstream.schema.arrow import arrow_schema, record_to_dict, schema_from_bytes, schema_to_bytes

__all__ = ["arrow_schema", "record_to_dict", "schema_from_bytes", "schema_to_bytes"]
