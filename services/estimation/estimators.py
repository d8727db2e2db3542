"""Return, expected-return and covariance estimates from a pricing pack.

Estimates are annualized (``annualization_days``, 252 by default). The daily work is done by
riskfolio through the adapter; CAPM and factor expected returns are computed here from the pack's
index and factor series, user forecasts taken as given (names without one from a fallback
estimator, reported per symbol).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from services.data.models import PricingPack
from services.data.policy import Policy
from services.errors import InputError
from services.estimation import riskfolio_adapter

MIN_OBSERVATIONS = 30
MAX_FACTORS = 50


@dataclass(frozen=True, eq=False)
class Estimates:
    """Annualized mean and covariance over ``symbols``, with the daily returns they came from."""

    symbols: tuple[str, ...]
    mu: np.ndarray
    cov: np.ndarray
    returns: pd.DataFrame
    warnings: tuple[str, ...] = ()
    mu_sources: tuple[tuple[str, str], ...] = ()
    """expected_return_estimator 'user': (symbol, 'forecast' or the fallback estimator) per symbol."""

    @property
    def observations(self) -> int:
        return len(self.returns)

    @property
    def too_short(self) -> bool:
        """Fewer than 30 daily returns: optimizers fall back to equal weight."""
        return self.observations < MIN_OBSERVATIONS

    def index_of(self, symbols: list[str] | tuple[str, ...]) -> np.ndarray:
        pos = {s: i for i, s in enumerate(self.symbols)}
        return np.array([pos[s] for s in symbols], dtype=int)


def daily_returns(pack: PricingPack, symbols: list[str], lookback_days: int) -> pd.DataFrame:
    """Simple daily returns of ``symbols`` on the dates all of them are priced, last ``lookback_days``."""
    missing = [s for s in symbols if s not in pack.closes.columns]
    if missing:
        raise InputError(
            f"pricing pack {pack.id} has no prices for {', '.join(missing)}",
            details={"field": "symbols", "missing": missing, "pricing_pack_id": pack.id},
        )
    closes = pack.closes[list(symbols)].dropna(how="any")
    returns = closes.pct_change().iloc[1:]
    return returns.tail(lookback_days)


def estimate(
    pack: PricingPack,
    symbols: list[str],
    *,
    lookback_days: int,
    covariance_estimator: str,
    expected_return_estimator: str,
    risk_free_rate: float,
    ewma_decay: float,
    annualization_days: int,
    forecasts: tuple[tuple[str, float], ...] | None = None,
    forecast_fallback: str | None = None,
    factor_symbols: tuple[str, ...] | None = None,
) -> Estimates:
    """Estimate annualized mu and covariance for ``symbols`` from the pack's closes.

    ``forecasts`` (symbol, annual %) are the expected returns of estimator ``user``; names without
    one take ``forecast_fallback`` (hist by default). ``factor_symbols`` are estimator ``factor``'s
    series (default: every index and ETF series of the pack).
    """
    returns = daily_returns(pack, symbols, lookback_days)
    warnings: list[str] = []
    if len(returns) < 2:
        raise InputError(
            f"pricing pack {pack.id} has {len(returns)} common daily return(s) for "
            f"{', '.join(symbols)}; at least 2 are needed to estimate risk",
            details={"field": "pricing_pack_id", "observations": len(returns)},
        )
    if len(returns) < lookback_days:
        warnings.append(
            f"lookback_days={lookback_days} but the pack has {len(returns)} common daily returns "
            f"for these symbols ({returns.index[0].date()} to {returns.index[-1].date()}); used those"
        )
    cov_daily = riskfolio_adapter.covariance(returns, covariance_estimator, decay=ewma_decay)

    def mean(estimator: str) -> np.ndarray:
        return _mu(pack, returns, estimator, risk_free_rate=risk_free_rate, ewma_decay=ewma_decay,
                   annualization_days=annualization_days, factor_symbols=factor_symbols)

    sources: tuple[tuple[str, str], ...] = ()
    if expected_return_estimator == "user":
        mu_annual, sources, note = _user_mu(symbols, forecasts, forecast_fallback or "hist", mean)
        warnings += note
    else:
        mu_annual = mean(expected_return_estimator)
    return Estimates(
        symbols=tuple(symbols),
        mu=mu_annual,
        cov=cov_daily * annualization_days,
        returns=returns,
        warnings=tuple(warnings),
        mu_sources=sources,
    )


def _mu(pack: PricingPack, returns: pd.DataFrame, estimator: str, *, risk_free_rate: float, ewma_decay: float,
        annualization_days: int, factor_symbols: tuple[str, ...] | None) -> np.ndarray:
    """Annualized expected returns of ``returns``' columns by ``estimator`` (any but ``user``)."""
    if estimator == "capm":
        return _capm_mu(pack, returns, risk_free_rate, annualization_days)
    if estimator == "factor":
        return _factor_mu(pack, returns, factor_symbols, risk_free_rate, annualization_days)
    mu_daily = riskfolio_adapter.mean_returns(returns, estimator, decay=ewma_decay)
    return mu_daily * annualization_days


