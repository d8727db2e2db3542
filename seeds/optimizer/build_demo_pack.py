"""Regenerate the demo pricing pack ``PP_2022-12-28`` and the demo position files from skfolio.

The closes are skfolio's bundled datasets (``load_sp500_dataset``, ``load_sp500_index``,
``load_factors_dataset``; BSD-3-Clause): daily adjusted closes of 20 US large caps, the S&P 500
index and five iShares MSCI USA factor ETFs. The pack keeps the last 757 trading dates of the
stock dataset (756 daily returns, about three years) ending 2022-12-28.

skfolio is a development-time dependency of this script only; the runtime reads the CSV files
this script writes and never imports skfolio.

Output is byte-for-byte deterministic:

* ``packs/PP_2022-12-28/prices.csv`` -- ``date,symbol,close``, sorted by date then symbol. Each
  close is written as ``repr(float)``, Python's shortest round-trip form. skfolio stores its
  closes as decimal text with at most three decimals (two for the index), and ``repr`` of the
  parsed float gives back exactly that text -- all 19,682 values were compared against the raw
  ``.csv.gz`` files when the pack was made -- so nothing is re-rounded. Nothing is
  forward-filled: a missing close is an error.
* ``packs/PP_2022-12-28/securities.csv`` -- ``symbol,name,sector,asset_class`` from
  :data:`SECURITIES`.
* ``portfolios/<id>.csv`` -- ``symbol,shares,cost_basis,acquired`` from :data:`POSITIONS`; the cost
  basis is the pack's close on the acquired date, rounded half-up to cents, so the demo lots
  carry real (adjusted) prices rather than made-up ones.

Usage::

    python -m seeds.optimizer.build_demo_pack [--out DIR]

``DIR`` defaults to this package's folder (``seeds/optimizer``).
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import sys
from collections.abc import Sequence
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pandas as pd

PACK_ID = "PP_2022-12-28"
ASOF = date(2022, 12, 28)
# 757 closes give 756 daily returns: three years of 252 trading days, the templates' lookback.
N_DATES = 757

# (symbol, name, GICS sector as of 2022, asset_class). Names are written without the comma
# before "Inc." so the master needs no CSV quoting.
SECURITIES: tuple[tuple[str, str, str, str], ...] = (
    ("AAPL", "Apple Inc.", "Information Technology", "equity"),
    ("AMD", "Advanced Micro Devices Inc.", "Information Technology", "equity"),
    ("BAC", "Bank of America Corporation", "Financials", "equity"),
    ("BBY", "Best Buy Co. Inc.", "Consumer Discretionary", "equity"),
    ("CVX", "Chevron Corporation", "Energy", "equity"),
    ("GE", "General Electric Company", "Industrials", "equity"),
    ("HD", "The Home Depot Inc.", "Consumer Discretionary", "equity"),
    ("JNJ", "Johnson & Johnson", "Health Care", "equity"),
    ("JPM", "JPMorgan Chase & Co.", "Financials", "equity"),
    ("KO", "The Coca-Cola Company", "Consumer Staples", "equity"),
    ("LLY", "Eli Lilly and Company", "Health Care", "equity"),
    ("MRK", "Merck & Co. Inc.", "Health Care", "equity"),
    ("MSFT", "Microsoft Corporation", "Information Technology", "equity"),
    ("MTUM", "iShares MSCI USA Momentum Factor ETF", "Multi-Sector", "etf"),
    ("PEP", "PepsiCo Inc.", "Consumer Staples", "equity"),
    ("PFE", "Pfizer Inc.", "Health Care", "equity"),
    ("PG", "The Procter & Gamble Company", "Consumer Staples", "equity"),
    ("QUAL", "iShares MSCI USA Quality Factor ETF", "Multi-Sector", "etf"),
    ("RRC", "Range Resources Corporation", "Energy", "equity"),
    ("SIZE", "iShares MSCI USA Size Factor ETF", "Multi-Sector", "etf"),
    ("SP500", "S&P 500 Index", "Index", "index"),
    ("UNH", "UnitedHealth Group Incorporated", "Health Care", "equity"),
    ("USMV", "iShares MSCI USA Min Vol Factor ETF", "Multi-Sector", "etf"),
    ("VLUE", "iShares MSCI USA Value Factor ETF", "Multi-Sector", "etf"),
    ("WMT", "Walmart Inc.", "Consumer Staples", "equity"),
    ("XOM", "Exxon Mobil Corporation", "Energy", "equity"),
)

# Demo lots: (symbol, shares, acquired). Share counts were chosen by hand (see README); the
# cost basis is looked up, never typed in. Acquired dates must be trading dates in the pack.
POSITIONS: dict[str, tuple[tuple[str, int, str], ...]] = {
    "demo_quality": (
        ("AAPL", 100, "2020-03-23"),
        ("JNJ", 150, "2021-06-15"),
        ("XOM", 200, "2019-12-30"),
    ),
    "demo_diversified": (
        ("AAPL", 450, "2020-06-01"),
        ("AMD", 1250, "2021-11-01"),
        ("BAC", 2050, "2020-10-15"),
        ("CVX", 350, "2020-11-02"),
        ("HD", 220, "2021-03-01"),
        ("JNJ", 265, "2019-12-31"),
        ("JPM", 520, "2020-08-03"),
        ("KO", 1300, "2020-05-04"),
        ("LLY", 165, "2021-09-01"),
        ("MRK", 330, "2020-12-01"),
        ("MSFT", 375, "2020-02-03"),
        ("PEP", 240, "2021-02-01"),
        ("PFE", 800, "2021-07-01"),
        ("PG", 420, "2020-04-01"),
        ("UNH", 135, "2022-02-01"),
        ("WMT", 470, "2022-05-18"),
    ),
    "demo_concentrated": (
        ("AAPL", 700, "2019-12-27"),
        ("GE", 400, "2022-03-01"),
        ("HD", 90, "2020-09-01"),
        ("JPM", 250, "2021-10-01"),
        ("MSFT", 170, "2021-04-05"),
        ("UNH", 60, "2022-06-01"),
    ),
}


class SourceDataError(RuntimeError):
    """The skfolio datasets do not have the shape this pack promises (dates, symbols, values)."""


def load_closes() -> pd.DataFrame:
    """The pack's closes as a wide frame: 757 dates ending 2022-12-28, one column per symbol.

    Raises:
        SourceDataError: if skfolio is missing, a close is missing on one of the dates (the
            index and ETF series are joined on the stock dates and never filled), a close is
            not a positive finite number, or the window does not end on 2022-12-28.
    """
    try:
        from skfolio.datasets import load_factors_dataset, load_sp500_dataset, load_sp500_index
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise SourceDataError(
            "skfolio is needed to rebuild the demo pack: pip install skfolio"
        ) from exc

    stocks = load_sp500_dataset()
    if len(stocks) < N_DATES:
        raise SourceDataError(f"load_sp500_dataset has {len(stocks)} dates; {N_DATES} are needed")
    dates = stocks.index[-N_DATES:]
    # Reindex rather than inner-join: a date the index or an ETF lacks must show up as a gap
    # that is reported, not silently shorten the window.
    frame = pd.concat(
        [
            stocks.loc[dates],
            load_sp500_index().reindex(dates),
            load_factors_dataset().reindex(dates),
        ],
        axis=1,
    )
    expected = sorted(s[0] for s in SECURITIES)
    if sorted(frame.columns) != expected:
        raise SourceDataError(
            f"source symbols {sorted(frame.columns)} differ from the security master {expected}"
        )
    frame = frame[expected]
    missing = [
        f"{sym} on {day.date().isoformat()}"
        for day, row in frame.isna().iterrows()
        for sym in frame.columns
        if row[sym]
    ]
    if missing:
        raise SourceDataError(
            f"{len(missing)} close(s) missing from the source: {', '.join(missing[:20])}"
        )
    bad = [
        f"{sym} on {day.date().isoformat()}: {row[sym]!r}"
        for day, row in frame.iterrows()
        for sym in frame.columns
        if not (math.isfinite(row[sym]) and row[sym] > 0)
    ]
    if bad:
        raise SourceDataError(
            f"{len(bad)} close(s) are not positive finite numbers: {', '.join(bad[:20])}"
        )
    if frame.index[-1].date() != ASOF:
        raise SourceDataError(f"the source ends on {frame.index[-1].date()}, not {ASOF}")
    if not frame.index.is_monotonic_increasing or not frame.index.is_unique:
        raise SourceDataError("source dates are not strictly increasing")
    return frame


def format_close(value: float) -> str:
    """Write a close exactly as the source float reads back (shortest round-trip repr)."""
    text = repr(float(value))
    # repr switches to exponent notation below 1e-4 or from 1e16; no price here comes close,
    # but a pack file should never contain it.
    if "e" in text or "E" in text:
        raise SourceDataError(f"close {value!r} would be written in exponent notation")
    return text


def prices_csv(closes: pd.DataFrame) -> str:
    """Long-format prices text: header ``date,symbol,close``, sorted by date then symbol."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(("date", "symbol", "close"))
    for day, row in closes.iterrows():
        iso = pd.Timestamp(day).date().isoformat()
        for symbol in sorted(closes.columns):
            writer.writerow((iso, symbol, format_close(row[symbol])))
    return buf.getvalue()


