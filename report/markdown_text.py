"""Text that came from a results bucket, made inert before it reaches report.md or a CSV cell.

A manifest, an export or an object key is written by whatever ran the benchmark; the report is
read in a Markdown viewer and the CSVs in a spreadsheet. So such text never starts a line, a
table cell, an HTML tag, a link or a code span of its own, and no CSV cell starts a formula.
"""
from __future__ import annotations

import re
from typing import Any

# CommonMark 0.31 "Backslash escapes": any ASCII punctuation may be escaped; these are the ones
# that open a link, image, code span, HTML tag, entity or table cell inside a line.
_ACTIVE = re.compile(r"([\\`\[\]<>&|!])")
_LINE_BREAKS = re.compile(r"\s*[\r\n\v\f\u2028\u2029]+\s*")
# OWASP "CSV Injection": a cell starting with one of these is read as a formula.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def text(value: Any) -> str:
    """`value` as literal text on one line of Markdown (a table cell or list item included)."""
    return _ACTIVE.sub(r"\\\1", _LINE_BREAKS.sub(" ", str(value)))


def code(value: Any) -> str:
    """`value` as one inline code span: its fence is longer than any run of backticks inside
    (CommonMark 0.31 "Code spans"), so nothing in it ends the span early."""
    content = _LINE_BREAKS.sub(" ", str(value))
    fence = "`" * (max((len(run) for run in re.findall(r"`+", content)), default=0) + 1)
    pad = " " if content.startswith("`") or content.endswith("`") else ""
    return f"{fence}{pad}{content}{pad}{fence}"


def csv_cell(value: Any) -> Any:
    """A CSV value a spreadsheet shows as text: a string that would start a formula is quoted
    with a leading apostrophe; numbers and everything else are left as they are."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value
