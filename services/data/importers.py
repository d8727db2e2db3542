"""Read pricing packs and positions from CSV files, reporting every problem at once.

Files are parsed with the ``csv`` module rather than pandas so that each problem names its exact
line, and so that closes go through Python's ``float`` (the pack hash depends on their repr).
A problem is a dict ``{file, row, column, value, rule, message}``: ``row`` is the 1-based line
in the file (the header is line 1), ``rule`` a stable code. All problems are collected, then
raised as one :class:`~services.errors.InputError`; nothing is returned, so nothing is written.
"""

from __future__ import annotations

import csv
import gzip
import math
import re
import zlib
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from services.data.bounds import (
    FIRST_DATE,
    MAX_AMOUNT,
    MAX_CLOSE,
    MAX_DAILY_RATIO,
    MAX_SHARES,
    MIN_CLOSE,
    symbol_problem,
)
from services.data.models import ASSET_CLASSES, Lot, Portfolio, PricingPack, Security
from services.errors import InputError

ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
MAX_PROBLEMS = 50

PRICES_COLUMNS = ("date", "symbol", "close")
SECURITIES_COLUMNS = ("symbol", "name", "sector", "asset_class")
SECURITIES_OPTIONAL_COLUMNS = ("halted",)
# The ``halted`` column: empty means not halted (the column is optional, and so is each value).
HALTED_VALUES = {"": False, "false": False, "0": False, "no": False, "true": True, "1": True, "yes": True}
POSITIONS_COLUMNS = ("symbol", "shares")
POSITIONS_OPTIONAL_COLUMNS = ("cost_basis", "acquired")
RATINGS_COLUMNS = ("symbol", "score")

