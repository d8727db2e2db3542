"""``optimizer.analyze_impact``: what a list of trades does to a portfolio's risk, concentration and value."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    create_model,
    model_serializer,
)

from capabilities.base import Capability, RequestContext, Services
from capabilities.common import PortfolioRequest, resolve_holdings
from services.allocation.proposal import Trade
from services.analytics.impact import ImpactReport, TradeOrder, analyze_impact
from services.analytics.risk import VAR_CONFIDENCE
from services.data.policy import PolicyOverrides, resolve_policy

_USED = ("symbol", "action", "quantity", "price", "current_shares")


class _TradeFields(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    symbol: str = Field(min_length=1, description="Ticker as it appears in the pricing pack.")
    action: Literal["BUY", "SELL", "HOLD"] = Field(description="HOLD is a no-op.")
    quantity: int = Field(ge=0, description="Whole shares to trade (0 for HOLD).")
    price: float | None = Field(
        None, description="Optional quoted price; the pack's last close is always used (a warning notes a difference)."
    )
    current_shares: int | None = Field(
        None, description="Optional shares the proposal assumed held; a warning notes a difference."
    )


# A propose_trades trade is accepted as it is: its other fields are declared (so the schema shows
# them and a misspelt key is still an error) and ignored. Built from ``Trade`` so the two cannot
# drift apart.
ProposedTradeIn = create_model(
    "ProposedTradeIn",
    __base__=_TradeFields,
    __doc__="A trade: plain {symbol, action, quantity}, or a propose_trades trade with its extra fields.",
    **{
        name: (info.annotation | None, Field(None, description="Ignored (accepted from propose_trades results)."))
        for name, info in Trade.model_fields.items()
        if name not in _USED
    },
)


class AnalyzeImpactInput(PortfolioRequest):
    """Apply trades to a portfolio and compare risk before and after."""

    proposed_trades: list[ProposedTradeIn] = Field(  # type: ignore[valid-type]
        description="Trades to apply: the 'trades' of an optimizer.propose_trades result, or "
        "{symbol, action, quantity} items. Each symbol at most once."
    )
    benchmark: str | dict[str, float] | None = Field(
        "DEMO_20",
        description="Benchmark for tracking error: an index symbol in the pack (e.g. 'SP500'), a named "
        "benchmark (e.g. 'DEMO_20'), explicit weights {symbol: weight} summing to 1 (or 100), or null.",
    )
    lookback_days: int = Field(756, ge=2, le=5000, description="Number of most recent daily returns used.")
    commission_per_trade: Decimal | None = Field(
        None, ge=0, allow_inf_nan=False, description="Fixed commission per trade; defaults to the policy default ($5.00)."
    )
    market_impact_bps: float | None = Field(
        None, ge=0, le=1000, description="Market impact in basis points of trade value; defaults to 15."
    )
    cash_flow: Decimal | None = Field(
        None, allow_inf_nan=False,
        description="A deposit (positive, in the cash before trading) or withdrawal (negative, taken from "
        "the cash after trading) that the trades invest or raise.",
    )

    @model_serializer(mode="wrap")
    def _omit_unset_cash_flow(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Left out while unset, so requests made before the field existed keep their inputs hash.
        data = handler(self)
        if data.get("cash_flow") is None:
            data.pop("cash_flow", None)
        return data


def handle(request: AnalyzeImpactInput, ctx: RequestContext, services: Services) -> ImpactReport:
    pack = services.store.get_pack(request.pricing_pack_id)
    holdings = resolve_holdings(request, services)
    fields: dict[str, Any] = {"benchmark": request.benchmark, "lookback_days": request.lookback_days}
    if request.commission_per_trade is not None:
        fields["commission_per_trade"] = request.commission_per_trade
    if request.market_impact_bps is not None:
        fields["market_impact_bps"] = request.market_impact_bps
    policy = resolve_policy(services.constraint_defaults, None, PolicyOverrides.model_validate(fields), policy_id=None)
    orders = [
        TradeOrder(symbol=t.symbol, action=t.action, quantity=t.quantity,
                   quoted_price=t.price, quoted_current_shares=t.current_shares)
        for t in request.proposed_trades
    ]
    return analyze_impact(pack, holdings, orders, policy, services.benchmarks,
                          cash_flow=request.cash_flow or Decimal("0"))


ANALYZE_IMPACT = Capability(
    name="optimizer.analyze_impact",
    description=(
        "Apply proposed trades (e.g. from optimizer.propose_trades) to a portfolio and report costs, "
        "value, concentration, volatility, Sharpe, drawdown, VaR/CVaR, beta, tracking error, sector "
        "weights and risk contributions before and after, priced from a named pricing pack."
    ),
    input_model=AnalyzeImpactInput,
    output_model=ImpactReport,
    handler=handle,
    ttl_seconds=300,
    engine={"var": "historical, numpy.percentile (linear)", "var_confidence": VAR_CONFIDENCE,
            "risk_contributions": "w_i (Σw)_i / w'Σw", "random_seed": None},
)
