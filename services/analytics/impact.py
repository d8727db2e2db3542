"""Apply proposed trades to holdings and compare the portfolio's risk before and after.

Trades are validated as a whole before anything is computed: every trade that cannot be executed
(a sale of more than is held, a purchase of something the pack cannot price or that cannot be
held) is reported at once. Trades are then paid for in a fixed order, sales before purchases and
each group by symbol, so the purchase that first runs cash below zero is the one named.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from services.allocation.costs import cents, to_decimal, trade_cost
from services.allocation.proposal import EstimationInfo, Money, pct, ratio
from services.allocation.rebalance import (
    NOT_HOLDABLE,
    Holdings,
    account_lots,
    resolve_benchmark,
    validate_holdings,
    wash_blocks,
)
from services.analytics.risk import (
    PortfolioRisk,
    RiskModel,
    benchmark_on,
    pack_risk_model,
    portfolio_risk,
    position_weights,
)
from services.data.models import Lot, PricingPack
from services.data.policy import Policy
from services.errors import InputError
from services.tax.lots import TaxSettings, numbered
from services.tax.preview import Sale, TaxPreview, preview
from services.tax.wash import WashHistory

TOP_CONTRIBUTORS = 5


@dataclass(frozen=True)
class TradeOrder:
    """One requested trade of whole shares; HOLD is a no-op.

    ``quoted_price`` and ``quoted_current_shares`` are what the caller's proposal assumed (e.g. a
    propose_trades result); they are only compared with the pack and the holdings, never used.
    """

    symbol: str
    action: Literal["BUY", "SELL", "HOLD"]
    quantity: int
    quoted_price: float | None = None
    quoted_current_shares: int | None = None


class AppliedTrade(BaseModel):
    """A validated trade, priced at the pack's last close, with its cost."""

    model_config = ConfigDict(frozen=True)

    symbol: str
    action: Literal["BUY", "SELL"]
    quantity: int = Field(description="Whole shares traded.")
    price: float = Field(description="The pricing pack's last close.")
    trade_value: Money = Field(description="quantity × price, rounded to cents.")
    estimated_cost: Money = Field(description="Commission + market impact for this trade.")
    shares_before: int
    shares_after: int


@dataclass(frozen=True)
class Execution:
    """Holdings after the trades, the trades as applied (sorted by symbol) and their total cost."""

    holdings: Holdings
    trades: tuple[AppliedTrade, ...]
    costs: Decimal
    warnings: tuple[str, ...]


class RiskContributor(BaseModel):
    model_config = ConfigDict(frozen=True)

    symbol: str
    weight_pct: float = Field(description="Weight, % of portfolio value.")
    risk_contribution_pct: float = Field(description="Share of portfolio variance, %: wᵢ(Σw)ᵢ / wᵀΣw.")


class RiskSummary(BaseModel):
    """Risk of one side (before or after the trades); percentages are of the portfolio value."""

    model_config = ConfigDict(frozen=True)

    value: Money = Field(description="Holdings at the pack's last closes plus cash.")
    cash: Money
    cash_weight_pct: float
    holdings_count: int
    hhi: float | None = Field(
        description="Herfindahl index Σwᵢ² over the holdings' shares of the invested value (cash "
        "excluded, so 1/HHI is a number of holdings); null with nothing invested."
    )
    effective_holdings: float | None = Field(description="1 / HHI.")
    expected_return_pct: float = Field(description="Annualized; cash earns the risk-free rate.")
    volatility_pct: float = Field(description="Annualized, from the policy's covariance estimator.")
    sharpe: float | None
    max_drawdown_pct: float = Field(
        description="Largest peak-to-trough fall over the lookback of a portfolio held at these "
        "weights (rebalanced daily), as a positive %."
    )
    var_95_1d_pct: float = Field(
        description="1-day 95% historical VaR: minus the 5th percentile of the daily returns (linear "
        "interpolation), % of value."
    )
    cvar_95_1d_pct: float = Field(description="1-day 95% historical CVaR: minus the mean of the returns at or below that percentile, %.")
    var_95_1d: Money = Field(description="VaR in money: var_95_1d_pct × value.")
    cvar_95_1d: Money = Field(description="CVaR in money: cvar_95_1d_pct × value.")
    beta: float | None = Field(description="OLS beta of the daily returns to the pack's market index.")
    tracking_error_pct: float | None = Field(description="Ex-ante annualized tracking error vs the benchmark.")
    sector_weights_pct: dict[str, float] = Field(description="Holdings' weight per sector, % (cash not included).")
    top_risk_contributors: list[RiskContributor] = Field(
        description=f"The {TOP_CONTRIBUTORS} largest contributors to variance, largest first."
    )


