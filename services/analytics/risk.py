"""Portfolio risk math: concentration, return and volatility, drawdown, VaR/CVaR, beta, tracking
error, sector weights and risk contributions.

The formulas are pure functions of numpy/pandas inputs. Weights are fractions of the total
portfolio value (holdings plus cash); cash is a position with no variance that earns nothing day
to day in the return history and the risk-free rate in the expected return (the convention of
``services.allocation.rebalance``). ``RiskModel`` bundles what the formulas need about the securities, one
window of daily returns and its annualized estimates; ``pack_risk_model`` builds it from a pricing
pack and ``portfolio_risk`` evaluates one portfolio against it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from services.allocation.rebalance import covariance_factor
from services.data.models import PricingPack
from services.data.policy import Policy
from services.errors import InputError
from services.estimation.benchmark import BenchmarkProjection, project
from services.estimation.estimators import (
    MIN_OBSERVATIONS,
    Estimates,
    estimate_for_policy,
    market_symbol,
)

VAR_CONFIDENCE = 0.95
TOP_N = 10
_TINY = 1e-12


def position_weights(
    positions: Mapping[str, int], prices: Mapping[str, float], cash: float
) -> tuple[dict[str, float], float]:
    """Each holding's market value as a fraction of total value (holdings + cash), and the total.

    Zero positions are left out; a portfolio worth nothing has no weights.
    """
    values = {s: n * prices[s] for s, n in sorted(positions.items()) if n}
    total = sum(values.values()) + float(cash)
    if total <= 0:
        return {}, 0.0
    return {s: v / total for s, v in values.items()}, total


def top_n_weight(weights: Mapping[str, float], n: int = TOP_N) -> float:
    """Sum of the ``n`` largest holding weights (cash is not a holding)."""
    return float(sum(sorted(weights.values(), reverse=True)[:n]))


def herfindahl(weights: Mapping[str, float]) -> float | None:
    """HHI = Σ wᵢ² over the holdings' shares of the invested value; ``None`` with nothing invested.

    The weights are renormalized to the securities held so that cash is not counted as a
    holding and ``1 / HHI`` reads as a number of holdings (two equal positions: HHI 0.5,
    whatever the cash).
    """
    invested = sum(w for w in weights.values() if w > 0)
    if invested <= _TINY:
        return None
    return float(sum((w / invested) ** 2 for w in weights.values() if w > 0))


def effective_holdings(hhi: float | None) -> float | None:
    """The number of equal positions with the same HHI: 1 / HHI."""
    return None if hhi is None else 1.0 / hhi


def expected_return(w: np.ndarray, mu: np.ndarray, cash_weight: float, risk_free_rate: float) -> float:
    """Annualized expected return μ·w plus cash at the risk-free rate."""
    return float(mu @ w) + cash_weight * risk_free_rate


def volatility(w: np.ndarray, cov: np.ndarray) -> float:
    """√(wᵀΣw), in the units of ``cov`` (annualized covariance gives annualized volatility)."""
    return math.sqrt(max(float(w @ cov @ w), 0.0))


def sharpe_ratio(expected: float, vol: float, risk_free_rate: float) -> float | None:
    """(E[R] − r_f) / σ; ``None`` for a portfolio without risk."""
    return (expected - risk_free_rate) / vol if vol > _TINY else None


def portfolio_returns(returns: pd.DataFrame, weights: Mapping[str, float]) -> pd.Series:
    """Daily simple returns of a portfolio holding ``weights`` constant (cash earns nothing)."""
    w = np.array([weights.get(s, 0.0) for s in returns.columns], dtype=float)
    return pd.Series(returns.to_numpy() @ w, index=returns.index, name="portfolio")


def max_drawdown(daily: np.ndarray | pd.Series) -> float:
    """Largest peak-to-trough fall of the value path V₀ = 1, Vₜ = Πₛ≤ₜ (1 + rₛ), as a positive fraction.

    With ``daily`` from ``portfolio_returns`` the weights are held constant, i.e. the path of a
    portfolio rebalanced back to today's weights every day; it is not the path of the shares
    actually held over the window.
    """
    r = np.asarray(daily, dtype=float)
    if r.size == 0:
        return 0.0
    path = np.concatenate(([1.0], np.cumprod(1.0 + r)))
    peaks = np.maximum.accumulate(path)
    return float(max(0.0, np.max(1.0 - path / peaks)))


def historical_var_cvar(daily: np.ndarray | pd.Series, confidence: float = VAR_CONFIDENCE) -> tuple[float, float]:
    """One-day historical VaR and CVaR as positive loss fractions.

    VaR = −q, q the (1 − confidence) percentile of the daily returns with numpy's default linear
    interpolation; CVaR = −mean of the returns at or below q.
    """
    r = np.asarray(daily, dtype=float)
    if r.size == 0:
        return 0.0, 0.0
    # round() so that 1 − 0.95 gives the 5th percentile, not the 5.000000000000004th.
    q = float(np.percentile(r, round(100.0 * (1.0 - confidence), 10)))
    return -q, -float(r[r <= q].mean())


def beta(portfolio: np.ndarray | pd.Series, market: np.ndarray | pd.Series) -> float:
    """OLS slope of portfolio on market returns: cov(r_p, r_m) / var(r_m)."""
    rp = np.asarray(portfolio, dtype=float)
    rm = np.asarray(market, dtype=float)
    rm_c = rm - rm.mean()
    return float((rp - rp.mean()) @ rm_c / (rm_c @ rm_c))


def betas(returns: pd.DataFrame, market: pd.Series) -> dict[str, float]:
    """Each column's OLS beta to ``market`` over the same dates, by symbol."""
    return {str(s): beta(returns[s].to_numpy(), market.to_numpy()) for s in returns.columns}


