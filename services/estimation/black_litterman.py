"""Black–Litterman: market-implied prior returns blended with a client's views (He–Litterman form).

The prior is the reverse optimization of the benchmark, π = rf + δ Σ w_b (total returns, like
every expected return here: the benchmark is then the tangency portfolio of the prior); views
are P μ = Q with uncertainty Ω. With τΣ the uncertainty of the prior, the posterior is

    μ_post = π + τΣPᵀ (PτΣPᵀ + Ω)⁻¹ (Q − Pπ),    Σ_post = Σ + τΣ − τΣPᵀ (PτΣPᵀ + Ω)⁻¹ PτΣ,

written with a solve of the k × k view system rather than Ω⁻¹, so a view held with full
confidence (ω = 0) is exact rather than singular. A view's confidence c in (0, 1] sets
ω = τ pᵀΣp (1 − c)/c: c = 0.5 is He and Litterman's ω = τ pᵀΣp, c = 1 a certain view.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from services.errors import InputError


@dataclass(frozen=True)
class ViewRow:
    """One view: ``asset`` returns ``value`` a year (decimal), or outperforms ``versus`` by it."""

    asset: str
    value: float
    confidence: float
    versus: str | None = None


@dataclass(frozen=True, eq=False)
class Posterior:
    """Prior and posterior over ``symbols`` (annualized), and the view system used."""

    symbols: tuple[str, ...]
    prior: np.ndarray
    mu: np.ndarray
    cov: np.ndarray
    picks: np.ndarray
    targets: np.ndarray
    omega: np.ndarray


def implied_risk_aversion(daily_benchmark: np.ndarray, variance: float, risk_free_rate: float, days: int) -> float:
    """δ = (E[r_b] − rf) / σ_b²: the benchmark's historical excess return per unit of its variance."""
    return (float(np.mean(daily_benchmark)) * days - risk_free_rate) / variance


def posterior(
    symbols: Sequence[str], cov: np.ndarray, benchmark: np.ndarray, risk_aversion: float, tau: float,
    views: Sequence[ViewRow], risk_free_rate: float = 0.0,
) -> Posterior:
    """Black–Litterman posterior over ``symbols`` for ``views`` (no views: the prior itself).

    Raises:
        InputError: a view names a symbol outside ``symbols``, compares a symbol with itself,
            or the views contradict each other with full confidence (a singular view system).
    """
    pos = {s: i for i, s in enumerate(symbols)}
    n, k = len(symbols), len(views)
    picks = np.zeros((k, n))
    targets = np.zeros(k)
    for row, view in enumerate(views):
        for sym in (view.asset, view.versus):
            if sym is not None and sym not in pos:
                raise InputError(
                    f"policy.views[{row}]: {sym} is not among the symbols estimated for this proposal "
                    f"(holdings, eligible names and benchmark): {', '.join(sorted(symbols))}",
                    details={"field": f"policy.views[{row}]", "value": sym, "allowed": sorted(symbols)},
                )
        if view.versus == view.asset:
            raise InputError(f"policy.views[{row}]: {view.asset} cannot outperform itself",
                             details={"field": f"policy.views[{row}].versus", "value": view.versus})
        picks[row, pos[view.asset]] = 1.0
        if view.versus is not None:
            picks[row, pos[view.versus]] = -1.0
        targets[row] = view.value
    prior = risk_free_rate + risk_aversion * cov @ benchmark
    if k == 0:
        return Posterior(tuple(symbols), prior, prior, cov * (1.0 + tau), picks, targets, np.zeros((0, 0)))
    tau_cov_picks = tau * cov @ picks.T
    confidence = np.array([v.confidence for v in views])
    omega = np.diag(np.einsum("ij,ji->i", picks, tau_cov_picks) * (1.0 - confidence) / confidence)
    system = picks @ tau_cov_picks + omega
    if np.linalg.matrix_rank(system) < k:
        raise InputError(
            "policy.views: the views are linearly dependent and held with full confidence (e.g. the same "
            "view twice at confidence 1); lower a confidence or drop a repeated view",
            details={"field": "policy.views"},
        )
    mu = prior + tau_cov_picks @ np.linalg.solve(system, targets - picks @ prior)
    post_cov = cov + tau * cov - tau_cov_picks @ np.linalg.solve(system, tau_cov_picks.T)
    return Posterior(tuple(symbols), prior, mu, post_cov, picks, targets, omega)
