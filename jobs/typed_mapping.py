"""Frozen dataclasses built from plain mappings (YAML/JSON) with camelCase keys, every problem
collected, each naming the key, the value and what is allowed.

The one parsing mechanism of the project: the stack config (`stacks/config.py`) and the benchmark
plan (`jobs/modes.py`, which the cluster Jobs rebuild from their plan file) both use it, so it is
standard-library only. Limits sit beside the fields they limit, as field metadata:

    count: int = field(default=2, metadata=limits(low=1))
    concurrency: tuple[int, ...] = field(default=(1, 2), metadata=limits(low=1, high=4096, unique=True))

A dataclass may add rules that span fields with `cross_field_problems(self) -> [(key, text)]`.
"""
from __future__ import annotations

import dataclasses
import re
import typing
from typing import Any, Literal

_LIMITS = "typed_mapping.limits"


class MappingError(ValueError):
    """One or more bad values; `problems` lists each as "<key>: <what is wrong>"."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclasses.dataclass(frozen=True)
class Limits:
    low: int | None = None        # integers (or each item of a list of integers): at least
    high: int | None = None       # ... and at most
    choices: tuple = ()           # the value (or each item of a list) is one of these
    unique: bool = False          # a list holds each value once


def limits(**kwargs: Any) -> dict:
    """Field metadata declaring the field's limits (see `Limits`)."""
    return {_LIMITS: Limits(**kwargs)}


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def snake(name: str) -> str:
    return re.sub(r"[A-Z]", lambda m: "_" + m.group(0).lower(), name)


def join(key: str, name: str) -> str:
    """`benchlab:` + `serving` -> `benchlab:serving`; `bench` + `multiTurn` -> `bench.multiTurn`."""
    return f"{key}{name}" if key.endswith(":") or not key else f"{key}.{name}"


def parse(cls: type, mapping: Any, key: str) -> Any:
    """Build `cls` from `mapping`; raise MappingError listing every problem."""
    problems: list[str] = []
    value = build(cls, mapping, key, cls(), problems)
    if problems:
        raise MappingError(problems)
    return value


def build(tp: Any, value: Any, key: str, default: Any, problems: list[str],
          lim: Limits = Limits()) -> Any:
    """Coerce `value` to `tp`; on a problem, record it and keep `default`, so that the caller
    always gets a well-typed value and every problem is reported in one pass."""
    def bad(allowed: str) -> Any:
        problems.append(f"{key}: {value!r} is not allowed; expected {allowed}")
        return default

    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            return bad("a mapping with keys "
                       + ", ".join(camel(f.name) for f in dataclasses.fields(tp)))
        return _build_dataclass(tp, value, key, default, problems)
    if origin is Literal:
        return value if value in typing.get_args(tp) else bad(type_name(tp))
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or not value:
            return bad(f"a non-empty {type_name(tp)}")
        item = typing.get_args(tp)[0]
        before = len(problems)
        items = tuple(build(item, v, key, None, problems, lim) for v in value)
        if len(problems) > before:
            return default
        if lim.unique and len(set(items)) != len(items):
            problems.append(f"{key}: {list(items)!r} has duplicates; each value may appear once")
            return default
        return items
    if origin is dict:
        if not isinstance(value, dict):
            return bad(type_name(tp))
        key_type, value_type = typing.get_args(tp)
        before = len(problems)
        items = {build(key_type, k, f"{key}[{k!r}]", None, problems):
                 build(value_type, v, f"{key}[{k!r}]", None, problems, lim) for k, v in value.items()}
        return default if len(problems) > before else items
    if tp is bool:
        return value if isinstance(value, bool) else bad("true or false")
    if tp is int:
        if not isinstance(value, int) or isinstance(value, bool):
            return bad(_int_range(lim))
        return _within(value, key, default, problems, lim)
    if tp is str:
        if not isinstance(value, str) or not value.strip():
            return bad("a non-empty string")
        return _within(value, key, default, problems, lim)
    raise TypeError(f"unsupported config type {tp!r} at {key}")


def _within(value: Any, key: str, default: Any, problems: list[str], lim: Limits) -> Any:
    if lim.choices and value not in lim.choices:
        problems.append(f"{key}: {value!r} is not allowed; allowed: "
                        + ", ".join(str(c) for c in lim.choices))
        return default
    if (lim.low is not None and value < lim.low) or (lim.high is not None and value > lim.high):
        problems.append(f"{key}: {value!r} must be at least {lim.low}" if lim.high is None
                        else f"{key}: {value!r} is not allowed; expected {_int_range(lim)}")
        return default
    return value


def _int_range(lim: Limits) -> str:
    if lim.low is not None and lim.high is not None:
        return f"an integer {lim.low}-{lim.high}"
    return "an integer" + (f" of at least {lim.low}" if lim.low is not None else "")


def _build_dataclass(cls: type, mapping: dict, key: str, default: Any, problems: list[str]) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {camel(f.name): f for f in dataclasses.fields(cls)}
    for unknown in sorted(set(mapping) - set(fields)):
        problems.append(f"{join(key, unknown)}: unknown key; allowed: {', '.join(fields)}")
    base = default if default is not None else cls()
    values = {}
    for name, f in fields.items():
        if name in mapping:
            values[f.name] = build(hints[f.name], mapping[name], join(key, name),
                                   getattr(base, f.name), problems,
                                   f.metadata.get(_LIMITS, Limits()))
    built = dataclasses.replace(base, **values)
    cross = getattr(built, "cross_field_problems", None)
    if cross is not None:
        problems.extend(f"{join(key, name)}: {text}" for name, text in cross())
    return built


def type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is tuple:
        return f"list of {type_name(typing.get_args(tp)[0])}"
    if typing.get_origin(tp) is dict:
        return "a mapping of " + " to ".join(type_name(t) for t in typing.get_args(tp))
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def to_mapping(value: Any) -> Any:
    """The inverse of `parse`: a dataclass as camelCase plain data (tuples as lists)."""
    if dataclasses.is_dataclass(value):
        return {camel(f.name): to_mapping(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [to_mapping(v) for v in value]
    return value