def sector_weights(weights: Mapping[str, float], sectors: Mapping[str, str]) -> dict[str, float]:
    """Total weight per sector of the holdings, sectors sorted by name."""
    out: dict[str, float] = {}
    for sym, w in weights.items():
        out[sectors[sym]] = out.get(sectors[sym], 0.0) + w
    return dict(sorted(out.items()))


def risk_contributions(w: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Each position's share of portfolio variance, wᵢ(Σw)ᵢ / wᵀΣw; sums to 1 (zeros without risk)."""
    variance = float(w @ cov @ w)
    if variance <= _TINY**2:
        return np.zeros_like(w)
    return w * (cov @ w) / variance


@dataclass(frozen=True, eq=False)
class RiskModel:
    """The securities' side of every metric: one window of daily returns and its estimates.

    ``returns`` holds daily simple returns, one column per symbol of ``symbols``; ``mu`` and
    ``cov`` are annualized and ordered like ``symbols``; ``market`` is the market index's daily
    return on the same dates (``None`` if the pack has no index).
    """

    symbols: tuple[str, ...]
    returns: pd.DataFrame
    mu: np.ndarray
    cov: np.ndarray
    market: pd.Series | None
    market_symbol: str | None
    sectors: dict[str, str]
    risk_free_rate: float
    warnings: tuple[str, ...] = ()

    def vector(self, weights: Mapping[str, float]) -> np.ndarray:
        """``weights`` as an array ordered like ``symbols`` (absent symbols weigh zero)."""
        return np.array([weights.get(s, 0.0) for s in self.symbols], dtype=float)

    def estimates(self) -> Estimates:
        """The model's estimates, as ``services.estimation`` states them."""
        return Estimates(self.symbols, self.mu, self.cov, self.returns, self.warnings)


def benchmark_on(model: RiskModel, pack: PricingPack, benchmark: Mapping[str, float], policy: Policy) -> BenchmarkProjection:
    """``benchmark`` projected onto ``model``'s symbols (``services.estimation.benchmark``): naming a
    benchmark never refits the model, so a portfolio's own figures do not depend on it."""
    return project(model.estimates(), benchmark, lambda symbols: estimate_for_policy(pack, symbols, policy))


@dataclass(frozen=True)
class PortfolioRisk:
    """Every risk figure of one portfolio, as unrounded fractions (rounding is for reporting)."""

    weights: dict[str, float]
    cash_weight: float
    top10: float
    hhi: float | None
    effective_holdings: float | None
    expected_return: float
    volatility: float
    sharpe: float | None
    max_drawdown: float
    var_95: float
    cvar_95: float
    beta: float | None
    tracking_error: float | None
    sector_weights: dict[str, float]
    risk_contributions: dict[str, float]


def pack_risk_model(pack: PricingPack, symbols: list[str], policy: Policy) -> RiskModel:
    """Estimate a ``RiskModel`` for ``symbols`` from ``pack`` with the policy's estimators.

    The covariance estimator (Ledoit-Wolf by default) is fitted on exactly ``symbols``, so
    callers pass the portfolio's own holdings: a benchmark is projected onto the model
    (``benchmark_on``), never fitted with it.
    """
    if not symbols:
        raise InputError(
            "nothing to measure: no securities are held before or after the trades and no "
            "benchmark is given",
            details={"field": "portfolio"},
        )
    est = estimate_for_policy(pack, sorted(symbols), policy)
    warnings = list(est.warnings)
    if est.too_short:
        warnings.append(
            f"only {est.observations} daily returns in the lookback (fewer than {MIN_OBSERVATIONS}): "
            "volatility, VaR, drawdown, betas and the other estimates rest on too little data to "
            "rely on; use a longer lookback_days"
        )
    index = market_symbol(pack)
    market = None
    if index is None:
        warnings.append(f"pricing pack {pack.id} has no index series; beta is not reported")
    else:
        aligned = pack.closes[index].pct_change().reindex(est.returns.index)
        if aligned.isna().any():
            warnings.append(f"index {index} is not priced on every date of the window; beta is not reported")
        else:
            market = aligned
    return RiskModel(
        symbols=est.symbols,
        returns=est.returns,
        mu=est.mu,
        cov=est.cov,
        market=market,
        market_symbol=index if market is not None else None,
        sectors={s: pack.security(s).sector for s in est.symbols},
        risk_free_rate=policy.risk_free_rate,
        warnings=tuple(warnings),
    )


def portfolio_risk(
    model: RiskModel, weights: Mapping[str, float], benchmark: BenchmarkProjection | None = None
) -> PortfolioRisk:
    """Every metric of holding ``weights`` (fractions of total value; the rest is cash).

    Tracking error is against ``benchmark`` projected onto ``model`` (``benchmark_on``; ``None``:
    not computed). Risk contributions are reported for the holdings only.
    """
    held = {s: w for s, w in sorted(weights.items()) if w != 0}
    w = model.vector(held)
    cash_weight = 1.0 - float(w.sum())
    exp = expected_return(w, model.mu, cash_weight, model.risk_free_rate)
    vol = volatility(w, model.cov)
    daily = portfolio_returns(model.returns, held)
    var, cvar = historical_var_cvar(daily.to_numpy())
    hhi = herfindahl(held)
    rc = risk_contributions(w, model.cov)
    position = {s: i for i, s in enumerate(model.symbols)}
    return PortfolioRisk(
        weights=held,
        cash_weight=cash_weight,
        top10=top_n_weight(held),
        hhi=hhi,
        effective_holdings=effective_holdings(hhi),
        expected_return=exp,
        volatility=vol,
        sharpe=sharpe_ratio(exp, vol, model.risk_free_rate),
        max_drawdown=max_drawdown(daily.to_numpy()),
        var_95=var,
        cvar_95=cvar,
        beta=None if model.market is None else beta(daily.to_numpy(), model.market.to_numpy()),
        tracking_error=None if benchmark is None
        else benchmark.tracking_error(covariance_factor(model.cov), w),
        sector_weights=sector_weights(held, model.sectors),
        risk_contributions={s: float(rc[position[s]]) for s in held},
    )
