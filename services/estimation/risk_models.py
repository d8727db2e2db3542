"""Risk models: the covariance a proposal's figures and limits are stated in, as a factor.

Every model is written ``Σ = LᵀL + diag(s²)`` over the estimate's symbols: ``loadings`` L is
k × N and ``specific`` s is N (absent for the full sample covariance, where L is a square root
of Σ itself). The allocation solver uses the structure directly (k dense rows plus a diagonal,
which is what makes a k-factor problem fast); reports use ``dense_factor``, a G with GᵀG = Σ.

- ``sample``: the estimator's covariance, as it is.
- ``statistical``: the k leading principal components of the estimator's covariance, with
  the variance they leave out of each asset kept as its specific risk (so every asset's total
  variance is the sample one; only cross-asset covariance outside the k components is dropped).
- ``fundamental``: ordinary least squares of each asset's daily returns on factor return series
  of the pack (with an intercept); factor covariance by the policy's covariance estimator,
  specific variance from the residuals (``ddof = k + 1``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from services.data.models import PricingPack
from services.estimation import riskfolio_adapter
from services.estimation.estimators import (
    MAX_FACTORS,
    Estimates,
    factor_regression,
    factor_series,
)


@dataclass(frozen=True, eq=False)
class FactorRisk:
    """``Σ = loadingsᵀ loadings + diag(specific²)`` (annualized) over ``Estimates.symbols``.

    Attributes:
        model: ``sample``, ``statistical`` or ``fundamental``.
        loadings: k × N; for ``sample`` a square root of the full covariance.
        specific: specific volatility per symbol (N,), or None for ``sample``.
        factors: the factor series' symbols (``fundamental`` only).
    """

    model: str
    loadings: np.ndarray
    specific: np.ndarray | None
    factors: tuple[str, ...] = ()

    @property
    def k(self) -> int:
        """Number of factors (for ``sample``, the rank kept of the full covariance)."""
        return int(self.loadings.shape[0])

    def dense_factor(self) -> np.ndarray:
        """G with GᵀG = Σ: the loadings stacked on the diagonal of specific volatilities."""
        if self.specific is None:
            return self.loadings
        return np.vstack([self.loadings, np.diag(self.specific)])

    def covariance(self) -> np.ndarray:
        cov = self.loadings.T @ self.loadings
        if self.specific is not None:
            cov[np.diag_indices_from(cov)] += self.specific**2
        return cov


def statistical_factor_count(n: int, observations: int) -> int:
    """The stated rule for k when a policy gives none: max(20, ⌈√n⌉), at most 50, below n and T.

    Small universes keep nearly all their components (k = n − 1 below 21 assets: close to
    exact and still cheap); large ones grow slowly (23 at 500 assets, 32 at 1000, 45 at 2000),
    which keeps the solve fast. k ≤ 50 because k = 100 was 5-10x slower and understated tracking
    error in the measurements of issue 9.
    """
    return max(1, min(MAX_FACTORS, max(20, math.ceil(math.sqrt(n))), n - 1, observations - 1))


def full_factor(cov: np.ndarray) -> np.ndarray:
    """G with GᵀG = cov: the transposed Cholesky factor (a fraction of an eigen-decomposition's
    cost: 2000 assets in well under a second), or for a singular matrix the eigen-factor with
    the noise-level eigenvalues dropped (as ``services.allocation.rebalance.covariance_factor``)."""
    try:
        return np.linalg.cholesky(cov).T
    except np.linalg.LinAlgError:
        values, vectors = np.linalg.eigh(cov)
        keep = values > values.max() * 1e-12
        return (vectors[:, keep] * np.sqrt(values[keep])).T


def statistical(cov: np.ndarray, k: int) -> FactorRisk:
    """The k leading principal components of ``cov`` plus the diagonal they leave out.

    Only the k largest eigenpairs are computed (LAPACK ``syevr`` on a subset), not all n.
    """
    from scipy.linalg import eigh

    n = cov.shape[0]
    k = min(k, n)
    values, vectors = eigh(cov, subset_by_index=[n - k, n - 1])
    top_values = np.clip(values[::-1], 0.0, None)
    top_vectors = vectors[:, ::-1]
    loadings = (top_vectors * np.sqrt(top_values)).T
    specific_var = np.clip(np.diag(cov) - (loadings**2).sum(axis=0), 0.0, None)
    return FactorRisk("statistical", loadings, np.sqrt(specific_var))


def fundamental(
    pack: PricingPack,
    est: Estimates,
    factor_symbols: list[str] | None,
    *,
    covariance_estimator: str,
    ewma_decay: float,
    annualization_days: int,
) -> FactorRisk:
    """Regress each symbol's daily returns on factor series of ``pack`` over the same dates."""
    symbols, factor_returns = factor_series(pack, est.returns.index, factor_symbols,
                                            "risk_model 'factor' (fundamental)")
    t = len(est.returns)
    r = est.returns.to_numpy()
    design, coef = factor_regression(est.returns, factor_returns)
    beta = coef[1:]  # k × N
    residuals = r - design @ coef
    specific_var = (residuals**2).sum(axis=0) / (t - len(symbols) - 1) * annualization_days
    factor_cov = riskfolio_adapter.covariance(factor_returns, covariance_estimator, decay=ewma_decay) * annualization_days
    values, vectors = np.linalg.eigh(factor_cov)
    root = (vectors * np.sqrt(np.clip(values, 0.0, None))).T  # rootᵀ root = factor_cov
    return FactorRisk("fundamental", root @ beta, np.sqrt(np.clip(specific_var, 0.0, None)), tuple(symbols))
