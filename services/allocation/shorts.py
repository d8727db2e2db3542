"""Short positions in a rebalance: which policies may have them, and each name's lower bound.

``allow_short`` turns the long-only problem into one with a gross exposure limit
(``max_leverage``, Σ|w|); the engine (``optimization``) and the whole-share rounding
(``rounding.round_signed``) do the work. Here: the policy and request combinations that are
refused because a part of the pipeline is stated for long positions only, and the lower bound of
each decision asset's weight (−cap for a name that may be shorted; 0 for a restricted name, which
is never bought or shorted; its weight for a frozen or halted one).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from services.allocation.optimization import SHORT_OBJECTIVES, AllocationProblem
from services.data.policy import Policy
from services.errors import InputError

# Policy fields whose machinery is stated for long positions only, and why.
LONG_ONLY_FIELDS = {
    "min_position_pct": "a minimum position is a long position's size",
    "min_weight_pct": "weight floors are long positions",
    "tax_rates": "tax lots describe long holdings only",
    "costs_in_objective": "the objective's costs and taxes are stated for long holdings",
    "harvest_losses": "harvesting sells long lots",
}


def validate_shorts(policy: Policy, *, frontier_points: int | None, explain_limits: bool) -> None:
    """Refuse ``max_leverage`` without ``allow_short``, and shorts under a method or with a field
    or request option that is long only; the error names the field and what is allowed.

    Raises:
        InputError: the combination is not supported.
    """
    if policy.max_leverage is not None and not policy.allow_short:
        raise InputError(
            f"policy.max_leverage: {policy.max_leverage:g} is a gross exposure limit for short positions, "
            "which this policy does not allow; set allow_short true or remove max_leverage",
            details={"field": "policy.max_leverage", "value": policy.max_leverage, "requires": "allow_short"},
        )
    if not policy.allow_short:
        return
    if policy.method not in SHORT_OBJECTIVES:
        raise InputError(
            f"policy.allow_short: method {policy.method!r} does not support short positions; allow_short is "
            f"supported by {', '.join(SHORT_OBJECTIVES)} only",
            details={"field": "policy.allow_short", "method": policy.method, "allowed_methods": list(SHORT_OBJECTIVES)},
        )
    for name, why in LONG_ONLY_FIELDS.items():
        if getattr(policy, name) not in (None, False):
            raise InputError(
                f"policy.{name} cannot be combined with allow_short: {why}; remove {name} or set allow_short false",
                details={"field": f"policy.{name}", "conflicts": ["allow_short", name]},
            )
    for option, used in (("frontier_points", frontier_points is not None), ("explain_limits", explain_limits)):
        if used:
            raise InputError(
                f"{option} is not available with allow_short (it re-solves long-only problems); remove it or "
                "set allow_short false",
                details={"field": option, "conflicts": ["policy.allow_short", option]},
            )


def with_shorts(problem: AllocationProblem, policy: Policy, no_buy: set[str], fixed: set[str]) -> AllocationProblem:
    """``problem`` with the policy's gross exposure limit and each weight's lower bound: −cap,
    0 for a restricted name (never bought nor shorted), the floor already set for a frozen or
    halted one. Long only (unchanged) when the policy does not allow shorts or the objective
    (an equal-weight fallback) has no short form."""
    if policy.gross_limit is None or problem.objective not in SHORT_OBJECTIVES:
        return problem
    base = problem.floors if problem.floors is not None else np.zeros(problem.n)
    restricted = np.array([s in no_buy or s in fixed for s in problem.symbols], dtype=bool)
    floors = np.where(restricted, base, -problem.caps)
    return replace(problem, floors=floors, gross_limit=policy.gross_limit)