class ImpactReport(BaseModel):
    """Before/after risk, concentration and costs of applying a list of trades."""

    model_config = ConfigDict(frozen=True)

    pricing_pack_id: str
    asof: str
    portfolio_id: str | None
    benchmark: str | None
    market_index: str | None = Field(description="The index beta is measured against.")
    current_value: Money
    post_rebalance_value: Money = Field(description="Value after the trades, net of costs.")
    value_delta: Money = Field(description="post_rebalance_value − current_value = −estimated_costs.")
    estimated_costs: Money
    cash_before: Money
    cash_after: Money
    trades_applied: list[AppliedTrade] = Field(description="The BUY/SELL trades, sorted by symbol; HOLDs are no-ops.")
    current_concentration_top10: float = Field(description="Weight of the 10 largest holdings, % of value.")
    post_concentration_top10: float
    delta_concentration: float = Field(description="post − current, percentage points.")
    before: RiskSummary
    after: RiskSummary
    estimation: EstimationInfo
    tax: TaxPreview | None = Field(
        None, exclude_if=lambda v: v is None,
        description="Taxable accounts only (tax_rates given): the lots each sale takes and the estimated tax.")
    warnings: list[str]


def apply_trades(
    pack: PricingPack,
    holdings: Holdings,
    orders: list[TradeOrder],
    *,
    commission: Decimal,
    impact_bps: float,
) -> Execution:
    """Execute ``orders`` against ``holdings`` at the pack's last closes, paying costs from cash.

    Raises ``InputError`` naming every trade that breaks a rule (oversell, unknown or unholdable
    symbol, zero quantity, a symbol traded twice), or the first trade, in execution order, that
    cash cannot pay for.
    """
    prices = pack.last_prices()
    _check_orders(pack, holdings, orders, prices)
    warnings = _quote_warnings(pack, holdings, orders, prices)
    active = [o for o in orders if o.action != "HOLD"]
    # Sales first so their proceeds can pay for the purchases.
    active.sort(key=lambda o: (o.action != "SELL", o.symbol))
    cash = holdings.cash
    positions = dict(holdings.positions)
    applied = []
    for order in active:
        price = to_decimal(prices[order.symbol])
        signed = order.quantity if order.action == "BUY" else -order.quantity
        cost = trade_cost(signed * price, commission, impact_bps)
        cash -= signed * price + cost
        if cash < 0:
            _cash_shortfall(order, price, cost, cash, holdings.cash)
        before = positions.get(order.symbol, 0)
        positions[order.symbol] = before + signed
        applied.append(AppliedTrade(
            symbol=order.symbol, action=order.action, quantity=order.quantity, price=prices[order.symbol],
            trade_value=cents(order.quantity * price), estimated_cost=cost,
            shares_before=before, shares_after=before + signed,
        ))
    after = Holdings(holdings.portfolio_id, {s: n for s, n in sorted(positions.items()) if n}, cents(cash))
    applied.sort(key=lambda t: (t.symbol, t.action))
    return Execution(after, tuple(applied), sum((t.estimated_cost for t in applied), Decimal("0.00")), tuple(warnings))


