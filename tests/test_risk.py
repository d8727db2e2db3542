"""The risk formulas of ``services.analytics.risk`` against hand calculations and independent numpy/sklearn code."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.covariance import LedoitWolf

from services.analytics import risk
from services.data.policy import Policy
from services.data.seeds import load_benchmarks, load_seed_pack
from services.errors import InputError

PACK = "PP_2022-12-28"


def test_hhi_and_effective_holdings_by_hand() -> None:
    # 50/30/20: HHI = 0.25 + 0.09 + 0.04 = 0.38, 1/HHI = 2.6316.
    hhi = risk.herfindahl({"A": 0.5, "B": 0.3, "C": 0.2})
    assert hhi == pytest.approx(0.38)
    assert risk.effective_holdings(hhi) == pytest.approx(1 / 0.38)


def test_hhi_ignores_cash_so_two_equal_positions_are_two_holdings() -> None:
    # 10 shares at 40 and 20 at 20 with 200 cash: 400 + 400 + 200 = 1000, weights 0.4 / 0.4.
    weights, total = risk.position_weights({"A": 10, "B": 20, "Z": 0}, {"A": 40.0, "B": 20.0, "Z": 1.0}, 200.0)
    assert total == 1000.0
    assert weights == {"A": 0.4, "B": 0.4}
    assert risk.herfindahl(weights) == pytest.approx(0.5)
    assert risk.effective_holdings(risk.herfindahl(weights)) == pytest.approx(2.0)
    assert risk.herfindahl({}) is None and risk.effective_holdings(None) is None


def test_top_ten_weight_sums_the_ten_largest() -> None:
    weights = {f"S{i:02d}": w for i, w in enumerate([0.2, 0.15, 0.1, 0.1, 0.08, 0.07, 0.06, 0.05, 0.05, 0.04, 0.03, 0.02])}
    assert risk.top_n_weight(weights) == pytest.approx(0.2 + 0.15 + 0.1 + 0.1 + 0.08 + 0.07 + 0.06 + 0.05 + 0.05 + 0.04)
    assert risk.top_n_weight({"A": 0.3}) == pytest.approx(0.3)


def test_var_and_cvar_by_hand() -> None:
    # -0.10, -0.09, ..., 0.09: the 5th percentile sits 0.05 × 19 = 0.95 of the way from -0.10 to -0.09.
    r = np.arange(-10, 10) / 100
    var, cvar = risk.historical_var_cvar(r)
    assert var == pytest.approx(0.0905)
    assert cvar == pytest.approx(0.10)  # only -0.10 is at or below -0.0905


def test_var_and_cvar_match_numpy_percentile() -> None:
    r = np.random.default_rng(7).normal(0.0004, 0.012, 756)
    q = np.percentile(r, 5)
    var, cvar = risk.historical_var_cvar(r)
    assert var == pytest.approx(-q, abs=1e-15)
    assert cvar == pytest.approx(-np.sort(r)[: int(np.sum(r <= q))].mean(), abs=1e-15)
    assert cvar >= var


def test_max_drawdown_by_hand() -> None:
    # Path 1, 1.1, 0.88, 0.924, 0.8316, 1.08108: worst fall from the 1.1 peak to 0.8316.
    assert risk.max_drawdown(np.array([0.10, -0.20, 0.05, -0.10, 0.30])) == pytest.approx(1 - 0.8316 / 1.1)
    assert risk.max_drawdown(np.array([0.01, 0.02])) == 0.0
    assert risk.max_drawdown(np.array([-0.5])) == pytest.approx(0.5)  # from the starting value


def test_beta_matches_numpy_polyfit() -> None:
    rng = np.random.default_rng(11)
    rm = rng.normal(0, 0.01, 500)
    rp = 0.0002 + 1.3 * rm + rng.normal(0, 0.004, 500)
    slope = np.polyfit(rm, rp, 1)[0]
    assert risk.beta(rp, rm) == pytest.approx(slope, rel=1e-10)
    frame = pd.DataFrame({"X": rp, "Y": -rm})
    assert risk.betas(frame, pd.Series(rm)) == pytest.approx({"X": slope, "Y": -1.0})


def test_risk_contributions_by_hand_and_sum_to_one() -> None:
    cov = np.array([[0.04, 0.01], [0.01, 0.09]])
    w = np.array([0.6, 0.4])
    # Σw = (0.028, 0.042); wᵀΣw = 0.0168 + 0.0168 = 0.0336: equal halves.
    assert risk.risk_contributions(w, cov) == pytest.approx([0.5, 0.5])
    assert risk.volatility(w, cov) == pytest.approx(math.sqrt(0.0336))
    w3 = np.array([0.5, 0.3, 0.1])
    cov3 = np.array([[0.05, 0.01, 0.0], [0.01, 0.03, 0.002], [0.0, 0.002, 0.02]])
    assert risk.risk_contributions(w3, cov3).sum() == pytest.approx(1.0)
    assert list(risk.risk_contributions(np.zeros(2), cov)) == [0.0, 0.0]


def test_sector_weights_and_sharpe() -> None:
    sectors = {"A": "Tech", "B": "Energy", "C": "Tech"}
    assert risk.sector_weights({"A": 0.3, "B": 0.2, "C": 0.1}, sectors) == pytest.approx({"Energy": 0.2, "Tech": 0.4})
    assert list(risk.sector_weights({"A": 0.3, "B": 0.2}, sectors)) == ["Energy", "Tech"]
    assert risk.sharpe_ratio(0.12, 0.2, 0.02) == pytest.approx(0.5)
    assert risk.sharpe_ratio(0.02, 0.0, 0.02) is None


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(min_value=0.01, max_value=1.0), min_size=1, max_size=15))
def test_effective_holdings_is_between_one_and_the_count(raw: list[float]) -> None:
    weights = {f"S{i}": x / sum(raw) * 0.9 for i, x in enumerate(raw)}
    n = risk.effective_holdings(risk.herfindahl(weights))
    assert n is not None and 1.0 - 1e-9 <= n <= len(raw) + 1e-9


def test_portfolio_risk_on_the_demo_pack_matches_independent_calculations() -> None:
    pack = load_seed_pack(PACK)
    bench = load_benchmarks()["DEMO_20"]
    symbols = sorted(bench)
    model = risk.pack_risk_model(pack, symbols, Policy())
    prices = pack.last_prices()
    positions = {"AAPL": 100, "JNJ": 150, "XOM": 200}
    weights, value = risk.position_weights(positions, prices, 1000.0)
    result = risk.portfolio_risk(model, weights, risk.benchmark_on(model, pack, bench, Policy()))

    # Independent: returns straight from the closes, sklearn's Ledoit-Wolf, numpy's OLS.
    closes = pack.closes
    returns = closes[symbols].pct_change().iloc[1:].tail(756)
    market = closes["SP500"].pct_change().iloc[1:].tail(756)
    w = np.array([weights.get(s, 0.0) for s in symbols])
    rp = returns.to_numpy() @ w
    cov = LedoitWolf().fit(returns.to_numpy()).covariance_ * 252
    wb = np.array([bench[s] for s in symbols])
    assert value == pytest.approx(100 * prices["AAPL"] + 150 * prices["JNJ"] + 200 * prices["XOM"] + 1000.0)
    assert result.cash_weight == pytest.approx(1000.0 / value)
    assert result.beta == pytest.approx(np.polyfit(market.to_numpy(), rp, 1)[0], rel=1e-9)
    assert result.var_95 == pytest.approx(-np.percentile(rp, 5), rel=1e-12)
    assert result.volatility == pytest.approx(math.sqrt(w @ cov @ w), rel=1e-6)
    assert result.tracking_error == pytest.approx(math.sqrt((w - wb) @ cov @ (w - wb)), rel=1e-6)
    assert result.expected_return == pytest.approx(returns.mean().to_numpy() @ w * 252 + 1000.0 / value * 0.02)
    assert sum(result.risk_contributions.values()) == pytest.approx(1.0)
    assert result.top10 == pytest.approx(1 - 1000.0 / value)
    path = np.concatenate(([1.0], np.cumprod(1 + rp)))
    assert result.max_drawdown == pytest.approx(max(0.0, float(np.max(1 - path / np.maximum.accumulate(path)))), rel=1e-9)


def test_pack_risk_model_needs_something_to_measure() -> None:
    with pytest.raises(InputError, match="nothing to measure"):
        risk.pack_risk_model(load_seed_pack(PACK), [], Policy())
