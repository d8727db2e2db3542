"""Scenario risk measures of ``min_risk``: exact convex forms in cvxpy, and their values in numpy.

Each measure is of the daily portfolio return X = R w over the T historical scenarios R (T × n);
the forms are riskfolio-lib's (Cajas, *Portfolio* ``rm`` MAD, MSV, CDaR, EVaR), written again here
so that every policy limit can join the same problem:

- ``mad``: mean absolute deviation (1/T) Σ|X_t − X̄|, as a linear program (riskfolio minimizes
  half of it, the mean downside deviation, which has the same minimizer: deviations sum to 0).
- ``semi_variance``: downside deviation below the mean, sqrt(Σ min(X_t − X̄, 0)² / (T − 1)),
  a second-order cone.
- ``cdar``: conditional drawdown at risk of the uncompounded cumulative return, the mean of the
  worst (1 − confidence) share of drawdowns (Chekhlov–Uryasev–Zabarankin), a linear program.
- ``evar``: entropic value at risk of the loss −X, inf_{z>0} z log((1/(αT)) Σ exp(−X_t/z)) with
  α = 1 − confidence (Ahmadi-Javid), with exponential cones.

cvxpy is imported inside the builders, like the rest of the solver layer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import cvxpy as cp

# The units evar's cones are tried in, in order, until the solver succeeds. One fixed unit was
# not enough: on the demo's returns Clarabel stopped with a numerical error in decimals (and with
# riskfolio's ×1000 scaling of the cone rows) without caps, and in percent under 30% caps and two
# sector caps; each case solves in another unit (tests/test_risk_measures.py has both).
EVAR_UNITS = (100.0, 1.0, 1000.0)


def objective(measure: str, scenarios: np.ndarray, w: cp.Expression, confidence: float,
              unit: float = 1.0) -> tuple[cp.Expression, list]:
    """The measure of the daily returns ``scenarios @ w`` as an expression to minimize, and its
    auxiliary constraints. ``unit`` (evar only) states the returns in another unit inside the
    cones (100: percent); the measure is positively homogeneous, so the minimizer is the same."""
    import cvxpy as cp

    t = scenarios.shape[0]
    x = scenarios @ w
    alpha = 1.0 - confidence
    if measure == "mad":
        dev = cp.Variable(t, nonneg=True)
        centred = (scenarios - scenarios.mean(axis=0)) @ w
        return cp.sum(dev) / t, [dev >= centred, dev >= -centred]
    if measure == "semi_variance":
        down = cp.Variable(t, nonneg=True)
        centred = (scenarios - scenarios.mean(axis=0)) @ w
        return cp.norm(down, 2) / np.sqrt(t - 1), [down >= -centred]
    if measure == "cdar":
        # u_t ≥ u_{t−1} − X_t, u ≥ 0, u_0 = 0: minimizing drives u to the drawdown from the running peak.
        u = cp.Variable(t, nonneg=True)
        dar = cp.Variable()
        excess = cp.Variable(t, nonneg=True)
        cons = [u[0] >= -x[0], u[1:] >= u[:-1] - x[1:], excess >= u - dar]
        return dar + cp.sum(excess) / (alpha * t), cons
    if measure == "evar":
        x = (scenarios * unit) @ w
        level = cp.Variable()
        scale = cp.Variable(nonneg=True)
        tail = cp.Variable(t)
        # scale·exp((−X_t − level)/scale) ≤ tail_t and Σ tail ≤ scale: level ≥ scale·log Σ exp(−X_t/scale).
        cons = [cp.ExpCone(-x - level, scale * np.ones(t), tail), cp.sum(tail) <= scale]
        return (level + scale * np.log(1.0 / (alpha * t))) / unit, cons
    raise ValueError(f"unknown risk measure {measure!r}")


def value(measure: str, scenarios: np.ndarray, w: np.ndarray, confidence: float) -> float:
    """The measure of weights ``w``, computed directly (for reports and cross-checks)."""
    x = scenarios @ w
    t = len(x)
    alpha = 1.0 - confidence
    centred = x - x.mean()
    if measure == "mad":
        return float(np.abs(centred).mean())
    if measure == "semi_variance":
        return float(np.sqrt((np.minimum(centred, 0.0) ** 2).sum() / (t - 1)))
    if measure == "cdar":
        cumulative = np.cumsum(x)
        drawdown = np.maximum.accumulate(np.maximum(cumulative, 0.0)) - cumulative
        return _tail_mean(drawdown, alpha)
    if measure == "evar":
        from scipy.optimize import minimize_scalar

        def entropic(log_z: float) -> float:
            z = float(np.exp(log_z))
            scaled = -x / z
            top = scaled.max()
            return z * (top + np.log(np.exp(scaled - top).sum() / (alpha * t)))

        best = minimize_scalar(entropic, bounds=(-12.0, 4.0), method="bounded", options={"xatol": 1e-10})
        return float(min(best.fun, -x.min()))
    if measure == "cvar":
        return _tail_mean(-x, alpha)
    raise ValueError(f"unknown risk measure {measure!r}")


def _tail_mean(losses: np.ndarray, alpha: float) -> float:
    """Rockafellar–Uryasev: min over v of v + Σ max(loss − v, 0)/(αT), attained at a sample point."""
    t = len(losses)
    excess = np.maximum(losses[None, :] - losses[:, None], 0.0).sum(axis=1)
    return float((losses + excess / (alpha * t)).min())
