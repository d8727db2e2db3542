"""The one module that imports riskfolio-lib.

riskfolio prints its failures and returns ``None``; this adapter turns both into typed errors
and never renormalizes weights silently. riskfolio is imported lazily because importing it
costs several seconds, which `optimizer --help` should not pay.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import numpy as np
import pandas as pd

from services.errors import SolverError

_COV_METHODS = {"hist": "hist", "ledoit": "ledoit", "oas": "oas", "ewma": "ewma1"}
_MEAN_METHODS = {"hist": "hist", "ewma": "ewma1"}


def _rp() -> Any:
    import riskfolio

    return riskfolio


def covariance(returns: pd.DataFrame, estimator: str, *, decay: float) -> np.ndarray:
    """Daily covariance of ``returns`` by riskfolio's estimators (hist, ledoit, oas, ewma).

    ``hist`` is riskfolio's own call; for the other three riskfolio's computation wastes time or
    memory, so the same estimator is computed here, to the same matrix (tested against riskfolio).
    """
    method = _COV_METHODS[estimator]
    if estimator == "ewma":
        cov = _ewma_covariance(returns.to_numpy(), decay)
    elif estimator == "ledoit":
        # riskfolio fits sklearn's LedoitWolf with its defaults, which also inverts the covariance
        # (0.8 s of 0.85 s at 1000 assets) only to discard it, and importing sklearn costs a
        # cold call 0.5-0.9 s; the same arithmetic here gives the bit-identical matrix
        # (tests/test_estimation.py checks both against riskfolio and sklearn).
        cov = _ledoit_wolf(returns.to_numpy())
    elif estimator == "oas":
        # OAS: sklearn's estimator without the discarded inverse, imported only when used.
        from sklearn.covariance import OAS

        cov = OAS(store_precision=False).fit(returns.to_numpy()).covariance_
    else:
        # riskfolio's 'hist' is exactly np.cov(X, rowvar=False); computing it here spares a
        # rebalance the 2.5-3.3 s riskfolio import (tests/test_estimation.py checks the equality).
        cov = np.cov(returns.to_numpy(), rowvar=False)
    matrix = np.asarray(cov, dtype=float)
    if not np.all(np.isfinite(matrix)):
        raise SolverError(f"riskfolio covar_matrix({method}) returned non-finite values",
                          details={"solver": "riskfolio", "status": "non_finite"})
    return (matrix + matrix.T) / 2


LEDOIT_WOLF_BLOCK = 1000  # sklearn's default block_size; the summation order depends on it


def _ledoit_wolf(x: np.ndarray) -> np.ndarray:
    """Ledoit-Wolf shrunk covariance, operation for operation as scikit-learn's ``LedoitWolf``
    (BSD-3-Clause: ``_ledoit_wolf``, ``ledoit_wolf_shrinkage``, ``empirical_covariance``), so the
    result is bit-identical, including its blocked sums above 1000 assets."""
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean(0)
    n_samples, n_features = x.shape
    if n_features == 1:
        return np.atleast_2d((x**2).mean())
    block = LEDOIT_WOLF_BLOCK
    splits = int(n_features / block)
    x2 = x**2
    emp_cov_trace = np.sum(x2, axis=0) / n_samples
    mu = np.sum(emp_cov_trace) / n_features
    beta_ = 0.0
    delta_ = 0.0
    for i in range(splits):
        rows = slice(block * i, block * (i + 1))
        for j in range(splits):
            cols = slice(block * j, block * (j + 1))
            beta_ += np.sum(np.dot(x2.T[rows], x2[:, cols]))
            delta_ += np.sum(np.dot(x.T[rows], x[:, cols]) ** 2)
        beta_ += np.sum(np.dot(x2.T[rows], x2[:, block * splits:]))
        delta_ += np.sum(np.dot(x.T[rows], x[:, block * splits:]) ** 2)
    for j in range(splits):
        cols = slice(block * j, block * (j + 1))
        beta_ += np.sum(np.dot(x2.T[block * splits:], x2[:, cols]))
        delta_ += np.sum(np.dot(x.T[block * splits:], x[:, cols]) ** 2)
    delta_ += np.sum(np.dot(x.T[block * splits:], x[:, block * splits:]) ** 2)
    delta_ /= n_samples**2
    beta_ += np.sum(np.dot(x2.T[block * splits:], x2[:, block * splits:]))
    beta = 1.0 / (n_features * n_samples) * (beta_ / n_samples - delta_)
    delta = delta_ - 2.0 * mu * emp_cov_trace.sum() + n_features * mu**2
    delta /= n_features
    beta = min(beta, delta)
    shrinkage = 0 if beta == 0 else beta / delta
    emp_cov = np.dot(x.T, x) / n_samples
    mu = np.sum(np.trace(emp_cov)) / n_features
    shrunk = (1.0 - shrinkage) * emp_cov
    shrunk.flat[:: n_features + 1] += shrinkage * mu
    return shrunk


def warm_up() -> None:
    """Run the default estimator once on noise (first-use costs of numpy's and pandas' paths)."""
    returns = pd.DataFrame(np.random.default_rng(0).normal(size=(40, 3)), columns=["a", "b", "c"])
    covariance(returns, "ledoit", decay=0.94)


def _ewma_covariance(x: np.ndarray, decay: float) -> np.ndarray:
    """The last matrix of riskfolio's ``ewma1`` (pandas ``ewm(alpha=1-decay).cov()``, adjusted and
    bias-corrected), computed directly: pandas builds the whole T × n × n history first, which is
    6 GB at 1000 assets for the one matrix that is used."""
    t = x.shape[0]
    w = decay ** np.arange(t - 1, -1, -1, dtype=float)
    total = w.sum()
    centered = x - (w @ x) / total
    biased = (centered * w[:, None]).T @ centered / total
    return biased * total**2 / (total**2 - (w**2).sum())


def mean_returns(returns: pd.DataFrame, estimator: str, *, decay: float) -> np.ndarray:
    """Daily expected returns by riskfolio's estimators (hist, ewma).

    riskfolio's ``mean_vector`` is ``X.mean()`` and ``X.ewm(alpha=1-d).mean().iloc[-1]``; the same
    pandas calls are made here, so the numbers are identical and riskfolio is not imported for
    them (tests/test_estimation.py checks the equality).
    """
    if estimator not in _MEAN_METHODS:
        raise ValueError(f"unknown expected-return estimator {estimator!r}")
    if estimator == "ewma":
        return returns.ewm(alpha=1 - decay).mean().iloc[-1, :].to_numpy(dtype=float)
    return returns.mean().to_numpy(dtype=float)


def risk_parity_weights(returns: pd.DataFrame, cov: np.ndarray) -> np.ndarray:
    """Equal-risk-contribution weights (long only, summing to 1) from riskfolio's rp_optimization."""
    if returns.shape[1] == 1:  # one asset is its own risk parity; riskfolio needs two
        return np.ones(1)
    port = _rp().Portfolio(returns=returns)
    port.mu = pd.DataFrame([np.zeros(returns.shape[1])], columns=returns.columns)
    port.cov = pd.DataFrame(cov, index=returns.columns, columns=returns.columns)
    weights = _call("rp_optimization", lambda: port.rp_optimization(model="Classic", rm="MV", rf=0, b=None, hist=True))
    return _checked_weights(weights, returns.columns, "rp_optimization")


