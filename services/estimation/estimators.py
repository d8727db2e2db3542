"""Return, expected-return and covariance estimates from a pricing pack.

Estimates are annualized (``annualization_days``, 252 by default). The daily work is done by
riskfolio through the adapter; CAPM expected returns are computed here from the pack's index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from services.data.models import PricingPack
from services.data.policy import Policy
from services.errors import InputError
from services.estimation import riskfolio_adapter

MIN_OBSERVATIONS = 30


@dataclass(frozen=True, eq=False)
class Estimates:
    """Annualized mean and covariance over ``symbols``, with the daily returns they came from."""

    symbols: tuple[str, ...]
    mu: np.ndarray
    cov: np.ndarray
    returns: pd.DataFrame
    warnings: tuple[str, ...] = ()

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
) -> Estimates:
    """Estimate annualized mu and covariance for ``symbols`` from the pack's closes."""
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
    if expected_return_estimator == "capm":
        mu_annual = _capm_mu(pack, returns, risk_free_rate, annualization_days)
    else:
        mu_daily = riskfolio_adapter.mean_returns(returns, expected_return_estimator, decay=ewma_decay)
        mu_annual = mu_daily * annualization_days
    return Estimates(
        symbols=tuple(symbols),
        mu=mu_annual,
        cov=cov_daily * annualization_days,
        returns=returns,
        warnings=tuple(warnings),
    )


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
