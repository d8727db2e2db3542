"""Stress scenarios and hedge instruments: load and validate ``scenarios.json`` and ``instruments.json``.

Both files are versioned seed data under ``seeds/optimizer/``. They are parsed into frozen pydantic
models with ``extra="forbid"``, so a misspelt key or a shock in an unknown unit fails on load, with
the file and the field named, rather than being silently ignored on the first request.

Units are shared by scenarios, instruments and ``sector_sensitivities.json``: the equity shock is a
return (fraction), the other factors are in the units of ``FACTOR_UNITS``, and a sensitivity is the
return (fraction) per one unit of its factor.
"""

from __future__ import annotations

from datetime import date
from importlib.resources.abc import Traversable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from services.data.seeds import load_seed_model, seed_root
from services.errors import InputError

SCENARIOS_FILE = "scenarios.json"
INSTRUMENTS_FILE = "instruments.json"


# The non-equity factors, in report order. The equity factor is handled apart because holdings
# get their exposure to it by regression (a beta), not from an assumed sensitivity.
FACTOR_UNITS: dict[str, str] = {
    "rates_10y_bp": "bp change of the 10-year US Treasury yield",
    "usd_pct": "% change of the US dollar index (DXY)",
    "ig_spread_bp": "bp change of the US investment-grade corporate spread",
    "hy_spread_bp": "bp change of the US high-yield corporate spread",
    "vix_pts": "point change of the VIX index",
    "commodities_pct": "% change of a broad commodity index",
}
EQUITY_UNIT = "S&P 500 return, fraction"
MACRO_FACTORS = tuple(FACTOR_UNITS)

GICS_SECTORS = (
    "Communication Services",
    "Consumer Discretionary",
    "Consumer Staples",
    "Energy",
    "Financials",
    "Health Care",
    "Industrials",
    "Information Technology",
    "Materials",
    "Real Estate",
    "Utilities",
)


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Shocks(_Frozen):
    """One scenario's factor shocks; every factor is stated, 0 meaning unshocked."""

    equity: float = Field(ge=-1.0, le=1.0, description="S&P 500 return as a fraction.")
    rates_10y_bp: float
    usd_pct: float
    ig_spread_bp: float
    hy_spread_bp: float
    vix_pts: float
    commodities_pct: float

    def macro(self) -> dict[str, float]:
        """The non-equity shocks, in ``MACRO_FACTORS`` order."""
        return {f: float(getattr(self, f)) for f in MACRO_FACTORS}


class Episode(_Frozen):
    """The historical episode a scenario is modelled on, and how much of it the scenario takes."""

    name: str
    start: date
    end: date
    scale: float = Field(gt=0, le=2)
    observed: str


class Scenario(_Frozen):
    name: str
    narrative: str = Field(min_length=1)
    episode: Episode
    shocks: Shocks
    sector_tilts: dict[str, float] = Field(default_factory=dict)
    style_shocks: dict[str, float] = Field(default_factory=dict)
    notes: str = ""

    @field_validator("narrative")
    @classmethod
    def _one_line(cls, text: str) -> str:
        if "\n" in text:
            raise ValueError("the narrative must be one line")
        return text

    @field_validator("sector_tilts")
    @classmethod
    def _gics(cls, tilts: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(tilts) - set(GICS_SECTORS))
        if unknown:
            raise ValueError(f"unknown GICS sector(s) {', '.join(unknown)}; valid: {', '.join(GICS_SECTORS)}")
        return tilts


class ScenarioLibrary(_Frozen):
    version: str
    description: str
    units: dict[str, str]
    assumptions: list[str]
    scenarios: dict[str, Scenario]

    def ids(self) -> list[str]:
        return sorted(self.scenarios)


class ContractPrice(_Frozen):
    """The underlying price that sizes one option contract: from the pack, or assumed."""

    pack_symbol: str | None = None
    scale: float = Field(1.0, gt=0)
    assumed: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _exactly_one(self) -> ContractPrice:
        if (self.pack_symbol is None) == (self.assumed is None):
            raise ValueError("give exactly one of 'pack_symbol' (priced from the pack) or 'assumed'")
        return self


