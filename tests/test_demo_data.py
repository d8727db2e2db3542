"""Checks on the shipped demo seed data: the pricing pack, templates, benchmark and portfolios.

The files are read with the ``csv`` and ``json`` modules and the numbers recomputed with numpy
here, independently of the build script and of the services that load them, so a regenerated or
hand-edited seed that breaks a promise made in seeds/optimizer/README.md fails here.
"""

from __future__ import annotations

import csv
import json
import math
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services.data.policy import parse_overrides

SEEDS = Path(__file__).resolve().parents[1] / "seeds" / "optimizer"
PACK_ID = "PP_2022-12-28"
PACK = SEEDS / "packs" / PACK_ID

STOCKS = (
    "AAPL", "AMD", "BAC", "BBY", "CVX", "GE", "HD", "JNJ", "JPM", "KO",
    "LLY", "MRK", "MSFT", "PEP", "PFE", "PG", "RRC", "UNH", "WMT", "XOM",
)  # fmt: skip
ETFS = ("MTUM", "QUAL", "SIZE", "USMV", "VLUE")

# GICS sectors as of 2022, as the brief for the pack fixes them.
SECTORS = {
    "AAPL": "Information Technology",
    "AMD": "Information Technology",
    "MSFT": "Information Technology",
    "BAC": "Financials",
    "JPM": "Financials",
    "BBY": "Consumer Discretionary",
    "HD": "Consumer Discretionary",
    "CVX": "Energy",
    "XOM": "Energy",
    "RRC": "Energy",
    "GE": "Industrials",
    "JNJ": "Health Care",
    "LLY": "Health Care",
    "MRK": "Health Care",
    "PFE": "Health Care",
    "UNH": "Health Care",
    "KO": "Consumer Staples",
    "PEP": "Consumer Staples",
    "PG": "Consumer Staples",
    "WMT": "Consumer Staples",
}

# (max_single_position_pct, max_sector_pct, max_tracking_error_pct, max_turnover_pct,
#  min_quality_score, method)
REQUIRED_LIMITS = {
    "quality_focused": (10.0, 25.0, 2.0, 20.0, 6.0, "max_sharpe"),
    "aggressive_growth": (15.0, 40.0, 5.0, 30.0, 4.0, "mean_variance"),
    "conservative_income": (8.0, 20.0, 1.5, 15.0, 8.0, "min_variance"),
}


def _json(name: str) -> Any:
    return json.loads((SEEDS / name).read_text(encoding="utf-8"))


def _rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        return header, list(reader)


@pytest.fixture(scope="module")
def closes() -> tuple[list[str], list[str], np.ndarray]:
    """(dates, symbols, closes[date, symbol]) from prices.csv; NaN where a close is absent."""
    header, rows = _rows(PACK / "prices.csv")
    assert header == ["date", "symbol", "close"]
    dates = sorted({r[0] for r in rows})
    symbols = sorted({r[1] for r in rows})
    di = {d: i for i, d in enumerate(dates)}
    si = {s: j for j, s in enumerate(symbols)}
    out = np.full((len(dates), len(symbols)), np.nan)
    for d, s, c in rows:
        assert np.isnan(out[di[d], si[s]]), f"duplicate row {d},{s}"
        out[di[d], si[s]] = float(c)
    return dates, symbols, out


@pytest.fixture(scope="module")
def stock_cov(closes: tuple[list[str], list[str], np.ndarray]) -> np.ndarray:
    """Ledoit-Wolf daily covariance of the 20 stocks' 756 simple returns (STOCKS order)."""
    from sklearn.covariance import LedoitWolf

    _, symbols, values = closes
    prices = values[:, [symbols.index(s) for s in STOCKS]]
    returns = prices[1:] / prices[:-1] - 1.0
    assert returns.shape == (756, 20)
    return LedoitWolf().fit(returns).covariance_


def _positions(portfolio_id: str) -> list[dict[str, str]]:
    spec = _portfolio_spec(portfolio_id)
    header, rows = _rows(SEEDS / spec["positions"])
    assert header == ["symbol", "shares", "cost_basis", "acquired"]
    return [dict(zip(header, r, strict=True)) for r in rows]


def _portfolio_spec(portfolio_id: str) -> dict[str, Any]:
    specs = {p["id"]: p for p in _json("portfolios.json")["portfolios"]}
    return specs[portfolio_id]


def _weights(
    portfolio_id: str, closes: tuple[list[str], list[str], np.ndarray]
) -> tuple[dict[str, float], float]:
    """Weights of each held stock in market value plus cash, and that total value."""
    _, symbols, values = closes
    last = {s: values[-1, j] for j, s in enumerate(symbols)}
    shares: dict[str, int] = {}
    for p in _positions(portfolio_id):
        shares[p["symbol"]] = shares.get(p["symbol"], 0) + int(p["shares"])
    value = {s: n * last[s] for s, n in shares.items()}
    total = sum(value.values()) + float(_portfolio_spec(portfolio_id)["cash"])
    return {s: v / total for s, v in value.items()}, total


