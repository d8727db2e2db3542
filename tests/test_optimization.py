"""The allocation engine against hand calculations and an independent cvxpy formulation.

The independent models below use ``cp.quad_form`` on the covariance itself (not the engine's
factor), ``cp.abs`` for turnover (not the engine's buy/sell split) and, for max Sharpe, a
frontier scan — so agreement is evidence of optimality, not of shared code.
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest

from services.allocation.optimization import AllocationProblem, SectorCap, solve
from services.allocation.rebalance import covariance_factor
from services.errors import InfeasibleError


@pytest.fixture(scope="module")
def market() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    n = 8
    loadings = rng.normal(1.0, 0.3, n)
    cov = np.outer(loadings, loadings) * 0.04 + np.diag(rng.uniform(0.01, 0.06, n))
    mu = rng.uniform(0.03, 0.15, n)
    bench = np.full(n, 1 / n)
    current = rng.dirichlet(np.full(n, 30.0)) * 0.98  # near equal weight, inside the caps
    return {"cov": cov, "mu": mu, "bench": bench, "current": current}


def _problem(m: dict[str, np.ndarray], objective: str, **kw) -> AllocationProblem:
    factor = covariance_factor(m["cov"])
    n = len(m["mu"])
    defaults = dict(
        symbols=tuple(f"A{i}" for i in range(n)),
        objective=objective,
        mu=m["mu"],
        factor=factor,
        current=m["current"],
        invested=1.0,
        caps=np.full(n, 0.25),
        sectors=(SectorCap("S0", np.arange(0, 4), 0.45),),
        benchmark_offset=factor @ m["bench"],
        max_tracking_error=0.03,
        max_turnover=0.30,
        risk_free_rate=0.02,
    )
    defaults.update(kw)
    return AllocationProblem(**defaults)


def _independent_constraints(w, m, te=0.03, turnover=0.30):
    return [
        w >= 0,
        cp.sum(w) == 1,
        w <= 0.25,
        cp.sum(w[:4]) <= 0.45,
        cp.quad_form(w - m["bench"], m["cov"]) <= te**2,
        cp.sum(cp.abs(w - m["current"])) <= turnover,
    ]


def test_min_variance_matches_an_independent_formulation(market) -> None:
    engine = solve(_problem(market, "min_variance")).weights
    w = cp.Variable(len(market["mu"]))
    cp.Problem(cp.Minimize(cp.quad_form(w, market["cov"])), _independent_constraints(w, market)).solve()
    assert engine @ market["cov"] @ engine == pytest.approx(w.value @ market["cov"] @ w.value, rel=1e-5)
    np.testing.assert_allclose(engine, w.value, atol=1e-4)


def test_mean_variance_matches_an_independent_formulation(market) -> None:
    engine = solve(_problem(market, "mean_variance", risk_aversion=3.0)).weights
    w = cp.Variable(len(market["mu"]))
    utility = market["mu"] @ w - 3.0 * cp.quad_form(w, market["cov"])
    cp.Problem(cp.Maximize(utility), _independent_constraints(w, market)).solve()
    ours = market["mu"] @ engine - 3.0 * engine @ market["cov"] @ engine
    assert ours == pytest.approx(utility.value, abs=1e-6)


def test_max_sharpe_beats_every_point_of_an_independent_frontier(market) -> None:
    engine = solve(_problem(market, "max_sharpe")).weights

    def sharpe(x: np.ndarray) -> float:
        return (market["mu"] @ x - 0.02) / np.sqrt(x @ market["cov"] @ x)

    w = cp.Variable(len(market["mu"]))
    best = -np.inf
    for target in np.linspace(0.03, 0.15, 61):
        prob = cp.Problem(cp.Minimize(cp.quad_form(w, market["cov"])),
                          [*_independent_constraints(w, market), market["mu"] @ w >= target])
        prob.solve()
        if prob.status == "optimal":
            best = max(best, sharpe(w.value))
    assert np.isfinite(best)
    assert sharpe(engine) >= best - 1e-6
    assert sharpe(engine) == pytest.approx(best, abs=2e-3)


def test_turnover_is_one_total_limit_not_a_scaling_of_the_unconstrained_trade(market) -> None:
    """The proposal under the limit beats the unconstrained optimum scaled back to the limit."""
    free = solve(_problem(market, "min_variance", max_turnover=None, max_tracking_error=None)).weights
    limited = solve(_problem(market, "min_variance", max_turnover=0.10, max_tracking_error=None)).weights
    assert np.abs(limited - market["current"]).sum() <= 0.10 + 1e-7
    full = np.abs(free - market["current"]).sum()
    assert full > 0.10
    scaled = market["current"] + (free - market["current"]) * 0.10 / full
    scaled = scaled / scaled.sum()  # keep it fully invested so the comparison is fair
    var = lambda x: x @ market["cov"] @ x  # noqa: E731
    assert var(limited) < var(scaled) - 1e-6
    # and it is not a per-asset band: some assets move by more than 0.10 / n
    assert np.abs(limited - market["current"]).max() > 0.10 / len(free)


def test_forced_sales_and_their_redeployment_are_exempt_from_turnover(market) -> None:
    """Selling 20% by force and buying with it uses none of a 5% discretionary budget."""
    current = market["current"] * 0.8 / market["current"].sum()  # 20% sits in a forced sale
    p = _problem(market, "min_variance", current=current, forced_weight=0.20, max_turnover=0.05,
                 max_tracking_error=None, caps=np.full(8, 0.5), sectors=())
    w = solve(p).weights
    delta = w - current
    exempt = min(0.20, delta.clip(min=0).sum())
    assert np.abs(delta).sum() - exempt <= 0.05 + 1e-7
    assert w.sum() == pytest.approx(1.0)


def test_tracking_error_by_hand_for_two_assets() -> None:
    # Σ = [[0.04, 0.006], [0.006, 0.09]], active a = (0.6−0.5, 0.4−0.5) = (0.1, −0.1)
    # a'Σa = 0.01·0.04 − 2·0.01·0.006 + 0.01·0.09 = 0.0004 − 0.00012 + 0.0009 = 0.00118
    cov = np.array([[0.04, 0.006], [0.006, 0.09]])
    factor = covariance_factor(cov)
    te = np.linalg.norm(factor @ (np.array([0.6, 0.4]) - np.array([0.5, 0.5])))
    assert te == pytest.approx(np.sqrt(0.00118), rel=1e-12)


def test_tracking_error_limit_holds_and_binds(market) -> None:
    p = _problem(market, "max_sharpe", max_tracking_error=0.01, max_turnover=None)
    result = solve(p)
    active = result.weights - market["bench"]
    assert np.sqrt(active @ market["cov"] @ active) <= 0.01 + 1e-7
    assert "max_tracking_error_pct" in result.binding


def test_two_names_under_a_ten_percent_cap_explain_the_conflict(market) -> None:
    p = _problem(market, "min_variance", symbols=("AAPL", "JNJ"), mu=market["mu"][:2],
                 factor=covariance_factor(market["cov"][:2, :2]), current=np.array([0.4, 0.6]),
                 caps=np.full(2, 0.10), sectors=(), benchmark_offset=None, max_tracking_error=None)
    with pytest.raises(InfeasibleError) as info:
        solve(p)
    assert "2 × 10% = 20% < 100%" in info.value.message
    assert info.value.details["smallest_relaxation"]["max_single_position_pct"] == 50.0
    assert "max_single_position_pct" in info.value.details["conflicts"]


def test_turnover_too_small_for_the_caps_names_the_smallest_relaxation(market) -> None:
    current = np.array([0.5, 0.5, 0, 0, 0, 0, 0, 0])
    p = _problem(market, "min_variance", current=current, max_turnover=0.05, max_tracking_error=None,
                 sectors=())
    with pytest.raises(InfeasibleError) as info:
        solve(p)
    # each 50% holding must come down to the 25% cap: 2 × 25% sold and 50% bought = 100%
    assert info.value.details["smallest_relaxation"]["max_turnover_pct"] == pytest.approx(100.0, abs=0.02)
    assert "max_turnover_pct" in info.value.details["conflicts"]


def test_tracking_error_too_tight_reports_the_lowest_reachable(market) -> None:
    caps = np.array([0.25] * 4 + [0.02] * 4)  # the benchmark's 12.5% in A4..A7 is out of reach
    p = _problem(market, "min_variance", caps=caps, sectors=(), max_turnover=None, max_tracking_error=0.001)
    with pytest.raises(InfeasibleError) as info:
        solve(p)
    lowest = info.value.details["smallest_relaxation"]["max_tracking_error_pct"]
    w = cp.Variable(8)
    prob = cp.Problem(cp.Minimize(cp.quad_form(w - market["bench"], market["cov"])),
                      [w >= 0, cp.sum(w) == 1, w <= caps])
    prob.solve()
    assert lowest == pytest.approx(np.ceil(np.sqrt(prob.value) * 1e4) / 100, abs=0.011)


def test_max_sharpe_with_no_allowed_portfolio_above_the_risk_free_rate_falls_back(market) -> None:
    """One asset beats the risk-free rate, but a 5% cap leaves every allowed portfolio below it."""
    mu = np.full(8, -0.05)
    mu[0] = 0.30
    caps = np.array([0.05] + [0.95] * 7)
    result = solve(_problem(market, "max_sharpe", mu=mu, caps=caps, sectors=(), max_tracking_error=None,
                            max_turnover=None))
    assert result.objective == "min_variance"
    assert any("fell back to min_variance" in w for w in result.warnings)
    assert 0.30 * 0.05 + (-0.05) * 0.95 < 0.02  # indeed no allowed portfolio earns the 2% rate
