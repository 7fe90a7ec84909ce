"""One lookup for the fact tables: a missing key is a KeyError that names the known ones."""
from __future__ import annotations

from typing import Mapping, TypeVar

T = TypeVar("T")


def entry(table: Mapping[str, T], key: str, kind: str) -> T:
    try:
        return table[key]
    except KeyError:
        raise KeyError(f"no facts for {kind} {key!r}; known: {', '.join(sorted(table))}") from None
