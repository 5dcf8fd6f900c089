"""Typed configuration end to end: dataclasses to JSON and back, checked against their type hints.

``to_json(obj)`` turns a (nested) dataclass into JSON-able values (tuples become lists); ``from_json(cls, data)``
rebuilds it and refuses what does not fit, naming the field (``record.preprocessing.frame_size: expected
list of 2 int, got 'x'``). Supported: dataclasses, ``int/float/str/bool``, ``tuple[...]``, ``list[...]``,
``dict[str, ...]``, ``X | None``, ``Literal``-free enums as strings. Standard library only.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

from clearmamba.errors import UserError

T = TypeVar("T")


class ConfigError(UserError, ValueError):
    """A stored configuration does not match its dataclass."""


def _custom(tp: Any) -> bool:
    # a class that spells its own JSON (to_dict / from_dict(data, where)), e.g. evaluation.ReferralRule
    return isinstance(tp, type) and callable(getattr(tp, "from_dict", None)) and callable(getattr(tp, "to_dict", None))


def to_json(obj: Any) -> Any:
    """JSON-able form of ``obj``: dataclasses as dicts (field order kept), tuples as lists."""
    if _custom(type(obj)):
        return obj.to_dict()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_json(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_json(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_json(v) for k, v in obj.items()}
    return obj


def from_json(cls: type[T], data: Any, where: str = "") -> T:
    """Rebuild ``cls`` from :func:`to_json` output; unknown or missing fields and wrong types are errors."""
    return _convert(cls, data, where or cls.__name__)


def fields_from_json(cls: type[T], data: Any, where: str, noun: str = "") -> T:
    """The dataclass part of :func:`from_json`, for a class that spells its own ``from_dict`` on top of it;
    ``noun`` names its fields in the unknown-field error ("camera " -> "unknown camera field(s)")."""
    if not isinstance(data, dict):
        raise _fail(where, f"an object ({cls.__name__})", data)
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown {noun}field(s) {unknown}; expected some of {sorted(fields)}")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], f"{where}.{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{where}.{name}: missing; expected a value ({hints[name]})")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"{where}: {error}") from None


def _fail(where: str, expected: str, got: Any) -> ConfigError:
    shown = repr(got) if len(repr(got)) < 60 else type(got).__name__
    return ConfigError(f"{where}: expected {expected}, got {shown}")


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _convert(option, value, where)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0]) if errors else _fail(where, str(tp), value)
    if _custom(tp):
        try:
            return tp.from_dict(value, where)
        except ValueError as error:
            raise ConfigError(str(error)) from None
    if dataclasses.is_dataclass(tp):
        return fields_from_json(tp, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _fail(where, "a list", value)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise _fail(where, f"a list of {len(args)}", value)
        return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise _fail(where, "a list", value)
        return [_convert(args[0] if args else Any, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise _fail(where, "an object", value)
        vt = args[1] if args else Any
        return {str(k): _convert(vt, v, f"{where}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(where, "a number", value)
        return value  # an int stays an int, so a record reads back exactly as it was written
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(where, "an integer", value)
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise _fail(where, "true or false", value)
        return value
    if tp is str:
        if not isinstance(value, str):
            raise _fail(where, "a string", value)
        return value
    if tp is type(None):
        if value is not None:
            raise _fail(where, "null", value)
        return None
    raise ConfigError(f"{where}: cannot read a value of type {tp}")
