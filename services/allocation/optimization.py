"""Constrained allocation, formulated directly in cvxpy.

riskfolio expresses turnover only as a per-asset band and tracking error only from samples, so
the constrained problem is written here: long only, a fixed invested fraction, per-asset and
per-sector caps, ex-ante tracking error from the estimated covariance, and a limit on *total*
discretionary turnover (forced sales and the redeployment of their proceeds exempt). Risk-parity
and HRP targets come from riskfolio; here they become the portfolio nearest to the target in
risk terms that satisfies every constraint.

The covariance enters only through a factor ``G`` with ``Σ = GᵀG``, shared by the variance
objective and the tracking-error cone, so the dense matrix appears once in the model. A k-factor
risk model (``specific`` set) enters as its k × n loadings plus a diagonal, never as n × n: that
is what makes the fast solve fast.

cvxpy is imported inside the functions that build problems (``lazy_cvxpy.import_cvxpy``), so
importing this module (for its settings or data classes) costs nothing until something is solved.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any
from warnings import catch_warnings, filterwarnings

import numpy as np

from services.allocation import harvest_search
from services.allocation.lazy_cvxpy import import_cvxpy
from services.allocation.objective_costs import RELAXED, ObjectiveCosts, cost_terms
from services.errors import InfeasibleError, InputError, SolverError

if TYPE_CHECKING:
    import cvxpy as cp

SOLVER = "CLARABEL"
# A solve's weights (None when it did not reach an optimum), status, and optimal value (to minimize).
Solved = tuple[np.ndarray | None, str, float | None]
SOLVER_SETTINGS: dict[str, Any] = {"tol_gap_abs": 1e-9, "tol_gap_rel": 1e-9, "tol_feas": 1e-9, "max_iter": 200, "direct_solve_method": "faer"}
# A second attempt when the first stops short (iteration limit, numerical trouble): more
# iterations, tolerances one decade looser (still far below a reported digit), and the problem
# rescaled by Clarabel's equilibration with more passes. Never used when the first attempt succeeds.
RETRY_SETTINGS: dict[str, Any] = {**SOLVER_SETTINGS, "tol_gap_abs": 1e-8, "tol_gap_rel": 1e-8, "tol_feas": 1e-8,
                                  "max_iter": 1000, "equilibrate_max_iter": 50}
RETRY_STATUSES = ("user_limit", "solver_error")
TOL = 1e-7


@dataclass(frozen=True, eq=False)
class SectorCap:
    """A cap on the summed weight of the decision assets at ``members``.

    ``kind`` names the policy field behind it in binding ids (``sector_limit:Energy``,
    ``asset_class_limit:etf``); sectors partition the assets, asset classes overlap them.
    """

    name: str
    members: np.ndarray
    limit: float
    kind: str = "sector_limit"

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.name}"


@dataclass(frozen=True, eq=False)
class AllocationProblem:
    """Everything the solver needs, in weights (fractions of the portfolio's value).

    Attributes:
        symbols: decision assets (eligible to hold), length n.
        objective: mean_variance, max_sharpe, min_variance, cvar, or track (nearest to ``target``).
        mu: annualized expected returns of the decision assets.
        factor: ``G_n`` (k × n) with ``Σ_eligible = G_nᵀ G_n`` (annualized); with ``specific``
            set, the k factor loadings only, and ``Σ_eligible = G_nᵀ G_n + diag(specific²)``.
        specific: specific volatilities of a factor risk model (n,), or None.
        benchmark_offset: the benchmark's exposure ``G wb`` in the coordinates of
            ``exposure(w)`` (k, or k + n with ``specific``), so that ex-ante active risk is
            ``‖exposure(w) − c‖``; None when no benchmark applies.
        current: current weights of the decision assets.
        offset_residual: active risk of the benchmark outside the row space of ``factor``, so
            that tracking error is ``sqrt(‖G_n w − c‖² + residual²)`` (set by ``square_factor``).
        forced_weight: weight sold by force (quality or universe exclusions); that much turnover,
            and as much again of purchases redeploying it, is exempt from ``max_turnover``.
        invested: the fraction to invest (1 − cash buffer).
        min_invested: the least fraction to invest when cash may float (``max_cash_pct``): the
            weights then add up to between it and ``invested``; None: to ``invested`` exactly.
        caps: per-asset upper bounds.
        floors: per-asset lower bounds, or None (a frozen holding has floor = cap = its weight).
        min_acceptable_return: max_sortino's annual minimum acceptable return (decimal); the
            daily threshold is it divided by ``annualization_days``.
        benchmark_return: max_information_ratio's annualized expected return of the benchmark.
        benchmark_weights: the benchmark's weights on the decision assets when it holds nothing
            else (it may then be a feasible portfolio itself); None otherwise.
        min_return: a floor on the annual expected return ``μᵀw + (1 − invested)·rf`` (decimal),
            or None; set for black_litterman's min_variance.
        costs: trading costs and taxes (``objective_costs``): charged against the expected return
            of the objectives that have one (RETURN_OBJECTIVES), their gain cap a constraint of
            every objective; None: none.
        cap_limits: per asset, the policy field that set its cap (``max_single_position_pct``,
            ``restricted_symbols``) or None for a cap nobody set (the implicit 100%, a frozen
            weight); only named caps are reported as binding. None: every cap is the policy's
            ``max_single_position_pct``.
        risk_budget: risk_budgeting's budgets per asset (summing to 1; 0: not held).
        risk_measure: min_risk's measure: variance, cvar, or a scenario measure of ``risk_measures``.
        return_haircut: robust, box set: per-asset δ with worst-case mean (μ − δ)ᵀw (long only).
        return_radius: robust, ellipsoid set: r with worst-case mean μᵀw − r‖G w‖.
        objective_weights: multi_objective's weights of return, variance, tracking_error,
            turnover and cost (missing terms weigh 0).
        impact_rate: the linear market impact per unit of trade value (multi_objective's cost term).
        tax_aversion: for the objectives without an expected return (TAX_AVERSION_OBJECTIVES), the
            weight ``a`` of the costs in ``distance² + a·cost`` (both as fractions: the policy's
            %²-per-% rate divided by 100); None: costs are not charged there.
        relievable: per asset, the part of ``floors`` a withdrawal may release (the short-term
            rule's floor above any other), or None.
        floor_relief: the total weight of ``relievable`` that may be released (a withdrawal's
            forced sales of short-term-gain lots); 0: floors hold as they are.
        gross_limit: None (the default): long only. Otherwise short positions are allowed and this
            is the gross exposure limit Σ|w| (1.5 = 150% of value): caps bound |w|, ``floors`` (if
            set) are each weight's lower bound, negative where a short is allowed (default −cap),
            0 where it is not; sector caps bound the *net* weight, the
            budget Σw = invested is the net invested fraction and turnover counts |Δw|. Only the
            objectives in ``SHORT_OBJECTIVES`` support it.
    """

    symbols: tuple[str, ...]
    objective: str
    mu: np.ndarray
    factor: np.ndarray
    current: np.ndarray
    invested: float
    caps: np.ndarray
    sectors: tuple[SectorCap, ...] = ()
    min_invested: float | None = None
    benchmark_offset: np.ndarray | None = None
    max_tracking_error: float | None = None
    max_turnover: float | None = None
    forced_weight: float = 0.0
    risk_free_rate: float = 0.0
    risk_aversion: float = 2.0
    target: np.ndarray | None = None
    scenarios: np.ndarray | None = None
    cvar_confidence: float = 0.95
    offset_residual: float = 0.0
    floors: np.ndarray | None = None
    specific: np.ndarray | None = None
    cap_limits: tuple[str | None, ...] | None = None
    min_acceptable_return: float = 0.0
    benchmark_return: float = 0.0
    benchmark_weights: np.ndarray | None = None
    annualization_days: int = 252
    min_return: float | None = None
    risk_budget: np.ndarray | None = None
    risk_measure: str = "variance"
    return_haircut: np.ndarray | None = None
    return_radius: float = 0.0
    objective_weights: dict[str, float] | None = None
    impact_rate: float = 0.0
    costs: ObjectiveCosts | None = None
    tax_aversion: float | None = None
    relievable: np.ndarray | None = None
    floor_relief: float = 0.0
    gross_limit: float | None = None

    @property
    def least_invested(self) -> float:
        """The least fraction the weights may add up to: ``min_invested``, else ``invested``."""
        return self.invested if self.min_invested is None else self.min_invested

    @property
    def n(self) -> int:
        return len(self.symbols)

    def exposure(self, w: np.ndarray) -> np.ndarray:
        """Risk coordinates of weights ``w``: ``G w``, with the specific part appended if any."""
        if self.specific is None:
            return self.factor @ w
        return np.concatenate([self.factor @ w, self.specific * w])


@dataclass(frozen=True, eq=False)
class Allocation:
    """A solved allocation and how it was obtained."""

    weights: np.ndarray
    objective: str
    status: str
    solver: str
    binding: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default_factory=tuple)
    # The solver's optimum as a quantity to minimize: comparable between solves of one objective
    # that differ only in constraints (the harvest search's nodes).
    value: float | None = None


def solve(problem: AllocationProblem, *, te_margin: float = 0.0) -> Allocation:
    """Solve ``problem``; infeasible problems raise InfeasibleError naming the conflict.

    ``te_margin`` tightens the tracking-error limit (as a fraction of it) so that rounding to
    whole shares afterwards cannot push the rounded portfolio over the limit. When losses count
    (``harvest_losses``) the best wash-free choice of names to sell at a loss is searched
    (``harvest_search``) from the relaxation in which each such name's tax is a convex envelope.
    """
    root = _solve_once(problem, te_margin)
    costs = problem.costs
    # An objective that charges no tax ignores the modes (``cost_terms``): the root is the answer.
    if (costs is None or costs.modes is None or not (costs.modes == RELAXED).any() or root.value is None
            or not _charges_tax(problem, root.objective)):
        return root
    solved = {costs.modes.tobytes(): root}

    def node(modes: np.ndarray) -> tuple[np.ndarray, float] | None:
        try:
            allocation = _solve_once(replace(problem, costs=replace(costs, modes=modes)), te_margin)
        except InfeasibleError:
            return None  # e.g. a name that may not be bought cannot reach a minimum weight
        if allocation.value is None or allocation.objective != root.objective:
            return None  # a fallback objective's value is not comparable
        solved[modes.tobytes()] = allocation
        return allocation.weights, allocation.value

    found = harvest_search.search(costs, problem.current, (root.weights, root.value), node)
    best = solved[found.modes.tobytes()]
    if found.proven:
        return best
    return replace(best, warnings=(*best.warnings, (
        f"harvest_losses: the search for the names best sold at a loss stopped at its limit of {found.nodes} "
        "solves before proving its choice the best; the proposal is the best wash-free choice it found")))


def _charges_tax(p: AllocationProblem, objective: str) -> bool:
    """Whether ``objective`` puts the costs and taxes in its goal (see ``_solve_convex``)."""
    return objective in ("max_sharpe", "mean_variance", *RATIO_FALLBACKS) or (
        p.tax_aversion is not None and objective in TAX_AVERSION_OBJECTIVES)


def _solve_once(problem: AllocationProblem, te_margin: float) -> Allocation:
    """``solve`` under the problem's harvest modes as they are."""
    _check_shorts(problem)
    _check_capacity(problem)
    problem = square_factor(problem)
    warnings: list[str] = []
    objective = problem.objective
    weights, status, value = None, "not_solved", None
    if objective == "max_sharpe" and np.any(problem.mu > problem.risk_free_rate):
        weights, status, value = _solve_max_sharpe(problem, te_margin)
    if objective in RATIO_FALLBACKS:
        weights, status, value, objective, note = _solve_ratio_or_fallback(problem, objective, te_margin)
        if note:
            warnings.append(note)
    elif objective == "max_sharpe" and weights is None and status != "optimal_inaccurate":
        # Either no asset beats the risk-free rate, or no portfolio the constraints allow does
        # (the Charnes-Cooper problem is then infeasible although the policy is not): the
        # Sharpe ratio has no positive maximum, so minimize variance instead, and say so.
        objective = "min_variance"
        weights, status, value = _solve_convex(problem, objective, te_margin)
        if weights is not None:
            warnings.append(
                "max_sharpe: no portfolio the constraints allow has expected return above the risk-free "
                f"rate ({problem.risk_free_rate:.2%}); fell back to min_variance"
            )
    elif objective != "max_sharpe":
        weights, status, value = _solve_convex(problem, objective, te_margin)
    if weights is None:
        if status in ("infeasible", "infeasible_inaccurate"):
            raise diagnose_infeasible(problem, te_margin)
        raise SolverError(
            f"solver {SOLVER} ended with status '{status}' for objective {objective}",
            details={"solver": SOLVER, "status": status, "objective": objective},
        )
    if status == "optimal_inaccurate":
        warnings.append(f"solver {SOLVER} reported an inaccurate optimum; constraints were re-checked after rounding")
    weights = np.clip(weights, _lower(problem), problem.caps)
    return Allocation(
        weights=weights,
        objective=objective,
        status=status,
        solver=SOLVER,
        binding=binding_constraints(problem, weights),
        warnings=tuple(warnings),
        value=value,
    )


# The objectives defined with short positions (weights in [−cap, cap], a gross exposure limit):
# those whose risk and return are functions of signed weights. The scenario, risk-parity and
# ratio objectives beyond Sharpe assume long-only weights in their formulation or their targets.
SHORT_OBJECTIVES = ("max_sharpe", "mean_variance", "min_variance")


def _check_shorts(p: AllocationProblem) -> None:
    """Refuse a gross exposure limit where shorts are not defined, or one below the invested fraction."""
    if p.gross_limit is None:
        return
    if p.objective not in SHORT_OBJECTIVES:
        raise InputError(
            f"method {p.objective!r} does not support allow_short: short positions are supported by "
            f"{', '.join(SHORT_OBJECTIVES)} only; use one of them or set allow_short false",
            details={"field": "allow_short", "method": p.objective, "allowed_methods": list(SHORT_OBJECTIVES)},
        )
    if p.costs is not None and any(part is not None and not part.empty for part in (p.costs.tax, p.costs.gain)):
        raise InputError(
            "allow_short cannot be combined with taxes in the objective (tax_rates, max_realized_gain): the "
            "tax lots describe long holdings only; drop the tax fields or set allow_short false",
            details={"field": "allow_short", "conflicts": ["tax_rates", "max_realized_gain"]},
        )
    if p.gross_limit < p.invested - 1e-12:
        raise InfeasibleError(
            f"infeasible policy: max_leverage {p.gross_limit:g} is below the net invested fraction "
            f"{p.invested:g} (gross exposure Σ|w| is at least the net Σw); raise max_leverage to at least "
            f"{math.ceil(p.invested * 1e4) / 1e4:g} or the cash buffer",
            details={"conflicts": ["max_leverage", "cash_buffer_pct"],
                     "smallest_relaxation": {"max_leverage": math.ceil(p.invested * 1e4) / 1e4}},
        )


def _weights(p: AllocationProblem) -> cp.Variable:
    """The weight (or κ-scaled weight) variable: nonnegative unless ``p`` allows shorts."""
    cp = import_cvxpy()

    return cp.Variable(p.n, nonneg=p.gross_limit is None)


def _lower(p: AllocationProblem) -> np.ndarray | float:
    """The lowest weight each asset may take: 0 long only; with shorts the floors, or −cap."""
    if p.gross_limit is None:
        return 0.0
    return -p.caps if p.floors is None else p.floors


# The ratio objectives beyond max_sharpe, and what each falls back to when no portfolio the
# constraints allow has a positive numerator (the ratio then has no positive maximum).
RATIO_FALLBACKS = {"max_sortino": "min_variance", "max_information_ratio": "min_tracking_error"}


def _solve_ratio_or_fallback(p: AllocationProblem, objective: str,
                             te_margin: float) -> tuple[np.ndarray | None, str, float | None, str, str | None]:
    """Solve a ratio objective, or its fallback (with the note saying so) when the ratio has no
    positive maximum under the constraints."""
    if objective == "max_sortino":
        excess, floor, what = p.mu - p.min_acceptable_return, -_sortino_cash_excess(p), (
            f"the minimum acceptable return ({p.min_acceptable_return:.2%})")
    else:
        excess, floor, what = p.mu, p.benchmark_return - (1.0 - p.invested) * p.risk_free_rate, (
            f"the benchmark's expected return ({p.benchmark_return:.2%})")
    weights, status, value = None, "not_solved", None
    if np.any(excess * p.invested > floor):
        weights, status, value = _solve_ratio(p, objective, te_margin)
    if weights is not None or status == "optimal_inaccurate":
        return weights, status, value, objective, None
    fallback = RATIO_FALLBACKS[objective]
    weights, status, value = _solve_convex(p, fallback, te_margin)
    note = (f"{objective}: no portfolio the constraints allow has expected return above {what}; "
            f"fell back to {fallback}")
    return weights, status, value, fallback, note if weights is not None else None


def _sortino_cash_excess(p: AllocationProblem) -> float:
    """The cash buffer's annual return above the minimum acceptable return, per unit of value."""
    return (1.0 - p.invested) * (p.risk_free_rate - p.min_acceptable_return)


def _solve_ratio(p: AllocationProblem, objective: str, te_margin: float) -> Solved:
    """max_sortino or max_information_ratio, exactly, by Charnes–Cooper like ``_solve_max_sharpe``.

    With v = κw (κ > 0) the ratio's numerator, affine in w, is fixed at 1 and its denominator, a
    convex norm positively homogeneous in (w, κ), is minimized; every limit scales by κ.

    - Sortino: (μ − MAR)ᵀw + cash·(rf − MAR) over the downside deviation
      sqrt(days/T · Σₜ max(0, MAR/days − rₜᵀw − cash·rf/days)²) of the historical daily returns rₜ.
    - Information ratio: μᵀw + cash·rf − μ_b over the ex-ante tracking error ‖G w − G w_b‖.
    """
    cp = import_cvxpy()

    v = cp.Variable(p.n, nonneg=True)
    kappa = cp.Variable(nonneg=True)
    risk, constraints = _risk_variable(p, v)
    constraints += _constraints(p, v, risk, kappa, te_margin)
    cash = 1.0 - p.invested
    cost, extra = _charged_costs(p, v, kappa)
    if objective == "max_sortino":
        assert p.scenarios is not None
        daily_floor = (p.min_acceptable_return - cash * p.risk_free_rate) / p.annualization_days
        shortfall = cp.Variable(p.scenarios.shape[0], nonneg=True)
        constraints += [shortfall >= kappa * daily_floor - p.scenarios @ v,
                        _numerator((p.mu - p.min_acceptable_return) @ v + kappa * _sortino_cash_excess(p), cost)]
        goal = cp.Minimize(cp.sum_squares(shortfall))
    else:
        assert p.benchmark_offset is not None
        constraints.append(_numerator(p.mu @ v + kappa * (cash * p.risk_free_rate - p.benchmark_return), cost))
        goal = cp.Minimize(_active_risk(p, risk, kappa))
    weights, status, value = _run(cp.Problem(goal, constraints + extra), v)
    if weights is None or kappa.value is None or kappa.value <= 1e-12:
        return None, status, None
    kappa_value = float(kappa.value)
    # With costs the information ratio is no longer constant along the benchmark segment.
    if (objective == "max_information_ratio" and p.benchmark_weights is not None and p.invested == 1.0
            and cost is None):
        weights, kappa_value = _most_active(p, weights, kappa_value, te_margin)
    return weights / kappa_value, status, value


def _most_active(p: AllocationProblem, v: np.ndarray, kappa: float, te_margin: float) -> tuple[np.ndarray, float]:
    """Among the portfolios of highest information ratio, the most active one the limits allow.

    When the benchmark is a portfolio of the decision assets and everything is invested, every
    mix w_b + λ(w − w_b) has the information ratio of w: the Charnes–Cooper optimum is a segment
    (v + s·w_b, κ + s), along which active return 1 and tracking error stay fixed, and the
    solver would stop anywhere on it. The smallest κ + s is the largest active return: the bets
    scaled up until a limit (tracking error, a cap, turnover, long only) stops them, as a manager
    scales active risk to the budget. One scalar, so the choice is exact.
    """
    cp = import_cvxpy()

    assert p.benchmark_weights is not None
    s = cp.Variable()
    scaled = v + s * p.benchmark_weights
    exposure = p.factor @ scaled
    if p.specific is not None:
        exposure = cp.hstack([exposure, cp.multiply(p.specific, scaled)])
    constraints = [scaled >= 0, *_constraints(p, scaled, exposure, kappa + s, te_margin)]
    step, _, _ = _run(cp.Problem(cp.Minimize(s), constraints), s)
    if step is None or float(step) >= 0.0:
        return v, kappa
    return v + float(step) * p.benchmark_weights, kappa + float(step)


def warm_up() -> None:
    """Import cvxpy and Clarabel and solve a two-asset problem once.

    They are imported lazily (so that commands that do not solve never load them); a
    long-running process calls this at start so that its first request does not pay for them.
    """
    solve(AllocationProblem(symbols=("A", "B"), objective="min_variance", mu=np.zeros(2), factor=np.eye(2),
                            current=np.zeros(2), invested=1.0, caps=np.ones(2)))


def _solve_convex(p: AllocationProblem, objective: str, te_margin: float) -> Solved:
    cp = import_cvxpy()

    if objective == "risk_budgeting":
        return _solve_risk_budgeting(p, te_margin)
    if objective == "min_risk" and p.risk_measure == "evar":
        return _solve_evar(p, te_margin)
    w = _weights(p)
    risk, constraints = _risk_variable(p, w)
    constraints += _constraints(p, w, risk, 1.0, te_margin)
    averse = p.tax_aversion is not None and objective in TAX_AVERSION_OBJECTIVES
    cost, extra = _charged_costs(p, w, 1.0, charge=_charges_tax(p, objective))
    constraints += extra
    # Squared distance (or variance) and cost as fractions; tax_aversion is their exchange rate.
    charged = 0 if cost is None or not averse else p.tax_aversion * cost
    if objective in BREADTH_OBJECTIVES:
        goal, extra = _breadth_objective(p, w, risk)
        constraints += extra
    elif objective == "min_variance":
        goal = cp.Minimize(cp.sum_squares(risk) + charged)
    elif objective == "mean_variance":
        goal = cp.Maximize(p.mu @ w - p.risk_aversion * cp.sum_squares(risk) - (0 if cost is None else cost))
    elif objective == "cvar":
        goal, extra = _cvar_objective(p, w)
        constraints += extra
    elif objective == "min_tracking_error":
        goal = cp.Minimize(_active_risk(p, risk, 1.0))
    elif objective == "track":
        assert p.target is not None
        goal = cp.Minimize(cp.sum_squares(risk - p.exposure(p.target)) + 1e-6 * cp.sum_squares(w - p.target) + charged)
    elif objective == "track_euclidean":
        assert p.target is not None
        goal = cp.Minimize(cp.sum_squares(w - p.target))
    else:
        raise ValueError(f"unknown objective {objective}")
    return _run(cp.Problem(goal, constraints), w)


# Objectives without an expected return that charge costs and taxes when tax_aversion is set.
TAX_AVERSION_OBJECTIVES = ("track", "min_variance")
BREADTH_OBJECTIVES = ("min_risk", "max_return", "robust", "multi_objective")


def _breadth_objective(p: AllocationProblem, w: cp.Variable, risk: cp.Expression) -> tuple[Any, list]:
    """The goal of min_risk, max_return, robust or multi_objective over weights ``w``, and the
    auxiliary constraints it needs; the limits are the caller's.

    - min_risk: the policy's ``risk_measure`` (variance w'Σw, or a scenario measure).
    - max_return: μ'w, a linear program.
    - robust: robust mean–variance, the worst-case mean over the uncertainty set minus
      λ w'Σw: (μ − δ)'w for a box (w ≥ 0, so the worst case is every return at its low end),
      μ'w − r‖G w‖ for an ellipsoid.
    - multi_objective: return·μ'w − variance·w'Σw − tracking_error·‖G(w − w_b)‖²
      − (turnover + cost·impact)·Σ|w − w₀|.
    """
    import cvxpy as cp

    from services.allocation import risk_measures

    objective = p.objective
    if objective == "min_risk":
        if p.risk_measure == "variance":
            return cp.Minimize(cp.sum_squares(risk)), []
        if p.risk_measure == "cvar":
            return _cvar_objective(p, w)
        assert p.scenarios is not None
        goal, extra = risk_measures.objective(p.risk_measure, p.scenarios, w, p.cvar_confidence)
        return cp.Minimize(goal), extra
    if objective == "max_return":
        return cp.Maximize(p.mu @ w), []
    if objective == "robust":
        worst = p.mu @ w
        if p.return_haircut is not None:
            worst = (p.mu - p.return_haircut) @ w
        if p.return_radius > 0:
            worst = worst - p.return_radius * cp.norm(risk, 2)
        return cp.Maximize(worst - p.risk_aversion * cp.sum_squares(risk)), []
    if objective == "multi_objective":
        weights = p.objective_weights or {}
        goal = weights.get("return", 0.0) * (p.mu @ w) - weights.get("variance", 0.0) * cp.sum_squares(risk)
        if weights.get("tracking_error", 0.0) > 0:
            assert p.benchmark_offset is not None
            goal = goal - weights["tracking_error"] * cp.square(_active_risk(p, risk, 1.0))
        per_trade = weights.get("turnover", 0.0) + weights.get("cost", 0.0) * p.impact_rate
        if per_trade > 0:
            goal = goal - per_trade * cp.norm(w - p.current, 1)
        return cp.Maximize(goal), []
    raise ValueError(f"unknown objective {objective}")


def _solve_evar(p: AllocationProblem, te_margin: float) -> Solved:
    """min_risk with evar, its exponential cones stated in each of ``risk_measures.EVAR_UNITS`` in
    turn until Clarabel succeeds (the same minimizer in every unit); the last failure is raised."""
    import cvxpy as cp

    from services.allocation import risk_measures

    assert p.scenarios is not None
    failure: SolverError | None = None
    for unit in risk_measures.EVAR_UNITS:
        w = cp.Variable(p.n, nonneg=True)
        risk, constraints = _risk_variable(p, w)
        constraints += _constraints(p, w, risk, 1.0, te_margin)
        goal, extra = risk_measures.objective("evar", p.scenarios, w, p.cvar_confidence, unit)
        try:
            return _run(cp.Problem(cp.Minimize(goal), constraints + extra), w)
        except SolverError as err:
            failure = err
    assert failure is not None
    raise failure


def _solve_risk_budgeting(p: AllocationProblem, te_margin: float) -> Solved:
    """Risk budgeting in Spinu's convex log-barrier form, with every limit in the same problem.

    minimize v'Σv subject to Σ b_i log v_i ≥ 1 and the limits homogenized by κ (v = κw), which is
    riskfolio's ``rp_optimization`` (Richard and Roncalli's constrained risk budgeting). Without a
    binding limit the optimum has v_i(Σv)_i proportional to b_i, so the risk contributions are
    exactly the budgets; a binding limit moves risk from the names it holds back to the others.
    Assets with budget 0, or that may not be held (cap 0, or a sector limited to 0%), stay at their
    floor; when no budgeted asset may be held, the policy is infeasible, and the error says why.
    """
    import cvxpy as cp

    assert p.risk_budget is not None
    v = cp.Variable(p.n, nonneg=True)
    kappa = cp.Variable(nonneg=True)
    risk, constraints = _risk_variable(p, v)
    constraints += _constraints(p, v, risk, kappa, te_margin)
    holdable = p.caps > 0
    for sector in p.sectors:
        if sector.limit <= 0:
            holdable[sector.members] = False
    budgeted = (p.risk_budget > 0) & holdable
    if not budgeted.any():
        raise InfeasibleError(
            "infeasible policy: no name with a positive risk_budget may be held (each is restricted and not "
            "held, or in a sector limited to 0%), so no risk can be budgeted; give a budget to a name that may "
            "be bought",
            details={"conflicts": ["risk_budget", "restricted_symbols", "sector_limits_pct"],
                     "budgeted": [s for s, b in zip(p.symbols, p.risk_budget, strict=True) if b > 0]},
        )
    held = np.flatnonzero(budgeted)
    budgets = p.risk_budget[held] / p.risk_budget[held].sum()
    constraints.append(budgets @ cp.log(v[held]) >= 1)
    still = np.flatnonzero(~budgeted)
    if still.size:
        floors = np.zeros(p.n) if p.floors is None else p.floors
        constraints.append(v[still] == kappa * floors[still])
    weights, status, value = _run(cp.Problem(cp.Minimize(cp.sum_squares(risk)), constraints), v)
    if weights is None or kappa.value is None or kappa.value <= 1e-12:
        return None, status, None
    return weights / float(kappa.value), status, value


def risk_contributions(p: AllocationProblem, w: np.ndarray) -> np.ndarray:
    """Each asset's share w_i(Σw)_i / w'Σw of the variance of weights ``w`` (summing to 1)."""
    exposure = p.exposure(w)
    marginal = p.factor.T @ exposure[: p.factor.shape[0]]
    if p.specific is not None:
        marginal = marginal + p.specific**2 * w
    total = float(w @ marginal)
    return w * marginal / total if total > 0 else np.zeros(p.n)


def _solve_max_sharpe(p: AllocationProblem, te_margin: float) -> Solved:
    """Charnes–Cooper: v = κw turns max Sharpe into a convex problem; every constraint scales by κ."""
    cp = import_cvxpy()

    v = _weights(p)
    kappa = cp.Variable(nonneg=True)
    risk, constraints = _risk_variable(p, v)
    constraints += _constraints(p, v, risk, kappa, te_margin)
    cost, extra = _charged_costs(p, v, kappa)
    constraints += [*extra, _numerator((p.mu - p.risk_free_rate) @ v, cost)]
    weights, status, value = _run(cp.Problem(cp.Minimize(cp.sum_squares(risk)), constraints), v)
    if weights is None or kappa.value is None or kappa.value <= 1e-12:
        return None, status, None
    return weights / float(kappa.value), status, value


def _charged_costs(p: AllocationProblem, w: cp.Expression, k: Any, *, charge: bool = True) -> tuple[cp.Expression | None, list]:
    """The problem's costs and taxes of trading to ``w`` (perspective when ``k`` is κ) and the
    constraints defining them; (None, []) without costs."""
    if p.costs is None:
        return None, []
    return cost_terms(p.costs, w, p.current, k, charge=charge)


def _numerator(excess: cp.Expression, cost: cp.Expression | None) -> Any:
    """Charnes–Cooper's normalization of a ratio's numerator: = 1, or ≥ 1 net of a convex cost
    (then concave; the optimum still meets it with equality, as a larger numerator only helps)."""
    return excess == 1 if cost is None else excess - cost >= 1


def square_factor(p: AllocationProblem) -> AllocationProblem:
    """The same problem with an n × n factor.

    A non-square dense block (more risk symbols than decision assets, or a rank-deficient
    covariance) made Clarabel's fill-reducing ordering 4x slower at 1000 assets. With
    G_n = U S Vᵀ, ‖G_n w‖ = ‖S Vᵀ w‖ and ‖G_n w − c‖² = ‖S Vᵀ w − Uᵀc‖² + ‖c − UUᵀc‖², so the
    square factor S Vᵀ (zero-padded) loses nothing.
    """
    k, n = p.factor.shape
    if k == n or p.specific is not None:
        return p
    u, s, vt = np.linalg.svd(p.factor, full_matrices=False)
    factor = np.zeros((n, n))
    factor[: len(s)] = s[:, None] * vt
    offset, residual = None, 0.0
    if p.benchmark_offset is not None:
        offset = np.zeros(n)
        offset[: len(s)] = u.T @ p.benchmark_offset
        residual = float(np.sqrt(max(p.benchmark_offset @ p.benchmark_offset - offset @ offset, 0.0)))
        if p.offset_residual > 0:  # a residual the problem already had (a projected benchmark) adds to it
            residual = float(np.hypot(residual, p.offset_residual))
    return replace(p, factor=factor, benchmark_offset=offset, offset_residual=residual)


def _risk_variable(p: AllocationProblem, w: cp.Variable) -> tuple[cp.Expression, list]:
    """y = G w as a variable of its own, so the dense factor enters the model exactly once
    (used directly in both the variance and the tracking-error cone, cvxpy would copy it, and
    a quadratic objective would turn it into the dense n × n matrix GᵀG). With a factor risk
    model the risk coordinates are (y, specific ∘ w): k dense rows and a diagonal."""
    cp = import_cvxpy()

    y = cp.Variable(p.factor.shape[0])
    if p.specific is not None:
        return cp.hstack([y, cp.multiply(p.specific, w)]), [y == p.factor @ w]
    # Keep the block structurally dense: a few exact zeros (an eigenvector orthogonal to one
    # asset) made the solver's fill-reducing ordering 6x slower at 1000 assets. 1e-30 changes
    # no reported digit.
    factor = np.where(p.factor == 0.0, 1e-30, p.factor)
    return y, [y == factor @ w]


def budget(p: AllocationProblem, w: cp.Expression, k: Any = 1.0) -> list:
    """Σw = invested, or between ``least_invested`` and invested when cash may float (``k``: 1 or κ)."""
    cp = import_cvxpy()

    if p.min_invested is None:
        return [cp.sum(w) == k * p.invested]
    return [cp.sum(w) <= k * p.invested, cp.sum(w) >= k * p.least_invested]


def _constraints(p: AllocationProblem, w: cp.Variable, risk: cp.Expression | None, k: Any, te_margin: float) -> list:
    """Budget, caps, sectors, tracking error and turnover, homogeneous in ``k`` (1 or κ)."""
    cp = import_cvxpy()

    cons = [*budget(p, w, k), w <= k * p.caps]
    if p.gross_limit is not None:
        # Shorts: caps bound |w| from above, the floors (−cap unless set) from below, and the
        # gross exposure Σ|w| has its own limit.
        cons += [w >= k * _lower(p), cp.norm(w, 1) <= k * p.gross_limit]
    elif p.floors is not None and p.relievable is not None and p.floor_relief > 0:
        # A withdrawal may take up to floor_relief below the short-term floors, where it likes best.
        relief = cp.Variable(p.n, nonneg=True)
        cons += [w >= k * p.floors - relief, relief <= k * p.relievable, cp.sum(relief) <= k * p.floor_relief]
    elif p.floors is not None:
        cons.append(w >= k * p.floors)
    if p.sectors:
        membership = np.zeros((len(p.sectors), p.n))
        for row, sector in enumerate(p.sectors):
            membership[row, sector.members] = 1.0
        cons.append(membership @ w <= k * np.array([s.limit for s in p.sectors]))
    if p.max_tracking_error is not None and p.benchmark_offset is not None:
        limit = p.max_tracking_error * (1.0 - te_margin)
        cons.append(_active_risk(p, risk, k) <= k * limit)
    if p.max_turnover is not None:
        cons += _turnover_constraints(p, w, k)
    if p.min_return is not None:
        cons.append(p.mu @ w + k * ((1.0 - p.invested) * p.risk_free_rate - p.min_return) >= 0)
    return cons


def _active_risk(p: AllocationProblem, risk: cp.Expression, k: Any) -> cp.Expression:
    """Ex-ante tracking error of the (κ-scaled) weights whose factor exposure is ``risk``."""
    cp = import_cvxpy()

    active = risk - k * p.benchmark_offset
    if p.offset_residual > 0:
        active = cp.hstack([active, cp.reshape(k * p.offset_residual, (1,), order="C")])
    return cp.norm(active, 2)


def _turnover_constraints(p: AllocationProblem, w: cp.Variable, k: Any) -> list:
    """Σ|Δw| − exempt ≤ limit, with exempt = min(forced sales, purchases), kept linear by splitting Δw."""
    cp = import_cvxpy()

    buys = cp.Variable(p.n, nonneg=True)
    sells = cp.Variable(p.n, nonneg=True)
    cons = [w - k * p.current == buys - sells]
    if p.forced_weight > 0:
        exempt = cp.Variable(nonneg=True)
        cons += [exempt <= k * p.forced_weight, exempt <= cp.sum(buys),
                 cp.sum(buys) + cp.sum(sells) - exempt <= k * p.max_turnover]
    else:
        cons.append(cp.sum(buys) + cp.sum(sells) <= k * p.max_turnover)
    return cons


def _cvar_objective(p: AllocationProblem, w: cp.Variable) -> tuple[cp.Minimize, list]:
    """Rockafellar–Uryasev: CVaR of the daily loss −Rw over the historical scenarios."""
    cp = import_cvxpy()

    assert p.scenarios is not None
    t = p.scenarios.shape[0]
    var = cp.Variable()
    excess = cp.Variable(t, nonneg=True)
    cons = [excess >= -(p.scenarios @ w) - var]
    return cp.Minimize(var + cp.sum(excess) / ((1.0 - p.cvar_confidence) * t)), cons


def _run(problem: cp.Problem, w: cp.Variable) -> Solved:
    """Solve; a first attempt that stops short (``RETRY_STATUSES``) is retried once with
    ``RETRY_SETTINGS``. A status neither attempt resolves is returned for the caller to explain;
    only an attempt that still stops short raises, naming status and iterations. The value is
    the optimum as a quantity to minimize (a maximized objective's value negated)."""
    status, iterations = _attempt(problem, SOLVER_SETTINGS)
    if status in RETRY_STATUSES:
        first = (status, iterations)
        status, iterations = _attempt(problem, RETRY_SETTINGS)
        if status in RETRY_STATUSES:
            raise SolverError(
                f"solver {SOLVER} stopped with status '{status}' after {iterations} iterations "
                f"(first attempt: '{first[0]}' after {first[1]} iterations, limit {SOLVER_SETTINGS['max_iter']}; "
                f"retry limit {RETRY_SETTINGS['max_iter']}); the problem is numerically difficult — "
                "loosen the tightest limit or shorten the universe",
                details={"solver": SOLVER, "status": status, "iterations": iterations,
                         "first_status": first[0], "first_iterations": first[1]},
            )
    if status in ("optimal", "optimal_inaccurate") and w.value is not None:
        value = float(problem.value)
        return np.asarray(w.value, dtype=float), status, value if problem.objective.NAME == "minimize" else -value
    return None, status, None


def _attempt(problem: cp.Problem, settings: dict[str, Any]) -> tuple[str, int | None]:
    cp = import_cvxpy()

    try:
        with catch_warnings():
            # The status says the same; solve() turns it into a warning in the result.
            filterwarnings("ignore", message="Solution may be inaccurate")
            problem.solve(solver=SOLVER, **settings)
    except cp.error.SolverError:
        # cvxpy raises instead of returning a status when the solver reports an error; name it.
        stats = problem.solver_stats
        return "solver_error", None if stats is None else stats.num_iters
    stats = problem.solver_stats
    return str(problem.status), None if stats is None else stats.num_iters


def objective_value(p: AllocationProblem, w: np.ndarray) -> float | None:
    """The objective before costs and taxes at weights ``w``: the Sharpe ratio for max_sharpe,
    μᵀw − λ·wᵀΣw for mean_variance, the distance ‖G(w − target)‖ for track, the volatility
    ‖G w‖ for min_variance; None for the others."""
    if p.objective == "max_sharpe":
        vol = float(np.linalg.norm(p.exposure(w)))
        excess = float(p.mu @ w) + (1.0 - float(w.sum())) * p.risk_free_rate - p.risk_free_rate
        return excess / vol if vol > 1e-12 else None
    if p.objective == "mean_variance":
        return float(p.mu @ w) - p.risk_aversion * float(np.sum(p.exposure(w) ** 2))
    if p.objective == "track":
        assert p.target is not None
        return float(np.linalg.norm(p.exposure(w) - p.exposure(p.target)))
    if p.objective == "min_variance":
        return float(np.linalg.norm(p.exposure(w)))
    return None


def tracking_error(p: AllocationProblem, w: np.ndarray) -> float:
    assert p.benchmark_offset is not None
    return float(np.hypot(np.linalg.norm(p.exposure(w) - p.benchmark_offset), p.offset_residual))


def discretionary_turnover(p: AllocationProblem, w: np.ndarray) -> float:
    delta = w - p.current
    buys = float(np.clip(delta, 0, None).sum())
    return float(np.abs(delta).sum()) - min(p.forced_weight, buys)


def binding_constraints(p: AllocationProblem, w: np.ndarray) -> tuple[str, ...]:
    """Names of the limits set by the policy that hold with (near) equality at ``w``.

    A cap nobody set (``cap_limits`` None for the asset) is never named: a 100% weight without
    a position limit is the objective's choice, not a limit's.
    """
    labels = p.cap_limits if p.cap_limits is not None else ("max_single_position_pct",) * p.n
    size = w if p.gross_limit is None else np.abs(w)
    out = [f"{label}:{s}" for s, wi, c, label in zip(p.symbols, size, p.caps, labels, strict=True)
           if label is not None and wi >= c - 1e-6]
    if p.gross_limit is not None and float(np.abs(w).sum()) >= p.gross_limit - 1e-6:
        out.append("max_leverage")
    out += [s.id for s in p.sectors if w[s.members].sum() >= s.limit - 1e-6]
    te_limit = p.max_tracking_error
    if te_limit is not None and p.benchmark_offset is not None and tracking_error(p, w) >= te_limit * 0.98:
        out.append("max_tracking_error_pct")
    if p.max_turnover is not None and discretionary_turnover(p, w) >= p.max_turnover - 1e-5:
        out.append("max_turnover_pct")
    if p.min_return is not None and _expected_return(p, w) <= p.min_return + 1e-6:
        out.append("bl_min_return_pct")
    return tuple(sorted(out))


def _expected_return(p: AllocationProblem, w: np.ndarray) -> float:
    """Annual expected return of weights ``w``, the cash buffer earning the risk-free rate."""
    return float(p.mu @ w) + (1.0 - p.invested) * p.risk_free_rate


# --- infeasibility: name the constraints in conflict and the smallest relaxation --------------


def _check_capacity(p: AllocationProblem) -> None:
    """Cheap arithmetic checks that explain the common conflicts without a solver."""
    pct = 100.0
    if p.n == 0:
        raise InfeasibleError(
            "no security is eligible to hold: every candidate was excluded by the universe or the "
            "quality minimum, so the portfolio cannot be invested",
            details={"conflicts": ["universe", "min_quality_score", "cash_buffer_pct"],
                     "suggestion": "widen the universe (universe: 'pack'), lower min_quality_score, "
                                   "or set cash_buffer_pct to 100 minus nothing invested"},
        )
    capacity = float(p.caps.sum())
    if capacity < p.least_invested - 1e-9:
        cap = float(p.caps.max())
        same_cap = bool(np.allclose(p.caps, cap))
        arithmetic = (f"{p.n} × {cap * pct:g}% = {capacity * pct:g}% < {p.invested * pct:g}%" if same_cap
                      else f"the position caps add up to {capacity * pct:g}% < {p.invested * pct:g}%")
        needed_cap = math.ceil(p.invested / p.n * pct * 100) / 100
        needed_names = math.ceil(p.invested / cap - 1e-9)
        raise InfeasibleError(
            f"infeasible policy: {p.n} eligible holding(s) under a {cap * pct:g}% position cap cannot "
            f"be fully invested: {arithmetic} to invest. Widen the universe (universe: 'pack' or more "
            f"symbols, at least {needed_names} eligible names) or raise max_single_position_pct to at least "
            f"{needed_cap:g}%.",
            details={
                "conflicts": ["max_single_position_pct", "universe", "invested fraction (100 - cash_buffer_pct)"],
                "eligible": list(p.symbols),
                "max_single_position_pct": cap * pct,
                "invested_pct": p.invested * pct,
                "smallest_relaxation": {"max_single_position_pct": needed_cap,
                                        "eligible_names": needed_names},
            },
        )
    if p.sectors:
        in_sector = np.zeros(p.n, dtype=bool)
        sector_capacity = 0.0
        for s in p.sectors:
            if s.kind != "sector_limit":
                continue  # asset classes overlap the sectors: their capacities would count twice
            in_sector[s.members] = True
            sector_capacity += min(s.limit, float(p.caps[s.members].sum()))
        sector_capacity += float(p.caps[~in_sector].sum())
        if sector_capacity < p.invested - 1e-9:
            raise InfeasibleError(
                f"infeasible policy: the sector caps allow at most {sector_capacity * pct:.4g}% to be "
                f"invested across the eligible names' sectors, less than the {p.invested * pct:g}% required. "
                "Raise max_sector_pct / sector_limits_pct or widen the universe to more sectors.",
                details={"conflicts": ["max_sector_pct", "sector_limits_pct", "universe"],
                         "sectors": {s.name: s.limit * pct for s in p.sectors if s.kind == "sector_limit"},
                         "max_investable_pct": sector_capacity * pct},
            )
    if p.max_turnover is not None:
        needed = turnover_floor(p)
        if needed > p.max_turnover + 1e-7:
            raise _turnover_infeasible(p, needed)


def turnover_floor(p: AllocationProblem) -> float:
    """A lower bound on discretionary turnover, by arithmetic: what caps and sectors force.

    Every weight above its cap must be sold, and every sector's excess over its limit after
    that; the invested fraction then fixes purchases as sales plus the net change. Turnover
    Σ|Δw| = 2·sales + net is smallest at the least sales, and the exemption (redeploying forced
    sales) grows by at most what purchases do. Without sector caps the bound is exact.
    """
    clipped = np.minimum(p.current, p.caps)
    sells = float((p.current - clipped).sum())
    # Sectors only: they are disjoint, so their excesses add; an asset class overlaps them.
    for s in p.sectors:
        if s.kind == "sector_limit":
            sells += max(0.0, float(clipped[s.members].sum()) - s.limit)
    held = float(p.current.sum())
    # With cash free to float (min_invested), the net change closest to the sales needs least turnover.
    net = min(max(-sells, p.least_invested - held), p.invested - held)
    sells = max(sells, -net)
    buys = sells + net
    return max(0.0, sells + buys - min(p.forced_weight, buys))


def _turnover_infeasible(p: AllocationProblem, needed: float) -> InfeasibleError:
    pct = 100.0
    # Round away float noise (0.6 * 1e4 = 6000.000000000001) before rounding the relaxation up.
    relaxation = math.ceil(round(needed * 1e4, 6)) / 100
    return InfeasibleError(
        f"infeasible policy: meeting the position, sector and invested-fraction constraints needs "
        f"at least {needed * pct:.2f}% discretionary turnover, above max_turnover_pct "
        f"{p.max_turnover * pct:g}%. Raise max_turnover_pct to {relaxation:g} or relax the caps.",
        details={"conflicts": ["max_turnover_pct", "max_single_position_pct", "max_sector_pct",
                               "invested fraction (100 - cash_buffer_pct)"],
                 "smallest_relaxation": {"max_turnover_pct": relaxation}},
    )


def diagnose_infeasible(p: AllocationProblem, te_margin: float = 0.0) -> InfeasibleError:
    """Find which of turnover and tracking error conflicts with the rest, and by how much.

    ``te_margin`` is the share of the tracking-error limit kept free for whole-share rounding;
    a lowest tracking error inside that band is reported as such.
    """
    pct = 100.0
    if p.min_return is not None:
        best = _max_expected_return(replace(p, min_return=None), te_margin)
        if best is not None and best < p.min_return:
            relaxation = math.floor(best * 1e4) / 100
            return InfeasibleError(
                f"infeasible policy: the highest posterior expected return reachable under the other "
                f"constraints is {best * pct:.2f}%, below bl_min_return_pct {p.min_return * pct:g}%. "
                f"Lower bl_min_return_pct to at most {relaxation:g}, or relax the caps.",
                details={"conflicts": ["bl_min_return_pct", *_limits_set(p)],
                         "smallest_relaxation": {"bl_min_return_pct": relaxation}},
            )
    if p.max_turnover is not None:
        needed = _min_turnover(p)
        if needed is None:
            return _generic_infeasible(p)
        if needed > p.max_turnover + 1e-7:
            return _turnover_infeasible(p, needed)
    if p.max_tracking_error is not None and p.benchmark_offset is not None:
        lowest = _min_tracking_error(p, with_turnover=True)
        solved_limit = p.max_tracking_error * (1.0 - te_margin)
        if lowest is not None and solved_limit < lowest <= p.max_tracking_error:
            needed = math.ceil(lowest / (1.0 - te_margin) * 1e4) / 100
            return InfeasibleError(
                f"infeasible policy: the lowest tracking error reachable under the other constraints is "
                f"{lowest * pct:.3f}%, within max_tracking_error_pct {p.max_tracking_error * pct:g}% but above "
                f"the {solved_limit * pct:.3f}% solved for, which keeps {te_margin:.1%} of the limit free so "
                f"that rounding to whole shares cannot breach it. Raise max_tracking_error_pct to at least "
                f"{needed:g}, or widen the universe.",
                details={"conflicts": ["max_tracking_error_pct", "whole-share rounding margin",
                                       "max_single_position_pct", "max_sector_pct", "max_turnover_pct"],
                         "smallest_relaxation": {"max_tracking_error_pct": needed}},
            )
        if lowest is not None and lowest > p.max_tracking_error:
            unconstrained = _min_tracking_error(p, with_turnover=False) if p.max_turnover is not None else lowest
            conflicts = ["max_tracking_error_pct", "max_single_position_pct", "max_sector_pct", "universe"]
            hint = ""
            if p.max_turnover is not None and unconstrained is not None and unconstrained <= p.max_tracking_error:
                conflicts.insert(1, "max_turnover_pct")
                hint = (f" Without the turnover limit {unconstrained * pct:.2f}% would be reachable, "
                        "so raising max_turnover_pct also helps.")
            # Enough to also clear the margin kept for rounding: one relaxation, not two runs.
            needed = math.ceil(lowest / (1.0 - te_margin) * 1e4) / 100
            return InfeasibleError(
                f"infeasible policy: the lowest tracking error reachable under the other constraints is "
                f"{lowest * pct:.2f}%, above max_tracking_error_pct {p.max_tracking_error * pct:g}%. "
                f"Raise max_tracking_error_pct to at least {needed:g}, or widen the universe.{hint}",
                details={"conflicts": conflicts, "smallest_relaxation": {"max_tracking_error_pct": needed}},
            )
    return _generic_infeasible(p)


def _limits_set(p: AllocationProblem) -> list[str]:
    """The limits of ``p`` that can hold an objective back: caps below 100%, sectors, tracking error, turnover."""
    out = ["max_single_position_pct"] if bool(np.any(p.caps < 1.0)) else []
    out += ["max_sector_pct"] if p.sectors else []
    out += ["max_tracking_error_pct"] if p.max_tracking_error is not None and p.benchmark_offset is not None else []
    return out + (["max_turnover_pct"] if p.max_turnover is not None else [])


def _max_expected_return(p: AllocationProblem, te_margin: float) -> float | None:
    """The highest expected return under every limit of ``p`` (None if they conflict themselves)."""
    import cvxpy as cp

    w = _weights(p)
    risk, constraints = _risk_variable(p, w)
    constraints += _constraints(p, w, risk, 1.0, te_margin)
    weights, _, _ = _run(cp.Problem(cp.Maximize(p.mu @ w), constraints), w)
    return None if weights is None else _expected_return(p, weights)


def _generic_infeasible(p: AllocationProblem) -> InfeasibleError:
    return InfeasibleError(
        "infeasible policy: the constraints cannot all hold together",
        details={"conflicts": ["max_single_position_pct", "max_sector_pct", "max_turnover_pct",
                               "max_tracking_error_pct", "universe"]},
    )


def _min_turnover(p: AllocationProblem) -> float | None:
    cp = import_cvxpy()

    relaxed = replace(p, max_turnover=None, max_tracking_error=None)
    w = _weights(p)
    cons = _constraints(relaxed, w, None, 1.0, 0.0)
    delta = w - p.current
    exempt = min(p.forced_weight, max(0.0, p.invested - float(p.current.sum())))
    weights, _, _ = _run(cp.Problem(cp.Minimize(cp.sum(cp.abs(delta))), cons), w)
    if weights is None:
        return None
    return max(0.0, float(np.abs(weights - p.current).sum()) - exempt)


def _min_tracking_error(p: AllocationProblem, *, with_turnover: bool) -> float | None:
    cp = import_cvxpy()

    relaxed = replace(p, max_tracking_error=None, max_turnover=p.max_turnover if with_turnover else None)
    w = _weights(p)
    risk, cons = _risk_variable(relaxed, w)
    cons += _constraints(relaxed, w, risk, 1.0, 0.0)
    weights, _, _ = _run(cp.Problem(cp.Minimize(_active_risk(p, risk, 1.0)), cons), w)
    return None if weights is None else tracking_error(p, weights)
