"""max_return, robust and multi_objective: each proposal against a model written here from the
same estimate (scipy's HiGHS for the linear program, cvxpy with ``quad_form``/``abs`` and a
different square root of Σ for the others), on the demo pack's real returns.
"""

from __future__ import annotations

from decimal import Decimal

import cvxpy as cp
import numpy as np
import pytest
from scipy.linalg import sqrtm
from scipy.optimize import linprog
from scipy.stats import chi2, norm

from services.allocation.rebalance import Holdings, propose_trades
from services.data.importers import read_pack
from services.data.policy import parse_overrides, resolve_policy
from services.data.seeds import load_benchmarks, load_constraint_defaults, seed_root
from services.errors import InputError
from services.estimation.estimators import estimate_for_policy

PACK = "PP_2022-12-28"
NAMES = ("AAPL", "CVX", "HD", "JNJ", "JPM", "KO", "LLY", "MSFT", "PFE", "UNH", "WMT", "XOM")
SHARES = {s: 800 for s in NAMES}


@pytest.fixture(scope="module")
def pack():
    directory = seed_root() / "packs" / PACK
    return read_pack(PACK, directory / "prices.csv", directory / "securities.csv")


def _policy(**fields):
    return resolve_policy(load_constraint_defaults(), None, parse_overrides(fields), policy_id=None)


def _run(pack, **fields):
    """The proposal's continuous weights (in NAMES order), the estimate, and the proposal."""
    policy = _policy(commission_per_trade="0", **fields)
    result = propose_trades(pack, Holdings(None, SHARES, Decimal(0)), policy, {}, load_benchmarks())
    est = estimate_for_policy(pack, list(NAMES), policy)
    optimal = {t.symbol: t.optimal_weight_pct / 100 for t in result.trades}
    return np.array([optimal[s] for s in NAMES]), est, result


def _current(pack) -> np.ndarray:
    prices = pack.last_prices()
    values = np.array([prices[s] * SHARES[s] for s in NAMES])
    return values / values.sum()


def _sector_rows(pack, limit: float) -> tuple[np.ndarray, np.ndarray]:
    sectors = sorted({pack.security(s).sector for s in NAMES})
    rows = np.array([[1.0 if pack.security(s).sector == sector else 0.0 for s in NAMES] for sector in sectors])
    return rows, np.full(len(sectors), limit)


def test_max_return_is_the_linear_program_under_caps_and_sectors(pack) -> None:
    w, est, result = _run(pack, method="max_return", max_single_position_pct=15.0, max_sector_pct=25.0)
    rows, limits = _sector_rows(pack, 0.25)
    lp = linprog(-est.mu, A_ub=rows, b_ub=limits, A_eq=np.ones((1, len(NAMES))), b_eq=[1.0],
                 bounds=[(0, 0.15)] * len(NAMES), method="highs")
    assert lp.status == 0
    assert float(est.mu @ w) == pytest.approx(-lp.fun, abs=1e-8)
    np.testing.assert_allclose(w, lp.x, atol=1e-4)
    assert result.method == "max_return" and result.constraints_met


def test_max_return_without_limits_holds_the_best_name_only(pack) -> None:
    w, est, _ = _run(pack, method="max_return")
    assert w[int(np.argmax(est.mu))] == pytest.approx(1.0, abs=1e-6)


def _robust_direct(est, w_cap: float, uncertainty: str, confidence: float, risk_aversion: float) -> np.ndarray:
    n = len(NAMES)
    t = est.observations
    theta = est.cov * 252 / t  # covariance of the annualized mean estimate
    w = cp.Variable(n)
    if uncertainty == "box":
        delta = norm.ppf((1 + confidence) / 2) * np.sqrt(np.diag(theta))
        worst = est.mu @ w - delta @ cp.abs(w)
    else:
        worst = est.mu @ w - np.sqrt(chi2.ppf(confidence, n)) * cp.norm(np.real(sqrtm(theta)) @ w, 2)
    goal = cp.Maximize(worst - risk_aversion * cp.quad_form(w, cp.psd_wrap(est.cov)))
    cp.Problem(goal, [w >= 0, cp.sum(w) == 1, w <= w_cap]).solve(solver="CLARABEL")
    return np.asarray(w.value)


@pytest.mark.parametrize("uncertainty,confidence,risk_aversion", [
    ("ellipsoid", 0.95, 2.0), ("ellipsoid", 0.8, 1.0), ("box", 0.95, 2.0), ("box", 0.6, 0.5),
])
def test_robust_matches_a_direct_worst_case_model(pack, uncertainty, confidence, risk_aversion) -> None:
    w, est, result = _run(pack, method="robust", robust_uncertainty=uncertainty, robust_confidence=confidence,
                          risk_aversion=risk_aversion, max_single_position_pct=25.0)
    direct = _robust_direct(est, 0.25, uncertainty, confidence, risk_aversion)
    np.testing.assert_allclose(w, direct, atol=1e-4)
    assert result.method == "robust" and result.constraints_met


