"""A file the report could not use, and why: named in the report instead of silently dropped."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Problem:
    path: Path
    problem: str