class OptionTerms(_Frozen):
    kind: Literal["put", "call"]
    strike_pct: float = Field(gt=0, description="Strike as % of the underlying's level today.")
    tenor_months: int = Field(gt=0)
    contract_multiplier: int = Field(gt=0)
    contract_price: ContractPrice


class CostAssumption(_Frozen):
    """What holding the hedge for the horizon costs, in the units the names say."""

    premium_pct: float = Field(0.0, ge=0, description="Option premium, % of notional.")
    spread_bps: float = Field(ge=0, description="Bid-ask paid getting in and out, bps of notional.")
    commission_bps: float = Field(ge=0, description="Commissions and fees for both trades, bps.")
    borrow_bps_per_year: float = Field(0.0, ge=0, description="Stock-loan fee for a short, bps a year.")
    distribution_yield_bps_per_year: float = Field(
        0.0, ge=0, description="Distributions a short must pay the lender, bps a year."
    )
    basis: str


class Instrument(_Frozen):
    """One catalogue entry: an instrument used in one direction."""

    id: str
    symbol: str
    name: str
    type: Literal["option", "etf"]
    direction: Literal["buy", "short"]
    equity_beta: float | None = None
    sensitivities: dict[str, float] = Field(default_factory=dict)
    gics_sector: str | None = None
    option: OptionTerms | None = None
    cost: CostAssumption
    max_notional_pct: float | None = Field(None, gt=0, le=100)
    note: str

    @model_validator(mode="after")
    def _consistent(self) -> Instrument:
        unknown = sorted(set(self.sensitivities) - set(MACRO_FACTORS))
        if unknown:
            raise ValueError(f"unknown factor(s) {', '.join(unknown)}; valid: {', '.join(MACRO_FACTORS)}")
        if self.gics_sector is not None:
            if self.gics_sector not in GICS_SECTORS:
                raise ValueError(f"gics_sector '{self.gics_sector}' is not a GICS sector")
            if self.equity_beta is not None or self.sensitivities:
                raise ValueError("a sector ETF takes its beta and sensitivities from sector_sensitivities.json; "
                                 "leave equity_beta and sensitivities out")
        elif self.equity_beta is None:
            raise ValueError("equity_beta is required unless gics_sector is set")
        if (self.type == "option") != (self.option is not None):
            raise ValueError("'option' terms are required for type 'option' and only for it")
        if self.type == "option" and self.direction != "buy":
            raise ValueError("options are only bought (a written option is not a hedge)")
        if self.direction == "buy" and (self.cost.borrow_bps_per_year or self.cost.distribution_yield_bps_per_year):
            raise ValueError("borrow and distribution costs apply to shorts only")
        return self


class InstrumentCatalogue(_Frozen):
    version: str
    description: str
    horizon_months: int = Field(gt=0)
    methodology: list[str]
    instruments: list[Instrument]

    @field_validator("instruments")
    @classmethod
    def _unique_ids(cls, instruments: list[Instrument]) -> list[Instrument]:
        ids = [i.id for i in instruments]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"instrument ids must be unique; repeated: {', '.join(dupes)}")
        return sorted(instruments, key=lambda i: i.id)


def load_scenarios(root: Traversable | None = None) -> ScenarioLibrary:
    """The scenario library from ``scenarios.json``, validated."""
    return load_seed_model(root or seed_root(), SCENARIOS_FILE, ScenarioLibrary)


def load_instruments(root: Traversable | None = None) -> InstrumentCatalogue:
    """The hedge-instrument catalogue from ``instruments.json``, validated, sorted by id."""
    return load_seed_model(root or seed_root(), INSTRUMENTS_FILE, InstrumentCatalogue)


def scenario_ids(root: Traversable | None = None) -> list[str]:
    """Ids of the shipped scenarios, sorted."""
    return load_scenarios(root).ids()


def get_scenario(library: ScenarioLibrary, scenario_id: str) -> Scenario:
    """The scenario ``scenario_id``; an unknown id is an input error listing the valid ones."""
    try:
        return library.scenarios[scenario_id]
    except KeyError:
        raise InputError(
            f"unknown scenario_id '{scenario_id}'; valid: {', '.join(library.ids())}",
            code="unknown_scenario",
            details={"field": "scenario_id", "value": scenario_id, "allowed": library.ids()},
        ) from None