def test_the_ellipsoid_worst_case_is_attained_on_the_ellipsoid(pack) -> None:
    # The worst mean μ* = μ̂ − k Θw / ‖Θ^½ w‖ lies on the set's boundary and gives μ̂'w − k‖Θ^½ w‖.
    w, est, _ = _run(pack, method="robust")
    theta = est.cov * 252 / est.observations
    k = np.sqrt(chi2.ppf(0.95, len(NAMES)))
    spread = np.sqrt(w @ theta @ w)
    worst_mu = est.mu - k * theta @ w / spread
    assert (worst_mu - est.mu) @ np.linalg.solve(theta, worst_mu - est.mu) == pytest.approx(k**2, rel=1e-9)
    assert worst_mu @ w == pytest.approx(est.mu @ w - k * spread, rel=1e-12)


def test_more_confidence_buys_a_safer_portfolio(pack) -> None:
    w80, est, _ = _run(pack, method="robust", robust_confidence=0.8)
    w99, _, _ = _run(pack, method="robust", robust_confidence=0.99)
    assert w99 @ est.cov @ w99 < w80 @ est.cov @ w80


def _multi_direct(est, current, weights: dict, cap: float, impact: float, te_cov_row=None) -> np.ndarray:
    n = len(NAMES)
    w = cp.Variable(n)
    goal = weights.get("return", 0) * est.mu @ w - weights.get("variance", 0) * cp.quad_form(w, cp.psd_wrap(est.cov))
    goal -= (weights.get("turnover", 0) + weights.get("cost", 0) * impact) * cp.sum(cp.abs(w - current))
    if te_cov_row is not None:
        cov, wb = te_cov_row
        active = cp.hstack([w, np.zeros(len(wb) - n)]) - wb
        goal -= weights["tracking_error"] * cp.quad_form(active, cp.psd_wrap(cov))
    cp.Problem(cp.Maximize(goal), [w >= 0, cp.sum(w) == 1, w <= cap]).solve(solver="CLARABEL")
    return np.asarray(w.value)


@pytest.mark.parametrize("weights", [
    {"return": 1.0, "variance": 2.0, "turnover": 0.02, "cost": 1.0},
    {"return": 0.5, "variance": 4.0, "turnover": 0.005},
    {"variance": 1.0, "cost": 3.0},
])
def test_multi_objective_matches_a_direct_model(pack, weights) -> None:
    w, est, result = _run(pack, method="multi_objective", objective_weights=weights, max_single_position_pct=20.0,
                          market_impact_bps=25.0)
    direct = _multi_direct(est, _current(pack), weights, 0.2, 25e-4)
    np.testing.assert_allclose(w, direct, atol=1e-4)
    assert result.method == "multi_objective" and result.constraints_met


def test_multi_objective_tracking_error_term_against_the_benchmark(pack) -> None:
    # The tracking-error term is measured with the estimate over NAMES and the index together:
    # with the sample covariance (hist), the index projected onto the portfolio's own estimate
    # (services.estimation.benchmark) is exactly that joint estimate.
    weights = {"return": 1.0, "variance": 1.0, "tracking_error": 20.0}
    w, _, result = _run(pack, method="multi_objective", objective_weights=weights, benchmark="SP500",
                        max_single_position_pct=20.0, covariance_estimator="hist")
    est = estimate_for_policy(pack, [*NAMES, "SP500"], _policy(benchmark="SP500", covariance_estimator="hist"))
    n = len(NAMES)
    wb = np.append(np.zeros(n), 1.0)
    x = cp.Variable(n)
    full = cp.hstack([x, np.zeros(1)])
    cov = cp.psd_wrap(est.cov)
    goal = (est.mu[:n] @ x - weights["variance"] * cp.quad_form(full, cov)
            - weights["tracking_error"] * cp.quad_form(full - wb, cov))
    cp.Problem(cp.Maximize(goal), [x >= 0, cp.sum(x) == 1, x <= 0.2]).solve(solver="CLARABEL")
    np.testing.assert_allclose(w, x.value, atol=1e-4)
    te_more, _, _ = _run(pack, method="multi_objective", benchmark="SP500", max_single_position_pct=20.0,
                         objective_weights={**weights, "tracking_error": 200.0}, covariance_estimator="hist")
    active = np.append(te_more, 0) - wb
    assert np.sqrt(active @ est.cov @ active) < result.te_after_pct / 100


def test_a_heavy_turnover_weight_keeps_the_portfolio(pack) -> None:
    # Small, costly trades lose to doing nothing: the current weights are optimal once each unit
    # traded costs more than any reallocation gains.
    w, _, result = _run(pack, method="multi_objective", objective_weights={"return": 1.0, "variance": 2.0, "turnover": 1.0})
    np.testing.assert_allclose(w, _current(pack), atol=1e-6)
    assert result.trade_count == 0


def test_multi_objective_defaults_to_mean_variance(pack) -> None:
    w, _, _ = _run(pack, method="multi_objective")
    mv, _, _ = _run(pack, method="mean_variance")
    np.testing.assert_allclose(w, mv, atol=1e-6)


def test_multi_objective_input_errors(pack) -> None:
    with pytest.raises(InputError) as err:
        _run(pack, method="multi_objective", objective_weights={"return": 0.0})
    assert "every weight is 0" in err.value.message
    with pytest.raises(InputError) as err:
        _run(pack, method="multi_objective", objective_weights={"return": 1.0, "tracking_error": 1.0})
    assert err.value.details["field"] == "policy.benchmark"
    with pytest.raises(InputError) as err:
        _run(pack, method="multi_objective", objective_weights={"alpha": 1.0})
    assert "objective_weights.alpha" in err.value.message
