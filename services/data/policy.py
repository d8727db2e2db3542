"""Optimizer policies: the fields, their units and defaults, and how templates are resolved.

Every ``*_pct`` field is a percentage (15.0 means 15%). A resolved policy is the constraint
defaults, overlaid by a template (if named), overlaid by the fields the request gives.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from services.data.bounds import MAX_AMOUNT, MAX_COMMISSION, MAX_RISK_AVERSION
from services.errors import InputError

Method = Literal["mean_variance", "max_sharpe", "min_variance", "risk_parity", "cvar", "hrp", "target",
                 "max_sortino", "max_information_ratio", "black_litterman",
                 "risk_budgeting", "herc", "min_risk", "max_return", "robust", "multi_objective"]
RiskMeasure = Literal["variance", "cvar", "cdar", "mad", "semi_variance", "evar"]
UncertaintySet = Literal["box", "ellipsoid"]
ObjectiveTerm = Literal["return", "variance", "tracking_error", "turnover", "cost"]
BlackLittermanObjective = Literal["max_sharpe", "mean_variance", "min_variance"]
CovarianceEstimator = Literal["hist", "ledoit", "oas", "ewma"]
ReturnEstimator = Literal["hist", "ewma", "capm", "factor", "user"]
ForecastFallback = Literal["hist", "ewma", "capm", "factor"]
RiskModelName = Literal["sample", "factor"]
FactorModel = Literal["statistical", "fundamental"]
SolveMode = Literal["exact", "fast", "auto"]
LotSelection = Literal["optimal", "hifo", "fifo", "specific"]
FAST_ABOVE_ASSETS = 200  # solve "auto": exact up to this many decision assets, fast above


def omit_if_null(value: Any) -> bool:
    """``exclude_if`` of an optional field added after results were first hashed: left out of
    dumps while null, so requests and results that never name it hash and serialize exactly as
    before the field existed (a cache key, and an inputs hash recorded in golden files)."""
    return value is None


class View(BaseModel):
    """A Black–Litterman view: ``asset`` returns ``return_pct`` a year, or, with ``versus``,
    outperforms ``versus`` by ``return_pct`` a year."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True, frozen=True)

    asset: str = Field(min_length=1, description="The symbol the view is about.")
    versus: str | None = Field(
        None, min_length=1, exclude_if=omit_if_null,
        description="Relative view: the symbol ``asset`` outperforms by return_pct; absent for an absolute view.",
    )
    return_pct: float = Field(
        ge=-100, le=100, description="Annual expected return (absolute) or outperformance (relative), in % (8.0 = 8%).")
    confidence: float = Field(
        gt=0, le=1, description="Confidence in the view, (0, 1]: 0.5 weighs it like the prior, 1 holds it exactly.")


