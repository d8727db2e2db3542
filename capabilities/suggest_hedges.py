"""``optimizer.suggest_hedges``: scenario P&L of a portfolio and hedges sized within a budget."""

from __future__ import annotations

from pydantic import BaseModel, Field

from capabilities.base import Capability, RequestContext, Services
from capabilities.common import STRICT, PortfolioRequest, resolve_holdings
from capabilities.views import Summary
from services.allocation.optimization import SOLVER, SOLVER_SETTINGS
from services.hedging.exposures import DEFAULT_LOOKBACK_DAYS, load_sector_sensitivities
from services.hedging.hedge_sizing import HedgeBudget, HedgeSuggestion, suggest_hedges
from services.hedging.scenarios import load_instruments, load_scenarios

_DEFAULT_BUDGET = HedgeBudget()


class HedgeBudgetIn(BaseModel):
    """Limits on the suggested hedges, relative to the portfolio's value."""

    model_config = STRICT

    max_notional_pct: float = Field(
        _DEFAULT_BUDGET.max_notional_pct, gt=0, le=100,
        description="Largest total hedge notional, % of portfolio value (25.0 = 25%).",
    )
    max_cost_bps: float = Field(
        _DEFAULT_BUDGET.max_cost_bps, ge=0, le=1000,
        description="Largest total hedge cost over the 3-month horizon, bps of portfolio value (100 = 1%).",
    )


class SuggestHedgesInput(PortfolioRequest):
    """Stress a portfolio under a named scenario and size hedges for the loss."""

    scenario_id: str = Field(
        min_length=1, description=f"Stress scenario, one of: {', '.join(load_scenarios().ids())}.",
        json_schema_extra={"enum": load_scenarios().ids()},
    )
    hedge_budget: HedgeBudgetIn | None = Field(
        None, description="Hedge limits; defaults: 25% of value in notional, 100 bps of value in cost."
    )
    lookback_days: int | None = Field(
        None, ge=2, le=5000,
        description=f"Daily returns used to estimate betas (default {DEFAULT_LOOKBACK_DAYS}).",
    )


def handle(request: SuggestHedgesInput, ctx: RequestContext, services: Services) -> HedgeSuggestion:
    pack = services.store.get_pack(request.pricing_pack_id)
    holdings = resolve_holdings(request, services)
    limits = request.hedge_budget or HedgeBudgetIn()
    return suggest_hedges(
        pack, holdings, request.scenario_id,
        budget=HedgeBudget(max_notional_pct=limits.max_notional_pct, max_cost_bps=limits.max_cost_bps),
        lookback_days=request.lookback_days or DEFAULT_LOOKBACK_DAYS,
    )


class _HoldingPnlBrief(BaseModel):
    symbol: str
    value: float
    pnl: float
    pnl_pct: float


class _HedgeBrief(BaseModel):
    action: str
    instrument: str
    instrument_id: str
    description: str
    notional: float
    contracts: int | None
    notional_pct: float
    expected_offset: float
    expected_offset_pct: float
    estimated_cost: float


class _BudgetBrief(BaseModel):
    max_notional_pct: float
    max_cost_bps: float
    notional_used_pct: float
    cost_used_bps: float
    binding: list[str]


class HedgeSummary(Summary):
    """The scenario loss, each holding's P&L, the hedges and what they offset; no sensitivities or rationales."""

    scenario_id: str
    scenario_name: str
    pricing_pack_id: str
    asof: str
    portfolio_id: str | None
    portfolio_value: float
    scenario_pnl: list[_HoldingPnlBrief]
    scenario_pnl_total: float
    scenario_return_pct: float
    scenario_loss_before: float
    scenario_loss_after: float
    hedges: list[_HedgeBrief]
    total_expected_offset: float
    total_hedge_cost: float
    net_loss_after_costs: float
    hedged_pct: float
    budget: _BudgetBrief
    reason: str | None
    warnings: list[str]


SUGGEST_HEDGES = Capability(
    name="optimizer.suggest_hedges",
    description=(
        "Estimate a portfolio's profit or loss under a named stress scenario (equity sell-off, rates up, "
        "dollar up, credit spread widening, volatility spike, inflation shock) from betas estimated on the "
        "pricing pack and assumed sector sensitivities, and suggest the hedges (index and VIX options, "
        "Treasury, dollar, gold, credit and sector ETFs) that offset the most loss within a notional and cost "
        "budget, with each hedge's size, offset, cost and rationale."
    ),
    input_model=SuggestHedgesInput,
    output_model=HedgeSuggestion,
    summary_model=HedgeSummary,
    handler=handle,
    ttl_seconds=300,
    records_history=True,
    engine={
        "solver": SOLVER,
        "solver_settings": SOLVER_SETTINGS,
        "random_seed": None,
        "seed_versions": {
            "scenarios": load_scenarios().version,
            "instruments": load_instruments().version,
            "sector_sensitivities": load_sector_sensitivities().version,
        },
    },
)
