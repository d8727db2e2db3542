"""``optimizer.suggest_deleveraging_hedges``: a regime playbook applied to one portfolio."""

from __future__ import annotations

from pydantic import Field

from capabilities.base import Capability, RequestContext, Services
from capabilities.common import PortfolioRequest, resolve_holdings
from services.data.policy import PolicyOverrides, resolve_policy
from services.hedging.regimes import RegimeReport, load_playbooks, suggest_for_regime


class SuggestDeleveragingHedgesInput(PortfolioRequest):
    """Apply a macro-regime playbook to a portfolio."""

    regime: str = Field(
        min_length=1,
        description="Macro regime (any case): DELEVERAGING, LATE_EXPANSION or REFLATION; the playbook "
        "file lists the valid ones.",
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
    handler=handle,
    ttl_seconds=300,
    engine={"betas": "OLS on daily returns vs the pack's market index", "random_seed": None},
)