# --- (a) the build script reproduces the pack ----------------------------------------------------


def test_build_script_reproduces_pack_byte_for_byte(tmp_path: Path) -> None:
    pytest.importorskip("skfolio")
    from seeds.optimizer.build_demo_pack import build

    counts = build(tmp_path)
    assert counts[f"packs/{PACK_ID}/prices.csv"] == 757 * 26
    for rel in (f"packs/{PACK_ID}/prices.csv", f"packs/{PACK_ID}/securities.csv"):
        assert (tmp_path / rel).read_bytes() == (SEEDS / rel).read_bytes(), rel
    # The position files are generated too (cost basis looked up from the closes).
    for spec in _json("portfolios.json")["portfolios"]:
        rel = spec["positions"]
        assert (tmp_path / rel).read_bytes() == (SEEDS / rel).read_bytes(), rel


# --- (b) the pack --------------------------------------------------------------------------------


def test_pack_shape_and_values(closes: tuple[list[str], list[str], np.ndarray]) -> None:
    dates, symbols, values = closes
    assert len(dates) == 757
    assert dates[-1] == "2022-12-28"
    assert dates[0] == "2019-12-27"
    assert symbols == sorted([*STOCKS, "SP500", *ETFS])
    assert len(symbols) == 26
    assert not np.isnan(values).any(), "every symbol must have a close on every date (no gaps)"
    assert np.isfinite(values).all() and (values > 0).all()
    for d in dates:
        assert date.fromisoformat(d).isoformat() == d


def test_prices_file_sorted_and_plain(closes: tuple[list[str], list[str], np.ndarray]) -> None:
    raw = (PACK / "prices.csv").read_bytes()
    assert b"\r" not in raw and raw.endswith(b"\n")
    _, rows = _rows(PACK / "prices.csv")
    keys = [(r[0], r[1]) for r in rows]
    assert keys == sorted(keys), "rows must be sorted by date, then symbol"
    for _, _, c in rows:
        # The close is written exactly as the float reads back (repr), never re-rounded.
        assert repr(float(c)) == c and "e" not in c.lower()


def test_security_master() -> None:
    header, rows = _rows(PACK / "securities.csv")
    assert header == ["symbol", "name", "sector", "asset_class"]
    master = {r[0]: r for r in rows}
    assert [r[0] for r in rows] == sorted(master)
    for s in STOCKS:
        assert master[s][2] == SECTORS[s] and master[s][3] == "equity", s
    assert master["SP500"][2:] == ["Index", "index"]
    for s in ETFS:
        assert master[s][2:] == ["Multi-Sector", "etf"]
        assert master[s][1].startswith("iShares MSCI USA ") and master[s][1].endswith(" Factor ETF")
    assert all(r[1] for r in rows), "every security needs a name"


# --- (c) policy templates and defaults -----------------------------------------------------------


def test_policy_templates_parse_and_have_required_limits() -> None:
    data = _json("policy_templates.json")
    assert data["version"] == "2026.11"
    templates = {t["id"]: t for t in data["templates"]}
    assert set(templates) == set(REQUIRED_LIMITS)
    for tid, (pos, sector, te, turnover, quality, method) in REQUIRED_LIMITS.items():
        t = templates[tid]
        assert t["method_version"] == "1" and t["description"]
        parsed = parse_overrides(t["policy"], where=tid)
        assert parsed.max_single_position_pct == pos
        assert parsed.max_sector_pct == sector
        assert parsed.max_tracking_error_pct == te
        assert parsed.max_turnover_pct == turnover
        assert parsed.min_quality_score == quality
        assert parsed.method == method
        assert parsed.universe == "holdings"
        assert parsed.benchmark == "DEMO_20"
        assert parsed.covariance_estimator == "ledoit"
        assert parsed.expected_return_estimator == "hist"
        assert parsed.lookback_days == 756
    assert templates["aggressive_growth"]["policy"]["risk_aversion"] == 1.0
    assert templates["conservative_income"]["policy"]["cash_buffer_pct"] == 2.0


def test_constraint_defaults_exact() -> None:
    assert _json("constraint_defaults.json") == {
        "version": "2026.11",
        "commission_per_trade": "5.00",
        "market_impact_bps": 15.0,
        "min_trade_value": "100",
        "risk_free_rate": 0.02,
        "annualization_days": 252,
    }


def test_quality_ratings_cover_all_stocks() -> None:
    data = _json("quality_ratings.json")
    assert data["source"] == "demo" and "not investment research" in data["note"]
    ratings = data["ratings"]
    assert set(STOCKS) <= set(ratings)
    assert all(0.0 <= float(v) <= 10.0 for v in ratings.values())
    assert ratings["AAPL"] == 9.2 and ratings["XOM"] == 4.5 and ratings["JNJ"] == 9.0
    assert sum(v < 6 for v in ratings.values()) >= 3
    assert sum(v >= 8 for v in ratings.values()) >= 3


