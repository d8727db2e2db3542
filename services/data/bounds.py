"""The declared bounds of everything that comes in from outside: numbers, text, JSON and patterns.

One place, so that a CSV row, a request from an LLM, a pattern file and a Python call meet the
same limits. A value outside them is an input error naming the field, the value and the bound,
never a traceback or an absurd result. The bounds are far beyond any real portfolio and far
inside what the arithmetic can carry exactly: shares below 2**53 stay exact as floats, and money
below 10**13 keeps its cents in a float.
"""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from typing import Any

from services.errors import InputError

MAX_SHARES = 10**12
"""Whole shares in one lot, position or trade (the largest companies have about 10**10)."""

MAX_AMOUNT = Decimal(10**13)
"""Cash, cost basis and trade-value thresholds, in the portfolio currency."""

MAX_COMMISSION = Decimal(10**6)
"""A fixed commission per trade."""

MAX_RISK_AVERSION = 1000.0
"""λ of mean_variance; beyond it the objective is minimum variance to solver precision."""

MIN_CLOSE, MAX_CLOSE = 1e-6, 1e9
"""A plausible close (or quoted price) in a pricing pack, in the pack's currency."""

MAX_DAILY_RATIO = 3.0
"""A close more than 3x (or less than 1/3 of) the previous one is a jump: +200% or -66.7% in a
day is far more often a split, a unit change or a typo than a real move, so an import refuses it
unless told otherwise (``--allow-jumps``)."""

FIRST_DATE = date(1900, 1, 1)
"""The earliest date a pack may hold; the latest is today (closes are never in the future)."""

MAX_SYMBOL_LENGTH = 64
"""Symbols are stored in 64-character columns."""

FORMULA_PREFIXES = ("=", "+", "-", "@")
"""A symbol starting with one of these would run as a formula when an export is opened in a
spreadsheet (CSV injection), so it is refused at the door."""

MAX_JSON_DEPTH = 64
"""Nesting depth of a request, a run's inputs or a pattern document."""

MAX_REQUEST_BYTES = 5 * 1024 * 1024
"""Size of a request, a run's inputs or a pattern document as JSON text."""

MAX_PATTERN_STEPS = 50
"""Steps in one pattern."""

MAX_RUN_STATE_BYTES = 32 * 1024 * 1024
"""Size of a run's state (inputs plus every step's result) as JSON text."""


def symbol_problem(symbol: str) -> str | None:
    """Why ``symbol`` cannot be stored, or None when it can."""
    if len(symbol) > MAX_SYMBOL_LENGTH:
        return f"symbol is {len(symbol)} characters long; at most {MAX_SYMBOL_LENGTH} are allowed"
    if symbol.startswith(FORMULA_PREFIXES):
        return (
            f"symbol {symbol!r} starts with {symbol[0]!r}, which a spreadsheet would run as a "
            "formula; symbols may not start with = + - @"
        )
    if any(ord(c) < 32 or ord(c) == 127 for c in symbol):
        return "symbol contains a control character"
    return None


def json_depth(value: Any) -> int:
    """How deeply lists and objects nest in ``value`` (a scalar is 0), without recursion."""
    deepest = 0
    todo: list[tuple[Any, int]] = [(value, 0)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        depth += 1
        deepest = max(deepest, depth)
        if depth > MAX_JSON_DEPTH:
            break  # deep enough to refuse; walking a 100,000-deep value to its end is wasted work
        todo.extend((child, depth) for child in children)
    return deepest


def check_json_value(value: Any, *, kind: str = "request", source: str | None = None) -> None:
    """Refuse a parsed value nested deeper than MAX_JSON_DEPTH or larger than MAX_REQUEST_BYTES.

    Raises:
        InputError: naming the ``kind`` of document (and its ``source``, if any) and the limit.
    """
    if json_depth(value) > MAX_JSON_DEPTH:
        raise _too_deep(kind, source)
    size = len(json.dumps(value, default=str, ensure_ascii=False).encode("utf-8"))
    if size > MAX_REQUEST_BYTES:
        raise _too_large(kind, source, size)


def parse_json_text(text: str, *, source: str, kind: str = "request") -> Any:
    """Parse JSON text from a file, stdin or a request body within the size and depth limits.

    NaN and Infinity are refused (JSON has no such numbers). Messages name the ``kind`` of
    document and its ``source`` (a file name, or ``stdin``).

    Raises:
        InputError: not JSON, too large, too deep, or a non-finite constant.
    """
    size = len(text.encode("utf-8"))
    if size > MAX_REQUEST_BYTES:
        raise _too_large(kind, source, size)
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{kind} {source} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            details={"file": source, "line": exc.lineno, "column": exc.colno},
        ) from exc
    except RecursionError:
        raise _too_deep(kind, source) from None
    if json_depth(value) > MAX_JSON_DEPTH:
        raise _too_deep(kind, source)
    return value


def _reject_constant(name: str) -> Any:
    raise InputError(
        f"request contains {name}, which is not a number; use a finite value",
        details={"value": name},
    )


def _named(kind: str, source: str | None) -> str:
    return kind if source is None else f"{kind} {source}"


def _too_deep(kind: str, source: str | None) -> InputError:
    return InputError(
        f"{_named(kind, source)} nests lists and objects more than {MAX_JSON_DEPTH} levels deep",
        code="too_deep",
        details={"file": source, "max_depth": MAX_JSON_DEPTH},
    )


def _too_large(kind: str, source: str | None, size: int) -> InputError:
    return InputError(
        f"{_named(kind, source)} is {size:,} bytes of JSON; at most {MAX_REQUEST_BYTES:,} are accepted",
        code="too_large",
        details={"file": source, "bytes": size, "max_bytes": MAX_REQUEST_BYTES},
    )
