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
    expected_return_sources: dict[str, str] | None = Field(
        None, exclude_if=lambda v: v is None,
        description="expected_return_estimator 'user': per symbol, 'forecast' or the fallback estimator "
        "its expected return came from.")
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


class BindingExplanation(BaseModel):
    """A binding limit in words, with what one more point of it would gain (re-solved with it relaxed)."""

    model_config = ConfigDict(frozen=True)

    constraint: str = Field(description="The id in binding_constraints.")
    limit_pct: float = Field(description="The limit's value in % (for a restricted holding, its weight).")
    objective: str | None = Field(description="The objective the figures are in; None when no figure is computed.")
    value: float | None = Field(description="The objective at the optimal (continuous) weights: Sharpe ratio, "
                                "volatility %, utility % or daily CVaR %.")
    relaxed_value: float | None = Field(description="The objective re-solved with the limit one point looser.")
    explanation: str


class EfficientFrontier(BaseModel):
    """The efficient frontier under the policy's limits, with the current and proposed portfolios."""

    model_config = ConfigDict(frozen=True)

    points: list[RiskReturn] = Field(description="From the minimum-variance portfolio to the highest expected "
                                     "return the limits allow, ordered by volatility; each the least-variance "
                                     "portfolio at its expected return, under every limit of the policy.")
    current: RiskReturn = Field(description="The portfolio before trading (as ``before``).")
    proposed: RiskReturn = Field(description="The proposal after trading, whole shares and costs (as ``after``).")
    limits: str = Field(description="The policy limits every point respects.")
class RiskContributionInfo(BaseModel):
    """risk_budgeting: each name's share of portfolio variance, w_i(Σw)_i / w'Σw, against its budget."""

    model_config = ConfigDict(frozen=True)

    symbols: list[str] = Field(description="The decision assets, sorted; the order of the lists below.")
    budget_pct: list[float] = Field(description="Risk budget, % of total risk (the budgets sum to 100).")
    optimal_pct: list[float] = Field(description="Risk contribution of the optimizer's continuous weights, %.")
    after_pct: list[float] = Field(description="Risk contribution after rounding to whole shares, %.")


class RiskMeasureInfo(BaseModel):
    """min_risk: the scenario risk measure minimized, of the daily returns over the lookback."""

    model_config = ConfigDict(frozen=True)

    measure: Literal["cvar", "cdar", "mad", "semi_variance", "evar"]
    confidence: float | None = Field(description="cvar, cdar, evar: the confidence level; null otherwise.")
    before_pct: float = Field(description="The measure of the portfolio before trading, % of value (daily).")
    after_pct: float = Field(description="The measure of the whole-share portfolio after trading, % (daily).")


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
    binding_explanations: list[BindingExplanation] = Field(
        default_factory=list, exclude_if=lambda v: not v,
        description="Asked for with explain_limits: per binding constraint, a sentence with what relaxing it by "
        "one point would gain in the objective's units (re-solved with it relaxed); absent otherwise.")
    constraints: list[ConstraintCheck]
    constraints_met: bool
    estimation: EstimationInfo | None
    black_litterman: BlackLittermanInfo | None = Field(
        None, exclude_if=lambda v: v is None,
        description="black_litterman only: prior, posterior returns and posterior covariance.")
    efficient_frontier: EfficientFrontier | None = Field(
        None, exclude_if=lambda v: v is None,
        description="Asked for with frontier_points: the efficient frontier under the policy's limits, with "
        "the same risk model and expected returns as the proposal.")
    risk_contributions: RiskContributionInfo | None = Field(
        None, exclude_if=lambda v: v is None,
        description="risk_budgeting only: risk budgets and the achieved risk contributions.")
    risk_measure: RiskMeasureInfo | None = Field(
        None, exclude_if=lambda v: v is None,
        description="min_risk with a scenario measure only: the measure before and after trading.")
    tax: TaxPreview | None = Field(
        None, exclude_if=lambda v: v is None,
        description="Taxable accounts only (the policy names tax_rates): the lots each sale takes and the "
        "estimated tax; absent for a tax-exempt account.")
    warnings: list[str]