def _user_mu(
    symbols: list[str], forecasts: tuple[tuple[str, float], ...] | None, fallback: str,
    mean: Callable[[str], np.ndarray],
) -> tuple[np.ndarray, tuple[tuple[str, str], ...], list[str]]:
    """The forecasts as decimals, the fallback estimator's returns for names without one, the
    source of each and a warning naming the names that fell back."""
    given = dict(forecasts or ())
    if not given:
        raise InputError(
            "policy.forecasts: expected_return_estimator 'user' takes its expected returns from forecasts "
            "{symbol: annual return %}; give them, or choose hist, ewma, capm or factor",
            details={"field": "policy.forecasts", "value": None,
                     "allowed": "a map of holdable symbols of the pack to annual returns in %"},
        )
    missing = [s for s in symbols if s not in given]
    mu = np.array([given.get(s, 0.0) / 100.0 for s in symbols])
    notes = []
    if missing:
        fallback_mu = mean(fallback)
        for i, s in enumerate(symbols):
            if s not in given:
                mu[i] = fallback_mu[i]
        notes.append(f"no forecast for {', '.join(sorted(missing))}: their expected returns are estimated by "
                     f"{fallback} (policy field forecast_fallback)")
    sources = tuple((s, "forecast" if s in given else fallback) for s in symbols)
    return mu, sources, notes


def estimation_settings(policy: Policy) -> dict[str, Any]:
    """The policy fields estimation depends on, as ``estimate``'s keyword arguments.

    The one place a policy is read for estimation: ``estimate_for_policy`` passes exactly these,
    and an estimate cache keys on them (``services.estimation.cache``), so a setting added here
    is part of the key by construction.
    """
    return {
        "lookback_days": policy.lookback_days,
        "covariance_estimator": policy.covariance_estimator,
        "expected_return_estimator": policy.expected_return_estimator,
        "risk_free_rate": policy.risk_free_rate,
        "ewma_decay": policy.ewma_decay,
        "annualization_days": policy.annualization_days,
        "forecasts": tuple(sorted(policy.forecasts.items())) if policy.forecasts else None,
        "forecast_fallback": policy.forecast_fallback,
        "factor_symbols": tuple(sorted(set(policy.factor_symbols))) if policy.factor_symbols else None,
    }


def estimate_for_policy(pack: PricingPack, symbols: list[str], policy: Policy) -> Estimates:
    """``estimate`` with the policy's window, estimators, risk-free rate and annualization."""
    return estimate(pack, symbols, **estimation_settings(policy))


def market_symbol(pack: PricingPack) -> str | None:
    """The pack's market index: SP500 if present, else the first index series by symbol."""
    indices = sorted(s.symbol for s in pack.securities if s.asset_class == "index")
    if "SP500" in indices:
        return "SP500"
    return indices[0] if indices else None


def default_factor_symbols(pack: PricingPack) -> list[str]:
    """The pack's index and ETF series, by symbol: the demo's SP500 and five factor ETFs."""
    return sorted(s.symbol for s in pack.securities if s.asset_class in ("index", "etf"))


