"""Elastic infeasibility: every conflicting limit at once, with the smallest joint relaxation.

Checked three ways: the relaxed policy is feasible (it solves, and the proposal meets every
limit); the relaxation is minimal per limit (any one of them a twentieth of a point tighter, the
others kept, is infeasible again); and its total equals an elastic model written here (``cp.abs``
turnover, tracking error through a Cholesky factor).
"""

from __future__ import annotations

from dataclasses import replace

import cvxpy as cp
import numpy as np
import pytest

from services.allocation.elastic import smallest_relaxation
from services.allocation.optimization import AllocationProblem, SectorCap, solve
from services.allocation.rebalance import covariance_factor
from services.errors import InfeasibleError
from services.estimation.estimators import daily_returns

PACK = "PP_2022-12-28"
NAMES = ("AAPL", "CVX", "JNJ", "JPM", "KO", "LLY", "MSFT", "PFE", "UNH", "WMT", "XOM", "HD")
SECTORS = {"Energy": [1, 10], "Health Care": [2, 5, 7, 8]}


@pytest.fixture(scope="module")
def agent(module_store):
    from agents.agent import OptimizerAgent

    return OptimizerAgent(module_store)


@pytest.fixture(scope="module")
def market(agent) -> dict[str, np.ndarray]:
    returns = daily_returns(agent.store.get_pack(PACK), list(NAMES), 756).to_numpy()
    cov = np.cov(returns, rowvar=False) * 252
    return {"mu": returns.mean(axis=0) * 252, "cov": cov, "L": np.linalg.cholesky(cov)}


def _problem(m, *, cap, sector, te, turnover) -> AllocationProblem:
    n = len(NAMES)
    factor = covariance_factor(m["cov"])
    current = np.array([0.3, 0.2, *[0.05] * 10])  # concentrated in AAPL and CVX
    wb = np.full(n, 1.0 / n)
    return AllocationProblem(
        symbols=NAMES, objective="min_variance", mu=m["mu"], factor=factor, current=current, invested=1.0,
        caps=np.full(n, cap), sectors=tuple(SectorCap(s, np.array(i), sector) for s, i in SECTORS.items()),
        benchmark_offset=factor @ wb, max_tracking_error=te, max_turnover=turnover,
    )


def _apply(p: AllocationProblem, limits: dict[str, float]) -> AllocationProblem:
    """``p`` with limits (in %) set by name, as the relaxation names them."""
    for name, value in limits.items():
        if name == "max_single_position_pct":
            p = replace(p, caps=np.full(p.n, value / 100))
        elif name.startswith("sector_limit:"):
            sector = name.partition(":")[2]
            p = replace(p, sectors=tuple(replace(s, limit=value / 100) if s.name == sector else s for s in p.sectors))
        elif name == "max_tracking_error_pct":
            p = replace(p, max_tracking_error=value / 100)
        else:
            p = replace(p, max_turnover=value / 100)
    return p


def _direct_total(m, p: AllocationProblem) -> float:
    """The least total slack (percentage points), written independently."""
    w = cp.Variable(p.n)
    s_cap, s_te, s_to = cp.Variable(nonneg=True), cp.Variable(nonneg=True), cp.Variable(nonneg=True)
    s_sec = cp.Variable(len(p.sectors), nonneg=True)
    cons = [w >= 0, cp.sum(w) == 1, w <= p.caps[0] + s_cap,
            cp.norm(m["L"].T @ (w - np.full(p.n, 1 / p.n)), 2) <= p.max_tracking_error + s_te,
            cp.sum(cp.abs(w - p.current)) <= p.max_turnover + s_to,
            *[cp.sum(w[s.members]) <= s.limit + s_sec[i] for i, s in enumerate(p.sectors)]]
    return 100 * cp.Problem(cp.Minimize(s_cap + s_te + s_to + cp.sum(s_sec)), cons).solve(solver="CLARABEL")


def _feasible(p: AllocationProblem) -> bool:
    try:
        solve(p)
    except InfeasibleError:
        return False
    return True


