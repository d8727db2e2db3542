"""The shape of a trade proposal, as reported to people and programs.

Money is Decimal rounded to cents and serialized as a JSON number; weights and percentages are
floats rounded to a fixed number of decimals, so that the same inputs give byte-identical JSON.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

from services.tax.preview import TaxPreview

Money = Annotated[Decimal, PlainSerializer(float, return_type=float, when_used="json")]
PCT_DECIMALS = 4


def pct(x: float | None) -> float | None:
    """A fraction as a percentage rounded to PCT_DECIMALS (0.123456 → 12.3456)."""
    return None if x is None else round(float(x) * 100.0, PCT_DECIMALS) + 0.0


def ratio(x: float | None, decimals: int = 4) -> float | None:
    return None if x is None else round(float(x), decimals) + 0.0


class Trade(BaseModel):
    model_config = ConfigDict(frozen=True)

    symbol: str
    action: Literal["BUY", "SELL", "HOLD"]
    quantity: int = Field(description="Shares to trade (0 for HOLD).")
    current_shares: int
    target_shares: int
    current_weight_pct: float = Field(description="Weight before trading, % of portfolio value.")
    target_weight_pct: float = Field(description="Weight after trading and costs, % of value.")
    optimal_weight_pct: float = Field(description="The optimizer's continuous weight before rounding.")
    price: float = Field(description="The pricing pack's last close.")
    trade_value: Money = Field(description="quantity × price; 0 for HOLD.")
    estimated_cost: Money = Field(description="Commission + market impact for this trade.")
    sector: str
    rationale: str


class ConstraintCheck(BaseModel):
    model_config = ConfigDict(frozen=True)

    constraint: str
    value: float | None = Field(description="The proposal's value, in the constraint's unit.")
    limit: float | None
    met: bool


class RiskReturn(BaseModel):
    model_config = ConfigDict(frozen=True)

    expected_return_pct: float
    volatility_pct: float
    sharpe: float | None


class RiskModelInfo(BaseModel):
    """Which risk model and solve produced a proposal (reported when either was asked for, or
    when ``solve: auto`` chose fast)."""

    model_config = ConfigDict(frozen=True)

    risk_model: Literal["sample", "statistical", "fundamental"] = Field(
        description="The covariance every reported figure and limit uses.")
    k: int | None = Field(description="Factors of the risk model, or of the fast solve's approximation; "
                          "None for an exact solve of the sample covariance.")
    factors: list[str] = Field(default_factory=list, description="fundamental only: the factor series.")
    solve: Literal["exact", "fast"] = Field(description="exact: solved with the risk model itself; fast: "
                                            "solved with a k-factor approximation, checked under the full covariance.")
    solves: int = Field(description="Optimizer solves run (re-solves tighten the tracking-error limit).")


class EstimationInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    observations: int
    start: str
    end: str
    covariance_estimator: str
    expected_return_estimator: str
    annualization_days: int
    fallback: str | None = Field(None, description="Set when the engine fell back (e.g. equal_weight).")
    risk: RiskModelInfo | None = Field(
        None, exclude_if=lambda v: v is None,
        description="Risk model and solve; absent when neither was asked for and the sample covariance "
        "was solved exactly (the default up to 200 assets).")


class BlackLittermanInfo(BaseModel):
    """The Black–Litterman prior and posterior a proposal was optimized on (annualized)."""

    model_config = ConfigDict(frozen=True)

    risk_aversion: float = Field(description="δ of the prior π = rf + δΣw_b.")
    risk_aversion_source: Literal["policy", "benchmark"] = Field(
        description="policy: market_risk_aversion; benchmark: its historical excess return over its variance.")
    tau: float
    views: int = Field(description="Views blended into the prior.")
    symbols: list[str] = Field(description="The order of the returns and of the covariance's rows and columns.")
    prior_returns_pct: list[float] = Field(description="Market-implied returns π = rf + δΣw_b, % a year.")
    posterior_returns_pct: list[float] = Field(description="Posterior returns, % a year; the proposal's "
                                               "objective and expected returns use them.")
    posterior_covariance: list[list[float]] = Field(description="Posterior covariance Σ + M (annualized, decimal).")


class TradeProposal(BaseModel):
    """A constrained, costed, whole-share rebalance proposal."""

    model_config = ConfigDict(frozen=True)

    pricing_pack_id: str
    asof: str
    portfolio_id: str | None
    policy_id: str | None
    method: str
    trade_count: int
    trades: list[Trade]
    portfolio_value: Money
    cash_before: Money
    cash_after: Money
    value_after: Money = Field(description="Portfolio value after trading, net of costs.")
    total_trade_value: Money
    estimated_costs: Money
    cost_bps: float = Field(description="Costs in basis points of total trade value.")
    turnover_pct: float = Field(description="Σ|trade value| / portfolio value × 100.")
    forced_turnover_pct: float = Field(description="Forced sales plus redeployment of their proceeds.")
    discretionary_turnover_pct: float
    te_before_pct: float | None
    te_after_pct: float | None
    benchmark: str | None
    before: RiskReturn
    after: RiskReturn
    binding_constraints: list[str]
    constraints: list[ConstraintCheck]
    constraints_met: bool
    estimation: EstimationInfo | None
    black_litterman: BlackLittermanInfo | None = Field(
        None, exclude_if=lambda v: v is None,
        description="black_litterman only: prior, posterior returns and posterior covariance.")
    tax: TaxPreview | None = Field(
        None, exclude_if=lambda v: v is None,
        description="Taxable accounts only (the policy names tax_rates): the lots each sale takes and the "
        "estimated tax; absent for a tax-exempt account.")
    warnings: list[str]
