"""Typed JSON for the artifact contract: frozen dataclasses in, plain JSON out, and back with checks.

`encode(obj)` turns a contract dataclass into JSON data; `decode(cls, data, where)` reads it back,
checking every value against the field's annotation, so that an edited or damaged `edgekit.json`
fails at load with the path of the bad value (`contract.input.mean[2]`), never as a KeyError or a
numpy error in the middle of a call.

Annotations understood: the dataclasses themselves, `int` (not bool), `float` (ints accepted),
`str`, `bool`, `Literal[...]`, `X | None`, `tuple[X, ...]`, `tuple[X, Y]`, `dict[str, X]`, and
unions of dataclasses, and open families: a base class with a `members()` classmethod (the state
entries, edgekit/contract/state) takes any of the tagged dataclasses it lists. A dataclass that is
one member of a union or family carries a `tag` class variable; its JSON object holds
`"type": tag`, the only key with that name in the contract.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from functools import cache
from typing import Any, Literal, TypeVar, Union

T = TypeVar("T")
_MAX_INT = 2**62  # a value past this is a damaged file, not a model size


class ContractError(ValueError):
    """A value of the contract does not have its declared type; `path` says where."""

    def __init__(self, path: str, problem: str) -> None:
        self.path, self.problem = path, problem
        super().__init__(f"{path}: {problem}")


def encode(obj: Any) -> Any:
    """A contract value as JSON data (tuples become lists, union members get their "type")."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, Any] = {}
        tag = getattr(type(obj), "tag", None)
        if tag is not None:
            out["type"] = tag
        for f in dataclasses.fields(obj):
            out[f.name] = encode(getattr(obj, f.name))
        return out
    if isinstance(obj, (list, tuple)):
        return [encode(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): encode(v) for k, v in obj.items()}
    return obj


def decode(cls: type[T], data: Any, where: str) -> T:
    """Read JSON `data` as dataclass `cls`; raises ContractError naming the first bad value."""
    return _value(cls, data, where)


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def _value(tp: Any, v: Any, path: str) -> Any:
    if dataclasses.is_dataclass(tp):
        return _dataclass(tp, v, path)
    if _is_union(tp):
        return _union(tp, v, path)
    if isinstance(tp, type) and callable(getattr(tp, "members", None)):  # an open family of tagged dataclasses
        return _tagged(tuple(tp.members()), v, path)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        if not any(v == a and type(v) is type(a) for a in args):
            raise ContractError(path, f"must be one of {list(args)}, found {_show(v)}")
        return v
    if origin is tuple:
        if not isinstance(v, list):
            raise ContractError(path, f"must be a list, found {_show(v)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_value(args[0], x, f"{path}[{i}]") for i, x in enumerate(v))
        if len(v) != len(args):
            raise ContractError(path, f"must have {len(args)} items, found {len(v)}")
        return tuple(_value(a, x, f"{path}[{i}]") for i, (a, x) in enumerate(zip(args, v)))
    if origin is dict:
        if not isinstance(v, dict):
            raise ContractError(path, f"must be an object, found {_show(v)}")
        return {str(k): _value(args[1], x, f"{path}.{k}") for k, x in v.items()}
    if tp is Any:
        return v
    return _scalar(tp, v, path)


def _scalar(tp: Any, v: Any, path: str) -> Any:
    if tp is bool:
        if not isinstance(v, bool):
            raise ContractError(path, f"must be true or false, found {_show(v)}")
        return v
    if tp is int:
        if isinstance(v, bool) or not isinstance(v, int) or abs(v) > _MAX_INT:
            raise ContractError(path, f"must be an integer, found {_show(v)}")
        return v
    if tp is float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ContractError(path, f"must be a finite number, found {_show(v)}")
        return float(v)
    if tp is str:
        if not isinstance(v, str):
            raise ContractError(path, f"must be a string, found {_show(v)}")
        return v
    raise TypeError(f"the contract cannot hold values of type {tp!r}")  # a bug in a contract class


def _union(tp: Any, v: Any, path: str) -> Any:
    members = [a for a in typing.get_args(tp) if a is not type(None)]
    if v is None:
        if len(members) < len(typing.get_args(tp)):
            return None
        raise ContractError(path, "must not be null")
    if len(members) == 1:
        return _value(members[0], v, path)
    if not any(dataclasses.is_dataclass(m) for m in members):  # scalars: int | str, say
        for m in members:
            try:
                return _value(m, v, path)
            except ContractError:
                pass
        raise ContractError(path, f"must be {' or '.join(getattr(m, '__name__', str(m)) for m in members)}, "
                                  f"found {_show(v)}")
    return _tagged(tuple(members), v, path)


def _tagged(members: tuple[Any, ...], v: Any, path: str) -> Any:
    tagged = {getattr(m, "tag", None): m for m in members if dataclasses.is_dataclass(m)}
    if len(tagged) != len(members) or None in tagged:
        raise TypeError(f"{members!r} must be tagged dataclasses with distinct tags")  # a bug in a contract class
    tag = v.get("type") if isinstance(v, dict) else None
    if not isinstance(tag, str) or tag not in tagged:
        raise ContractError(path, f"must be an object with \"type\" one of {sorted(tagged)}, found {_show(v)}")
    return _dataclass(tagged[tag], v, path)


def _dataclass(cls: Any, v: Any, path: str) -> Any:
    if not isinstance(v, dict):
        raise ContractError(path, f"must be an object, found {_show(v)}")
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    tag = getattr(cls, "tag", None)
    if tag is not None and "type" in v and v["type"] != tag:
        raise ContractError(path, f"has \"type\" {_show(v['type'])} where {tag!r} belongs")
    extra = set(v) - set(fields) - ({"type"} if tag is not None else set())
    if extra:
        raise ContractError(path, f"has unknown keys {sorted(map(str, extra))[:5]}")
    values = {}
    for name, f in fields.items():
        if name in v:
            values[name] = _value(hints[name], v[name], f"{path}.{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ContractError(path, f"lacks '{name}'")
    try:
        return cls(**values)
    except (ValueError, TypeError) as e:  # the class's own checks (__post_init__)
        raise ContractError(path, str(e)) from None


def _show(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."
