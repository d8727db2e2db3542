"""Per-holding factor exposures: estimated from the pricing pack where it has the data, assumed elsewhere.

Estimated (from the pack's daily closes over the lookback):

- ``equity_beta``: the OLS slope of the holding's daily returns on the market index's (SP500 in
  the demo pack), with an intercept — the same number as ``numpy.polyfit(market, holding, 1)[0]``.
- ``style:<ETF>``: for each factor ETF a scenario shocks (MTUM, QUAL, SIZE, USMV, VLUE), the
  coefficient on the ETF's market-neutral return (its residual after regressing it on the index)
  in a joint OLS of the holding's market residual on all those ETF residuals. By Frisch–Waugh
  these are the ETF coefficients of one regression on the index and the ETFs together; because
  the residuals are orthogonal to the index, the equity beta stays the simple one above.

Assumed (the pack has no series for these factors): sensitivities to rates, the dollar, credit
spreads, volatility and commodities, per GICS sector, from ``sector_sensitivities.json``. The same
file's sector beta replaces the estimated one only when the pack cannot estimate it (no index
series or fewer than ``MIN_OBSERVATIONS`` common daily returns), and the result says so.

One sample per holding: the dates on which the holding, the index and the scenario's style ETFs
all have a close, last ``lookback_days`` daily returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources.abc import Traversable
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.analytics import risk
from services.data.models import PricingPack
from services.data.seeds import load_seed_model, seed_root
from services.estimation.estimators import MIN_OBSERVATIONS, daily_returns, market_symbol
from services.hedging.scenarios import MACRO_FACTORS

SECTOR_FILE = "sector_sensitivities.json"
DEFAULT_LOOKBACK_DAYS = 756
EXPOSURE_DECIMALS = 6
EQUITY_BETA = "equity_beta"
STYLE_PREFIX = "style:"

Source = Literal["estimated", "assumed"]


class SectorEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    equity_beta: float = Field(ge=0, le=5)
    sensitivities: dict[str, float]
    note: str

    @field_validator("sensitivities")
    @classmethod
    def _every_factor(cls, values: dict[str, float]) -> dict[str, float]:
        if set(values) != set(MACRO_FACTORS):
            missing = sorted(set(MACRO_FACTORS) - set(values))
            unknown = sorted(set(values) - set(MACRO_FACTORS))
            raise ValueError(f"state every factor ({', '.join(MACRO_FACTORS)}); "
                             f"missing: {', '.join(missing) or '-'}, unknown: {', '.join(unknown) or '-'}")
        return {f: values[f] for f in MACRO_FACTORS}


class SectorSensitivities(BaseModel):
    """The assumed per-sector sensitivities and fallback betas, with their version."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    version: str
    description: str
    units: dict[str, str]
    assumptions: list[str]
    sectors: dict[str, SectorEntry]


@dataclass(frozen=True)
class Exposure:
    """One sensitivity of a holding: return (fraction) per unit of ``factor``, and where it came from."""

    factor: str
    value: float
    source: Source
    basis: str


@dataclass(frozen=True)
class HoldingExposures:
    symbol: str
    sector: str
    exposures: tuple[Exposure, ...]
    observations: int

    def get(self, factor: str) -> Exposure:
        return next(e for e in self.exposures if e.factor == factor)


@dataclass(frozen=True)
class ExposureSet:
    """Exposures of every holding, the index they were estimated against, and any fallbacks."""

    holdings: dict[str, HoldingExposures]
    market: str | None
    lookback_days: int
    warnings: tuple[str, ...]


def load_sector_sensitivities(root: Traversable | None = None) -> SectorSensitivities:
    """The assumed sector sensitivities from ``sector_sensitivities.json``, validated."""
    return load_seed_model(root or seed_root(), SECTOR_FILE, SectorSensitivities)


