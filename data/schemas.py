"""Arrow schemas derived from the pydantic contracts, so the on-disk layout has one definition."""

from __future__ import annotations

import types
from datetime import datetime
from enum import Enum
from functools import cache
from typing import Annotated, Any, Union, get_args, get_origin

import pyarrow as pa
from pydantic import AwareDatetime, BaseModel
from pydantic.fields import FieldInfo

TIMESTAMP = pa.timestamp("ms", tz="UTC")


def unwrap(annotation: Any) -> tuple[Any, bool, tuple[Any, ...]]:
    """Strip Annotated and Optional: the inner type, whether None is allowed, and the constraints met on the
    way (``annotated_types`` objects such as ``MinLen(1)``, including those a ``Field(...)`` carries)."""
    nullable = False
    constraints: list[Any] = []
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation, *extras = get_args(annotation)
            for extra in extras:
                constraints.extend(extra.metadata if isinstance(extra, FieldInfo) else [extra])
        elif origin in (Union, types.UnionType):
            args = [a for a in get_args(annotation) if a is not type(None)]
            nullable = nullable or len(args) < len(get_args(annotation))
            if len(args) != 1:
                raise TypeError(f"unions other than Optional are not supported on disk: {annotation}")
            annotation = args[0]
        else:
            return annotation, nullable, tuple(constraints)


def arrow_type(annotation: Any) -> pa.DataType:
    inner, _, _ = unwrap(annotation)
    if get_origin(inner) is list:
        return pa.list_(pa.field("item", arrow_type(get_args(inner)[0]), nullable=False))
    if isinstance(inner, type):
        if issubclass(inner, BaseModel):
            return pa.struct(list(arrow_schema(inner)))
        if issubclass(inner, Enum) or inner is str:
            return pa.string()
        if inner is bool:
            return pa.bool_()
        if inner is int:
            return pa.int64()
        if inner is float:
            return pa.float64()
        if inner is AwareDatetime or issubclass(inner, datetime):
            return TIMESTAMP
    raise TypeError(f"no Arrow type for {annotation!r}")


@cache
def arrow_schema(model: type[BaseModel]) -> pa.Schema:
    fields = []
    for name, info in model.model_fields.items():
        _, nullable, _ = unwrap(info.annotation)
        fields.append(pa.field(name, arrow_type(info.annotation), nullable=nullable))
    return pa.schema(fields)
