"""The policy fields of risk_budgeting, herc, min_risk, robust and multi_objective, turned into
the allocation problem's terms, and what these methods report beyond the common proposal.

The solver forms live in ``optimization`` (and ``risk_measures``); this module only reads the
policy: which budgets, which risk measure, how large an uncertainty set, which objective weights.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from services.allocation import risk_measures
from services.allocation.optimization import Allocation, AllocationProblem, risk_contributions
from services.allocation.proposal import RiskContributionInfo, RiskMeasureInfo, pct, ratio
from services.data.models import PricingPack
from services.data.policy import Policy
from services.errors import InputError
from services.estimation.estimators import Estimates

# Methods whose target comes from a hierarchical allocation: the limits cannot join it, so the
# proposal is the portfolio nearest the target (in tracking-error terms) that meets every limit.
HIERARCHICAL = ("hrp", "herc")
DEFAULT_ROBUST_CONFIDENCE = 0.95


def configure(problem: AllocationProblem, policy: Policy, pack: PricingPack, est: Estimates,
              warnings: list[str]) -> AllocationProblem:
    """``problem`` with the terms of ``policy.method`` filled in (unchanged for other methods)."""
    method = policy.method
    if method == "risk_budgeting":
        return replace(problem, risk_budget=risk_budgets(pack, policy, problem.symbols, warnings))
    if method == "min_risk":
        measure = policy.risk_measure or "variance"
        scenarios = None if measure == "variance" else est.returns[list(problem.symbols)].to_numpy()
        return replace(problem, risk_measure=measure, scenarios=scenarios)
    if method == "robust":
        return replace(problem, **_uncertainty(problem, policy, est.observations))
    if method == "multi_objective":
        weights = dict(policy.objective_weights) if policy.objective_weights is not None else {
            "return": 1.0, "variance": policy.risk_aversion}
        if not any(weights.values()):
            raise InputError(
                "policy.objective_weights: every weight is 0, so there is nothing to optimize; give at least one "
                "of return, variance, tracking_error, turnover, cost a positive weight",
                details={"field": "policy.objective_weights", "value": weights,
                         "allowed": ["return", "variance", "tracking_error", "turnover", "cost"]},
            )
        if weights.get("tracking_error", 0.0) > 0 and problem.benchmark_offset is None:
            raise InputError(
                "policy.benchmark: objective_weights.tracking_error measures active risk against a benchmark; "
                "name one (an index symbol, a named benchmark such as DEMO_20, or weights) or set its weight to 0",
                details={"field": "policy.benchmark", "value": None, "method": "multi_objective"},
            )
        return replace(problem, objective_weights=weights, impact_rate=policy.market_impact_bps / 1e4)
    return problem


def _uncertainty(problem: AllocationProblem, policy: Policy, observations: int) -> dict:
    """The robust set's size from the standard error of the annualized mean.

    μ̂ = days · mean of T daily returns has covariance Θ = (days / T) Σ (annual Σ). Box: each
    return within z·sqrt(Θ_ii), z the two-sided normal quantile at the confidence. Ellipsoid:
    (μ − μ̂)'Θ⁻¹(μ − μ̂) ≤ k², k² the chi-square quantile with n degrees of freedom, whose worst
    case is μ̂'w − k·sqrt(days/T)·‖G w‖.
    """
    from scipy.stats import chi2, norm

    confidence = policy.robust_confidence or DEFAULT_ROBUST_CONFIDENCE
    scale = np.sqrt(policy.annualization_days / observations)
    if (policy.robust_uncertainty or "ellipsoid") == "box":
        variances = (problem.factor**2).sum(axis=0)
        if problem.specific is not None:
            variances = variances + problem.specific**2
        z = float(norm.ppf(0.5 + confidence / 2))
        return {"return_haircut": z * scale * np.sqrt(variances)}
    return {"return_radius": float(np.sqrt(chi2.ppf(confidence, max(problem.n, 1)))) * scale}


def risk_budgets(pack: PricingPack, policy: Policy, symbols: tuple[str, ...], warnings: list[str]) -> np.ndarray:
    """Budgets of the decision assets ``symbols`` (summing to 1) from ``policy.risk_budget``.

    Keys are all symbols of the pack or all sectors of it; a sector's budget is split equally
    among its eligible names. Eligible names no key covers get 0 (not held), with a warning.
    """
    if policy.risk_budget is None:
        return np.full(len(symbols), 1.0 / max(len(symbols), 1))
    given = policy.risk_budget
    sectors = {s.sector for s in pack.securities}
    by_sector = set(given) <= sectors
    if not by_sector and not set(given) <= set(pack.symbols):
        unknown = sorted(set(given) - set(pack.symbols) - sectors)
        raise InputError(
            f"policy.risk_budget: {', '.join(repr(k) for k in unknown)} "
            f"{'is' if len(unknown) == 1 else 'are'} neither a symbol nor a sector of pack {pack.id}; "
            f"key the budgets all by symbol or all by sector (sectors: {', '.join(sorted(sectors))})",
            details={"field": "policy.risk_budget", "invalid": unknown, "allowed_sectors": sorted(sectors)},
        )
    if by_sector:
        members: dict[str, list[str]] = {}
        for sym in symbols:
            members.setdefault(pack.security(sym).sector, []).append(sym)
        budget = {sym: given[sector] / len(names) for sector, names in members.items() if sector in given
                  for sym in names}
        dropped = sorted(k for k in given if k not in members and given[k] > 0)
        what = "sector(s) with no eligible name"
    else:
        budget = {sym: given[sym] for sym in symbols if sym in given}
        dropped = sorted(k for k in given if k not in symbols and given[k] > 0)
        what = "symbol(s) not eligible to hold"
    if dropped:
        warnings.append(f"risk_budget: {', '.join(dropped)} {what}; their budget is dropped and the rest "
                        "rescaled to 100%")
    uncovered = sorted(s for s in symbols if budget.get(s, 0.0) == 0.0)
    if uncovered:
        warnings.append(f"risk_budget: no budget for {', '.join(uncovered)}; they get no risk and are not held")
    values = np.array([budget.get(s, 0.0) for s in symbols])
    if values.sum() <= 0:
        raise InputError(
            f"policy.risk_budget: no eligible name has a positive budget (eligible: {', '.join(symbols)})",
            details={"field": "policy.risk_budget", "value": dict(given), "allowed": list(symbols)},
        )
    return values / values.sum()


def risk_contribution_report(problem: AllocationProblem, optimal: np.ndarray, after: np.ndarray,
                             warnings: list[str]) -> RiskContributionInfo:
    """Budgets against achieved risk contributions, optimal and after rounding, by symbol.

    ``optimal`` and ``after`` are weights of ``problem.symbols``. When a limit holds the solution
    back from the budgets, a warning names the largest gap.
    """
    assert problem.risk_budget is not None
    budget = problem.risk_budget
    achieved = risk_contributions(problem, optimal)
    gap = np.abs(achieved - budget)
    worst = int(np.argmax(gap)) if len(gap) else 0
    if len(gap) and gap[worst] > 1e-4:
        warnings.append(
            f"risk_budgeting: the limits hold the portfolio back from its budgets; the largest gap is "
            f"{problem.symbols[worst]} at {achieved[worst] * 100:.2f}% of risk against a budget of "
            f"{budget[worst] * 100:.2f}% (risk_contributions lists every name)")
    order = sorted(range(problem.n), key=lambda i: problem.symbols[i])
    rounded = risk_contributions(problem, after)
    return RiskContributionInfo(
        symbols=[problem.symbols[i] for i in order],
        budget_pct=[pct(budget[i]) for i in order],
        optimal_pct=[pct(achieved[i]) for i in order],
        after_pct=[pct(rounded[i]) for i in order],
    )


def risk_measure_report(problem: AllocationProblem, returns: np.ndarray, before: np.ndarray,
                        after: np.ndarray) -> RiskMeasureInfo:
    """min_risk's measure of the portfolio before and after trading (whole shares), from the daily
    ``returns`` of every symbol of the plan and the plan's weights (cash earns nothing here)."""
    measure = problem.risk_measure
    tail = measure in ("cvar", "cdar", "evar")
    return RiskMeasureInfo(
        measure=measure,
        confidence=ratio(problem.cvar_confidence) if tail else None,
        before_pct=pct(risk_measures.value(measure, returns, before, problem.cvar_confidence)),
        after_pct=pct(risk_measures.value(measure, returns, after, problem.cvar_confidence)),
    )


def hierarchical_warning(policy: Policy, problem: AllocationProblem, allocation: Allocation) -> list[str]:
    """For herc: a warning when the limits moved the proposal away from the hierarchical target."""
    if policy.method != "herc" or problem.target is None or problem.objective != "track":
        return []
    moved = float(np.abs(allocation.weights - problem.target).max(initial=0.0))
    if moved <= 1e-6:
        return []
    return [f"herc is a hierarchical allocation, so the limits cannot join it: the proposal is the portfolio "
            f"nearest the HERC weights in tracking-error terms that meets every limit (as for hrp); the "
            f"largest weight moved {moved * 100:.2f} points"]
