"""CSV importers: valid files parse exactly; every rule yields a problem naming file, line and rule."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.data.importers import (
    MAX_PROBLEMS,
    build_portfolio,
    import_portfolio,
    read_pack,
    read_positions,
)
from services.data.models import Lot
from services.errors import InputError

Write = Callable[[Path, str], Path]


def replace_line(text: str, line: int, new: str) -> str:
    """``text`` with 1-based ``line`` replaced by ``new``."""
    lines = text.splitlines()
    lines[line - 1] = new
    return "\n".join(lines) + "\n"


def problems_of(exc: pytest.ExceptionInfo[InputError]) -> list[dict[str, Any]]:
    return exc.value.details["problems"]


def assert_problem(
    exc: pytest.ExceptionInfo[InputError],
    path: Path,
    row: int | None,
    column: str | None,
    rule: str,
) -> None:
    found = [(p["file"], p["row"], p["column"], p["rule"]) for p in problems_of(exc)]
    assert (str(path), row, column, rule) in found, found
    assert str(path) in exc.value.message


# --- pricing packs ------------------------------------------------------------------------------


def test_valid_pack_builds_canonical_frame(pack_files: tuple[Path, Path]) -> None:
    pack = read_pack("PP_T", *pack_files)
    closes = pack.closes
    assert list(closes.columns) == ["AAA", "BBB", "CCC", "IDX"]
    assert [d.date() for d in closes.index] == [date(2022, 1, d) for d in (3, 4, 5, 6)]
    assert closes.index.is_monotonic_increasing
    assert all(dtype == np.float64 for dtype in closes.dtypes)
    assert np.isnan(closes.loc["2022-01-03", "AAA"])
    assert closes.loc["2022-01-05", "BBB"] == 52.25
    assert pack.asof == date(2022, 1, 6)
    assert [s.symbol for s in pack.securities] == ["AAA", "BBB", "CCC", "IDX"]
    assert pack.security("IDX").asset_class == "index"
    assert len(pack.content_hash) == 64


def test_gzip_prices_give_the_same_pack(tmp_path: Path, pack_files: tuple[Path, Path]) -> None:
    gz = tmp_path / "prices.csv.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as fh:
        fh.write(pack_files[0].read_text())
    assert (
        read_pack("PP_T", gz, pack_files[1]).content_hash
        == read_pack("PP_T", *pack_files).content_hash
    )


def test_bom_blank_lines_whitespace_and_header_case_are_tolerated(
    write: Write, tmp_path: Path, pack_files: tuple[Path, Path]
) -> None:
    messy = (
        "\ufeffDate , Symbol,CLOSE\n\n"
        + "\n".join(
            " , ".join(f.strip() for f in line.split(","))
            for line in pack_files[0].read_text().splitlines()[1:]
        )
        + "\n\n"
    )
    prices = write(tmp_path / "messy.csv", messy)
    assert (
        read_pack("PP_T", prices, pack_files[1]).content_hash
        == read_pack("PP_T", *pack_files).content_hash
    )


def test_content_hash_depends_on_every_close(
    write: Write, tmp_path: Path, pack_files: tuple[Path, Path]
) -> None:
    changed = write(
        tmp_path / "changed.csv",
        pack_files[0].read_text().replace("2022-01-05,CCC,199.5", "2022-01-05,CCC,199.50001"),
    )
    assert (
        read_pack("PP_T", changed, pack_files[1]).content_hash
        != read_pack("PP_T", *pack_files).content_hash
    )


@pytest.mark.parametrize("pack_id", ["", "has space", "x" * 65, "semi;colon", "slash/y"])
def test_bad_pack_id_is_refused(pack_id: str, pack_files: tuple[Path, Path]) -> None:
    with pytest.raises(InputError, match="pack id"):
        read_pack(pack_id, *pack_files)


PRICE_CASES = [
    # (description, transform of the valid prices file, row, column, rule)
    (
        "missing column",
        lambda t: t.replace("date,symbol,close", "date,symbol", 1),
        1,
        "close",
        "missing_column",
    ),
    (
        "extra column",
        lambda t: t.replace("date,symbol,close", "date,symbol,close,volume", 1),
        1,
        "volume",
        "unexpected_column",
    ),
    ("empty file", lambda t: "", 1, None, "empty_file"),
    ("header only", lambda t: "date,symbol,close\n", 1, None, "no_rows"),
    ("duplicate date+symbol", lambda t: t + "2022-01-04,BBB,51.5\n", 17, "date", "duplicate_row"),
    ("text price", lambda t: replace_line(t, 3, "2022-01-04,BBB,abc"), 3, "close", "not_a_number"),
    ("empty price", lambda t: replace_line(t, 3, "2022-01-04,BBB,"), 3, "close", "not_a_number"),
    ("NaN price", lambda t: replace_line(t, 3, "2022-01-04,BBB,NaN"), 3, "close", "not_finite"),
    ("inf price", lambda t: replace_line(t, 3, "2022-01-04,BBB,inf"), 3, "close", "not_finite"),
    ("zero price", lambda t: replace_line(t, 3, "2022-01-04,BBB,0"), 3, "close", "not_positive"),
    (
        "negative price",
        lambda t: replace_line(t, 3, "2022-01-04,BBB,-1.5"),
        3,
        "close",
        "not_positive",
    ),
    ("impossible date", lambda t: replace_line(t, 3, "2022-02-30,BBB,51.5"), 3, "date", "bad_date"),
    ("US date", lambda t: replace_line(t, 3, "01/04/2022,BBB,51.5"), 3, "date", "bad_date"),
    (
        "dates out of order",
        lambda t: replace_line(t, 4, "2022-01-02,BBB,52.25"),
        4,
        "date",
        "dates_not_increasing",
    ),
    (
        "symbol not in master",
        lambda t: t + "2022-01-03,ZZZ,1.0\n2022-01-04,ZZZ,1.1\n",
        17,
        "symbol",
        "unknown_symbol",
    ),
    (
        "empty symbol",
        lambda t: replace_line(t, 3, "2022-01-04,,51.5"),
        3,
        "symbol",
        "missing_value",
    ),
    ("short row", lambda t: replace_line(t, 3, "2022-01-04,BBB"), 3, None, "wrong_field_count"),
]


@pytest.mark.parametrize(
    ("case", "transform", "row", "column", "rule"), PRICE_CASES, ids=[c[0] for c in PRICE_CASES]
)
def test_prices_rules(
    write: Write,
    tmp_path: Path,
    pack_files: tuple[Path, Path],
    case: str,
    transform: Any,
    row: int,
    column: str | None,
    rule: str,
) -> None:
    prices = write(tmp_path / "bad_prices.csv", transform(pack_files[0].read_text()))
    with pytest.raises(InputError) as exc:
        read_pack("PP_T", prices, pack_files[1])
    assert exc.value.exit_code == 2
    assert_problem(exc, prices, row, column, rule)


SECURITY_CASES = [
    (
        "duplicate symbol",
        lambda t: t + "AAA,Alpha Again,Technology,equity\n",
        6,
        "symbol",
        "duplicate_row",
    ),
    (
        "bad asset class",
        lambda t: replace_line(t, 2, "AAA,Alpha Corp,Technology,stock"),
        2,
        "asset_class",
        "bad_asset_class",
    ),
    (
        "missing column",
        lambda t: t.replace("symbol,name,sector,asset_class", "symbol,name,sector", 1),
        1,
        "asset_class",
        "missing_column",
    ),
    (
        "security without prices",
        lambda t: t + "DDD,Delta,Energy,equity\n",
        6,
        "symbol",
        "no_prices",
    ),
    ("empty file", lambda t: "", 1, None, "empty_file"),
]


@pytest.mark.parametrize(
    ("case", "transform", "row", "column", "rule"),
    SECURITY_CASES,
    ids=[c[0] for c in SECURITY_CASES],
)
def test_securities_rules(
    write: Write,
    tmp_path: Path,
    pack_files: tuple[Path, Path],
    case: str,
    transform: Any,
    row: int,
    column: str | None,
    rule: str,
) -> None:
    securities = write(tmp_path / "bad_securities.csv", transform(pack_files[1].read_text()))
    with pytest.raises(InputError) as exc:
        read_pack("PP_T", pack_files[0], securities)
    assert_problem(exc, securities, row, column, rule)


def test_missing_file_is_a_problem(tmp_path: Path, pack_files: tuple[Path, Path]) -> None:
    with pytest.raises(InputError) as exc:
        read_pack("PP_T", tmp_path / "nope.csv", pack_files[1])
    assert_problem(exc, tmp_path / "nope.csv", None, None, "file_not_found")


def test_all_problems_of_both_files_are_reported_together(
    write: Write, tmp_path: Path, pack_files: tuple[Path, Path]
) -> None:
    prices_text, securities_text = (f.read_text() for f in pack_files)
    prices = write(
        tmp_path / "p.csv",
        replace_line(replace_line(prices_text, 3, "2022-01-04,BBB,x"), 7, "2022-13-05,AAA,10.5"),
    )
    securities = write(
        tmp_path / "s.csv", replace_line(securities_text, 4, "CCC,Gamma Fund,Diversified,fund")
    )
    with pytest.raises(InputError) as exc:
        read_pack("PP_T", prices, securities)
    rules = sorted((p["row"], p["rule"]) for p in problems_of(exc))
    assert rules == [(3, "not_a_number"), (4, "bad_asset_class"), (7, "bad_date")]
    assert exc.value.details["n_problems"] == 3
    assert "p.csv" in exc.value.message and "s.csv" in exc.value.message


def test_problem_list_is_capped_and_says_how_many_more(write: Write, tmp_path: Path) -> None:
    bad = "date,symbol,close\n" + "".join(f"2022-01-{d:02d},BBB,oops\n" for d in range(1, 29))
    bad += "".join(f"2022-02-{d:02d},BBB,-1\n" for d in range(1, 29))
    prices = write(tmp_path / "many.csv", bad)
    securities = write(
        tmp_path / "s.csv", "symbol,name,sector,asset_class\nBBB,Beta Inc,Energy,equity\n"
    )
    with pytest.raises(InputError) as exc:
        read_pack("PP_T", prices, securities)
    details = exc.value.details
    assert len(details["problems"]) == MAX_PROBLEMS
    assert details["n_problems"] == 56
    assert details["not_listed"] == 6
    assert "56 problem(s)" in exc.value.message
    assert set(details["problems"][0]) >= {"file", "row", "column", "value", "rule"}


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(min_value=1e-6, max_value=1e9, allow_nan=False), min_size=1, max_size=20))
def test_closes_are_parsed_exactly(
    tmp_path_factory: pytest.TempPathFactory, closes: list[float]
) -> None:
    directory = tmp_path_factory.mktemp("exact")
    text = "date,symbol,close\n" + "".join(
        f"2022-{1 + i // 28:02d}-{1 + i % 28:02d},AAA,{v!r}\n" for i, v in enumerate(closes)
    )
    prices, securities = directory / "p.csv", directory / "s.csv"
    prices.write_text(text)
    securities.write_text("symbol,name,sector,asset_class\nAAA,A,Tech,equity\n")
    # Random closes jump between days; jumps are refused by default (tested on their own).
    pack = read_pack("PP_T", prices, securities, allow_jumps=True)
    assert pack.closes["AAA"].tolist() == closes


# --- positions ----------------------------------------------------------------------------------


def test_positions_parse_lots_exactly(positions_file: Path) -> None:
    lots = read_positions(positions_file)
    assert lots == (
        Lot("AAA", 100, Decimal("9.50"), date(2021, 3, 1)),
        Lot("BBB", 20, None, None),
        Lot("AAA", 50, Decimal("11.25"), date(2021, 9, 15)),
    )
    assert str(lots[0].cost_basis) == "9.50"


def test_positions_minimal_header_keeps_symbol_case_and_strips_space(
    write: Write, tmp_path: Path
) -> None:
    lots = read_positions(write(tmp_path / "pos.csv", "symbol,shares\n  brk.b ,3\nAAA,1e2\n"))
    assert lots == (Lot("brk.b", 3), Lot("AAA", 100))


def test_header_only_positions_mean_no_lots(write: Write, tmp_path: Path) -> None:
    assert read_positions(write(tmp_path / "pos.csv", "symbol,shares\n")) == ()


POSITION_CASES = [
    ("negative shares", "symbol,shares\nAAA,-10\n", 2, "shares", "negative"),
    ("zero shares", "symbol,shares\nAAA,0\n", 2, "shares", "zero"),
    ("fractional shares", "symbol,shares\nAAA,1.5\n", 2, "shares", "not_whole_number"),
    ("text shares", "symbol,shares\nAAA,ten\n", 2, "shares", "not_a_number"),
    ("NaN shares", "symbol,shares\nAAA,NaN\n", 2, "shares", "not_finite"),
    ("negative cost basis", "symbol,shares,cost_basis\nAAA,10,-1\n", 2, "cost_basis", "negative"),
    ("bad acquired date", "symbol,shares,acquired\nAAA,10,yesterday\n", 2, "acquired", "bad_date"),
    ("missing shares column", "symbol,qty\nAAA,10\n", 1, "shares", "missing_column"),
    ("unknown column", "symbol,shares,price\nAAA,10,5\n", 1, "price", "unexpected_column"),
    ("duplicate column", "symbol,shares,shares\nAAA,10,10\n", 1, "shares", "duplicate_column"),
    ("empty symbol", "symbol,shares\n,10\n", 2, "symbol", "missing_value"),
    ("empty file", "", 1, None, "empty_file"),
]


@pytest.mark.parametrize(
    ("case", "text", "row", "column", "rule"), POSITION_CASES, ids=[c[0] for c in POSITION_CASES]
)
def test_positions_rules(
    write: Write, tmp_path: Path, case: str, text: str, row: int, column: str | None, rule: str
) -> None:
    path = write(tmp_path / "pos.csv", text)
    with pytest.raises(InputError) as exc:
        read_positions(path)
    assert_problem(exc, path, row, column, rule)


# --- portfolios against a pack -----------------------------------------------------------------


def test_import_portfolio_checks_symbols_against_the_pack(
    write: Write, tmp_path: Path, pack_files: tuple[Path, Path]
) -> None:
    pack = read_pack("PP_T", *pack_files)
    path = write(tmp_path / "pos.csv", "symbol,shares\nAAA,10\nZZZ,5\nIDX,1\nBBB,-2\n")
    with pytest.raises(InputError) as exc:
        import_portfolio("MINE", path, Decimal("100"), None, pack)
    assert_problem(exc, path, 3, "symbol", "unknown_symbol")
    assert_problem(exc, path, 4, "symbol", "index_not_holdable")
    assert_problem(exc, path, 5, "shares", "negative")
    assert "PP_T" in exc.value.message


def test_import_portfolio_builds_the_portfolio(
    positions_file: Path, pack_files: tuple[Path, Path]
) -> None:
    pack = read_pack("PP_T", *pack_files)
    portfolio = import_portfolio("MINE", positions_file, Decimal("12.34"), "ann", pack)
    assert portfolio.positions() == {"AAA": 150, "BBB": 20}
    assert portfolio.cash == Decimal("12.34") and portfolio.owner == "ann"


@pytest.mark.parametrize(
    ("cash", "rule"),
    [
        (Decimal("-0.01"), "negative"),
        (Decimal("NaN"), "not_finite"),
        (Decimal("Infinity"), "not_finite"),
    ],
)
def test_bad_cash_is_refused(cash: Decimal, rule: str) -> None:
    with pytest.raises(InputError) as exc:
        build_portfolio("MINE", (Lot("AAA", 1),), cash, None, None)
    assert [(p["column"], p["rule"]) for p in problems_of(exc)] == [("cash", rule)]


def test_build_portfolio_numbers_lots_and_skips_symbol_check_without_pack(
    pack_files: tuple[Path, Path],
) -> None:
    lots = (Lot("AAA", 1), Lot("NOPE", 2), Lot("IDX", 3), Lot("BBB", 0))
    assert build_portfolio("MINE", lots[:2], Decimal("0"), None, None).lots == lots[:2]
    with pytest.raises(InputError) as exc:
        build_portfolio("MINE", lots, Decimal("0"), None, read_pack("PP_T", *pack_files))
    found = sorted((p["row"], p["rule"]) for p in problems_of(exc))
    assert found == [(2, "unknown_symbol"), (3, "index_not_holdable"), (4, "not_positive")]


def test_bad_portfolio_id_is_refused() -> None:
    with pytest.raises(InputError) as exc:
        build_portfolio("no spaces please", (), Decimal("0"), None, None)
    assert problems_of(exc)[0]["rule"] == "bad_id"