def estimate_exposures(
    pack: PricingPack,
    symbols: list[str],
    sectors: SectorSensitivities,
    *,
    style_symbols: tuple[str, ...] = (),
    lookback_days: int = DEFAULT_LOOKBACK_DAYS,
) -> ExposureSet:
    """Equity beta, style betas for ``style_symbols`` and assumed macro sensitivities per holding."""
    market = market_symbol(pack)
    warnings: list[str] = []
    missing_styles = sorted(s for s in style_symbols if s not in pack.closes.columns)
    styles = tuple(sorted(s for s in style_symbols if s in pack.closes.columns))
    if missing_styles:
        warnings.append(f"pack {pack.id} has no series for {', '.join(missing_styles)}; the scenario's style "
                        "shocks to them are not applied (exposure taken as 0)")
    if market is None:
        warnings.append(f"pack {pack.id} has no index series: equity betas are the assumed sector betas of "
                        f"{SECTOR_FILE} {sectors.version}, and style exposures are taken as 0")
    short_history: list[str] = []
    fallback: list[str] = []
    unknown_sectors: set[str] = set()
    out: dict[str, HoldingExposures] = {}
    for sym in sorted(symbols):
        sector = pack.security(sym).sector
        entry = sectors.sectors.get(sector)
        if entry is None:
            unknown_sectors.add(sector)
        estimated: list[Exposure] = []
        observations = 0
        if market is not None:
            estimated, observations = _estimate(pack, sym, market, styles, lookback_days)
            if not estimated:
                fallback.append(f"{sym} ({observations})")
            elif observations < lookback_days:
                short_history.append(f"{sym} ({observations})")
        if not estimated:
            estimated = [_assumed_beta(sym, sector, entry, sectors.version)]
            estimated += [Exposure(STYLE_PREFIX + s, 0.0, "assumed", "not estimable from the pack; taken as 0")
                          for s in styles]
        estimated += [Exposure(STYLE_PREFIX + s, 0.0, "assumed", f"pack {pack.id} has no {s} series; taken as 0")
                      for s in missing_styles]
        out[sym] = HoldingExposures(sym, sector, tuple(estimated) + _assumed_macro(sector, entry, sectors.version),
                                    observations)
    if fallback:
        warnings.append(f"fewer than {MIN_OBSERVATIONS} common daily returns with {market} for "
                        f"{', '.join(fallback)}: their equity betas are the assumed sector betas of "
                        f"{SECTOR_FILE} {sectors.version} and their style exposures are taken as 0")
    if short_history:
        warnings.append(f"lookback_days={lookback_days} but the pack has fewer common daily returns for "
                        f"{', '.join(short_history)}; their exposures use those")
    if unknown_sectors:
        warnings.append(f"{SECTOR_FILE} {sectors.version} has no entry for sector(s) "
                        f"{', '.join(sorted(unknown_sectors))}: their rates, dollar, credit, volatility and "
                        "commodity sensitivities are taken as 0 (and their beta as 1.0 if it cannot be estimated)")
    return ExposureSet(out, market, lookback_days, tuple(warnings))


def _estimate(pack: PricingPack, sym: str, market: str, styles: tuple[str, ...],
              lookback_days: int) -> tuple[list[Exposure], int]:
    """Estimated beta and style betas of ``sym``, or ([], observations) when there is too little data."""
    columns = list(dict.fromkeys([sym, market, *styles]))
    returns = daily_returns(pack, columns, lookback_days)
    n = len(returns)
    x = returns[market].to_numpy()
    if n < MIN_OBSERVATIONS or float(np.ptp(x)) == 0.0:
        return [], n
    y = returns[sym].to_numpy()
    window = f"{n} daily returns {returns.index[0].date()} to {returns.index[-1].date()}"
    beta = risk.beta(y, x)
    exposures = [Exposure(EQUITY_BETA, _round(beta), "estimated", f"OLS slope on {market}, {window}")]
    if styles:
        design = np.column_stack([np.ones(n), x])
        residual = _residuals(design, y)
        neutral = np.column_stack([_residuals(design, returns[s].to_numpy()) for s in styles])
        gammas = np.linalg.lstsq(neutral, residual, rcond=None)[0]
        exposures += [
            Exposure(STYLE_PREFIX + s, _round(g), "estimated",
                     f"OLS on {s}'s return net of {market} (jointly with the other style ETFs), {window}")
            for s, g in zip(styles, gammas, strict=True)
        ]
    return exposures, n


def _residuals(design: np.ndarray, y: np.ndarray) -> np.ndarray:
    return y - design @ np.linalg.lstsq(design, y, rcond=None)[0]


def _assumed_beta(sym: str, sector: str, entry: SectorEntry | None, version: str) -> Exposure:
    if entry is None:
        return Exposure(EQUITY_BETA, 1.0, "assumed", f"no beta estimable for {sym} and no entry for sector "
                                                      f"'{sector}' in {SECTOR_FILE}; taken as 1.0")
    return Exposure(EQUITY_BETA, entry.equity_beta, "assumed", f"{SECTOR_FILE} {version}: {sector} beta")


def _assumed_macro(sector: str, entry: SectorEntry | None, version: str) -> tuple[Exposure, ...]:
    if entry is None:
        return tuple(Exposure(f, 0.0, "assumed", f"no entry for sector '{sector}' in {SECTOR_FILE}; taken as 0")
                     for f in MACRO_FACTORS)
    return tuple(Exposure(f, entry.sensitivities[f], "assumed", f"{SECTOR_FILE} {version}: {sector}")
                 for f in MACRO_FACTORS)


def _round(x: float) -> float:
    return round(float(x), EXPOSURE_DECIMALS) + 0.0