# --- (d) the benchmark ---------------------------------------------------------------------------


def test_demo_20_weights() -> None:
    weights = _json("benchmarks.json")["benchmarks"]["DEMO_20"]["weights"]
    _, rows = _rows(PACK / "securities.csv")
    equities = {r[0] for r in rows if r[3] == "equity"}
    assert set(weights) <= equities
    assert set(weights) == set(STOCKS)
    assert all(w > 0 for w in weights.values())
    assert abs(math.fsum(weights.values()) - 1.0) < 1e-9
    # Written with four decimals: the basis points add up to exactly 10,000.
    assert sum(round(w * 10_000) for w in weights.values()) == 10_000
    assert all(abs(w * 10_000 - round(w * 10_000)) < 1e-6 for w in weights.values())


# --- (e) tracking error of demo_diversified ------------------------------------------------------


def test_demo_diversified_tracking_error_in_band(
    closes: tuple[list[str], list[str], np.ndarray], stock_cov: np.ndarray
) -> None:
    bench = _json("benchmarks.json")["benchmarks"]["DEMO_20"]["weights"]
    weights, _ = _weights("demo_diversified", closes)
    active = np.array([weights.get(s, 0.0) - bench.get(s, 0.0) for s in STOCKS])
    te_pct = 100.0 * math.sqrt(252.0 * active @ stock_cov @ active)
    assert 3.2 <= te_pct <= 3.8, f"ex-ante TE {te_pct:.3f}%"


def test_demo_diversified_shape(closes: tuple[list[str], list[str], np.ndarray]) -> None:
    weights, total = _weights("demo_diversified", closes)
    cash = float(_portfolio_spec("demo_diversified")["cash"])
    assert 14 <= len(weights) <= 16
    assert 950_000 <= total - cash <= 1_050_000
    assert 20_000 <= cash <= 30_000
    assert max(weights.values()) < 0.12


def test_demo_concentrated_shape(closes: tuple[list[str], list[str], np.ndarray]) -> None:
    weights, total = _weights("demo_concentrated", closes)
    cash = float(_portfolio_spec("demo_concentrated")["cash"])
    assert len(weights) == 6
    assert 225_000 <= total <= 275_000
    assert 4_000 <= cash <= 6_000
    assert 0.33 <= max(weights.values()) <= 0.37


# --- (f) demo_quality ----------------------------------------------------------------------------


def test_demo_quality_holdings() -> None:
    positions = _positions("demo_quality")
    assert sorted((p["symbol"], int(p["shares"])) for p in positions) == [
        ("AAPL", 100),
        ("JNJ", 150),
        ("XOM", 200),
    ]
    assert _portfolio_spec("demo_quality")["cash"] == "0.00"


# --- every portfolio ------------------------------------------------------------------------------


def test_portfolio_specs() -> None:
    data = _json("portfolios.json")
    assert data["version"] == "2026.11"
    ids = [p["id"] for p in data["portfolios"]]
    assert sorted(ids) == ["demo_concentrated", "demo_diversified", "demo_quality"]
    for p in data["portfolios"]:
        assert p["owner"] == "demo" and p["description"]
        assert p["positions"] == f"portfolios/{p['id']}.csv"
        assert Decimal(p["cash"]) >= 0 and Decimal(p["cash"]).as_tuple().exponent == -2


def test_cost_basis_is_the_pack_close_on_the_acquired_date() -> None:
    # Read the close text, not the float, so the cents are rounded exactly as written.
    _, rows = _rows(PACK / "prices.csv")
    text = {(d, s): c for d, s, c in rows}
    for spec in _json("portfolios.json")["portfolios"]:
        for p in _positions(spec["id"]):
            assert p["symbol"] in STOCKS
            assert int(p["shares"]) > 0 and p["shares"] == str(int(p["shares"]))
            acquired = date.fromisoformat(p["acquired"])
            assert 2019 <= acquired.year <= 2022
            close = text[(p["acquired"], p["symbol"])]
            expected = Decimal(close).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
            assert p["cost_basis"] == f"{expected:.2f}", (spec["id"], p)


def test_services_load_the_seeds() -> None:
    """The runtime's own readers accept the pack and every portfolio (integration check)."""
    from services.data.importers import import_portfolio, read_pack

    pack = read_pack(PACK_ID, PACK / "prices.csv", PACK / "securities.csv")
    assert pack.asof == date(2022, 12, 28)
    assert len(pack.symbols) == 26
    for spec in _json("portfolios.json")["portfolios"]:
        portfolio = import_portfolio(
            spec["id"], SEEDS / spec["positions"], Decimal(spec["cash"]), spec["owner"], pack
        )
        assert portfolio.positions()
