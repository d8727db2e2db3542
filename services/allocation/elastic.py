"""Elastic infeasibility: every conflicting limit at once, with the smallest joint relaxation.

An infeasible policy is solved again with a slack on each of its limits — the position cap
(one slack: the policy has one ``max_single_position_pct``), each sector and asset-class limit, total turnover
and tracking error — minimizing the total slack in percentage points. The limits whose slack is
positive are the ones in conflict, and the relaxed values together make the policy feasible:
one answer instead of one conflict per run. What a policy cannot relax stays hard: the invested
fraction, long only, restricted and frozen holdings.

``smallest_relaxation`` uses the policy's own fields (``sector_limits_pct`` and
``asset_class_limits_pct`` as maps), so a
caller can merge it into its policy overrides and run again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from services.allocation.optimization import (
    AllocationProblem,
    _active_risk,
    _risk_variable,
    _run,
    budget,
    square_factor,
)
from services.errors import InfeasibleError

GROUP_FIELDS = {"sector_limit": "sector_limits_pct", "asset_class_limit": "asset_class_limits_pct"}
SLACK_TOL = 1e-7  # a slack below this (a fraction: 1e-5 points) is solver noise, not a conflict


@dataclass(frozen=True)
class Relaxation:
    """The smallest joint relaxation, in percent: limit name → (current value, relaxed value)."""

    limits: dict[str, tuple[float, float]]

    def policy_fields(self) -> dict[str, object]:
        """The relaxation as policy fields (sector limits as ``sector_limits_pct``)."""
        out: dict[str, object] = {}
        groups: dict[str, dict[str, float]] = {}
        for name, (_, relaxed) in sorted(self.limits.items()):
            kind, _, group = name.partition(":")
            if kind in GROUP_FIELDS:
                groups.setdefault(GROUP_FIELDS[kind], {})[group] = relaxed
            else:
                out[name] = relaxed
        return {**out, **groups}


def smallest_relaxation(p: AllocationProblem, te_margin: float = 0.0) -> Relaxation | None:
    """The least total relaxation (percentage points) of ``p``'s limits that makes it feasible.

    None when no relaxation of the policy's limits helps (hard constraints conflict, e.g. frozen
    holdings above the invested fraction) or the solver cannot say.
    """
    import cvxpy as cp

    p = square_factor(p)
    w = cp.Variable(p.n, nonneg=True)
    slacks: dict[str, cp.Variable] = {}
    risk, cons = _risk_variable(p, w)
    cons += budget(p, w)
    labels = p.cap_limits if p.cap_limits is not None else ("max_single_position_pct",) * p.n
    policy_capped = np.array([label == "max_single_position_pct" for label in labels])
    if policy_capped.any():
        slacks["max_single_position_pct"] = cp.Variable(nonneg=True)
        cons.append(w[policy_capped] <= p.caps[policy_capped] + slacks["max_single_position_pct"])
    if (~policy_capped).any():
        cons.append(w[~policy_capped] <= p.caps[~policy_capped])
    if p.floors is not None:
        cons.append(w >= p.floors)
    for sector in p.sectors:
        slack = slacks[sector.id] = cp.Variable(nonneg=True)
        cons.append(cp.sum(w[sector.members]) <= sector.limit + slack)
    if p.max_tracking_error is not None and p.benchmark_offset is not None:
        slack = slacks["max_tracking_error_pct"] = cp.Variable(nonneg=True)
        cons.append(_active_risk(p, risk, 1.0) <= (p.max_tracking_error + slack) * (1.0 - te_margin))
    if p.max_turnover is not None:
        slack = slacks["max_turnover_pct"] = cp.Variable(nonneg=True)
        # As in optimization._turnover_constraints: Σ|Δw| less the exempt redeployment of forced sales.
        buys, sells = cp.Variable(p.n, nonneg=True), cp.Variable(p.n, nonneg=True)
        cons.append(w - p.current == buys - sells)
        traded = cp.sum(buys) + cp.sum(sells)
        if p.forced_weight > 0:
            exempt = cp.Variable(nonneg=True)
            cons += [exempt <= p.forced_weight, exempt <= cp.sum(buys)]
            traded = traded - exempt
        cons.append(traded <= p.max_turnover + slack)
    if not slacks:
        return None
    weights, _, _ = _run(cp.Problem(cp.Minimize(cp.sum(cp.hstack(list(slacks.values())))), cons), w)
    if weights is None:
        return None
    current = _current_limits(p)
    limits = {}
    for name, slack in slacks.items():
        value = float(slack.value)
        if value > SLACK_TOL:
            # Rounded up to 0.01 points (after float noise) so the relaxed policy is feasible.
            limits[name] = (current[name], math.ceil(round((current[name] / 100 + value) * 1e4, 6)) / 100)
    return Relaxation(limits) if limits else None


def _current_limits(p: AllocationProblem) -> dict[str, float]:
    """Each relaxable limit's value in percent."""
    out = {s.id: s.limit * 100 for s in p.sectors}
    labels = p.cap_limits if p.cap_limits is not None else ("max_single_position_pct",) * p.n
    policy_caps = [c for c, label in zip(p.caps, labels, strict=True) if label == "max_single_position_pct"]
    if policy_caps:
        out["max_single_position_pct"] = float(max(policy_caps)) * 100
    if p.max_tracking_error is not None:
        out["max_tracking_error_pct"] = p.max_tracking_error * 100
    if p.max_turnover is not None:
        out["max_turnover_pct"] = p.max_turnover * 100
    return out


def joint_infeasible(p: AllocationProblem, te_margin: float, single: InfeasibleError) -> InfeasibleError:
    """``single`` (a diagnosis naming one conflict), or, when the elastic problem shows that more
    than one limit must move, an error naming them all with the smallest joint relaxation."""
    relaxation = smallest_relaxation(p, te_margin)
    if relaxation is None or len(relaxation.limits) < 2:
        return single
    parts = [f"{_label(name)} from {_pct(old)}% to {_pct(new)}%" for name, (old, new) in sorted(relaxation.limits.items())]
    fields = relaxation.policy_fields()
    # The elastic problem relaxes limits, not the universe; when the diagnosis blames the universe too, say so.
    universe = (" Widening the universe (more eligible names) also helps."
                if "universe" in single.details.get("conflicts", []) else "")
    return InfeasibleError(
        f"infeasible policy: {len(parts)} limits conflict; the smallest joint relaxation (the least total "
        f"percentage points) raises {'; '.join(parts)}.{universe}",
        details={"conflicts": sorted(relaxation.limits), "smallest_relaxation": fields,
                 "relaxation": {name: {"current": round(old, 4), "relaxed": new}
                                for name, (old, new) in sorted(relaxation.limits.items())},
                 "single_limit_diagnosis": {"message": str(single), **single.details}},
    )


def _label(name: str) -> str:
    kind, _, group = name.partition(":")
    return f"{GROUP_FIELDS[kind]}[{group!r}]" if kind in GROUP_FIELDS else kind


def _pct(x: float) -> str:
    return f"{x:.4f}".rstrip("0").rstrip(".")