def hrp_weights(returns: pd.DataFrame, cov: np.ndarray) -> np.ndarray:
    """Hierarchical risk parity weights (López de Prado) from riskfolio's HCPortfolio.

    Clusters on the Pearson correlation of ``returns`` and allocates with ``cov`` (the policy's
    estimate), passed as riskfolio's custom covariance so it is not estimated a second time.
    """
    return _hierarchical_weights(returns, cov, model="HRP", linkage="single")


def herc_weights(returns: pd.DataFrame, cov: np.ndarray) -> np.ndarray:
    """Hierarchical equal risk contribution weights (Raffinot) from riskfolio's HCPortfolio.

    Ward linkage on the Pearson correlation of ``returns`` (Raffinot's choice; it forms compact
    clusters where single linkage chains), the number of clusters by riskfolio's two-difference
    gap rule, variance as the risk measure, allocated with ``cov`` (the policy's estimate).
    """
    return _hierarchical_weights(returns, cov, model="HERC", linkage="ward")


def _hierarchical_weights(returns: pd.DataFrame, cov: np.ndarray, *, model: str, linkage: str) -> np.ndarray:
    """riskfolio's HCPortfolio ``model`` on the Pearson correlation of ``returns`` with ``linkage``,
    variance as the risk measure, allocated with ``cov`` passed as its custom covariance (so it is
    not estimated a second time)."""
    if returns.shape[1] == 1:  # nothing to cluster; riskfolio needs two
        return np.ones(1)
    port = _rp().HCPortfolio(returns=returns)
    custom = pd.DataFrame(cov, index=returns.columns, columns=returns.columns)
    weights = _call(
        "HCPortfolio.optimization",
        lambda: port.optimization(
            model=model, codependence="pearson", rm="MV", rf=0, linkage=linkage,
            method_cov="custom_cov", custom_cov=custom, leaf_order=True,
        ),
    )
    return _checked_weights(weights, returns.columns, "HCPortfolio.optimization")


def _call(what: str, fn: Any) -> Any:
    """Run a riskfolio call, capturing what it prints; ``None`` or an exception becomes SolverError."""
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            result = fn()
    except Exception as exc:  # riskfolio raises bare Exceptions and solver errors alike
        raise SolverError(
            f"riskfolio {what} failed: {exc}",
            details={"solver": "riskfolio", "call": what, "status": "exception", "printed": printed.getvalue()[-500:]},
        ) from exc
    if result is None:
        raise SolverError(
            f"riskfolio {what} returned no solution",
            details={"solver": "riskfolio", "call": what, "status": "none", "printed": printed.getvalue()[-500:]},
        )
    return result


def _checked_weights(weights: pd.DataFrame, columns: pd.Index, what: str) -> np.ndarray:
    w = weights.reindex(columns).to_numpy(dtype=float).ravel()
    if not np.all(np.isfinite(w)) or abs(w.sum() - 1.0) > 1e-4 or w.min() < -1e-6:
        raise SolverError(
            f"riskfolio {what} returned invalid weights (sum {w.sum():.6f}, min {w.min():.6f})",
            details={"solver": "riskfolio", "call": what, "status": "invalid_weights"},
        )
    return np.clip(w, 0.0, None)