def factor_series(
    pack: PricingPack, dates: pd.DatetimeIndex, factor_symbols: list[str] | tuple[str, ...] | None, use: str
) -> tuple[list[str], pd.DataFrame]:
    """The factor series' symbols (sorted) and daily returns on ``dates``, checked for ``use``.

    Raises:
        InputError: a symbol that is not a series of the pack, more than 50 factors, a series with
            a gap on ``dates``, or no more dates than factors.
    """
    symbols = sorted(set(factor_symbols)) if factor_symbols else default_factor_symbols(pack)
    unknown = sorted(set(symbols) - set(pack.closes.columns))
    if unknown or not symbols:
        raise InputError(
            f"policy.factor_symbols: {', '.join(unknown) or '(none)'} not a series of pack {pack.id}; "
            f"choose from {', '.join(default_factor_symbols(pack)) or 'the pack symbols'}",
            details={"field": "policy.factor_symbols", "invalid": unknown,
                     "allowed": default_factor_symbols(pack)},
        )
    if len(symbols) > MAX_FACTORS:
        raise InputError(
            f"policy.factor_symbols: {len(symbols)} factors; at most {MAX_FACTORS} are allowed",
            details={"field": "policy.factor_symbols", "value": len(symbols), "allowed": f"1-{MAX_FACTORS}"},
        )
    factor_returns = pack.closes[symbols].pct_change().reindex(dates)
    gaps = sorted(c for c in symbols if factor_returns[c].isna().any())
    t = len(dates)
    if gaps or t <= len(symbols) + 2:
        raise InputError(
            f"{use} needs every factor series priced on the {t} estimation "
            f"dates and more dates than factors; " + (f"{', '.join(gaps)} have gaps" if gaps else "too few dates"),
            details={"field": "policy.factor_symbols", "gaps": gaps, "observations": t},
        )
    return symbols, factor_returns


def factor_regression(returns: pd.DataFrame, factor_returns: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Least squares of each column of ``returns`` on the factors with an intercept: the design
    matrix [1, f] and the coefficients ((k + 1) × N, the intercepts first)."""
    design = np.column_stack([np.ones(len(returns)), factor_returns.to_numpy()])
    coef, *_ = np.linalg.lstsq(design, returns.to_numpy(), rcond=None)
    return design, coef


def _factor_mu(pack: PricingPack, returns: pd.DataFrame, factor_symbols: tuple[str, ...] | None,
               rf: float, days: int) -> np.ndarray:
    """Factor model: mu_i = rf + Σ_k beta_ik (E[f_k] − rf), betas and E[f] over the same window.

    The intercepts (alphas) are left out: only the factors' premia are expected to persist.
    With the market index as the one factor this is CAPM.
    """
    _, factor_returns = factor_series(pack, returns.index, factor_symbols, "expected_return_estimator 'factor'")
    _, coef = factor_regression(returns, factor_returns)
    premia = factor_returns.to_numpy().mean(axis=0) * days - rf
    return rf + premia @ coef[1:]


def _capm_mu(pack: PricingPack, returns: pd.DataFrame, rf: float, days: int) -> np.ndarray:
    """CAPM: mu_i = rf + beta_i (E[R_m] - rf), beta and E[R_m] over the same window."""
    market = market_symbol(pack)
    if market is None:
        raise InputError(
            f"expected_return_estimator 'capm' needs an index series in the pack; {pack.id} has none",
            details={"field": "policy.expected_return_estimator", "value": "capm",
                     "allowed": ["hist", "ewma"]},
        )
    m = pack.closes[market].pct_change().reindex(returns.index)
    if m.isna().any():
        raise InputError(f"index {market} is not priced on every date of the estimation window",
                         details={"field": "policy.expected_return_estimator", "value": "capm"})
    rm = m.to_numpy()
    rm_centered = rm - rm.mean()
    betas = (returns.to_numpy() - returns.to_numpy().mean(axis=0)).T @ rm_centered / (rm_centered @ rm_centered)
    market_mu = rm.mean() * days
    return rf + betas * (market_mu - rf)