def analyze_impact(
    pack: PricingPack,
    holdings: Holdings,
    orders: list[TradeOrder],
    policy: Policy,
    named_benchmarks: dict[str, dict[str, float]],
    cash_flow: Decimal = Decimal("0"),
    lots: tuple[Lot, ...] | None = None,
    wash_history: WashHistory | None = None,
) -> ImpactReport:
    """Apply ``orders`` and report risk, concentration and costs before and after.

    For a taxable account (``policy.tax_rates``) the report previews the tax of the sales from
    ``lots``, the portfolio's tax lots (None: each position one lot of unknown basis), and names the
    wash-sale blocks (from the lots' dates and ``wash_history``) the trades break.

    A deposit (positive ``cash_flow``) is in the cash before trading; a withdrawal (negative) is
    taken from the cash after trading, which must cover it (an InputError names the shortfall).

    Costs, the estimators, the lookback, the risk-free rate and the benchmark come from
    ``policy``. The side before is measured on an estimate over its own holdings, so its figures
    are the portfolio's whatever the trades buy; the side after over the names held before or
    after (what a proposal that produced the trades measured it over, when its universe was the
    holdings). Naming a benchmark changes only tracking error: it is projected onto each side's
    estimate, not fitted with it.
    """
    validate_holdings(pack, holdings)
    flow = cents(cash_flow)
    if flow > 0:
        holdings = Holdings(holdings.portfolio_id, holdings.positions, holdings.cash + flow)
    execution = apply_trades(pack, holdings, orders, commission=policy.commission_per_trade,
                             impact_bps=policy.market_impact_bps)
    after = execution.holdings
    withdrawal = -flow if flow < 0 else Decimal("0.00")
    if withdrawal:
        if after.cash < withdrawal:
            raise InputError(
                f"cash_flow: the withdrawal of ${withdrawal:,.2f} exceeds the ${after.cash:,.2f} of cash "
                f"after the trades; shortfall ${withdrawal - after.cash:,.2f}",
                details={"field": "cash_flow", "shortfall": float(withdrawal - after.cash)},
            )
        after = Holdings(after.portfolio_id, after.positions, after.cash - withdrawal)
    benchmark_name, bench = resolve_benchmark(pack, policy, named_benchmarks)
    model_before, model_after = _side_models(pack, holdings, after, bench, policy)
    prices = pack.last_prices()
    value_before = _value(holdings, prices)
    # Prices do not move between before and after, so the value changes by the costs alone.
    value_after = value_before - execution.costs - withdrawal
    risk_before = portfolio_risk(model_before, position_weights(holdings.positions, prices, float(holdings.cash))[0],
                                 benchmark_on(model_before, pack, bench, policy) if bench else None)
    risk_after = portfolio_risk(model_after, position_weights(after.positions, prices, float(after.cash))[0],
                                benchmark_on(model_after, pack, bench, policy) if bench else None)
    warnings = list(execution.warnings)
    for note in model_before.warnings + model_after.warnings:
        if note not in warnings:
            warnings.append(note)
    if len(model_before.returns) != len(model_after.returns):
        warnings.append(f"before is measured over {_window(model_before)} and after over {_window(model_after)}: "
                        "each side over the dates all its own holdings are priced")
    top_before, top_after = pct(risk_before.top10), pct(risk_after.top10)
    assert top_before is not None and top_after is not None
    return ImpactReport(
        pricing_pack_id=pack.id,
        asof=pack.asof.isoformat(),
        portfolio_id=holdings.portfolio_id,
        benchmark=benchmark_name,
        market_index=model_after.market_symbol,
        current_value=value_before,
        post_rebalance_value=value_after,
        value_delta=-execution.costs - withdrawal,
        estimated_costs=execution.costs,
        cash_before=cents(holdings.cash),
        cash_after=after.cash,
        trades_applied=list(execution.trades),
        current_concentration_top10=top_before,
        post_concentration_top10=top_after,
        delta_concentration=round(top_after - top_before, 4) + 0.0,
        before=risk_summary(risk_before, value_before, holdings),
        after=risk_summary(risk_after, value_after, after),
        estimation=_estimation(model_after, policy),
        tax=_tax_preview(pack, holdings, execution, policy, lots, wash_history),
        warnings=warnings,
    )