# date.fromisoformat also takes "20220103" and week dates; a pack file should be unambiguous.
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class Problems:
    """Problems found in input, raised together as one InputError."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def add(
        self,
        file: str | None,
        row: int | None,
        column: str | None,
        value: str | None,
        rule: str,
        message: str,
    ) -> None:
        """Record one problem; ``file``/``row`` are None for values that come from no file."""
        self.items.append(
            {
                "file": file,
                "row": row,
                "column": column,
                "value": value,
                "rule": rule,
                "message": message,
            }
        )

    def raise_if_any(self, subject: str) -> None:
        """Raise one InputError naming the files involved and listing up to MAX_PROBLEMS problems."""
        if not self.items:
            return
        files = sorted({p["file"] for p in self.items if p["file"] is not None})
        where = ", ".join(files) if files else subject
        total = len(self.items)
        shown = self.items[:MAX_PROBLEMS]
        first = "; ".join(_describe(p) for p in self.items[:5])
        more = f" (and {total - 5} more; see details.problems)" if total > 5 else ""
        details: dict[str, Any] = {"problems": shown, "n_problems": total}
        if total > MAX_PROBLEMS:
            details["not_listed"] = total - MAX_PROBLEMS
            details["note"] = f"only the first {MAX_PROBLEMS} of {total} problems are listed"
        raise InputError(
            f"{subject}: {total} problem(s) in {where}: {first}{more}", details=details
        )


def _describe(p: dict[str, Any]) -> str:
    loc = [p["file"]] if p["file"] else []
    if p["row"] is not None:
        loc.append(f"line {p['row']}")
    if p["column"]:
        loc.append(f"column {p['column']}")
    return f"{' '.join(loc)}: {p['message']}" if loc else p["message"]


def check_id(value: str, *, kind: str) -> None:
    """Raise InputError unless ``value`` is a usable pack or portfolio id."""
    if not ID_PATTERN.match(value):
        raise InputError(
            f"{kind} id {value!r} is invalid: use 1-64 letters, digits or _ . : -",
            details={"field": "id", "value": value, "rule": ID_PATTERN.pattern},
        )


def read_pack(
    pack_id: str,
    prices_path: Path,
    securities_path: Path,
    *,
    allow_jumps: bool = False,
    today: date | None = None,
) -> PricingPack:
    """Read a pricing pack from a long prices CSV (``date,symbol,close``) and a security master.

    Besides per-value checks, every symbol priced must be in the security master and every
    security must have at least one close (a security without prices could be neither valued
    nor traded). A pack is frozen once stored, so what would poison it for good is refused:
    closes outside MIN_CLOSE..MAX_CLOSE, dates before FIRST_DATE or after ``today`` (default:
    the current UTC date), and, unless ``allow_jumps``, a close more than MAX_DAILY_RATIO times
    (or less than its inverse) the symbol's previous close. ``.csv.gz`` files are read
    transparently.
    """
    check_id(pack_id, kind="pack")
    problems = Problems()
    securities = _parse_securities(Path(securities_path), problems)
    last_day = today or datetime.now(UTC).date()
    prices = _parse_prices(Path(prices_path), problems, allow_jumps=allow_jumps, last_day=last_day)
    if securities is not None and prices is not None:
        _cross_check(securities, str(securities_path), prices, str(prices_path), problems)
    problems.raise_if_any(f"pack {pack_id}")
    assert securities is not None and prices is not None  # no problems means both parsed
    dates, symbols, closes = prices.columns()
    return PricingPack(
        id=pack_id,
        securities=tuple(sorted((s for s, _ in securities.values()), key=lambda s: s.symbol)),
        closes=wide_closes(dates, symbols, closes),
    )


def read_ratings(path: Path) -> dict[str, float]:
    """Read quality ratings from ``symbol,score`` (scores 0-10, like ``min_quality_score``).

    Every problem (a bad header, an empty symbol, a score that is not a number from 0 to 10, a
    symbol rated twice) is reported at once; a file with a header and no rows is an error.
    """
    problems = Problems()
    file = str(path)
    ratings: dict[str, float] = {}
    for line, row in _read_rows(Path(path), RATINGS_COLUMNS, (), problems, need_rows=True) or []:
        sym, raw = row["symbol"], row["score"]
        bad_symbol = symbol_problem(sym) if sym else "symbol is empty"
        if bad_symbol:
            problems.add(file, line, "symbol", sym, "bad_symbol", bad_symbol)
            continue
        try:
            score = float(raw)
        except ValueError:
            score = math.nan
        if not 0 <= score <= 10:
            problems.add(file, line, "score", raw, "bad_score", f"score {raw!r} must be a number from 0 to 10")
        elif sym in ratings:
            problems.add(file, line, "symbol", sym, "duplicate_symbol", f"{sym} is rated twice")
        else:
            ratings[sym] = score
    problems.raise_if_any("ratings")
    return dict(sorted(ratings.items()))


def read_positions(path: Path) -> tuple[Lot, ...]:
    """Read lots from ``symbol,shares[,cost_basis,acquired]``; a header-only file means no lots.

    Shares must be whole and positive; several lots of one symbol are allowed. Symbols are kept
    as written (only surrounding whitespace is removed).
    """
    problems = Problems()
    numbered = _parse_positions(Path(path), problems)
    problems.raise_if_any("positions")
    return tuple(lot for _, lot in numbered)


def build_portfolio(
    portfolio_id: str,
    lots: Sequence[Lot],
    cash: Decimal,
    owner: str | None,
    pack: PricingPack | None,
) -> Portfolio:
    """Validate lots and cash (and, given a pack, the symbols) and build the Portfolio.

    Problems about lots name no file; their ``row`` is the 1-based position of the lot.
    Use :func:`import_portfolio` to get problems with file line numbers.
    """
    problems = Problems()
    _check_portfolio(portfolio_id, list(enumerate(lots, start=1)), None, cash, pack, problems)
    problems.raise_if_any(f"portfolio {portfolio_id}")
    return Portfolio(id=portfolio_id, cash=cash, lots=tuple(lots), owner=owner)


def import_portfolio(
    portfolio_id: str,
    positions_path: Path,
    cash: Decimal,
    owner: str | None,
    pack: PricingPack | None,
) -> Portfolio:
    """Read a positions file and validate it against ``pack`` in one pass, all problems together."""
    problems = Problems()
    numbered = _parse_positions(Path(positions_path), problems)
    _check_portfolio(portfolio_id, numbered, str(positions_path), cash, pack, problems)
    problems.raise_if_any(f"portfolio {portfolio_id}")
    return Portfolio(
        id=portfolio_id, cash=cash, lots=tuple(lot for _, lot in numbered), owner=owner
    )


def wide_closes(
    dates: Sequence[date | str], symbols: Sequence[str], closes: Sequence[float]
) -> pd.DataFrame:
    """Pivot long (date, symbol, close) rows into the canonical wide frame of a PricingPack.

    Sorted DatetimeIndex, columns sorted by symbol, float64, NaN where a symbol has no close.
    The importer and the store both build frames here, so a pack read back equals the pack
    read in. Dates are ``date`` objects or ISO ``YYYY-MM-DD`` text (what SQLite stores).
    """
    if dates and isinstance(dates[0], str):
        # Parsed once per distinct date; pandas pivots date objects faster than text.
        parsed = {text: date.fromisoformat(text) for text in set(dates)}
        dates = [parsed[text] for text in dates]
    long = pd.DataFrame(
        {"date": list(dates), "symbol": list(symbols), "close": np.asarray(closes, dtype="float64")}
    )
    wide = (
        long.pivot(index="date", columns="symbol", values="close").sort_index().sort_index(axis=1)
    )
    # Converting the few distinct dates (not every row) keeps this cheap; ISO text gives pandas'
    # default resolution, the same as pd.to_datetime on the strings a user would write.
    wide.index = pd.DatetimeIndex(
        pd.to_datetime([d.isoformat() for d in wide.index], format="%Y-%m-%d")
    )
    wide.columns = pd.Index([str(c) for c in wide.columns])
    return wide.astype("float64")


# --- parsing -----------------------------------------------------------------------------------


class _Prices:
    """Parsed closes plus, per symbol, the line it first appears on and how many rows it has."""

    def __init__(self) -> None:
        self.rows: list[tuple[date, str, float]] = []
        self.first_line: dict[str, int] = {}
        self.count: dict[str, int] = {}

    def columns(self) -> tuple[list[date], list[str], list[float]]:
        return [r[0] for r in self.rows], [r[1] for r in self.rows], [r[2] for r in self.rows]


def _open_text(path: Path) -> IO[str]:
    # utf-8-sig drops the byte-order mark spreadsheets like to write.
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return path.open("r", encoding="utf-8-sig", newline="")


def _read_rows(
    path: Path,
    required: tuple[str, ...],
    optional: tuple[str, ...],
    problems: Problems,
    *,
    need_rows: bool,
) -> list[tuple[int, dict[str, str]]] | None:
    """Rows of a CSV as (line number, {column: stripped text}); None if the file is unusable."""
    file = str(path)
    before = len(problems.items)
    rows: list[tuple[int, dict[str, str]]] = []
    header: list[str] | None = None
    try:
        with _open_text(path) as fh:
            reader = csv.reader(fh)
            for fields in reader:
                if not any(f.strip() for f in fields):
                    continue
                if header is None:
                    header = [f.strip().lower() for f in fields]
                    if not _header_ok(header, required, optional, file, reader.line_num, problems):
                        return None
                    continue
                if len(fields) != len(header):
                    problems.add(
                        file,
                        reader.line_num,
                        None,
                        ",".join(fields),
                        "wrong_field_count",
                        f"has {len(fields)} fields, the header has {len(header)}",
                    )
                    continue
                rows.append(
                    (reader.line_num, {h: f.strip() for h, f in zip(header, fields, strict=True)})
                )
    except FileNotFoundError:
        problems.add(file, None, None, None, "file_not_found", "file not found")
        return None
    except (OSError, EOFError, zlib.error) as exc:
        # A corrupt or truncated .gz ends in EOFError or zlib.error, not only OSError.
        what = "gzip-compressed " if path.name.endswith(".gz") else ""
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        problems.add(file, None, None, None, "unreadable", f"cannot read as {what}UTF-8 CSV: {reason}")
        return None
    except (UnicodeDecodeError, csv.Error) as exc:
        problems.add(file, None, None, None, "unreadable", f"cannot read as UTF-8 CSV: {exc}")
        return None
    if header is None:
        problems.add(
            file,
            1,
            None,
            None,
            "empty_file",
            f"file is empty; expected header {','.join(required)}",
        )
        return None
    if need_rows and not rows and len(problems.items) == before:
        problems.add(file, 1, None, None, "no_rows", "file has a header but no data rows")
    return rows


def _header_ok(
    header: list[str],
    required: tuple[str, ...],
    optional: tuple[str, ...],
    file: str,
    line: int,
    problems: Problems,
) -> bool:
    expected = ",".join(required) + "".join(f"[,{c}]" for c in optional)
    before = len(problems.items)
    for name in sorted({h for h in header if header.count(h) > 1}):
        problems.add(file, line, name, name, "duplicate_column", f"column {name!r} appears twice")
    for name in required:
        if name not in header:
            problems.add(
                file,
                line,
                name,
                None,
                "missing_column",
                f"missing column {name!r}; expected {expected}",
            )
    for name in header:
        if name not in required and name not in optional:
            problems.add(
                file,
                line,
                name,
                name,
                "unexpected_column",
                f"unexpected column {name!r}; expected {expected}",
            )
    return len(problems.items) == before


def _parse_date(text: str, file: str, line: int, column: str, problems: Problems) -> date | None:
    try:
        if _ISO_DATE.match(text):
            return date.fromisoformat(text)
    except ValueError:
        pass
    problems.add(file, line, column, text, "bad_date", f"{text!r} is not a date in YYYY-MM-DD form")
    return None


def _parse_decimal(
    text: str, file: str, line: int, column: str, problems: Problems
) -> Decimal | None:
    # Decimal (and float) accept "1_000"; in a data file that is more likely a typo than intent.
    try:
        value = Decimal(text) if "_" not in text else None
    except InvalidOperation:
        value = None
    if value is None:
        problems.add(file, line, column, text, "not_a_number", f"{text!r} is not a number")
        return None
    if not value.is_finite():
        problems.add(file, line, column, text, "not_finite", f"{text!r} is not a finite number")
        return None
    return value


def _parse_securities(path: Path, problems: Problems) -> dict[str, tuple[Security, int]] | None:
    rows = _read_rows(path, SECURITIES_COLUMNS, SECURITIES_OPTIONAL_COLUMNS, problems, need_rows=True)
    if rows is None:
        return None
    file = str(path)
    out: dict[str, tuple[Security, int]] = {}
    for line, rec in rows:
        symbol = rec["symbol"]
        halted = HALTED_VALUES.get(rec.get("halted", "").lower())
        if halted is None:
            problems.add(
                file,
                line,
                "halted",
                rec["halted"][:80],
                "bad_flag",
                f"halted {rec['halted'][:80]!r} is not one of true, false, yes, no, 1, 0 or empty",
            )
        if rec["asset_class"] not in ASSET_CLASSES:
            problems.add(
                file,
                line,
                "asset_class",
                rec["asset_class"],
                "bad_asset_class",
                f"asset_class {rec['asset_class']!r} is not one of {', '.join(ASSET_CLASSES)}",
            )
        if not symbol:
            problems.add(file, line, "symbol", "", "missing_value", "symbol is empty")
        elif (why := symbol_problem(symbol)) is not None:
            problems.add(file, line, "symbol", symbol[:80], "bad_symbol", why)
        elif symbol in out:
            problems.add(
                file,
                line,
                "symbol",
                symbol,
                "duplicate_row",
                f"symbol {symbol!r} already listed on line {out[symbol][1]}",
            )
        else:
            # Kept even with a bad asset class: the symbol is listed, so its closes are not
            # also reported as unknown (the bad row already stops the import).
            security = Security(symbol, rec["name"], rec["sector"], rec["asset_class"], halted=bool(halted))
            out[symbol] = (security, line)
    return out


def _parse_prices(
    path: Path, problems: Problems, *, allow_jumps: bool, last_day: date
) -> _Prices | None:
    rows = _read_rows(path, PRICES_COLUMNS, (), problems, need_rows=True)
    if rows is None:
        return None
    file = str(path)
    prices = _Prices()
    seen: dict[tuple[date, str], int] = {}
    last: dict[str, tuple[date, int]] = {}
    previous_close: dict[str, tuple[float, date, int]] = {}
    for line, rec in rows:
        day = _parse_date(rec["date"], file, line, "date", problems)
        if day is not None and not FIRST_DATE <= day <= last_day:
            problems.add(
                file, line, "date", rec["date"], "date_out_of_range",
                f"{day} is outside {FIRST_DATE}..{last_day}; closes are never in the future",
            )
            day = None
        symbol = rec["symbol"]
        if not symbol:
            problems.add(file, line, "symbol", "", "missing_value", "symbol is empty")
        close = _parse_close(rec["close"], file, line, problems)
        if day is None or not symbol:
            continue
        if (day, symbol) in seen:
            problems.add(
                file,
                line,
                "date",
                rec["date"],
                "duplicate_row",
                f"{symbol} on {day} is already on line {seen[(day, symbol)]}",
            )
            continue
        seen[(day, symbol)] = line
        if symbol in last and day < last[symbol][0]:
            prev_day, prev_line = last[symbol]
            problems.add(
                file,
                line,
                "date",
                rec["date"],
                "dates_not_increasing",
                f"{symbol}: {day} comes after {prev_day} (line {prev_line}); "
                "within a symbol, dates must increase down the file",
            )
        else:
            last[symbol] = (day, line)
        prices.first_line.setdefault(symbol, line)
        prices.count[symbol] = prices.count.get(symbol, 0) + 1
        if close is not None:
            prices.rows.append((day, symbol, close))
            before = previous_close.get(symbol)
            if not allow_jumps and before is not None and before[1] < day:
                ratio = close / before[0]
                if not 1 / MAX_DAILY_RATIO <= ratio <= MAX_DAILY_RATIO:
                    problems.add(
                        file, line, "close", rec["close"], "implausible_jump",
                        f"{symbol}: {close:g} on {day} is {ratio:.4g} times the previous close "
                        f"{before[0]:g} (line {before[2]}), a move of {ratio - 1:+.1%}; check for "
                        "a split or a typo, or import with --allow-jumps if it is real",
                    )
            previous_close[symbol] = (close, day, line)
    return prices


def _parse_close(text: str, file: str, line: int, problems: Problems) -> float | None:
    try:
        value = float(text) if "_" not in text else None
    except ValueError:
        value = None
    if value is None:
        problems.add(file, line, "close", text, "not_a_number", f"{text!r} is not a number")
        return None
    if not math.isfinite(value):
        problems.add(file, line, "close", text, "not_finite", f"{text!r} is not a finite price")
        return None
    if value <= 0:
        problems.add(
            file, line, "close", text, "not_positive", f"price {text} must be greater than 0"
        )
        return None
    if not MIN_CLOSE <= value <= MAX_CLOSE:
        problems.add(
            file, line, "close", text, "implausible_price",
            f"price {text} is outside the plausible range {MIN_CLOSE:g} to {MAX_CLOSE:g}",
        )
        return None
    return value


def _cross_check(
    securities: dict[str, tuple[Security, int]],
    securities_file: str,
    prices: _Prices,
    prices_file: str,
    problems: Problems,
) -> None:
    # One problem per symbol (at its first line), not one per row: a missing master entry for a
    # symbol with 750 closes is one mistake.
    for symbol, line in sorted(prices.first_line.items(), key=lambda kv: kv[1]):
        if symbol not in securities:
            problems.add(
                prices_file,
                line,
                "symbol",
                symbol,
                "unknown_symbol",
                f"{symbol!r} ({prices.count[symbol]} rows) is not in the security master",
            )
    for symbol, (_, line) in sorted(securities.items(), key=lambda kv: kv[1][1]):
        if symbol not in prices.first_line:
            problems.add(
                securities_file,
                line,
                "symbol",
                symbol,
                "no_prices",
                f"{symbol!r} has no closes in the prices file",
            )


def _parse_positions(path: Path, problems: Problems) -> list[tuple[int, Lot]]:
    rows = _read_rows(
        path, POSITIONS_COLUMNS, POSITIONS_OPTIONAL_COLUMNS, problems, need_rows=False
    )
    if rows is None:
        return []
    file = str(path)
    lots: list[tuple[int, Lot]] = []
    for line, rec in rows:
        symbol = rec["symbol"]
        ok = bool(symbol)
        if not symbol:
            problems.add(file, line, "symbol", "", "missing_value", "symbol is empty")
        elif (why := symbol_problem(symbol)) is not None:
            problems.add(file, line, "symbol", symbol[:80], "bad_symbol", why)
            ok = False
        shares = _parse_shares(rec["shares"], file, line, problems)
        ok = ok and shares is not None
        cost_basis: Decimal | None = None
        if rec.get("cost_basis"):
            cost_basis = _parse_decimal(rec["cost_basis"], file, line, "cost_basis", problems)
            if cost_basis is not None and not 0 <= cost_basis <= MAX_AMOUNT:
                problems.add(
                    file,
                    line,
                    "cost_basis",
                    rec["cost_basis"],
                    "negative" if cost_basis < 0 else "too_large",
                    f"cost_basis must be from 0 to {MAX_AMOUNT}",
                )
                cost_basis = None
            ok = ok and cost_basis is not None
        acquired: date | None = None
        if rec.get("acquired"):
            acquired = _parse_date(rec["acquired"], file, line, "acquired", problems)
            ok = ok and acquired is not None
        if ok:
            assert shares is not None
            lots.append(
                (line, Lot(symbol=symbol, shares=shares, cost_basis=cost_basis, acquired=acquired))
            )
    return lots


def _parse_shares(text: str, file: str, line: int, problems: Problems) -> int | None:
    value = _parse_decimal(text, file, line, "shares", problems)
    if value is None:
        return None
    if value != value.to_integral_value():
        problems.add(
            file, line, "shares", text, "not_whole_number", f"shares {text} must be a whole number"
        )
        return None
    if value < 0:
        problems.add(file, line, "shares", text, "negative", f"shares {text} must be positive")
        return None
    if value == 0:
        problems.add(
            file, line, "shares", text, "zero", "a lot of 0 shares is not a holding; remove the row"
        )
        return None
    if value > MAX_SHARES:
        problems.add(
            file, line, "shares", text, "too_large", f"shares {text} is more than {MAX_SHARES:,}"
        )
        return None
    return int(value)


def _check_portfolio(
    portfolio_id: str,
    numbered: Iterable[tuple[int, Lot]],
    file: str | None,
    cash: Decimal,
    pack: PricingPack | None,
    problems: Problems,
) -> None:
    if not ID_PATTERN.match(portfolio_id):
        problems.add(
            None,
            None,
            "id",
            portfolio_id,
            "bad_id",
            f"portfolio id {portfolio_id!r} is invalid: use 1-64 letters, digits or _ . : -",
        )
    if not isinstance(cash, Decimal) or not cash.is_finite():
        problems.add(
            None, None, "cash", str(cash), "not_finite", f"cash {cash} is not a finite amount"
        )
    elif cash < 0:
        problems.add(None, None, "cash", str(cash), "negative", f"cash {cash} must be 0 or more")
    elif cash > MAX_AMOUNT:
        problems.add(None, None, "cash", str(cash), "too_large", f"cash {cash} is more than {MAX_AMOUNT}")
    master = {s.symbol: s for s in pack.securities} if pack is not None else {}
    for row, lot in numbered:
        # Lots built in code skip the file parser, so the basic rules are checked again here.
        if isinstance(lot.shares, bool) or not isinstance(lot.shares, int) or not 0 < lot.shares <= MAX_SHARES:
            problems.add(
                file,
                row,
                "shares",
                str(lot.shares),
                "not_positive",
                f"shares must be a whole number from 1 to {MAX_SHARES:,}",
            )
        if lot.cost_basis is not None and (not lot.cost_basis.is_finite() or lot.cost_basis < 0):
            problems.add(
                file,
                row,
                "cost_basis",
                str(lot.cost_basis),
                "negative",
                "cost_basis must be 0 or more",
            )
        if pack is None:
            continue
        security = master.get(lot.symbol)
        if security is None:
            problems.add(
                file,
                row,
                "symbol",
                lot.symbol,
                "unknown_symbol",
                f"{lot.symbol!r} is not in pricing pack {pack.id}",
            )
            continue
        if security.asset_class == "index":
            problems.add(
                file,
                row,
                "symbol",
                lot.symbol,
                "index_not_holdable",
                f"{lot.symbol!r} is an index in pack {pack.id}; an index cannot be held",
            )