class TaxRates(BaseModel):
    """The tax rates of a taxable account, in % of a realized gain (37.0 = 37%)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True, frozen=True)

    short_term_pct: float = Field(ge=0, le=100, description="Rate on gains of lots held holding_period_days or less, in %.")
    long_term_pct: float = Field(ge=0, le=100, description="Rate on gains of lots held longer than holding_period_days, in %.")


class PolicyOverrides(BaseModel):
    """Policy fields a request may set; any field left out comes from the template or defaults."""

    # Strict: a number must be a number (no "5" or true); money fields (Decimal) also take decimal
    # strings, the lossless way to write cents, and the form templates are stored in.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)

    universe: Literal["holdings", "pack"] | list[str] | None = Field(
        None,
        description="Which securities may be held: 'holdings' (only names already held may be "
        "bought), 'pack' (any equity or ETF in the pricing pack), or an explicit list of symbols.",
    )
    method: Method | None = Field(None, description="Optimization objective.")
    risk_aversion: float | None = Field(
        None, ge=0, le=MAX_RISK_AVERSION, description="mean_variance only: maximize mu'w - risk_aversion * w'Σw (annualized)."
    )
    min_quality_score: float | None = Field(
        None, ge=0, le=10, description="Holdings rated below this are sold in full and never bought."
    )
    unrated: Literal["eligible", "exclude"] | None = Field(
        None, description="What to do with securities that have no quality rating."
    )
    max_single_position_pct: float | None = Field(
        None, gt=0, le=100, description="Largest weight of any one security, % of portfolio value."
    )
    max_sector_pct: float | None = Field(
        None, gt=0, le=100, description="Largest weight of any one sector, % of portfolio value."
    )
    sector_limits_pct: dict[str, Annotated[float, Field(ge=0, le=100)]] | None = Field(
        None, description="Per-sector caps in % (0 excludes the sector), overriding max_sector_pct for the "
        "sectors named; each key must be a sector of the pricing pack."
    )
    asset_class_limits_pct: dict[str, Annotated[float, Field(ge=0, le=100)]] | None = Field(
        None, exclude_if=omit_if_null,
        description="Per-asset-class caps in % of value (e.g. {\"etf\": 20}; 0 excludes the class); each key "
        "must be an asset class of the pricing pack's holdable securities (the demo's: equity, etf).",
    )
    max_tracking_error_pct: float | None = Field(
        None, gt=0, le=100, description="Ex-ante annualized tracking error limit vs benchmark, in %."
    )
    benchmark: str | dict[str, Annotated[float, Field(ge=0, le=100)]] | None = Field(
        None,
        description="An index symbol in the pack (e.g. 'SP500'), a named benchmark from the seeds "
        "(e.g. 'DEMO_20'), or explicit weights {symbol: weight} that sum to 1 (or to 100).",
    )
    max_turnover_pct: float | None = Field(
        None, ge=0, le=200, description="Limit on discretionary turnover: sum |trade value| / value."
    )
    lookback_days: int | None = Field(
        None, ge=2, le=5000, description="Number of most recent daily returns used to estimate."
    )
    risk_free_rate: float | None = Field(
        None, ge=-0.05, le=0.5, description="Annual risk-free rate as a decimal (0.02 = 2%)."
    )
    commission_per_trade: Decimal | None = Field(
        None, ge=0, le=MAX_COMMISSION, strict=False, description="Fixed commission per executed trade, in the portfolio currency."
    )
    market_impact_bps: float | None = Field(
        None, ge=0, le=1000, description="Market impact per trade in basis points of trade value."
    )
    min_trade_value: Decimal | None = Field(
        None, ge=0, le=MAX_AMOUNT, strict=False, description="Trades smaller than this value are dropped (forced sells excepted)."
    )
    cash_buffer_pct: float | None = Field(
        None, ge=0, lt=100, description="Cash kept uninvested, % of portfolio value."
    )
    covariance_estimator: CovarianceEstimator | None = Field(
        None, description="Covariance estimator: hist, ledoit (Ledoit-Wolf), oas, ewma."
    )
    expected_return_estimator: ReturnEstimator | None = Field(
        None, description="Expected-return estimator: hist, ewma, capm (beta to SP500 index), factor "
        "(rf + betas to factor_symbols × their historical premia), user (policy.forecasts)."
    )
    forecasts: dict[str, Annotated[float, Field(ge=-100, le=1000)]] | None = Field(
        None, exclude_if=omit_if_null,
        description="expected_return_estimator 'user' only: annual expected return in % per symbol "
        "(8.0 = 8%); symbols must be holdable names of the pack; names without one take forecast_fallback.",
    )
    forecast_fallback: ForecastFallback | None = Field(
        None, exclude_if=omit_if_null,
        description="expected_return_estimator 'user' only: the estimator for names without a forecast "
        "(hist, ewma, capm, factor; default hist), reported per symbol.",
    )
    ewma_decay: float | None = Field(
        None, gt=0, lt=1, description="Decay factor for ewma estimators (RiskMetrics uses 0.94)."
    )
    cvar_confidence: float | None = Field(
        None, gt=0.5, lt=1, description="cvar, and min_risk with risk_measure cvar, cdar or evar: confidence "
        "level of the daily tail measure minimized."
    )
    views: list[View] | None = Field(
        None, max_length=100, exclude_if=omit_if_null,
        description="black_litterman only: views on annual returns, absolute {asset, return_pct, confidence} "
        "or relative {asset, versus, return_pct, confidence}.",
    )
    bl_objective: BlackLittermanObjective | None = Field(
        None, exclude_if=omit_if_null,
        description="black_litterman only: the objective over the posterior returns, max_sharpe (default), "
        "mean_variance (with risk_aversion) or min_variance (with bl_min_return_pct).",
    )
    bl_min_return_pct: float | None = Field(
        None, ge=-100, le=1000, exclude_if=omit_if_null,
        description="black_litterman with bl_objective min_variance (required there): the least posterior "
        "expected return, annual % (cash earns the risk-free rate); the least variance that reaches it.",
    )
    bl_tau: float | None = Field(
        None, gt=0, le=1, exclude_if=omit_if_null,
        description="black_litterman only: τ, the uncertainty of the prior relative to the covariance (default 0.05).",
    )
    market_risk_aversion: float | None = Field(
        None, gt=0, le=MAX_RISK_AVERSION, exclude_if=omit_if_null,
        description="black_litterman only: δ of the market-implied prior π = δΣw_b; default the benchmark's "
        "historical excess return over its variance.",
    )
    min_acceptable_return: float | None = Field(
        None, ge=-0.5, le=1, exclude_if=omit_if_null,
        description="max_sortino only: annual minimum acceptable return as a decimal (0.05 = 5%); the "
        "downside deviation counts daily returns below it / annualization days. Default: risk_free_rate.",
    )
    risk_budget: dict[str, Annotated[float, Field(ge=0, le=1e6)]] | None = Field(
        None, exclude_if=omit_if_null,
        description="risk_budgeting only: relative risk budgets, either per symbol {symbol: b} or per sector "
        "{sector: b} (a sector's budget is split equally among its eligible names); normalized to sum 1. "
        "An eligible symbol left out gets budget 0 and is not held. Default: equal budgets (risk parity).",
    )
    risk_measure: RiskMeasure | None = Field(
        None, exclude_if=omit_if_null,
        description="min_risk only: the risk measure minimized over the lookback's daily returns: variance "
        "(default), cvar, cdar (conditional drawdown), mad (mean absolute deviation), semi_variance (below "
        "the mean), evar (entropic value at risk); cvar, cdar and evar at cvar_confidence.",
    )
    robust_uncertainty: UncertaintySet | None = Field(
        None, exclude_if=omit_if_null,
        description="robust only: the set the expected returns may lie in, 'ellipsoid' (default, from the "
        "estimate's covariance Σ/T) or 'box' (each return ± its standard error times a normal quantile).",
    )
    robust_confidence: float | None = Field(
        None, ge=0.5, lt=1, exclude_if=omit_if_null,
        description="robust only: confidence that the true expected returns lie in the set (default 0.95).",
    )
    objective_weights: dict[ObjectiveTerm, Annotated[float, Field(ge=0, le=1e6)]] | None = Field(
        None, exclude_if=omit_if_null,
        description="multi_objective only: weights of return, variance, tracking_error (squared, needs a "
        "benchmark), turnover and cost (linear market impact) in the maximized sum return − variance − ...; "
        "terms left out weigh 0. Default: {return: 1, variance: risk_aversion}.",
    )
    target_weights_pct: dict[str, float] | None = Field(
        None, exclude_if=omit_if_null,
        description="target only: weights {symbol: %} to move toward (the rest of 100% is cash); "
        "by default the portfolio's stored target (`optimizer targets set`).",
    )
    approval_threshold: Decimal | None = Field(
        None, exclude_if=omit_if_null, ge=0, le=MAX_AMOUNT, strict=False, description="Total trade value above which a person must approve before booking."
    )
    min_position_pct: float | None = Field(
        None, exclude_if=omit_if_null, gt=0, le=100, description="No position smaller than this % of value after trading, other than zero."
    )
    min_weight_pct: Annotated[float, Field(ge=0, le=100)] | dict[str, Annotated[float, Field(ge=0, le=100)]] | None = Field(
        None, exclude_if=omit_if_null,
        description="A floor per position, % of value after trading: one number for every eligible symbol, or "
        "{symbol: %} for the symbols named (each must be eligible to hold). Held in whole shares.",
    )
    allow_short: bool | None = Field(
        None, exclude_if=omit_if_null,
        description="Allow short positions (negative weights and target_shares) for an account that permits them; "
        "methods max_sharpe, mean_variance and min_variance only. Default false: long only.",
    )
    max_leverage: float | None = Field(
        None, gt=0, le=10, exclude_if=omit_if_null,
        description="Gross exposure limit with allow_short: the sum of |weights| as a multiple of value "
        "(1.5 = 150%: e.g. 125% long, 25% short). Default 1.0 when allow_short is true.",
    )
    restricted_symbols: list[str] | None = Field(
        None, exclude_if=omit_if_null, description="Never bought (a holding may be kept or sold), e.g. the client's employer."
    )
    frozen_symbols: list[str] | None = Field(
        None, exclude_if=omit_if_null, description="Never traded: neither bought nor sold (pledged or employee-restricted shares)."
    )

    risk_model: RiskModelName | None = Field(
        None, exclude_if=omit_if_null,
        description="The risk model every figure and limit uses: 'sample' (the covariance estimator's "
        "full matrix, default) or 'factor' (a k-factor model with diagonal specific risk, see factor_model).",
    )
    factor_model: FactorModel | None = Field(
        None, exclude_if=omit_if_null,
        description="risk_model 'factor' only: 'statistical' (k principal components of the estimated "
        "covariance, default) or 'fundamental' (regression on factor series of the pack).",
    )
    factor_count: int | None = Field(
        None, ge=1, le=50, exclude_if=omit_if_null,
        description="Statistical factors k (1-50); default ceil(sqrt(assets)), at most 50. Also the k "
        "of solve 'fast'.",
    )
    factor_symbols: list[str] | None = Field(
        None, min_length=1, max_length=50, exclude_if=omit_if_null,
        description="factor_model 'fundamental' and expected_return_estimator 'factor': the pack series "
        "used as factors; default every index and ETF series of the pack.",
    )
    solve: SolveMode | None = Field(
        None, exclude_if=omit_if_null,
        description="'exact' solves with the full covariance; 'fast' with a k-factor approximation of "
        f"it, then checks every limit under the full covariance; 'auto' (default) is exact up to "
        f"{FAST_ABOVE_ASSETS} assets and fast above.",
    )

    tax_rates: TaxRates | None = Field(
        None, exclude_if=omit_if_null,
        description="Makes the account taxable: short- and long-term rates in % of realized gains "
        "({\"short_term_pct\": 37, \"long_term_pct\": 20}); absent, the account is tax-exempt and no tax is reported.",
    )
    holding_period_days: int | None = Field(
        None, ge=1, le=36500, exclude_if=omit_if_null,
        description="Taxable only: a lot held more than this many days on the pack's asof is long-term (default 365).",
    )
    lot_selection: LotSelection | None = Field(
        None, exclude_if=omit_if_null,
        description="Taxable only: which lots a sale takes: 'optimal' (default: least tax first), 'hifo' "
        "(highest cost basis first), 'fifo' (oldest first) or 'specific' (the lots in specific_lots).",
    )
    specific_lots: list[Annotated[int, Field(ge=1)]] | None = Field(
        None, max_length=10000, exclude_if=omit_if_null,
        description="lot_selection 'specific' only: lot numbers (lot_no of `optimizer portfolios show ID --json`) "
        "in the order sales take them.",
    )
    avoid_short_term_gains: bool | None = Field(
        None, exclude_if=omit_if_null,
        description="Taxable only (default true): no lot with a short-term gain is sold unless the sale is forced.",
    )
    max_realized_gain: Decimal | None = Field(
        None, ge=0, le=MAX_AMOUNT, strict=False, exclude_if=omit_if_null,
        description="Taxable only: a cap on net realized gains (short- plus long-term, in the portfolio currency) "
        "of this rebalance.",
    )
    tax_aversion: float | None = Field(
        None, gt=0, le=1e6, exclude_if=omit_if_null,
        description="Taxable only, objectives without an expected return (method target, risk_parity, hrp, herc: "
        "distance to the target; min_variance: variance): charge the estimated tax (and, with costs_in_objective, "
        "the trading costs) in the objective at this exchange rate: squared distance or variance, in %², worth 1% "
        "of portfolio value in tax. The optimizer then minimizes distance² (%²) + tax_aversion × tax (% of value). "
        "Absent: the tax rules are constraints only and tax is not traded off.",
    )
    max_cash_pct: float | None = Field(
        None, ge=0, le=100, exclude_if=omit_if_null,
        description="Methods that track a target (target, risk_parity, hrp, herc): the optimizer may leave up to "
        "this % of the portfolio in cash (at least cash_buffer_pct), e.g. the proceeds of a loss harvested and not "
        "reinvested for the 30 days of the wash-sale rule. Absent: fully invested (100 − cash_buffer_pct).",
    )
    harvest_losses: bool | None = Field(
        None, exclude_if=omit_if_null,
        description="Taxable only: sell the lots at a loss of holdings whose loss reaches min_harvest_loss and keep "
        "the exposure with a replacement (from replacements, else the most correlated security of the same sector "
        "in the pack); the harvested name is then not bought for 30 days (wash sale). The optimizer also counts a "
        "realized loss as negative tax wherever the name is not bought back (objectives that charge tax).",
    )
    min_harvest_loss: Decimal | None = Field(
        None, ge=0, le=MAX_AMOUNT, strict=False, exclude_if=omit_if_null,
        description="harvest_losses only: the least loss, in the portfolio currency, worth harvesting in one name (default 0).",
    )
    min_harvest_loss_pct: float | None = Field(
        None, ge=0, le=100, exclude_if=omit_if_null,
        description="harvest_losses only: the least loss worth harvesting, in % of the loss lots' cost basis (default 0).",
    )
    replacements: dict[str, str] | None = Field(
        None, exclude_if=omit_if_null,
        description="harvest_losses only: {harvested symbol: replacement symbol}; names not listed get the most "
        "correlated security of their sector.",
    )
    costs_in_objective: bool | None = Field(
        None, exclude_if=omit_if_null,
        description="Charge trading costs in the objective (mean_variance, max_sharpe, max_sortino, "
        "max_information_ratio): market_impact_bps on each trade's value plus the impact_power_coefficients term, "
        "so that small trades whose expected gain does not cover their cost are not made (default false).",
    )
    impact_power_coefficients: dict[str, Annotated[float, Field(ge=0, le=100)]] | None = Field(
        None, exclude_if=omit_if_null,
        description="With costs_in_objective: per symbol η of the 3/2-power market impact, cost = η × |trade value| "
        "× sqrt(|trade value| / portfolio value); the key '*' sets it for every symbol not named.",
    )

    @field_validator("universe")
    @classmethod
    def _universe_nonempty(cls, v: Any) -> Any:
        if isinstance(v, list) and not v:
            raise ValueError("an explicit universe must list at least one symbol")
        return v


class Policy(BaseModel):
    """A fully resolved policy: every field has a value (limits may be ``None`` = no limit)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    policy_id: str | None = None
    universe: Literal["holdings", "pack"] | list[str] = "holdings"
    method: Method = "max_sharpe"
    risk_aversion: float = 2.0
    min_quality_score: float | None = None
    unrated: Literal["eligible", "exclude"] = "eligible"
    max_single_position_pct: float | None = None
    max_sector_pct: float | None = None
    sector_limits_pct: dict[str, float] = Field(default_factory=dict)
    asset_class_limits_pct: dict[str, float] | None = Field(None, exclude_if=omit_if_null)
    max_tracking_error_pct: float | None = None
    benchmark: str | dict[str, float] | None = None
    max_turnover_pct: float | None = None
    lookback_days: int = 756
    risk_free_rate: float = 0.02
    commission_per_trade: Decimal = Decimal("5.00")
    market_impact_bps: float = 15.0
    min_trade_value: Decimal = Decimal("100")
    cash_buffer_pct: float = 0.0
    covariance_estimator: CovarianceEstimator = "ledoit"
    expected_return_estimator: ReturnEstimator = "hist"
    forecasts: dict[str, float] | None = Field(None, exclude_if=omit_if_null)
    forecast_fallback: ForecastFallback | None = Field(None, exclude_if=omit_if_null)
    ewma_decay: float = 0.94
    cvar_confidence: float = 0.95
    min_acceptable_return: float | None = Field(None, exclude_if=omit_if_null)
    views: list[View] | None = Field(None, exclude_if=omit_if_null)
    bl_objective: BlackLittermanObjective | None = Field(None, exclude_if=omit_if_null)
    bl_tau: float | None = Field(None, exclude_if=omit_if_null)
    bl_min_return_pct: float | None = Field(None, exclude_if=omit_if_null)
    market_risk_aversion: float | None = Field(None, exclude_if=omit_if_null)
    risk_budget: dict[str, float] | None = Field(None, exclude_if=omit_if_null)
    risk_measure: RiskMeasure | None = Field(None, exclude_if=omit_if_null)
    robust_uncertainty: UncertaintySet | None = Field(None, exclude_if=omit_if_null)
    robust_confidence: float | None = Field(None, exclude_if=omit_if_null)
    objective_weights: dict[ObjectiveTerm, float] | None = Field(None, exclude_if=omit_if_null)
    annualization_days: int = 252
    target_weights_pct: dict[str, float] | None = None
    approval_threshold: Decimal = Decimal("10000")
    min_position_pct: float | None = None
    min_weight_pct: float | dict[str, float] | None = Field(None, exclude_if=omit_if_null)
    allow_short: bool | None = Field(None, exclude_if=omit_if_null)
    max_leverage: float | None = Field(None, exclude_if=omit_if_null)
    restricted_symbols: list[str] = Field(default_factory=list)
    frozen_symbols: list[str] = Field(default_factory=list)
    risk_model: RiskModelName | None = Field(None, exclude_if=omit_if_null)
    factor_model: FactorModel | None = Field(None, exclude_if=omit_if_null)
    factor_count: int | None = Field(None, ge=1, le=50, exclude_if=omit_if_null)
    factor_symbols: list[str] | None = Field(None, exclude_if=omit_if_null)
    solve: SolveMode | None = Field(None, exclude_if=omit_if_null)
    tax_rates: TaxRates | None = Field(None, exclude_if=omit_if_null)
    holding_period_days: int | None = Field(None, exclude_if=omit_if_null)
    lot_selection: LotSelection | None = Field(None, exclude_if=omit_if_null)
    specific_lots: list[int] | None = Field(None, exclude_if=omit_if_null)
    avoid_short_term_gains: bool | None = Field(None, exclude_if=omit_if_null)
    max_realized_gain: Decimal | None = Field(None, exclude_if=omit_if_null)
    tax_aversion: float | None = Field(None, exclude_if=omit_if_null)
    max_cash_pct: float | None = Field(None, exclude_if=omit_if_null)
    harvest_losses: bool | None = Field(None, exclude_if=omit_if_null)
    min_harvest_loss: Decimal | None = Field(None, exclude_if=omit_if_null)
    min_harvest_loss_pct: float | None = Field(None, exclude_if=omit_if_null)
    replacements: dict[str, str] | None = Field(None, exclude_if=omit_if_null)
    costs_in_objective: bool | None = Field(None, exclude_if=omit_if_null)
    impact_power_coefficients: dict[str, float] | None = Field(None, exclude_if=omit_if_null)

    @property
    def gross_limit(self) -> float | None:
        """The gross exposure limit Σ|w| when shorts are allowed (max_leverage, default 1.0); None: long only."""
        if not self.allow_short:
            return None
        return 1.0 if self.max_leverage is None else self.max_leverage

    @property
    def taxable(self) -> bool:
        """The account pays tax on realized gains: the policy names its tax rates."""
        return self.tax_rates is not None

    def solve_mode(self, n_assets: int) -> Literal["exact", "fast"]:
        """The solve used for ``n_assets`` decision assets: a factor risk model is solved exactly
        (it already is a k-factor model); ``auto`` (or unset) is fast only above 200 assets."""
        if self.risk_model == "factor" or self.solve == "exact":
            return "exact"
        if self.solve == "fast":
            return "fast"
        return "fast" if n_assets > FAST_ABOVE_ASSETS else "exact"

    def suspicious_values(self) -> list[str]:
        """Warnings for percentages that look like fractions (0.10 meant as 10%?)."""
        out = []
        fields = {
            k: getattr(self, k)
            for k in ("max_single_position_pct", "max_sector_pct", "max_tracking_error_pct",
                      "max_turnover_pct", "cash_buffer_pct")
        }
        fields.update({f"sector_limits_pct.{k}": v for k, v in self.sector_limits_pct.items()})
        fields.update({f"asset_class_limits_pct.{k}": v for k, v in (self.asset_class_limits_pct or {}).items()})
        for name, value in sorted(fields.items()):
            if value is not None and 0 < value < 1:
                out.append(
                    f"{name}={value:g} is read as {value:g}% (percent fields take 15.0 for 15%); "
                    f"did you mean {value * 100:g}%?"
                )
        return out