def _side_models(
    pack: PricingPack, before: Holdings, after: Holdings, bench: dict[str, float] | None, policy: Policy
) -> tuple[RiskModel, RiskModel]:
    """The risk models of the two sides: before over its holdings, after over those and its own.

    Holding nothing before, that side borrows the other's model: its figures do not depend on
    one, save tracking error, which is then the benchmark's own risk. With nothing held on either
    side the model is over the benchmark's names (or it is an error naming what is missing).
    """
    names_before, names_after = sorted(before.positions), sorted(set(before.positions) | set(after.positions))
    if not names_before and not names_after:
        model = pack_risk_model(pack, sorted(bench or {}), policy)
        return model, model
    model_before = pack_risk_model(pack, names_before, policy) if names_before else None
    model_after = None
    if names_after:
        model_after = model_before if names_after == names_before else pack_risk_model(pack, names_after, policy)
    model_before = model_before or model_after
    model_after = model_after or model_before
    assert model_before is not None and model_after is not None
    return model_before, model_after


def _window(model: RiskModel) -> str:
    return (f"{len(model.returns)} daily returns ({model.returns.index[0].date().isoformat()} to "
            f"{model.returns.index[-1].date().isoformat()})")


def _tax_preview(pack: PricingPack, holdings: Holdings, execution: Execution, policy: Policy,
                 lots: tuple[Lot, ...] | None, history: WashHistory | None) -> TaxPreview | None:
    """The tax preview of the executed sales for a taxable account (None for a tax-exempt one),
    with the wash-sale blocks the trades break named in its warnings: these trades are given,
    so they are previewed as they are, not changed."""
    settings = TaxSettings.from_policy(policy)
    if settings is None:
        return None
    blocks = wash_blocks(pack, holdings, policy, lots, history)
    sales = [Sale(t.symbol, t.quantity, to_decimal(t.price)) for t in execution.trades if t.action == "SELL"]
    out = preview(numbered(account_lots(holdings, lots)), sales, settings, pack.asof, blocks)
    broken = []
    for b in blocks:
        if b.rule == "no_purchase" and any(t.symbol == b.symbol and t.action == "BUY" for t in execution.trades):
            broken.append(f"{b.symbol}: bought within 30 days of a sale at a loss on {b.since} (wash sale; "
                          f"blocked through {b.until})")
        if b.rule == "no_loss_sale" and any(r.symbol == b.symbol and r.gain is not None and r.gain < 0
                                            for r in out.lots_sold):
            broken.append(f"{b.symbol}: sold at a loss within 30 days of a purchase on {b.since} (wash sale; "
                          f"blocked through {b.until})")
    return out.model_copy(update={"warnings": out.warnings + broken}) if broken else out


def risk_summary(risk: PortfolioRisk, value: Decimal, holdings: Holdings) -> RiskSummary:
    """Round ``risk`` for reporting; money figures are fractions of ``value``, rounded to cents."""
    contributors = sorted(risk.risk_contributions.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_CONTRIBUTORS]
    return RiskSummary(
        value=value,
        cash=cents(holdings.cash),
        cash_weight_pct=_pct(risk.cash_weight),
        holdings_count=len(holdings.positions),
        hhi=ratio(risk.hhi, 6),
        effective_holdings=ratio(risk.effective_holdings),
        expected_return_pct=_pct(risk.expected_return),
        volatility_pct=_pct(risk.volatility),
        sharpe=ratio(risk.sharpe),
        max_drawdown_pct=_pct(risk.max_drawdown),
        var_95_1d_pct=_pct(risk.var_95),
        cvar_95_1d_pct=_pct(risk.cvar_95),
        var_95_1d=cents(to_decimal(risk.var_95) * value),
        cvar_95_1d=cents(to_decimal(risk.cvar_95) * value),
        beta=ratio(risk.beta),
        tracking_error_pct=pct(risk.tracking_error),
        sector_weights_pct={s: _pct(w) for s, w in risk.sector_weights.items()},
        top_risk_contributors=[
            RiskContributor(symbol=s, weight_pct=_pct(risk.weights[s]), risk_contribution_pct=_pct(c))
            for s, c in contributors
        ],
    )


def _pct(x: float) -> float:
    out = pct(x)
    assert out is not None
    return out