@pytest.mark.parametrize("limits", [
    {"cap": 0.06, "sector": 0.1, "te": 0.05, "turnover": 1.0},     # caps and sectors leave 64% investable
    {"cap": 0.15, "sector": 0.25, "te": 0.01, "turnover": 0.2},    # tracking error and turnover fight
    {"cap": 0.08, "sector": 0.12, "te": 0.015, "turnover": 0.3},   # everything at once
])
def test_the_joint_relaxation_is_feasible_minimal_and_the_least_total(market, limits) -> None:
    p = _problem(market, **limits)
    assert not _feasible(p)
    relaxation = smallest_relaxation(p)
    assert relaxation is not None and relaxation.limits
    relaxed = {name: new for name, (_, new) in relaxation.limits.items()}
    assert _feasible(_apply(p, relaxed))
    for name in relaxed:
        tighter = {**relaxed, name: relaxed[name] - 0.05}
        assert not _feasible(_apply(p, tighter)), f"{name} could be relaxed less"
    total = sum(new - old for old, new in relaxation.limits.values())
    # Each relaxed value is rounded up to 0.01 points, so the total is at most 0.01 per limit above the least.
    assert _direct_total(market, p) - 1e-4 <= total <= _direct_total(market, p) + 0.01 * len(relaxed) + 1e-4


def test_a_feasible_problem_needs_no_relaxation(market) -> None:
    assert smallest_relaxation(_problem(market, cap=0.2, sector=0.4, te=0.1, turnover=2.0)) is None


REQUEST = {"pricing_pack_id": PACK, "portfolio_id": "demo_diversified", "policy_id": "quality_focused"}


def test_a_proposal_names_every_conflict_and_the_relaxation_works(agent) -> None:
    with pytest.raises(InfeasibleError) as err:
        agent.execute("optimizer.propose_trades", {**REQUEST, "policy": {"max_single_position_pct": 4,
                                                                          "max_tracking_error_pct": 1}})
    details = err.value.details
    assert details["conflicts"] == ["max_single_position_pct", "max_tracking_error_pct"]
    fix = details["smallest_relaxation"]
    assert set(fix) == {"max_single_position_pct", "max_tracking_error_pct"}
    assert str(err.value).startswith("infeasible policy: 2 limits conflict; the smallest joint relaxation (the least "
                                     "total percentage points) raises max_single_position_pct from 4% to "
                                     f"{fix['max_single_position_pct']:g}%; max_tracking_error_pct from 1% to "
                                     f"{fix['max_tracking_error_pct']:g}%.")
    # What the single-limit diagnosis would have said is kept beside it.
    assert details["single_limit_diagnosis"]["message"].startswith("infeasible policy:")
    result = agent.execute("optimizer.propose_trades", {**REQUEST, "policy": fix})
    assert result["constraints_met"]


def test_sector_relaxations_come_as_policy_fields(agent) -> None:
    policy = {"max_single_position_pct": 6, "max_sector_pct": 12}
    with pytest.raises(InfeasibleError) as err:
        agent.execute("optimizer.propose_trades", {**REQUEST, "policy": policy})
    fix = err.value.details["smallest_relaxation"]
    assert fix["sector_limits_pct"] and all(v > 12 for v in fix["sector_limits_pct"].values())
    assert "sector_limits_pct['Health Care'] from 12% to" in str(err.value)
    result = agent.execute("optimizer.propose_trades", {**REQUEST, "policy": {**policy, **fix}})
    assert result["constraints_met"]


def test_one_conflict_keeps_its_own_diagnosis(agent) -> None:
    with pytest.raises(InfeasibleError) as err:
        agent.execute("optimizer.propose_trades", {**REQUEST, "policy": {"max_tracking_error_pct": 0.5,
                                                                          "max_turnover_pct": None}})
    assert err.value.details["smallest_relaxation"] == {"max_tracking_error_pct": 1.81}
    assert "lowest tracking error reachable under the other constraints is 1.80%" in str(err.value)