POLICY_FIELDS = tuple(sorted(PolicyOverrides.model_fields))


def parse_overrides(data: dict[str, Any], *, where: str = "policy") -> PolicyOverrides:
    """Validate a dict of policy fields, naming unknown fields and listing the valid ones."""
    unknown = sorted(set(data) - set(PolicyOverrides.model_fields))
    if unknown:
        raise InputError(
            f"{where}: unknown field(s) {', '.join(unknown)}; valid fields are: {', '.join(POLICY_FIELDS)}",
            details={"unknown_fields": unknown, "valid_fields": list(POLICY_FIELDS)},
        )
    try:
        return PolicyOverrides.model_validate(data)
    except ValidationError as exc:
        raise InputError(f"{where}: {_first_errors(exc)}", details={"errors": _errors(exc, where)}) from exc


def resolve_policy(
    defaults: dict[str, Any],
    template: PolicyOverrides | None,
    overrides: PolicyOverrides | None,
    *,
    policy_id: str | None,
) -> Policy:
    """Defaults, then the template's fields, then the request's fields (later wins).

    Only fields a layer actually sets take part, so an explicit ``null`` in a request removes a
    template's limit (``"max_turnover_pct": null`` means no turnover limit).
    """
    merged: dict[str, Any] = dict(defaults)
    for layer in (template, overrides):
        if layer is not None:
            merged.update(layer.model_dump(exclude_unset=True))
    merged["policy_id"] = policy_id
    try:
        return Policy.model_validate(merged)
    except ValidationError as exc:
        raise InputError(f"policy: {_first_errors(exc)}", details={"errors": _errors(exc, "policy")}) from exc


def _errors(exc: ValidationError, where: str) -> list[dict[str, Any]]:
    return [
        {"field": ".".join([where, *map(str, e["loc"])]), "message": e["msg"], "value": _jsonable(e.get("input"))}
        for e in exc.errors()
    ]


def _first_errors(exc: ValidationError) -> str:
    parts = []
    for e in exc.errors()[:5]:
        loc = ".".join(map(str, e["loc"])) or "(root)"
        parts.append(f"{loc}: {e['msg']} (got {_jsonable(e.get('input'))!r})")
    return "; ".join(parts)


def _jsonable(v: Any) -> Any:
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return str(v)