def _value(holdings: Holdings, prices: dict[str, float]) -> Decimal:
    return cents(sum((n * to_decimal(prices[s]) for s, n in holdings.positions.items()), Decimal(0)) + holdings.cash)


def _estimation(model: RiskModel, policy: Policy) -> EstimationInfo:
    return EstimationInfo(
        observations=len(model.returns),
        start=model.returns.index[0].date().isoformat(),
        end=model.returns.index[-1].date().isoformat(),
        covariance_estimator=policy.covariance_estimator,
        expected_return_estimator=policy.expected_return_estimator,
        annualization_days=policy.annualization_days,
    )


def _check_orders(pack: PricingPack, holdings: Holdings, orders: list[TradeOrder], prices: dict[str, float]) -> None:
    holdable = [s.symbol for s in pack.securities if s.asset_class not in NOT_HOLDABLE and s.symbol in prices]
    problems: list[dict[str, object]] = []

    def bad(order: TradeOrder, rule: str) -> None:
        problems.append({"symbol": order.symbol, "action": order.action, "quantity": order.quantity, "rule": rule})

    seen: set[str] = set()
    for order in orders:
        if order.symbol in seen:
            bad(order, "each symbol may appear once in proposed_trades")
        seen.add(order.symbol)
        if order.action == "HOLD":
            if order.quantity != 0:
                bad(order, "a HOLD trades nothing; its quantity must be 0")
            continue
        if order.quantity < 1:
            bad(order, f"a {order.action} must trade at least 1 share (use HOLD for no trade)")
        elif order.action == "SELL":
            held = holdings.positions.get(order.symbol, 0)
            if order.quantity > held:
                bad(order, f"sells more than is held: the portfolio holds {held} share(s)")
        elif order.symbol not in pack.symbols:
            bad(order, f"not in pricing pack {pack.id}; symbols that can be bought: {', '.join(holdable)}")
        elif pack.security(order.symbol).asset_class in NOT_HOLDABLE:
            bad(order, f"an {pack.security(order.symbol).asset_class} series cannot be held; "
                       f"symbols that can be bought: {', '.join(holdable)}")
        elif order.symbol not in prices:
            bad(order, f"pricing pack {pack.id} has no close for it")
    if problems:
        text = "; ".join(f"{p['action']} {p['quantity']} {p['symbol']}: {p['rule']}" for p in problems)
        raise InputError(f"proposed_trades: {text}", details={"field": "proposed_trades", "problems": problems})


def _cash_shortfall(order: TradeOrder, price: Decimal, cost: Decimal, cash: Decimal, start: Decimal) -> None:
    value = cents(order.quantity * price)
    raise InputError(
        f"proposed_trades: {order.action} {order.quantity} {order.symbol} (value {value}, cost {cost}) leaves "
        f"cash at {cents(cash)}: trades and their costs are paid from cash, which may not go negative "
        f"(cash before trading {cents(start)}; sales are applied first, then purchases by symbol)",
        details={"field": "proposed_trades",
                 "problems": [{"symbol": order.symbol, "action": order.action, "quantity": order.quantity,
                               "rule": "cash may not go negative", "cash_after": float(cents(cash))}]},
    )


def _quote_warnings(pack: PricingPack, holdings: Holdings, orders: list[TradeOrder], prices: dict[str, float]) -> list[str]:
    out = []
    for o in sorted(orders, key=lambda o: o.symbol):
        if o.quoted_price is not None and o.symbol in prices and abs(o.quoted_price - prices[o.symbol]) > 1e-9:
            out.append(f"{o.symbol}: the proposed trade quotes price {o.quoted_price:g} but pack {pack.id} "
                       f"closes at {prices[o.symbol]:g}; the pack's close was used")
        held = holdings.positions.get(o.symbol, 0)
        if o.quoted_current_shares is not None and o.quoted_current_shares != held:
            out.append(f"{o.symbol}: the proposed trade assumes {o.quoted_current_shares} share(s) held but the "
                       f"portfolio holds {held}; the trade was applied to the actual holding")
    return out
