"""Turn a dataclass, a pydantic model or an Arrow schema into the Arrow schema of a topic."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import types
import typing
from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from everstream.errors import SchemaError

_SCALARS: dict[Any, pa.DataType] = {
    int: pa.int64(),
    float: pa.float64(),
    str: pa.string(),
    bool: pa.bool_(),
    bytes: pa.binary(),
    dt.datetime: pa.timestamp("us"),
    dt.date: pa.date32(),
    dt.timedelta: pa.duration("us"),
    decimal.Decimal: pa.decimal128(38, 9),
}


def _arrow_type(tp: Any, where: str) -> tuple[pa.DataType, bool]:
    """Arrow type of a Python annotation, and whether it is nullable."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) != 1:
            raise SchemaError(f"{where}: unions other than Optional[X] are not supported ({tp})")
        return _arrow_type(args[0], where)[0], True
    if origin is typing.Annotated:
        return _arrow_type(typing.get_args(tp)[0], where)
    if origin is typing.Literal:
        values = typing.get_args(tp)
        return _arrow_type(type(values[0]), where)
    if origin in (list, typing.List):  # noqa: UP006
        (inner,) = typing.get_args(tp) or (str,)
        return pa.list_(_arrow_type(inner, where)[0]), False
    if origin in (dict, typing.Dict):  # noqa: UP006
        k, v = typing.get_args(tp) or (str, str)
        return pa.map_(_arrow_type(k, where)[0], _arrow_type(v, where)[0]), False
    if isinstance(tp, type) and issubclass(tp, bool):
        return pa.bool_(), False
    for py, arrow in _SCALARS.items():
        if isinstance(tp, type) and issubclass(tp, py):
            return arrow, False
    if dataclasses.is_dataclass(tp) or _is_pydantic(tp):
        return pa.struct(list(arrow_schema(tp))), False
    raise SchemaError(f"{where}: no Arrow type for annotation {tp!r}; use int, float, str, bool, "
                      "bytes, datetime, date, Decimal, list[...] or a nested dataclass")


def _is_pydantic(obj: Any) -> bool:
    return isinstance(obj, type) and hasattr(obj, "model_fields") and hasattr(obj, "model_dump")


def arrow_schema(model: Any) -> pa.Schema:
    """The Arrow schema of a dataclass, a pydantic model class or an Arrow schema."""
    if isinstance(model, pa.Schema):
        return model
    if dataclasses.is_dataclass(model) and isinstance(model, type):
        hints = typing.get_type_hints(model, include_extras=True)
        fields = []
        for f in dataclasses.fields(model):
            t, nullable = _arrow_type(hints[f.name], f"{model.__name__}.{f.name}")
            fields.append(pa.field(f.name, t, nullable=True))
            del nullable
        return pa.schema(fields)
    if _is_pydantic(model):
        fields = []
        for name, info in model.model_fields.items():
            t, _ = _arrow_type(info.annotation, f"{model.__name__}.{name}")
            fields.append(pa.field(name, t, nullable=True))
        return pa.schema(fields)
    raise SchemaError(
        f"cannot derive a schema from {model!r}: pass a dataclass, a pydantic model or a pyarrow.Schema"
    )


def record_to_dict(value: Any) -> Mapping[str, Any]:
    """A record as a mapping: mappings pass through; dataclasses and pydantic models convert."""
    if isinstance(value, Mapping):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    dump = getattr(value, "model_dump", None)
    if dump is not None:
        return typing.cast(Mapping[str, Any], dump())
    if isinstance(value, (bytes, str)):
        return {"value": value}
    raise SchemaError(
        f"cannot send {type(value).__name__} value {value!r:.80}: send a dict, a dataclass, a "
        "pydantic model, str or bytes"
    )


def schema_to_bytes(schema: pa.Schema) -> bytes:
    return bytes(schema.serialize())


def schema_from_bytes(data: bytes) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(data))
