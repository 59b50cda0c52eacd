"""IR ↔ plain data, for golden files and `/api/config` debugging.

The IR is the contract between translator and builder, so both sides' golden tests speak it as YAML:
translator goldens end in IR, builder goldens start from it. Union members carry their class name in
`action.kind` so a dump reads back to the same IR.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

from stackway.ir import model as ir

T = TypeVar("T")

_ACTIONS: dict[str, type[Any]] = {"Forward": ir.Forward, "Redirect": ir.Redirect, "DirectResponse": ir.DirectResponse}


def to_data(value: Any) -> Any:
    """Dataclasses → dicts (defaults omitted to keep goldens short), tuples → lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        if type(value).__name__ in _ACTIONS:
            out["kind"] = type(value).__name__
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            if f.default is not dataclasses.MISSING and item == f.default:
                continue
            out[f.name] = to_data(item)
        return out
    if isinstance(value, tuple | list):
        return [to_data(v) for v in value]
    return value


def from_data(cls: type[T], data: Any) -> T:
    """The inverse of `to_data` for the IR's dataclasses."""
    return typing.cast(T, _convert(cls, data))


def _convert(tp: Any, data: Any) -> Any:
    origin = typing.get_origin(tp)
    if tp is ir.Action or (origin in (typing.Union, types.UnionType) and ir.Forward in typing.get_args(tp)):
        return _convert(_ACTIONS[data["kind"]], data)
    if origin in (typing.Union, types.UnionType):
        if data is None:
            return None
        members = [a for a in typing.get_args(tp) if a is not type(None)]
        return _convert(members[0], data)
    if origin is tuple:
        items = typing.get_args(tp)
        if len(items) == 2 and items[1] is Ellipsis:
            return tuple(_convert(items[0], d) for d in data)
        return tuple(_convert(a, d) for a, d in zip(items, data, strict=True))
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        kwargs = {f.name: _convert(hints[f.name], data[f.name]) for f in dataclasses.fields(tp) if f.name in data}
        return typing.cast(Any, tp)(**kwargs)
    return data
