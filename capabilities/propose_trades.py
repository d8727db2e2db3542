"""``optimizer.propose_trades``: a constrained, costed, whole-share rebalance proposal."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    Field,
    field_validator,
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
from services.data.seeds import seed_pack_ids, seed_ratings_source
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
        None, description="Quality scores {symbol: 0-10}; defaults to the stored ratings (the shared ones "
        "overlaid by the caller's own, `optimizer ratings import`)."
    )
    cash_flow: Decimal | None = Field(
        None, allow_inf_nan=False, ge=-MAX_AMOUNT, le=MAX_AMOUNT, strict=False, exclude_if=omit_if_null,
        description="A deposit (positive) to invest or a withdrawal (negative) to raise, in the portfolio "
        "currency; a withdrawal larger than cash plus all holdings after costs is an error naming the shortfall.",
    )
    drift_band_pct: float | None = Field(
        None, ge=0, le=100, exclude_if=omit_if_null,
        description="With a deposit under method 'target': the largest drift from the target, in "
        "percentage points, that investing the deposit without any sale may leave; beyond it, holdings "
        "may be sold too. Unset: sales are considered only when the deposit alone cannot meet the "
        "policy's limits. The drift_rebalance pattern passes the band check_drift used.",
    )
    frontier_points: int | None = Field(
        None, ge=2, le=50, strict=True, exclude_if=omit_if_null,
        description="Also compute the efficient frontier: this many points (2-50) from the minimum-variance "
        "portfolio to the highest expected return, under the same policy limits, risk model and expected "
        "returns, with the current and proposed portfolios on the same axes (result field efficient_frontier).",
    )
    explain_limits: bool | None = Field(
        None, strict=True, exclude_if=omit_if_null,
        description="Also explain each binding limit in a sentence with its cost: the objective now and "
        "re-solved with that limit one point looser (result field binding_explanations). One extra solve "
        "per binding limit, at most 10: about 0.5 s each at 500 assets, so it is asked for, not default.",
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
    drift_band_pct: float | None = None
    notes: tuple[str, ...] = ()
    frontier_points: int | None = None
    explain_limits: bool = False
    lots: tuple[Lot, ...] | None = None
    wash_history: WashHistory | None = None


def resolve(request: ProposeTradesInput, services: Services, user: str | None = None) -> ProposalInputs:
    """Read the pack, portfolio, template and ratings a request names; resolve its policy.

    Stored ratings are the ones ``user`` sees (the shared ones overlaid by their own). Separate
    from ``handle`` so a batch can resolve here and compute on a cluster.
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
    notes: tuple[str, ...] = ()
    if request.ratings is not None:
        validate_ratings(pack, request.ratings)
        ratings = request.ratings
    else:
        stored = services.store.rating_sources(user)
        ratings = {s: score for s, (score, _) in stored.items()}
        notes = rating_provenance(pack, policy, {s: source for s, (_, source) in stored.items()},
                                  seed_pack_ids(), seed_ratings_source())
    history = wash_history(services, request.portfolio_id, pack.asof) if policy.taxable else None
    return ProposalInputs(pack, holdings, policy, ratings, services.benchmarks, request.cash_flow,
                          request.drift_band_pct, notes, request.frontier_points, bool(request.explain_limits),
                          lots, history)


def rating_provenance(pack: PricingPack, policy: Policy, sources: dict[str, str],
                      demo_packs: list[str], demo_source: str) -> tuple[str, ...]:
    """A warning naming where each stored rating of ``pack``'s symbols came from, when the demo's
    illustrative scores would decide eligibility on a pack the demo did not ship; else nothing.

    The demo ratings were written for the demo pack's names: on a user's own pack they must not
    filter holdings unannounced.
    """
    if policy.min_quality_score is None or pack.id in demo_packs:
        return ()
    applied = {s: sources[s] for s in pack.symbols if s in sources}
    if demo_source not in applied.values():
        return ()
    by_source: dict[str, list[str]] = {}
    for sym, source in sorted(applied.items()):
        by_source.setdefault(source, []).append(sym)
    listed = "; ".join(f"{', '.join(syms)} from {source}" for source, syms in sorted(by_source.items()))
    return (f"quality ratings from the store decide eligibility on pack {pack.id}: {listed}. Ratings from "
            f"'{demo_source}' are the demo's illustrative scores for pack {', '.join(demo_packs)}, not research; "
            "give ratings in the request or import your own (optimizer ratings import FILE.csv)",)


def handle(request: ProposeTradesInput, ctx: RequestContext, services: Services) -> TradeProposal:
    inputs = resolve(request, services, ctx.user)
    return propose_trades(inputs.pack, inputs.holdings, inputs.policy, inputs.ratings, inputs.benchmarks,
                          cash_flow=inputs.cash_flow, drift_band_pct=inputs.drift_band_pct, notes=inputs.notes,
                          frontier_points=inputs.frontier_points, explain_limits=inputs.explain_limits,
                          lots=inputs.lots, wash_history=inputs.wash_history)


class _TradeBrief(BaseModel):
    symbol: str
    action: str
    quantity: int
    target_weight_pct: float
    trade_value: float
    estimated_cost: float


class _FrontierBrief(BaseModel):
    """The efficient frontier compactly: [volatility %, expected return %] pairs, 2 decimals."""

    points: list[tuple[float, float]] = Field(description="[volatility_pct, expected_return_pct] by volatility.")
    current: tuple[float, float]
    proposed: tuple[float, float]

    @model_validator(mode="before")
    @classmethod
    def _pairs(cls, full: Any) -> Any:
        if isinstance(full, dict) and "limits" in full:
            def pair(r: dict[str, Any]) -> tuple[float, float]:
                return round(r["volatility_pct"], 2), round(r["expected_return_pct"], 2)
            return {"points": [pair(r) for r in full["points"]], "current": pair(full["current"]),
                    "proposed": pair(full["proposed"])}
        return full


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
    binding_explanations: list[str] = Field(
        default_factory=list, exclude_if=lambda v: not v,
        description="Asked for with explain_limits: per binding constraint, what relaxing it by one point would "
        "gain; absent otherwise.")
    constraints_met: bool
    efficient_frontier: _FrontierBrief | None = Field(
        None, exclude_if=omit_if_null, description="Asked for with frontier_points; the full view has the "
        "Sharpe ratios and the limits the points respect.")
    tax: TaxBrief | None = Field(None, exclude_if=lambda v: v is None,
                                 description="Taxable accounts only: realized gains and losses and the estimated tax.")
    warnings: list[str]

    @model_validator(mode="before")
    @classmethod
    def _proposal_id(cls, full: Any) -> Any:
        if isinstance(full, dict) and "proposal_id" not in full:
            return {**full, "proposal_id": proposal_id(full["_metadata"]["inputs_hash"])}
        return full

    @field_validator("binding_explanations", mode="before")
    @classmethod
    def _sentences(cls, explanations: Any) -> Any:
        return [e["explanation"] if isinstance(e, dict) else e for e in explanations]


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
