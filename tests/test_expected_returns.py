"""Expected returns from user forecasts (with a named fallback per symbol) and from a factor model."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest

from services.allocation.rebalance import Holdings, propose_trades
from services.data.policy import Policy, parse_overrides
from services.data.seeds import load_seed_pack
from services.errors import InputError
from services.estimation.estimators import daily_returns, estimate_for_policy

PACK = "PP_2022-12-28"
NAMES = ["AAPL", "JNJ", "KO", "XOM"]
HOLDINGS = Holdings("p", {"AAPL": 300, "JNJ": 200, "XOM": 250, "KO": 400}, Decimal("20000"))


@pytest.fixture(scope="module")
def pack():
    return load_seed_pack(PACK)


def test_forecasts_are_the_expected_returns(pack) -> None:
    policy = Policy(expected_return_estimator="user", forecasts={"AAPL": 8.0, "JNJ": 5.5, "KO": 4.0, "XOM": -2.0})
    est = estimate_for_policy(pack, NAMES, policy)
    np.testing.assert_array_equal(est.mu, [0.08, 0.055, 0.04, -0.02])
    assert dict(est.mu_sources) == dict.fromkeys(NAMES, "forecast")
    assert est.warnings == ()


def test_missing_forecasts_fall_back_and_are_named_per_symbol(pack) -> None:
    policy = Policy(expected_return_estimator="user", forecasts={"AAPL": 8.0}, forecast_fallback="capm")
    est = estimate_for_policy(pack, NAMES, policy)
    capm = estimate_for_policy(pack, NAMES, Policy(expected_return_estimator="capm"))
    assert est.mu[0] == 0.08
    np.testing.assert_array_equal(est.mu[1:], capm.mu[1:])
    assert dict(est.mu_sources) == {"AAPL": "forecast", "JNJ": "capm", "KO": "capm", "XOM": "capm"}
    assert est.warnings == ("no forecast for JNJ, KO, XOM: their expected returns are estimated by capm "
                            "(policy field forecast_fallback)",)
    hist = estimate_for_policy(pack, NAMES, Policy(expected_return_estimator="user", forecasts={"AAPL": 8.0}))
    assert dict(hist.mu_sources)["KO"] == "hist"


def test_a_proposal_reports_the_source_of_each_expected_return(pack) -> None:
    policy = Policy(method="mean_variance", risk_aversion=0.0, max_single_position_pct=60.0,
                    expected_return_estimator="user", forecasts={"KO": 40.0, "JNJ": 30.0})
    proposal = propose_trades(pack, HOLDINGS, policy, {}, {})
    assert proposal.estimation.expected_return_sources == {"AAPL": "hist", "JNJ": "forecast", "KO": "forecast",
                                                           "XOM": "hist"}
    # With no risk penalty the forecasts decide: 60% in KO (its cap), the rest in JNJ.
    optimal = {t.symbol: t.optimal_weight_pct for t in proposal.trades}
    assert optimal["KO"] == pytest.approx(60.0, abs=1e-4) and optimal["JNJ"] == pytest.approx(40.0, abs=1e-4)
    # The reported expected return is recomputable from the forecasts and the rounded weights.
    weights = {t.symbol: t.target_weight_pct / 100 for t in proposal.trades}
    hist = estimate_for_policy(pack, NAMES, Policy())
    mu = {"KO": 0.40, "JNJ": 0.30, "AAPL": float(hist.mu[0]), "XOM": float(hist.mu[3])}
    cash = 1 - sum(weights.values())
    expected = sum(w * mu[s] for s, w in weights.items()) + cash * 0.02
    assert proposal.after.expected_return_pct == pytest.approx(expected * 100, abs=2e-4)
    assert any("no forecast for AAPL, XOM" in w for w in proposal.warnings)


@pytest.mark.parametrize("forecasts", [{"AAPL": 8.0, "NFLX": 5.0}, {"SP500": 7.0}])
def test_forecasts_for_symbols_that_cannot_be_held_are_an_error(pack, forecasts) -> None:
    policy = Policy(expected_return_estimator="user", forecasts=forecasts)
    with pytest.raises(InputError) as err:
        propose_trades(pack, HOLDINGS, policy, {}, {})
    assert err.value.details["field"] == "policy.forecasts"
    assert err.value.details["invalid"] == sorted(set(forecasts) - {"AAPL"})
    assert "AAPL" in err.value.details["allowed"] and "SP500" not in err.value.details["allowed"]


def test_user_without_forecasts_is_an_error(pack) -> None:
    with pytest.raises(InputError) as err:
        propose_trades(pack, HOLDINGS, Policy(expected_return_estimator="user"), {}, {})
    assert err.value.details["field"] == "policy.forecasts"


def test_forecasts_under_another_estimator_are_ignored_with_a_warning(pack) -> None:
    proposal = propose_trades(pack, HOLDINGS, Policy(forecasts={"AAPL": 50.0}), {}, {})
    plain = propose_trades(pack, HOLDINGS, Policy(), {}, {})
    assert proposal.trades == plain.trades
    assert "forecasts is set but only expected_return_estimator 'user' uses it; ignored under 'hist'" in proposal.warnings


def test_forecast_bounds_are_checked() -> None:
    with pytest.raises(InputError, match="forecasts"):
        parse_overrides({"forecasts": {"AAPL": 5000.0}})


def test_the_market_as_the_only_factor_is_capm(pack) -> None:
    factor = estimate_for_policy(pack, NAMES, Policy(expected_return_estimator="factor", factor_symbols=["SP500"]))
    capm = estimate_for_policy(pack, NAMES, Policy(expected_return_estimator="capm"))
    np.testing.assert_allclose(factor.mu, capm.mu, rtol=1e-10)


def test_factor_expected_returns_match_an_independent_regression(pack) -> None:
    """mu = rf + β (E[f] − rf) with β from scikit-learn's least squares on the six index/ETF series."""
    from sklearn.linear_model import LinearRegression

    est = estimate_for_policy(pack, NAMES, Policy(expected_return_estimator="factor"))
    factors = ["MTUM", "QUAL", "SIZE", "SP500", "USMV", "VLUE"]
    returns = daily_returns(pack, NAMES, 756)
    f = pack.closes[factors].pct_change().reindex(returns.index).to_numpy()
    betas = LinearRegression().fit(f, returns.to_numpy()).coef_  # N × k
    expected = 0.02 + betas @ (f.mean(axis=0) * 252 - 0.02)
    np.testing.assert_allclose(est.mu, expected, rtol=1e-9)


def test_factor_series_are_checked(pack) -> None:
    with pytest.raises(InputError) as err:
        estimate_for_policy(pack, NAMES, Policy(expected_return_estimator="factor", factor_symbols=["NOPE"]))
    assert err.value.details["field"] == "policy.factor_symbols" and err.value.details["invalid"] == ["NOPE"]


def test_forecasts_are_part_of_the_estimation_key(pack) -> None:
    from services.estimation.cache import estimation_key

    a = Policy(expected_return_estimator="user", forecasts={"AAPL": 8.0})
    b = Policy(expected_return_estimator="user", forecasts={"AAPL": 9.0})
    assert estimation_key(pack, NAMES, a) != estimation_key(pack, NAMES, b)
