"""``optimizer.propose_trades``: a constrained, costed, whole-share rebalance proposal."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    Field,
    model_validator,
)

from capabilities.base import Capability, RequestContext, Services
from capabilities.common import PortfolioRequest, resolve_portfolio, wash_history
from capabilities.views import Summary, TaxBrief, proposal_id
from services.allocation.optimization import SOLVER, SOLVER_SETTINGS
from services.allocation.proposal import RiskReturn, TradeProposal
from services.allocation.rebalance import Holdings, propose_trades, validate_ratings
from services.data.bounds import MAX_AMOUNT
from services.data.models import Lot, PricingPack
from services.data.policy import Policy, PolicyOverrides, omit_if_null, resolve_policy
from services.tax.wash import WashHistory


class ProposeTradesInput(PortfolioRequest):
    """Rebalance a portfolio under a policy template and/or explicit policy fields."""

    policy_id: str | None = Field(
        None, description="Policy template: quality_focused, aggressive_growth or conservative_income."
    )
    policy: PolicyOverrides | None = Field(
        None,
        description="Policy fields overriding the template (every *_pct is a percentage: 15.0 = 15%; "
        "null removes a template's limit).",
    )
    ratings: dict[str, Annotated[float, Field(ge=0, le=10)]] | None = Field(
        None, description="Quality scores {symbol: 0-10}; defaults to the stored ratings."
    )
    cash_flow: Decimal | None = Field(
        None, allow_inf_nan=False, ge=-MAX_AMOUNT, le=MAX_AMOUNT, strict=False, exclude_if=omit_if_null,
        description="A deposit (positive) to invest or a withdrawal (negative) to raise, in the portfolio "
        "currency; a withdrawal larger than cash plus all holdings after costs is an error naming the shortfall.",
    )


@dataclass(frozen=True)
class ProposalInputs:
    """A request resolved against the store: what ``propose_trades`` is called with."""

    pack: PricingPack
    holdings: Holdings
    policy: Policy
    ratings: dict[str, float]
    benchmarks: dict[str, dict[str, float]]
    cash_flow: Decimal | None = None
    lots: tuple[Lot, ...] | None = None
    wash_history: WashHistory | None = None


def resolve(request: ProposeTradesInput, services: Services) -> ProposalInputs:
    """Read the pack, portfolio, template and ratings a request names; resolve its policy.

    Separate from ``handle`` so a batch can resolve here and compute on a cluster.
    """
    pack = services.store.get_pack(request.pricing_pack_id)
    holdings, lots = resolve_portfolio(request, services)
    template = services.store.get_policy_template(request.policy_id)[0] if request.policy_id else None
    policy = resolve_policy(services.constraint_defaults, template, request.policy, policy_id=request.policy_id)
    if request.portfolio_id is not None:
        # The account's own restrictions always apply, on top of any the request adds.
        stored = services.store.get_restrictions(request.portfolio_id)
        if stored["restricted"] or stored["frozen"]:
            policy = policy.model_copy(update={
                "restricted_symbols": sorted(set(policy.restricted_symbols) | set(stored["restricted"])),
                "frozen_symbols": sorted(set(policy.frozen_symbols) | set(stored["frozen"])),
            })
    if policy.method == "target" and policy.target_weights_pct is None and request.portfolio_id is not None:
        stored = services.store.get_target(request.portfolio_id)["weights_pct"]
        policy = policy.model_copy(update={"target_weights_pct": stored})
    if request.ratings is not None:
        validate_ratings(pack, request.ratings)
    ratings = request.ratings if request.ratings is not None else services.store.get_ratings()
    history = wash_history(services, request.portfolio_id, pack.asof) if policy.taxable else None
    return ProposalInputs(pack, holdings, policy, ratings, services.benchmarks, request.cash_flow, lots, history)


def handle(request: ProposeTradesInput, ctx: RequestContext, services: Services) -> TradeProposal:
    inputs = resolve(request, services)
    return propose_trades(inputs.pack, inputs.holdings, inputs.policy, inputs.ratings, inputs.benchmarks,
                          cash_flow=inputs.cash_flow, lots=inputs.lots, wash_history=inputs.wash_history)


class _TradeBrief(BaseModel):
    symbol: str
    action: str
    quantity: int
    target_weight_pct: float
    trade_value: float
    estimated_cost: float


class ProposalSummary(Summary):
    """The proposal's trades and headline figures, and the id analyze_impact accepts for it."""

    proposal_id: str = Field(description="Pass as analyze_impact's proposal_id instead of the trades.")
    pricing_pack_id: str
    asof: str
    portfolio_id: str | None
    policy_id: str | None
    method: str
    trade_count: int
    trades: list[_TradeBrief]
    portfolio_value: float
    value_after: float
    cash_after: float
    total_trade_value: float
    estimated_costs: float
    cost_bps: float
    turnover_pct: float
    te_before_pct: float | None
    te_after_pct: float | None
    benchmark: str | None
    before: RiskReturn
    after: RiskReturn
    binding_constraints: list[str]
    constraints_met: bool
    tax: TaxBrief | None = Field(None, exclude_if=lambda v: v is None,
                                 description="Taxable accounts only: realized gains and losses and the estimated tax.")
    warnings: list[str]

    @model_validator(mode="before")
    @classmethod
    def _proposal_id(cls, full: Any) -> Any:
        if isinstance(full, dict) and "proposal_id" not in full:
            return {**full, "proposal_id": proposal_id(full["_metadata"]["inputs_hash"])}
        return full


PROPOSE_TRADES = Capability(
    name="optimizer.propose_trades",
    description=(
        "Propose whole-share trades that rebalance a portfolio under an investment policy (quality "
        "minimum, position and sector caps, tracking-error and turnover limits), with costs and "
        "before/after risk and return, priced from a named pricing pack."
    ),
    input_model=ProposeTradesInput,
    output_model=TradeProposal,
    summary_model=ProposalSummary,
    handler=handle,
    ttl_seconds=300,
    records_history=True,
    engine={"solver": SOLVER, "solver_settings": SOLVER_SETTINGS, "random_seed": None},
)
