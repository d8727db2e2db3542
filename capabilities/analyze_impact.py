"""``optimizer.analyze_impact``: what a list of trades does to a portfolio's risk, concentration and value."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    Field,
    create_model,
    model_validator,
)

from capabilities.base import Capability, RequestContext, Services
from capabilities.common import STRICT, PortfolioRequest, resolve_portfolio, wash_history
from capabilities.views import PROPOSAL_ID, PROPOSAL_PREFIX, Summary, TaxBrief
from services.allocation.proposal import Trade
from services.analytics.impact import ImpactReport, TradeOrder, analyze_impact
from services.analytics.risk import VAR_CONFIDENCE
from services.data.bounds import MAX_AMOUNT, MAX_CLOSE, MAX_COMMISSION, MAX_SHARES, MIN_CLOSE
from services.data.policy import (
    LotSelection,
    PolicyOverrides,
    TaxRates,
    omit_if_null,
    resolve_policy,
)
from services.errors import InputError, NotFoundError

_USED = ("symbol", "action", "quantity", "price", "current_shares")


class _TradeFields(BaseModel):
    model_config = STRICT

    symbol: str = Field(min_length=1, max_length=64, description="Ticker as it appears in the pricing pack.")
    action: Literal["BUY", "SELL", "HOLD"] = Field(description="HOLD is a no-op.")
    quantity: int = Field(ge=0, le=MAX_SHARES, description="Whole shares to trade (0 for HOLD).")
    price: float | None = Field(
        None, ge=MIN_CLOSE, le=MAX_CLOSE,
        description="Optional quoted price; the pack's last close is always used (a warning notes a difference).",
    )
    current_shares: int | None = Field(
        None, ge=0, le=MAX_SHARES,
        description="Optional shares the proposal assumed held; a warning notes a difference.",
    )


# A propose_trades trade is accepted as it is: its other fields are declared (so the schema shows
# them and a misspelt key is still an error) and ignored. Built from ``Trade`` so the two cannot
# drift apart.
ProposedTradeIn = create_model(
    "ProposedTradeIn",
    __base__=_TradeFields,
    __doc__="A trade: plain {symbol, action, quantity}, or a propose_trades trade with its extra fields.",
    **{
        # Not strict: these come back as a propose_trades result serialized them (money as numbers).
        name: (info.annotation | None,
               Field(None, strict=False, description="Ignored (accepted from propose_trades results)."))
        for name, info in Trade.model_fields.items()
        if name not in _USED
    },
)


class AnalyzeImpactInput(PortfolioRequest):
    """Apply trades to a portfolio and compare risk before and after."""

    proposed_trades: list[ProposedTradeIn] | None = Field(  # type: ignore[valid-type]
        None,
        description="Trades to apply: the 'trades' of an optimizer.propose_trades result, or "
        "{symbol, action, quantity} items. Each symbol at most once. Give this or 'proposal_id'.",
    )
    proposal_id: str | None = Field(
        None,
        pattern=PROPOSAL_ID.pattern,
        exclude_if=omit_if_null,
        description="Id of a proposal you made with optimizer.propose_trades ('prop_' and 16 hex "
        "digits, its 'proposal_id'); its trades are applied. Give this or 'proposed_trades'.",
    )
    benchmark: str | dict[str, Annotated[float, Field(ge=0, le=100)]] | None = Field(
        "DEMO_20",
        description="Benchmark for tracking error: an index symbol in the pack (e.g. 'SP500'), a named "
        "benchmark (e.g. 'DEMO_20'), explicit weights {symbol: weight} summing to 1 (or 100), or null.",
    )
    lookback_days: int = Field(756, ge=2, le=5000, description="Number of most recent daily returns used.")
    commission_per_trade: Decimal | None = Field(
        None, ge=0, le=MAX_COMMISSION, allow_inf_nan=False, strict=False,
        description="Fixed commission per trade; defaults to the policy default ($5.00).",
    )
    market_impact_bps: float | None = Field(
        None, ge=0, le=1000, description="Market impact in basis points of trade value; defaults to 15."
    )
    cash_flow: Decimal | None = Field(
        None, allow_inf_nan=False, ge=-MAX_AMOUNT, le=MAX_AMOUNT, strict=False, exclude_if=omit_if_null,
        description="A deposit (positive, in the cash before trading) or withdrawal (negative, taken from "
        "the cash after trading) that the trades invest or raise.",
    )

    tax_rates: TaxRates | None = Field(
        None, exclude_if=omit_if_null,
        description="Makes the account taxable: short- and long-term rates in % "
        "({\"short_term_pct\": 37, \"long_term_pct\": 20}); the report then previews the tax of the sales lot by lot.",
    )
    holding_period_days: int | None = Field(
        None, ge=1, le=36500, exclude_if=omit_if_null,
        description="With tax_rates: a lot held more than this many days on the pack's asof is long-term (default 365).",
    )
    lot_selection: LotSelection | None = Field(
        None, exclude_if=omit_if_null,
        description="With tax_rates: which lots the sales take: optimal (least tax, default), hifo, fifo or specific.",
    )
    specific_lots: list[Annotated[int, Field(ge=1)]] | None = Field(
        None, max_length=10000, exclude_if=omit_if_null,
        description="lot_selection 'specific' only: lot numbers (portfolios show ID --json) in the order sales take them.",
    )

    @model_validator(mode="after")
    def _one_trade_source(self) -> AnalyzeImpactInput:
        if (self.proposed_trades is None) == (self.proposal_id is None):
            raise ValueError("give exactly one of 'proposed_trades' (a trade list) or 'proposal_id' (a stored proposal)")
        return self


def proposal_trades(request: AnalyzeImpactInput, ctx: RequestContext, services: Services) -> list[Any]:
    """The trades of the request, or of the caller's stored proposal it names.

    Raises:
        NotFoundError: no proposal with that id was made by the caller (another user's proposal
            gives the same error).
        InputError: the proposal is about another stored portfolio or pricing pack.
    """
    if request.proposal_id is None:
        assert request.proposed_trades is not None
        return list(request.proposed_trades)
    found = services.store.find_proposal(
        "optimizer.propose_trades", request.proposal_id.removeprefix(PROPOSAL_PREFIX), ctx.user
    )
    if found is None:
        raise NotFoundError(
            f"proposal '{request.proposal_id}' not found; optimizer.propose_trades returns the id of "
            "each proposal you make",
            details={"field": "proposal_id", "value": request.proposal_id},
        )
    for field, stored in (("portfolio_id", found["portfolio_id"]), ("pricing_pack_id", found["pricing_pack_id"])):
        asked = getattr(request, field)
        if stored is not None and asked != stored:
            raise InputError(
                f"proposal '{request.proposal_id}' was made for {field} '{stored}', not '{asked}'; "
                f"give {field} '{stored}' or pass the trades as proposed_trades",
                details={"field": field, "value": asked, "allowed": [stored]},
            )
    return [ProposedTradeIn.model_validate(t) for t in found["result"]["trades"]]


def handle(request: AnalyzeImpactInput, ctx: RequestContext, services: Services) -> ImpactReport:
    trades = proposal_trades(request, ctx, services)
    pack = services.store.get_pack(request.pricing_pack_id)
    holdings, lots = resolve_portfolio(request, services)
    fields: dict[str, Any] = {"benchmark": request.benchmark, "lookback_days": request.lookback_days}
    for name in ("tax_rates", "holding_period_days", "lot_selection", "specific_lots"):
        if getattr(request, name) is not None:
            fields[name] = getattr(request, name)
    if request.commission_per_trade is not None:
        fields["commission_per_trade"] = request.commission_per_trade
    if request.market_impact_bps is not None:
        fields["market_impact_bps"] = request.market_impact_bps
    policy = resolve_policy(services.constraint_defaults, None, PolicyOverrides.model_validate(fields), policy_id=None)
    orders = [
        TradeOrder(symbol=t.symbol, action=t.action, quantity=t.quantity,
                   quoted_price=t.price, quoted_current_shares=t.current_shares)
        for t in trades
    ]
    return analyze_impact(pack, holdings, orders, policy, services.benchmarks,
                          cash_flow=request.cash_flow or Decimal("0"), lots=lots,
                          wash_history=wash_history(services, request.portfolio_id, pack.asof) if policy.taxable else None)


class _RiskBrief(BaseModel):
    value: float
    cash: float
    holdings_count: int
    expected_return_pct: float
    volatility_pct: float
    sharpe: float
    max_drawdown_pct: float
    var_95_1d_pct: float
    cvar_95_1d_pct: float
    beta: float | None
    tracking_error_pct: float | None


class _AppliedBrief(BaseModel):
    symbol: str
    action: str
    quantity: int
    trade_value: float
    estimated_cost: float


class ImpactSummary(Summary):
    """What the trades change: value, costs, concentration and the risk figures before and after."""

    pricing_pack_id: str
    asof: str
    portfolio_id: str | None
    benchmark: str | None
    current_value: float
    post_rebalance_value: float
    estimated_costs: float
    cash_before: float
    cash_after: float
    trades_applied: list[_AppliedBrief]
    current_concentration_top10: float
    post_concentration_top10: float
    before: _RiskBrief
    after: _RiskBrief
    tax: TaxBrief | None = Field(None, exclude_if=lambda v: v is None,
                                 description="Taxable accounts only: realized gains and losses and the estimated tax.")
    warnings: list[str]


ANALYZE_IMPACT = Capability(
    name="optimizer.analyze_impact",
    description=(
        "Apply proposed trades (a trade list, or the proposal_id of an optimizer.propose_trades result) "
        "to a portfolio and report costs, "
        "value, concentration, volatility, Sharpe, drawdown, VaR/CVaR, beta, tracking error, sector "
        "weights and risk contributions before and after, priced from a named pricing pack."
    ),
    input_model=AnalyzeImpactInput,
    output_model=ImpactReport,
    summary_model=ImpactSummary,
    check_access=proposal_trades,
    handler=handle,
    ttl_seconds=300,
    engine={"var": "historical, numpy.percentile (linear)", "var_confidence": VAR_CONFIDENCE,
            "risk_contributions": "w_i (Σw)_i / w'Σw", "random_seed": None},
)
