"""``optimizer.propose_trades``: a constrained, costed, whole-share rebalance proposal."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field

from capabilities.base import Capability, RequestContext, Services
from capabilities.common import PortfolioRequest, resolve_holdings
from services.allocation.optimization import SOLVER, SOLVER_SETTINGS
from services.allocation.proposal import TradeProposal
from services.allocation.rebalance import Holdings, propose_trades
from services.data.models import PricingPack
from services.data.policy import Policy, PolicyOverrides, resolve_policy


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


@dataclass(frozen=True)
class ProposalInputs:
    """A request resolved against the store: what ``propose_trades`` is called with."""

    pack: PricingPack
    holdings: Holdings
    policy: Policy
    ratings: dict[str, float]
    benchmarks: dict[str, dict[str, float]]


def resolve(request: ProposeTradesInput, services: Services) -> ProposalInputs:
    """Read the pack, portfolio, template and ratings a request names; resolve its policy.

    Separate from ``handle`` so a batch can resolve here and compute on a cluster.
    """
    pack = services.store.get_pack(request.pricing_pack_id)
    holdings = resolve_holdings(request, services)
    template = services.store.get_policy_template(request.policy_id)[0] if request.policy_id else None
    policy = resolve_policy(services.constraint_defaults, template, request.policy, policy_id=request.policy_id)
    ratings = request.ratings if request.ratings is not None else services.store.get_ratings()
    return ProposalInputs(pack, holdings, policy, ratings, services.benchmarks)


def handle(request: ProposeTradesInput, ctx: RequestContext, services: Services) -> TradeProposal:
    inputs = resolve(request, services)
    return propose_trades(inputs.pack, inputs.holdings, inputs.policy, inputs.ratings, inputs.benchmarks)


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
