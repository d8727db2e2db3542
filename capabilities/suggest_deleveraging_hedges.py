"""``optimizer.suggest_deleveraging_hedges``: a regime playbook applied to one portfolio."""

from __future__ import annotations

from pydantic import BaseModel, Field

from capabilities.base import Capability, RequestContext, Services
from capabilities.common import PortfolioRequest, resolve_holdings
from capabilities.views import Summary
from services.data.policy import PolicyOverrides, resolve_policy
from services.hedging.regimes import Exposures, RegimeReport, load_playbooks, suggest_for_regime


class SuggestDeleveragingHedgesInput(PortfolioRequest):
    """Apply a macro-regime playbook to a portfolio."""

    regime: str = Field(
        min_length=1,
        description="Macro regime (any case): DELEVERAGING, LATE_EXPANSION or REFLATION; the playbook "
        "file lists the valid ones.",
        json_schema_extra={"enum": sorted(load_playbooks().regimes)},
    )
    lookback_days: int = Field(
        756, ge=2, le=5000, description="Number of most recent daily returns used for betas and volatility."
    )


def handle(request: SuggestDeleveragingHedgesInput, ctx: RequestContext, services: Services) -> RegimeReport:
    playbooks = load_playbooks()
    # The regime is checked before anything is read, so a bad name fails fast with the valid ones.
    playbooks.regime(request.regime)
    pack = services.store.get_pack(request.pricing_pack_id)
    holdings = resolve_holdings(request, services)
    policy = resolve_policy(services.constraint_defaults, None,
                            PolicyOverrides(lookback_days=request.lookback_days), policy_id=None)
    return suggest_for_regime(pack, holdings, playbooks, request.regime, policy)


class _StepBrief(BaseModel):
    action: str
    kind: str
    instruments: list[str]
    status: str


class _RegimeTradeBrief(BaseModel):
    symbol: str
    action: str
    quantity: int | None = Field(description="Whole shares; null for a dollar notional (see unpriced_instruments).")
    trade_value: float
    estimated_cost: float


class RegimeSummary(Summary):
    """The playbook's steps, the trades and the exposures before and after; no rationales."""

    pricing_pack_id: str
    asof: str
    portfolio_id: str | None
    regime: str
    playbook_version: str
    recommendations: list[_StepBrief]
    trades: list[_RegimeTradeBrief]
    estimated_costs: float
    current_value: float
    value_after: float
    cash_after: float
    before: Exposures
    after: Exposures
    unpriced_instruments: list[str]
    warnings: list[str]


SUGGEST_DELEVERAGING_HEDGES = Capability(
    name="optimizer.suggest_deleveraging_hedges",
    description=(
        "For a macro regime (DELEVERAGING, LATE_EXPANSION, REFLATION), apply the versioned regime "
        "playbook to a portfolio: which holdings to cut (highest beta first), which hedges or "
        "defensives to buy (whole shares if priced in the pack, else dollar notionals), costs, and "
        "equity beta, asset-class mix and volatility before and after."
    ),
    input_model=SuggestDeleveragingHedgesInput,
    output_model=RegimeReport,
    summary_model=RegimeSummary,
    handler=handle,
    ttl_seconds=300,
    engine={"betas": "OLS on daily returns vs the pack's market index", "random_seed": None},
)