def securities_csv() -> str:
    """Security master text: header ``symbol,name,sector,asset_class``, sorted by symbol."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(("symbol", "name", "sector", "asset_class"))
    for rec in sorted(SECURITIES):
        writer.writerow(rec)
    return buf.getvalue()


def cost_basis(closes: pd.DataFrame, symbol: str, acquired: str) -> Decimal:
    """The close of ``symbol`` on ``acquired`` in dollars, rounded half-up to cents.

    Going through ``repr`` keeps the rounding on the decimal text the source wrote (a binary
    float such as 62.575 would otherwise round the wrong way).
    """
    day = pd.Timestamp(acquired)
    if day not in closes.index:
        raise SourceDataError(
            f"{symbol}: acquired date {acquired} is not a trading date in pack {PACK_ID}"
        )
    return Decimal(format_close(closes.at[day, symbol])).quantize(
        Decimal("0.01"), rounding=ROUND_HALF_UP
    )


def positions_csv(closes: pd.DataFrame, lots: Sequence[tuple[str, int, str]]) -> str:
    """Positions text: header ``symbol,shares,cost_basis,acquired``, sorted by symbol then date."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(("symbol", "shares", "cost_basis", "acquired"))
    for symbol, shares, acquired in sorted(lots, key=lambda lot: (lot[0], lot[2])):
        writer.writerow((symbol, shares, f"{cost_basis(closes, symbol, acquired):.2f}", acquired))
    return buf.getvalue()


def build(out: Path) -> dict[str, int]:
    """Write the pack and the position files under ``out``; return data rows written per file."""
    closes = load_closes()
    files = {
        Path("packs") / PACK_ID / "prices.csv": prices_csv(closes),
        Path("packs") / PACK_ID / "securities.csv": securities_csv(),
    }
    for portfolio_id, lots in sorted(POSITIONS.items()):
        files[Path("portfolios") / f"{portfolio_id}.csv"] = positions_csv(closes, lots)
    counts = {}
    for rel, text in files.items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        # Bytes, not text mode, so no platform newline translation creeps in.
        path.write_bytes(text.encode("utf-8"))
        counts[rel.as_posix()] = text.count("\n") - 1
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; prints the files written and their data row counts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent,
        help="directory to write into (default: the seeds/optimizer package folder)",
    )
    args = parser.parse_args(argv)
    try:
        counts = build(args.out)
    except SourceDataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for rel, n in counts.items():
        print(f"{args.out / rel}: {n} rows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
