"""max_sortino and max_information_ratio: the engine's Charnes–Cooper solutions against a direct
model written here, on the demo pack's real daily returns.

The direct model is Dinkelbach's method — maximize N(w) − t·D(w) and set t = N(w)/D(w) until t
stops moving — with every limit written out again (``cp.abs`` turnover, ``cp.quad_form``
tracking error on the covariance itself), so agreement is evidence of optimality, not of shared
code.
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest

from services.allocation.optimization import AllocationProblem, SectorCap, solve
from services.allocation.rebalance import covariance_factor
from services.errors import InputError
from services.estimation.estimators import daily_returns

PACK = "PP_2022-12-28"
NAMES = ("AAPL", "CVX", "JNJ", "JPM", "KO", "LLY", "MSFT", "PFE", "UNH", "WMT", "XOM", "HD")
DAYS = 252


@pytest.fixture(scope="module")
def agent(module_store):
    from agents.agent import OptimizerAgent

    return OptimizerAgent(module_store)


@pytest.fixture(scope="module")
def market(agent) -> dict[str, np.ndarray]:
    """Three years of the demo's daily returns for NAMES and the S&P 500 index (last column)."""
    returns = daily_returns(agent.store.get_pack(PACK), [*NAMES, "SP500"], 756).to_numpy()
    n = len(NAMES)
    return {"R": returns[:, :n], "mu": returns.mean(axis=0) * DAYS, "cov": np.cov(returns, rowvar=False) * DAYS,
            "current": np.full(n, 1.0 / n)}


def _problem(m, objective: str, *, cap=0.2, sector=0.25, turnover=0.5, te=None, bench="equal",
             invested=1.0, mar=0.02) -> AllocationProblem:
    n = len(NAMES)
    full = covariance_factor(m["cov"])  # over NAMES and SP500
    wb = np.append(np.full(n, 1.0 / n), 0.0) if bench == "equal" else np.append(np.zeros(n), 1.0)
    return AllocationProblem(
        symbols=NAMES, objective=objective, mu=m["mu"][:n], factor=full[:, :n], current=m["current"] * invested,
        invested=invested, caps=np.full(n, cap),
        sectors=(SectorCap("Energy", np.array([1, 10]), sector), SectorCap("Health Care", np.array([2, 5, 7, 8]), sector)),
        benchmark_offset=full @ wb, max_tracking_error=te, max_turnover=turnover, risk_free_rate=0.02,
        scenarios=m["R"] if objective == "max_sortino" else None, min_acceptable_return=mar,
        benchmark_return=float(m["mu"] @ wb), annualization_days=DAYS,
        benchmark_weights=wb[:n] if bench == "equal" else None,
    )


def _limits(w, m, p: AllocationProblem, wb) -> list:
    cons = [w >= 0, cp.sum(w) == p.invested, w <= p.caps, cp.sum(w[[1, 10]]) <= p.sectors[0].limit,
            cp.sum(w[[2, 5, 7, 8]]) <= p.sectors[1].limit,
            cp.sum(cp.abs(w - p.current)) <= p.max_turnover]
    if p.max_tracking_error is not None:
        active = cp.hstack([w, np.zeros(1)]) - wb
        cons.append(cp.quad_form(active, cp.psd_wrap(m["cov"])) <= p.max_tracking_error**2)
    return cons


def _dinkelbach(numerator, denominator, constraints, w) -> tuple[np.ndarray, float]:
    t = 0.0
    for _ in range(50):
        cp.Problem(cp.Maximize(numerator(w) - t * denominator(w)), constraints).solve(solver="CLARABEL")
        x = np.asarray(w.value)
        t_next = _value(numerator(x)) / _value(denominator(x))
        if abs(t_next - t) < 1e-12:
            return x, t_next
        t = t_next
    raise AssertionError("Dinkelbach did not converge")


def _value(x) -> float:
    return float(x.value) if isinstance(x, cp.Expression) else float(x)


def _sortino_parts(m, p: AllocationProblem):
    cash = 1.0 - p.invested
    daily_floor = (p.min_acceptable_return - cash * p.risk_free_rate) / DAYS
    t_obs = m["R"].shape[0]

    def numerator(w):
        return (m["mu"][: len(NAMES)] - p.min_acceptable_return) @ w + cash * (p.risk_free_rate - p.min_acceptable_return)

    def denominator(w):
        return np.sqrt(DAYS / t_obs) * cp.norm(cp.pos(daily_floor - m["R"] @ w), 2)

    return numerator, denominator


def _ir_parts(m, p: AllocationProblem, wb):
    cash = 1.0 - p.invested

    def numerator(w):
        return m["mu"][: len(NAMES)] @ w + cash * p.risk_free_rate - float(m["mu"] @ wb)

    def denominator(w):
        return cp.norm(covariance_factor(m["cov"]) @ (cp.hstack([w, np.zeros(1)]) - wb), 2)

    return numerator, denominator


