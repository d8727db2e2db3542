"""What each binding limit costs: the objective with that limit one point looser, in words.

Each binding limit is relaxed by one percentage point and the problem re-solved (same problem,
same rounding margin), so "allowing 3% would raise the expected Sharpe ratio from 0.74 to 0.79"
is the optimum at 3%, not an extrapolation. The solver's dual values are not used for the figure:
at a degenerate optimum (a weight exactly at its cap that the objective would also choose
unconstrained, common in LPs such as CVaR) the dual set is not a point, and the interior-point
solver returns its centre, which overstated the gain by up to tenfold on the demo's data
(tests/test_explanations.py). The per-point rate in ``per_point`` is the re-solved difference.

At most ``MAX_RESOLVES`` limits are re-solved (tracking error, turnover and sectors first, then
position caps in id order); the rest, and objectives without a figure here (targets, the
equal-weight fallback), get the sentence without one.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from services.allocation.optimization import AllocationProblem, solve, tracking_error
from services.allocation.proposal import BindingExplanation
from services.errors import OptimizerError

POINT = 0.01  # one percentage point of a limit, as a fraction
MAX_RESOLVES = 10  # each is a full solve: 0.56 s at 500 assets (solve fast), measured
# objective -> (what the figure is, whether more is better)
FIGURES = {
    "max_sharpe": ("expected Sharpe ratio", True),
    "max_sortino": ("Sortino ratio", True),
    "max_information_ratio": ("information ratio", True),
    "mean_variance": ("mean-variance utility (expected return − risk_aversion × variance, %)", True),
    "min_variance": ("volatility (%)", False),
    "min_tracking_error": ("tracking error (%)", False),
    "cvar": ("daily CVaR (%)", False),
}
ORDER = ("max_tracking_error_pct", "max_turnover_pct", "sector_limit", "asset_class_limit", "restricted_symbols",
         "max_single_position_pct")


def explain_binding(p: AllocationProblem, objective: str, weights: np.ndarray, binding: tuple[str, ...] | list[str],
                    te_margin: float) -> list[BindingExplanation]:
    """A sentence per binding limit of ``p`` (solved for ``objective`` at ``weights``) with what one
    more point of it gives, in the order of ``binding``."""
    if not binding:
        return []
    chosen = sorted(binding, key=lambda c: (ORDER.index(c.partition(":")[0]), c))[:MAX_RESOLVES]
    base = objective_value(p, objective, weights) if objective in FIGURES else None
    out = []
    for constraint in binding:
        what, limit_pct = _describe(p, constraint)
        figure = None
        if base is not None and constraint in chosen:
            figure = _relaxed_value(p, objective, constraint, te_margin)
        out.append(_sentence(constraint, what, limit_pct, objective, base, figure))
    return out


def _sentence(constraint: str, what: str, limit_pct: float, objective: str, base: float | None,
              relaxed: float | None) -> BindingExplanation:
    allowing = f"allowing {_fmt(limit_pct + 1)}%"
    if base is None:
        text = (f"{what} binds; its cost is not computed for objective {objective} "
                f"(computed for {', '.join(FIGURES)})")
    elif relaxed is None:
        text = (f"{what} binds; its cost was not re-solved (at most {MAX_RESOLVES} limits are, tracking error, "
                "turnover and sectors first)")
    else:
        label, more_is_better = FIGURES[objective]
        if abs(relaxed - base) < 5e-5:
            text = f"{what} binds, but {allowing} would leave the {label} at {_fmt(base)}"
        else:
            verb = "raise" if relaxed > base else "lower"
            text = f"{what} binds: {allowing} would {verb} the {label} from {_fmt(base)} to {_fmt(relaxed)}"
    return BindingExplanation(
        constraint=constraint, limit_pct=round(limit_pct, 4) + 0.0,
        objective=objective if base is not None else None,
        value=None if base is None else round(base, 6) + 0.0,
        relaxed_value=None if relaxed is None else round(relaxed, 6) + 0.0,
        explanation=text,
    )


def _fmt(x: float) -> str:
    return f"{x:.4f}".rstrip("0").rstrip(".")


def _describe(p: AllocationProblem, constraint: str) -> tuple[str, float]:
    """The limit in words and its value in percent."""
    kind, _, name = constraint.partition(":")
    if kind in ("max_single_position_pct", "restricted_symbols"):
        cap = float(p.caps[p.symbols.index(name)]) * 100
        if kind == "restricted_symbols":
            return f"the restriction on buying {name} (held at {_fmt(cap)}%)", cap
        return f"the {_fmt(cap)}% position cap on {name}", cap
    if kind in ("sector_limit", "asset_class_limit"):
        limit = next(s.limit for s in p.sectors if s.id == constraint) * 100
        where = f"the {name} sector" if kind == "sector_limit" else f"asset class {name}"
        return f"the {_fmt(limit)}% limit on {where}", limit
    if kind == "max_tracking_error_pct":
        assert p.max_tracking_error is not None
        return f"the {_fmt(p.max_tracking_error * 100)}% tracking-error limit", p.max_tracking_error * 100
    assert kind == "max_turnover_pct" and p.max_turnover is not None
    return f"the {_fmt(p.max_turnover * 100)}% turnover limit", p.max_turnover * 100


def relaxed_problem(p: AllocationProblem, constraint: str, step: float) -> AllocationProblem:
    """``p`` with the limit named by a binding id looser by ``step`` (a fraction)."""
    kind, _, name = constraint.partition(":")
    if kind in ("max_single_position_pct", "restricted_symbols"):
        caps = p.caps.copy()
        caps[p.symbols.index(name)] += step
        return replace(p, caps=caps)
    if kind in ("sector_limit", "asset_class_limit"):
        return replace(p, sectors=tuple(replace(s, limit=s.limit + step) if s.id == constraint else s
                                        for s in p.sectors))
    if kind == "max_tracking_error_pct":
        assert p.max_tracking_error is not None
        return replace(p, max_tracking_error=p.max_tracking_error + step)
    assert p.max_turnover is not None
    return replace(p, max_turnover=p.max_turnover + step)


def _relaxed_value(p: AllocationProblem, objective: str, constraint: str, te_margin: float) -> float | None:
    try:
        allocation = solve(replace(relaxed_problem(p, constraint, POINT), objective=objective), te_margin=te_margin)
    except OptimizerError:
        return None  # the proposal itself was solved; a relaxation the solver trips on gets no figure
    if allocation.objective != objective:
        return None
    return objective_value(p, objective, allocation.weights)


def objective_value(p: AllocationProblem, objective: str, w: np.ndarray) -> float:
    """The objective of weights ``w`` in the units people read (ratios as is, the rest in %)."""
    cash = 1.0 - float(w.sum())
    vol = float(np.linalg.norm(p.exposure(w)))
    if objective == "max_sharpe":
        return float((p.mu - p.risk_free_rate) @ w) / vol
    if objective == "min_variance":
        return vol * 100
    if objective == "mean_variance":
        return (float(p.mu @ w) - p.risk_aversion * vol**2) * 100
    if objective == "min_tracking_error":
        return tracking_error(p, w) * 100
    if objective == "max_information_ratio":
        return (float(p.mu @ w) + cash * p.risk_free_rate - p.benchmark_return) / tracking_error(p, w)
    assert p.scenarios is not None
    daily = p.scenarios @ w
    if objective == "max_sortino":
        floor = (p.min_acceptable_return - cash * p.risk_free_rate) / p.annualization_days
        downside = np.sqrt(p.annualization_days / len(daily) * float(np.sum(np.clip(floor - daily, 0, None) ** 2)))
        return (float((p.mu - p.min_acceptable_return) @ w) + cash * (p.risk_free_rate - p.min_acceptable_return)) / downside
    # cvar: the mean of the worst (1 − confidence) share of daily losses, a fractional scenario included.
    losses = np.sort(-daily)[::-1]
    tail = (1.0 - p.cvar_confidence) * len(losses)
    whole = int(np.floor(tail))
    total = float(losses[:whole].sum()) + (tail - whole) * (float(losses[whole]) if whole < len(losses) else 0.0)
    return total / tail * 100
