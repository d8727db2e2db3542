"""The efficient frontier under a policy's limits: minimum variance at evenly spaced returns.

The points run from the minimum-variance portfolio to the highest expected return the limits
allow, every one solved in the same problem as the proposal (position caps, sectors, turnover,
tracking error, restricted and frozen holdings, the invested fraction) with the same risk model
and return estimate. Each point is the least-variance portfolio whose expected return is at least
its level: on the efficient branch that bound holds with equality, so the points are optimal.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from services.allocation.optimization import (
    AllocationProblem,
    _constraints,
    _risk_variable,
    _run,
    square_factor,
)
from services.data.policy import Policy
from services.errors import SolverError

# The top point asks for this much less than the highest return (relative to the frontier's
# return range): a minimum-variance problem whose return bound is exactly the LP's maximum sits
# on a face of the feasible set, where an interior-point solver converges slowly or not at all.
TOP_SLACK = 1e-6


def frontier_weights(problem: AllocationProblem, points: int) -> list[np.ndarray]:
    """``points`` weight vectors (of ``problem.symbols``) from minimum variance to maximum return.

    Every limit of ``problem`` holds at every point, with no margin: the frontier shows what the
    policy allows, not what rounding to shares will leave.

    Raises:
        SolverError: a point the solver could not find (the policy itself is feasible, since the
            proposal was solved first).
    """
    problem = square_factor(replace(problem, objective="min_variance"))
    lowest = _solve(problem, None, "the minimum-variance portfolio")
    highest = _max_return(problem)
    r_low, r_high = float(problem.mu @ lowest), float(problem.mu @ highest)
    if r_high <= r_low:
        # The minimum-variance portfolio already has the highest return: the frontier is one point.
        return [lowest] * points
    levels = np.linspace(r_low, r_high - TOP_SLACK * (r_high - r_low), points)
    out = [lowest]
    for level in levels[1:]:
        out.append(_solve(problem, float(level), f"the frontier point at expected return {level:.4%}"))
    return out


def _solve(p: AllocationProblem, min_return: float | None, what: str) -> np.ndarray:
    import cvxpy as cp

    w = cp.Variable(p.n, nonneg=True)
    risk, constraints = _risk_variable(p, w)
    constraints += _constraints(p, w, risk, 1.0, 0.0)
    if min_return is not None:
        constraints.append(p.mu @ w >= min_return)
    weights, status, _ = _run(cp.Problem(cp.Minimize(cp.sum_squares(risk)), constraints), w)
    return _solved(weights, status, what)


def _max_return(p: AllocationProblem) -> np.ndarray:
    import cvxpy as cp

    w = cp.Variable(p.n, nonneg=True)
    risk, constraints = _risk_variable(p, w)
    constraints += _constraints(p, w, risk, 1.0, 0.0)
    weights, status, _ = _run(cp.Problem(cp.Maximize(p.mu @ w), constraints), w)
    return _solved(weights, status, "the maximum-return portfolio")


def _solved(weights: np.ndarray | None, status: str, what: str) -> np.ndarray:
    if weights is None:
        raise SolverError(
            f"efficient frontier: the solver ended with status '{status}' for {what}; "
            "ask for fewer frontier_points or omit them",
            details={"field": "frontier_points", "status": status},
        )
    return weights


def limits_sentence(problem: AllocationProblem, policy: Policy, benchmark: str | None) -> str:
    """Which of the policy's limits the frontier's points respect, in words."""
    invested = (f"{problem.invested * 100:g}%" if problem.min_invested is None
                else f"{problem.least_invested * 100:g}–{problem.invested * 100:g}%")
    parts = [f"{invested} invested, long only"]
    if policy.max_single_position_pct is not None:
        parts.append(f"max_single_position_pct {policy.max_single_position_pct:g}%")
    for kind, words in (("sector_limit", "sector limits on "), ("asset_class_limit", "asset class limits on ")):
        groups = [f"{s.name} {s.limit * 100:g}%" for s in problem.sectors if s.kind == kind]
        if groups:
            parts.append(words + ", ".join(groups))
    if policy.min_weight_pct:
        parts.append("min_weight_pct floors")
    if problem.max_turnover is not None:
        # The problem's limit: a cash flow widens the policy's by the flow's share of the value.
        parts.append(f"max_turnover_pct {round(problem.max_turnover * 100, 4):g}%")
    if problem.max_tracking_error is not None and problem.benchmark_offset is not None:
        parts.append(f"max_tracking_error_pct {policy.max_tracking_error_pct:g}% vs {benchmark}")
    if policy.restricted_symbols or policy.frozen_symbols:
        parts.append("restricted and frozen holdings")
    return "; ".join(parts)
