"""A benchmark stated on a portfolio's own estimate, without refitting that estimate.

A portfolio's risk figures come from an estimate over the symbols it holds or may hold (``U``).
A benchmark often holds names outside ``U`` (``B``). Estimating over ``U ∪ B`` would change the
portfolio's own figures whenever a benchmark is named: a shrinkage estimator (Ledoit–Wolf) is
fitted to the union, and the common window is cut to the shortest history in it. Instead the
outside names are projected onto ``U``:

- over the union's common window, with the policy's estimators, regress ``B`` on ``U``:
  ``β = Σ_BU Σ_UU⁻¹`` and the residual covariance ``Σ_ε = Σ_BB − β Σ_UB`` (least squares, so a
  singular ``Σ_UU`` is fine; ``Σ_ε`` clipped to be positive semi-definite);
- the benchmark ``b = (b_U, b_B)`` then acts like the portfolio ``b̃ = b_U + βᵀ b_B`` of ``U``
  plus a part no portfolio of ``U`` can hold, of variance ``r = b_Bᵀ Σ_ε b_B``.

So tracking error is ``√(‖G(w − b̃)‖² + r)`` with ``G`` the portfolio's own risk factor, and the
benchmark's covariance with ``U`` is ``Σ_UU b̃``. With the sample covariance over one common
window this equals the union's estimate exactly; with any estimator, ``U``'s own block is
untouched. The benchmark's expected return uses ``U``'s estimate for ``b_U`` and the union's for
``b_B``; its daily returns (for an implied risk aversion) are over the union's window.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from services.estimation.estimators import Estimates


@dataclass(frozen=True, eq=False)
class BenchmarkProjection:
    """A benchmark on the symbols of an estimate.

    Attributes:
        weights: ``b̃`` over ``Estimates.symbols``: the benchmark's own weights there plus the
            projection of the names outside (may be negative or sum to other than 1).
        residual_variance: annualized variance of the part of the benchmark ``U`` cannot replicate
            (0 when every benchmark name is in ``U``).
        expected_return: annualized expected return of the benchmark.
        daily: the benchmark's daily returns (weights held fixed) over the window it was measured on.
        outside: benchmark names not in the estimate, projected.
        inside_weights: ``b_U``, the benchmark's own weights on the estimate's symbols.
        outside_weights: ``b_B``, the benchmark's weights on ``outside``.
        outside_mu: the union estimate's expected returns of ``outside``.
        loadings: ``β`` (outside × estimate symbols).
        residual_cov: ``Σ_ε`` (outside × outside).
        warnings: what the union's estimate warned of (a window shorter than the lookback).
    """

    weights: np.ndarray
    residual_variance: float
    expected_return: float
    daily: pd.Series
    outside: tuple[str, ...]
    inside_weights: np.ndarray
    outside_weights: np.ndarray
    outside_mu: np.ndarray
    loadings: np.ndarray
    residual_cov: np.ndarray
    warnings: tuple[str, ...] = ()

    @property
    def residual(self) -> float:
        """The residual's volatility, √r."""
        return float(np.sqrt(self.residual_variance))

    def extended_covariance(self, cov: np.ndarray) -> np.ndarray:
        """The covariance over the estimate's symbols then ``outside``, whose first block is ``cov``:
        ``[[Σ, Σβᵀ], [βΣ, βΣβᵀ + Σ_ε]]`` (positive semi-definite when ``cov`` is)."""
        cross = cov @ self.loadings.T
        return np.block([[cov, cross], [cross.T, self.loadings @ cross + self.residual_cov]])

    def full_weights(self) -> np.ndarray:
        """The benchmark's own weights over the estimate's symbols then ``outside``."""
        return np.concatenate([self.inside_weights, self.outside_weights])

    def tracking_error(self, factor: np.ndarray, weights: np.ndarray) -> float:
        """Ex-ante tracking error of ``weights`` (over the estimate's symbols), GᵀG = Σ."""
        active = float(np.linalg.norm(factor @ (weights - self.weights)))
        return active if self.residual_variance == 0.0 else float(np.hypot(active, self.residual))


def outside_symbols(est_symbols: tuple[str, ...] | list[str], benchmark: Mapping[str, float]) -> list[str]:
    """The benchmark's names outside ``est_symbols``, sorted (what ``project`` needs a joint estimate for)."""
    inside = set(est_symbols)
    return sorted(s for s in benchmark if s not in inside)


def project(
    est: Estimates,
    benchmark: Mapping[str, float],
    joint: Callable[[list[str]], Estimates],
) -> BenchmarkProjection:
    """``benchmark`` (weights by symbol) projected onto ``est``'s symbols.

    ``joint(symbols)`` returns the estimate over ``symbols`` with the same settings as ``est``
    (called only when some benchmark name is outside ``est``, with ``est``'s symbols first).
    """
    outside = outside_symbols(est.symbols, benchmark)
    b_u = np.array([benchmark.get(s, 0.0) for s in est.symbols], dtype=float)
    if not outside:
        daily = pd.Series(est.returns.to_numpy() @ b_u, index=est.returns.index)
        empty = np.zeros(0)
        return BenchmarkProjection(b_u, 0.0, float(est.mu @ b_u), daily, (), b_u, empty, empty,
                                   np.zeros((0, len(b_u))), np.zeros((0, 0)))
    union = joint(list(est.symbols) + outside)
    n = len(est.symbols)
    cov = union.cov
    s_uu, s_ub, s_bb = cov[:n, :n], cov[:n, n:], cov[n:, n:]
    beta_t, *_ = np.linalg.lstsq(s_uu, s_ub, rcond=None)  # Σ_UU βᵀ = Σ_UB
    resid = s_bb - beta_t.T @ s_ub
    values, vectors = np.linalg.eigh((resid + resid.T) / 2.0)
    resid = (vectors * np.clip(values, 0.0, None)) @ vectors.T
    b_b = np.array([benchmark[s] for s in outside], dtype=float)
    b_all = np.concatenate([b_u, b_b])
    daily = pd.Series(union.returns.to_numpy() @ b_all, index=union.returns.index)
    return BenchmarkProjection(
        weights=b_u + beta_t @ b_b,
        residual_variance=max(float(b_b @ resid @ b_b), 0.0),
        expected_return=float(est.mu @ b_u + union.mu[n:] @ b_b),
        daily=daily,
        outside=tuple(outside),
        inside_weights=b_u,
        outside_weights=b_b,
        outside_mu=union.mu[n:],
        loadings=beta_t.T,
        residual_cov=resid,
        warnings=tuple(f"benchmark names {', '.join(outside)} projected onto the portfolio's symbols: {w}"
                       for w in union.warnings),
    )