@pytest.mark.parametrize("case", [
    {},
    {"cap": 0.15, "sector": 0.2, "turnover": 0.3},
    {"te": 0.04, "mar": 0.06},
    {"invested": 0.95, "mar": 0.0},
])
def test_max_sortino_matches_dinkelbach_on_the_same_limits(market, case) -> None:
    p = _problem(market, "max_sortino", **case)
    result = solve(p)
    assert result.objective == "max_sortino"
    w = cp.Variable(len(NAMES))
    wb = np.append(np.full(len(NAMES), 1.0 / len(NAMES)), 0.0)
    numerator, denominator = _sortino_parts(market, p)
    direct, best = _dinkelbach(numerator, denominator, _limits(w, market, p, wb), w)
    np.testing.assert_allclose(result.weights, direct, atol=1e-4)
    assert _value(numerator(result.weights)) / _value(denominator(result.weights)) == pytest.approx(best, rel=1e-7)


@pytest.mark.parametrize("case", [
    {"te": 0.08},
    {"cap": 0.15, "sector": 0.2, "turnover": 0.3, "te": 0.1},
    {"invested": 0.9},
])
def test_max_information_ratio_matches_dinkelbach_against_the_index(market, case) -> None:
    # SP500 is not a decision asset: the benchmark is not a feasible portfolio, the optimum is unique.
    p = _problem(market, "max_information_ratio", bench="index", **case)
    result = solve(p)
    assert result.objective == "max_information_ratio"
    w = cp.Variable(len(NAMES))
    wb = np.append(np.zeros(len(NAMES)), 1.0)
    numerator, denominator = _ir_parts(market, p, wb)
    direct, best = _dinkelbach(numerator, denominator, _limits(w, market, p, wb), w)
    np.testing.assert_allclose(result.weights, direct, atol=1e-4)
    assert _value(numerator(result.weights)) / _value(denominator(result.weights)) == pytest.approx(best, rel=1e-7)


@pytest.mark.parametrize("te", [None, 0.02])
def test_max_information_ratio_takes_the_most_active_of_equally_good_mixes(market, te) -> None:
    # The equal-weight benchmark is itself allowed: every mix of it with the bets has the same IR.
    p = _problem(market, "max_information_ratio", cap=0.3, sector=0.5, turnover=2.0, te=te)
    result = solve(p)
    n = len(NAMES)
    wb = np.append(np.full(n, 1.0 / n), 0.0)
    w = cp.Variable(n)
    numerator, denominator = _ir_parts(market, p, wb)
    _, best = _dinkelbach(numerator, denominator, _limits(w, market, p, wb), w)
    x = result.weights
    assert _value(numerator(x)) / _value(denominator(x)) == pytest.approx(best, rel=1e-6)
    # Scaled up by 0.1% more of the same bets, some limit breaks: long only, a cap or the TE limit.
    further = wb[:n] + 1.001 * (x - wb[:n])
    te_further = float(np.sqrt((np.append(further, 0) - wb) @ market["cov"] @ (np.append(further, 0) - wb)))
    assert further.min() < -1e-7 or (further > p.caps + 1e-7).any() or (te is not None and te_further > te + 1e-7)


def test_sortino_without_a_return_above_the_minimum_falls_back_to_min_variance(market) -> None:
    result = solve(_problem(market, "max_sortino", mar=0.9))
    assert result.objective == "min_variance"
    assert result.warnings == ("max_sortino: no portfolio the constraints allow has expected return above the "
                               "minimum acceptable return (90.00%); fell back to min_variance",)


def _propose(agent, **policy):
    return agent.execute("optimizer.propose_trades", {
        "pricing_pack_id": PACK, "portfolio_id": "demo_diversified", "policy": policy})


@pytest.mark.parametrize("policy", [
    {"method": "max_sortino", "max_single_position_pct": 12.0, "max_sector_pct": 30.0, "max_turnover_pct": 25.0},
    {"method": "max_sortino", "min_acceptable_return": 0.08, "benchmark": "DEMO_20", "max_tracking_error_pct": 3.0},
    {"method": "max_information_ratio", "benchmark": "DEMO_20", "max_tracking_error_pct": 2.0,
     "max_single_position_pct": 12.0, "max_turnover_pct": 30.0},
    {"method": "max_information_ratio", "benchmark": "SP500", "universe": "pack", "max_single_position_pct": 10.0},
])
def test_proposals_hold_every_limit_in_whole_shares(agent, policy) -> None:
    result = _propose(agent, **policy)
    assert result["method"] == policy["method"]
    assert result["constraints_met"] is True
    assert all(isinstance(t["target_shares"], int) for t in result["trades"])
    if "max_single_position_pct" in policy:
        assert max(t["target_weight_pct"] for t in result["trades"]) <= policy["max_single_position_pct"]
    if "max_tracking_error_pct" in policy:
        assert result["te_after_pct"] <= policy["max_tracking_error_pct"]


def test_max_information_ratio_needs_a_benchmark(agent) -> None:
    with pytest.raises(InputError) as err:
        _propose(agent, method="max_information_ratio")
    assert err.value.details["field"] == "policy.benchmark"


def test_min_acceptable_return_is_bounded(agent) -> None:
    with pytest.raises(InputError, match="min_acceptable_return"):
        _propose(agent, method="max_sortino", min_acceptable_return=2.0)
