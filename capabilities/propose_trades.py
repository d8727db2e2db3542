"""``optimizer.propose_trades``: a constrained, costed, whole-share rebalance proposal."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pydantic import Field, SerializerFunctionWrapHandler, model_serializer

from capabilities.base import Capability, RequestContext, Services
from capabilities.common import PortfolioRequest, resolve_holdings
from services.allocation.optimization import SOLVER, SOLVER_SETTINGS
from services.allocation.proposal import TradeProposal
from services.allocation.rebalance import propose_trades
from services.data.policy import PolicyOverrides, resolve_policy


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
    ratings: dict[str, float] | None = Field(
        None, description="Quality scores {symbol: 0-10}; defaults to the stored ratings."
    )
    cash_flow: Decimal | None = Field(
        None, allow_inf_nan=False,
        description="A deposit (positive) to invest or a withdrawal (negative) to raise, in the portfolio "
        "currency; a withdrawal larger than cash plus all holdings after costs is an error naming the shortfall.",
    )

    @model_serializer(mode="wrap")
    def _omit_unset_cash_flow(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Left out while unset, so requests made before the field existed keep their inputs hash.
        data = handler(self)
        if data.get("cash_flow") is None:
            data.pop("cash_flow", None)
        return data


def handle(request: ProposeTradesInput, ctx: RequestContext, services: Services) -> TradeProposal:
    pack = services.store.get_pack(request.pricing_pack_id)
    holdings = resolve_holdings(request, services)
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
    ratings = request.ratings if request.ratings is not None else services.store.get_ratings()
    return propose_trades(pack, holdings, policy, ratings, services.benchmarks, cash_flow=request.cash_flow)


PROPOSE_TRADES = Capability(
    name="optimizer.propose_trades",
    description=(
        "Propose whole-share trades that rebalance a portfolio under an investment policy (quality "
        "minimum, position and sector caps, tracking-error and turnover limits), with costs and "
        "before/after risk and return, priced from a named pricing pack."
    ),
    input_model=ProposeTradesInput,
    output_model=TradeProposal,
    handler=handle,
    ttl_seconds=300,
    records_history=True,
    engine={"solver": SOLVER, "solver_settings": SOLVER_SETTINGS, "random_seed": None},
)
