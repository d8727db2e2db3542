"""Regime playbooks: turn a macro regime's house view into whole-share cuts and hedge purchases.

A playbook (``seeds/optimizer/regime_playbooks.json``, versioned) gives each regime a narrative
and ordered steps of three kinds:

- ``reduce``: cut the holdings in a scope by a target % of their beta exposure (Σ shares × price ×
  beta) or of their value, either highest beta first or pro rata;
- ``exit``: sell listed instruments in full if they are held;
- ``allocate``: buy sleeves worth a target % of the portfolio value before trades ("add"), or top
  them up to that % ("raise_to"; a cash sleeve is a minimum cash balance). A sleeve buys the
  pack's stocks of its sector in equal amounts if there are any, else its instrument: in whole
  shares if the pack prices it, otherwise as a dollar notional to be priced at execution. A cash
  shortfall is funded by further cuts under the step's funding rule.

Betas of holdings and of pack-priced purchases are OLS betas to the pack's market index over the
lookback; instruments the pack does not price use the playbook's documented assumed beta. Every
percentage of the plan is of the portfolio value before trades unless a field says otherwise.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from importlib.resources.abc import Traversable
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.allocation.costs import cents, to_decimal, trade_cost
from services.allocation.proposal import EstimationInfo, Money, pct, ratio
from services.allocation.rebalance import NOT_HOLDABLE, Holdings, validate_holdings
from services.analytics.risk import RiskModel, betas, pack_risk_model, position_weights, volatility
from services.data.models import PricingPack
from services.data.policy import Policy
from services.data.seeds import load_seed_model, seed_root
from services.errors import InputError
from services.estimation.estimators import market_symbol

PLAYBOOK_FILE = "regime_playbooks.json"
CASH = "CASH"
BUCKETS = ("equity", "safe_haven", "cash", "other")
Bucket = Literal["equity", "safe_haven", "cash", "other"]
CutRule = Literal["highest_beta_first", "pro_rata"]
_EPS = 1e-9


# --- the playbook file ---------------------------------------------------------------------------

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Instrument(_Strict):
    name: str
    asset_class: str
    bucket: Bucket
    assumed_beta: float


class Scope(_Strict):
    """Which holdings a step may cut: by bucket and/or the pack's asset class, minus some sectors."""

    buckets: list[Bucket] | None = None
    asset_classes: list[str] | None = None
    exclude_sectors: list[str] = Field(default_factory=list)


class Sleeve(_Strict):
    label: str
    instrument: str
    pct: float = Field(gt=0, le=100)
    sector: str | None = None


class ReduceStep(_Strict):
    kind: Literal["reduce"]
    action: str
    scope: Scope
    measure: Literal["beta_exposure", "value"]
    target_reduction_pct: float = Field(gt=0, le=100)
    cut_rule: CutRule
    protect_sectors: list[str] = Field(default_factory=list)
    rationale: str


class ExitStep(_Strict):
    kind: Literal["exit"]
    action: str
    instruments: list[str] = Field(min_length=1)
    rationale: str


class AllocateStep(_Strict):
    kind: Literal["allocate"]
    action: str
    mode: Literal["add", "raise_to"]
    target_allocation_pct: float = Field(gt=0, le=100)
    sleeves: list[Sleeve] = Field(min_length=1)
    funding_scope: Scope
    funding_rule: CutRule
    rationale: str

    @model_validator(mode="after")
    def _sleeves_add_up(self) -> AllocateStep:
        total = sum(s.pct for s in self.sleeves)
        if abs(total - self.target_allocation_pct) > 1e-9:
            raise ValueError(f"sleeves add up to {total:g}%, not target_allocation_pct {self.target_allocation_pct:g}%")
        if self.mode == "add" and any(s.instrument == CASH for s in self.sleeves):
            raise ValueError("a CASH sleeve is a minimum balance and only makes sense with mode 'raise_to'")
        return self


Step = Annotated[ReduceStep | ExitStep | AllocateStep, Field(discriminator="kind")]


class Regime(_Strict):
    narrative: str
    steps: list[Step] = Field(min_length=1)


class Playbooks(_Strict):
    """The whole playbook file: version, instruments with their assumptions, and regimes."""

    version: str
    description: str
    assumptions_note: str
    buckets: list[Bucket]
    instruments: dict[str, Instrument]
    regimes: dict[str, Regime]

    @model_validator(mode="after")
    def _instruments_known(self) -> Playbooks:
        if CASH not in self.instruments:
            raise ValueError("instruments must define CASH")
        for name, regime in self.regimes.items():
            for step in regime.steps:
                named = step.instruments if isinstance(step, ExitStep) else (
                    [s.instrument for s in step.sleeves] if isinstance(step, AllocateStep) else [])
                unknown = sorted(set(named) - set(self.instruments))
                if unknown:
                    raise ValueError(f"regime {name} step {step.action}: unknown instrument(s) {', '.join(unknown)}")
        return self

    def regime(self, name: str) -> tuple[str, Regime]:
        """The regime called ``name`` (any case), with its canonical name."""
        key = name.strip().upper()
        if key not in self.regimes:
            valid = sorted(self.regimes)
            raise InputError(
                f"regime: unknown regime '{name}'; valid regimes: {', '.join(valid)}",
                details={"field": "regime", "value": name, "allowed": valid},
            )
        return key, self.regimes[key]


@functools.lru_cache(maxsize=8)
def load_playbooks(root: Traversable | None = None) -> Playbooks:
    """Read and validate ``regime_playbooks.json`` from the seed directory (or ``root``)."""
    return load_seed_model(root or seed_root(), PLAYBOOK_FILE, Playbooks)


# --- the report ----------------------------------------------------------------------------------

class Recommendation(BaseModel):
    model_config = ConfigDict(frozen=True)

    action: str
    kind: Literal["reduce", "exit", "allocate"]
    instruments: list[str] = Field(
        description="reduce: the holdings cut, in cut order; exit: the instruments to exit; allocate: "
        "what the sleeves buy (pack stocks or instruments) and CASH."
    )
    target_reduction_pct: float | None = Field(
        None, description="reduce: % of the scope's beta exposure or value to cut."
    )
    target_allocation_pct: float | None = Field(None, description="allocate: % of the value before trades.")
    achieved_pct: float | None = Field(
        description="What the trades achieve, in the unit of the target (null for exit)."
    )
    allocation_pct: dict[str, float] | None = Field(
        None, description="allocate: each instrument's (or CASH's) value after the step, % of value before trades."
    )
    status: Literal["applied", "partial", "not_applicable"] = Field(
        description="not_applicable: nothing in the portfolio for this step (e.g. no bonds to cut)."
    )
    rule: str = Field(description="How what is cut or bought was chosen.")
    rationale: str


class RegimeTrade(BaseModel):
    model_config = ConfigDict(frozen=True)

    symbol: str
    action: Literal["BUY", "SELL"]
    priced_in_pack: bool = Field(description="false: a dollar notional for an instrument the pack does not price.")
    quantity: int | None = Field(description="Whole shares; null for a notional.")
    price: float | None = Field(description="The pack's last close; null for a notional (no invented price).")
    trade_value: Money = Field(description="quantity × price, or the notional.")
    estimated_cost: Money = Field(description="Commission + market impact (on the notional for unpriced items).")
    bucket: Bucket
    beta: float = Field(description="Beta to the market index: regressed on the pack, or the playbook's assumption if unpriced.")
    rationale: str


class HoldingBeta(BaseModel):
    model_config = ConfigDict(frozen=True)

    symbol: str
    beta: float
    weight_pct: float
    sector: str
    bucket: Bucket


class Exposures(BaseModel):
    model_config = ConfigDict(frozen=True)

    value: Money = Field(description="Holdings at the pack's closes + notionals at cost + cash.")
    equity_beta: float = Field(
        description="Value-weighted beta to the market index: Σ valueᵢ βᵢ / value, cash and unpriced "
        "notionals at their assumed betas."
    )
    asset_class_mix_pct: dict[str, float] = Field(description="% of value in equity, safe_haven, cash, other.")
    volatility_pct: float = Field(description="Annualized; see volatility_treatment.")


class RegimeReport(BaseModel):
    """A regime playbook applied to one portfolio: recommendations, trades and exposures."""

    model_config = ConfigDict(frozen=True)

    pricing_pack_id: str
    asof: str
    portfolio_id: str | None
    regime: str
    narrative: str
    playbook_version: str
    recommendations: list[Recommendation] = Field(description="In the playbook's order.")
    trades: list[RegimeTrade] = Field(description="Sorted by symbol, then action.")
    estimated_costs: Money
    current_value: Money
    value_after: Money = Field(description="current_value − estimated_costs.")
    cash_before: Money
    cash_after: Money
    before: Exposures
    after: Exposures
    holding_betas: list[HoldingBeta] = Field(description="Holdings before trading, highest beta first (the cut order).")
    market_index: str
    beta_assumptions: dict[str, float] = Field(description="Assumed betas used for cash and unpriced instruments.")
    assumptions_note: str
    unpriced_instruments: list[str]
    unpriced_note: str | None
    volatility_treatment: str
    estimation: EstimationInfo | None
    warnings: list[str]


# --- the engine ----------------------------------------------------------------------------------

@dataclass
class _Plan:
    """Trades accumulated by the steps: shares sold and bought per symbol, notionals per instrument."""

    cash: Decimal
    prices: dict[str, Decimal]
    commission: Decimal
    impact_bps: float
    sells: dict[str, int] = field(default_factory=dict)
    buys: dict[str, int] = field(default_factory=dict)
    notionals: dict[str, Decimal] = field(default_factory=dict)
    notes: dict[tuple[str, str], list[str]] = field(default_factory=dict)

    def costs(self) -> Decimal:
        total = Decimal("0.00")
        for side in (self.sells, self.buys):
            total += sum((trade_cost(q * self.prices[s], self.commission, self.impact_bps) for s, q in side.items() if q),
                         Decimal("0.00"))
        return total + sum((trade_cost(n, self.commission, self.impact_bps) for n in self.notionals.values() if n),
                           Decimal("0.00"))

    def cash_after(self) -> Decimal:
        sold = sum((q * self.prices[s] for s, q in self.sells.items()), Decimal(0))
        bought = sum((q * self.prices[s] for s, q in self.buys.items()), Decimal(0))
        return self.cash + sold - bought - sum(self.notionals.values(), Decimal(0)) - self.costs()

    def note(self, symbol: str, action: str, text: str) -> None:
        notes = self.notes.setdefault((symbol, action), [])
        if text not in notes:
            notes.append(text)


@dataclass(frozen=True)
class _Context:
    pack: PricingPack
    holdings: Holdings
    playbooks: Playbooks
    value: Decimal
    last: dict[str, float]
    betas: dict[str, float]
    bought: frozenset[str]
    market: str

    def bucket(self, symbol: str) -> Bucket:
        if symbol in self.playbooks.instruments:
            return self.playbooks.instruments[symbol].bucket
        return "equity" if self.pack.security(symbol).asset_class in ("equity", "etf") else "other"

    def in_scope(self, symbol: str, scope: Scope) -> bool:
        sec = self.pack.security(symbol)
        return ((scope.buckets is None or self.bucket(symbol) in scope.buckets)
                and (scope.asset_classes is None or sec.asset_class in scope.asset_classes)
                and sec.sector not in scope.exclude_sectors)

    def may_cut(self, symbol: str, scope: Scope) -> bool:
        """In ``scope`` and not something the playbook buys (a name is never sold and bought at once)."""
        return self.in_scope(symbol, scope) and symbol not in self.bought


def suggest_for_regime(
    pack: PricingPack, holdings: Holdings, playbooks: Playbooks, regime: str, policy: Policy
) -> RegimeReport:
    """Apply the ``regime`` playbook to ``holdings``: cuts, hedge purchases, costs and exposures.

    Costs, the lookback and the covariance estimator come from ``policy``.
    """
    name, book = playbooks.regime(regime)
    validate_holdings(pack, holdings)
    last = pack.last_prices()
    prices = {s: to_decimal(p) for s, p in last.items()}
    value = cents(sum((n * prices[s] for s, n in holdings.positions.items()), Decimal(0)) + holdings.cash)
    bought = frozenset(s for step in book.steps if isinstance(step, AllocateStep) for sleeve in step.sleeves
                       for s in _sleeve_targets(pack, last, sleeve) if s in last)
    model = _model(pack, sorted(set(holdings.positions) | bought), policy)
    ctx = _Context(pack, holdings, playbooks, value, last,
                   betas(model.returns, model.market) if model and model.market is not None else {},
                   bought, market_symbol(pack) or "the market index")
    plan = _Plan(holdings.cash, prices, policy.commission_per_trade, policy.market_impact_bps)
    warnings: list[str] = list(model.warnings) if model else []
    recommendations = []
    for step in book.steps:
        if isinstance(step, ReduceStep):
            recommendations.append(_reduce(ctx, plan, step))
        elif isinstance(step, ExitStep):
            recommendations.append(_exit(ctx, plan, step))
        else:
            recommendations.append(_allocate(ctx, plan, step, warnings))
    return _report(ctx, plan, name, book, model, policy, recommendations, warnings)


def _model(pack: PricingPack, symbols: list[str], policy: Policy) -> RiskModel | None:
    """The risk model of ``symbols`` (``None`` if there are none); betas need a market index."""
    model = pack_risk_model(pack, symbols, policy) if symbols else None
    if model is not None and model.market is None:
        raise InputError(
            f"pricing pack {pack.id} has no index series priced over the whole window, so holdings' betas "
            "cannot be estimated; regime playbooks cut by beta",
            details={"field": "pricing_pack_id", "value": pack.id},
        )
    return model


def _sleeve_targets(pack: PricingPack, last: dict[str, float], sleeve: Sleeve) -> list[str]:
    """What a sleeve buys: the pack's holdable stocks of its sector, else its instrument."""
    if sleeve.sector is not None:
        stocks = sorted(s.symbol for s in pack.securities
                        if s.sector == sleeve.sector and s.asset_class not in NOT_HOLDABLE and s.symbol in last)
        if stocks:
            return stocks
    return [sleeve.instrument]


def _remaining(ctx: _Context, plan: _Plan) -> dict[str, int]:
    return {s: n - plan.sells.get(s, 0) for s, n in sorted(ctx.holdings.positions.items())}


def _beta_order(ctx: _Context, symbols: list[str]) -> list[str]:
    return sorted(symbols, key=lambda s: (-ctx.betas[s], s))


def _ceil(x: float) -> int:
    # Tolerance so that 12.000000000001 shares (float noise) is 12, not 13.
    return math.ceil(x - _EPS)


def _reduce(ctx: _Context, plan: _Plan, step: ReduceStep) -> Recommendation:
    """Cut the scope's beta exposure or value by the target %; protected sectors count but are kept."""
    remaining = _remaining(ctx, plan)
    in_scope = [s for s, n in remaining.items() if n > 0 and ctx.in_scope(s, step.scope)]
    unit = {s: float(plan.prices[s]) * (ctx.betas[s] if step.measure == "beta_exposure" else 1.0) for s in in_scope}
    base = sum(remaining[s] * unit[s] for s in in_scope)
    cuttable = [s for s in in_scope if ctx.may_cut(s, step.scope)
                and ctx.pack.security(s).sector not in step.protect_sectors and unit[s] > 0]
    measured = "beta exposure (Σ shares × price × beta)" if step.measure == "beta_exposure" else "value"
    scope = _describe_scope(step.scope)
    kept = f" (never {', '.join(step.protect_sectors)})" if step.protect_sectors else ""
    rule = (f"{step.cut_rule}: " + (
        f"sell whole shares of {scope}{kept}, highest beta to {ctx.market} first, until the {measured} of "
        f"{scope} is down {step.target_reduction_pct:g}%" if step.cut_rule == "highest_beta_first"
        else f"sell the same fraction, {step.target_reduction_pct:g}% (rounded up to whole shares), of every "
             f"holding among {scope}{kept}"))
    if base <= 0:
        return Recommendation(
            action=step.action, kind="reduce", instruments=[], target_reduction_pct=step.target_reduction_pct,
            achieved_pct=0.0, status="not_applicable", rule=rule,
            rationale=f"{step.rationale} The portfolio has no {scope}" + (
                " with positive " + measured if in_scope else "") + ", so there is nothing to cut; no trades for this step.",
        )
    target = base * step.target_reduction_pct / 100.0
    cuts: dict[str, int] = {}
    if step.cut_rule == "pro_rata":
        cuts = {s: min(remaining[s], _ceil(remaining[s] * step.target_reduction_pct / 100.0)) for s in cuttable}
    else:
        done = 0.0
        for s in _beta_order(ctx, cuttable):
            if done >= target - _EPS:
                break
            cuts[s] = min(remaining[s], _ceil((target - done) / unit[s]))
            done += cuts[s] * unit[s]
    cuts = {s: n for s, n in cuts.items() if n > 0}
    achieved = sum(n * unit[s] for s, n in cuts.items()) / base
    order = _beta_order(ctx, list(cuts)) if step.cut_rule == "highest_beta_first" else sorted(cuts)
    for s in order:
        plan.sells[s] = plan.sells.get(s, 0) + cuts[s]
        plan.note(s, "SELL", f"{step.action}: {cuts[s]} of {remaining[s]} shares (beta {ctx.betas[s]:.2f})")
    detail = (", ".join(f"{s} {cuts[s]}/{remaining[s]} sh (beta {ctx.betas[s]:.2f})" for s in order)
              or "nothing (every holding in scope is protected or adds no " + measured + ")")
    return Recommendation(
        action=step.action, kind="reduce", instruments=order, target_reduction_pct=step.target_reduction_pct,
        achieved_pct=_pct(achieved),
        status="applied" if achieved >= step.target_reduction_pct / 100.0 - _EPS else "partial", rule=rule,
        rationale=f"{step.rationale} Cut {detail}: {measured} of {scope} down {achieved * 100:.2f}%.",
    )


def _exit(ctx: _Context, plan: _Plan, step: ExitStep) -> Recommendation:
    remaining = _remaining(ctx, plan)
    held = [s for s in step.instruments if remaining.get(s, 0) > 0]
    for s in held:
        plan.sells[s] = plan.sells.get(s, 0) + remaining[s]
        plan.note(s, "SELL", f"{step.action}: exit in full")
    rule = f"sell in full any holding of {', '.join(step.instruments)}"
    text = (f"Sold in full: {', '.join(held)}." if held
            else f"Not held ({', '.join(step.instruments)}); nothing to exit, no trades for this step.")
    return Recommendation(
        action=step.action, kind="exit", instruments=list(step.instruments), achieved_pct=None,
        status="applied" if held else "not_applicable", rule=rule, rationale=f"{step.rationale} {text}",
    )


def _allocate(ctx: _Context, plan: _Plan, step: AllocateStep, warnings: list[str]) -> Recommendation:
    value = ctx.value
    min_cash = Decimal(0)
    sleeves: list[tuple[Sleeve, list[str], Decimal]] = []
    for sleeve in step.sleeves:
        target = cents(value * to_decimal(sleeve.pct) / 100)
        if sleeve.instrument == CASH:
            min_cash = target
            continue
        symbols = _sleeve_targets(ctx.pack, ctx.last, sleeve)
        existing = (sum((_position_value(ctx, plan, s) for s in symbols), Decimal(0))
                    if step.mode == "raise_to" else Decimal(0))
        sleeves.append((sleeve, symbols, max(Decimal(0), target - existing)))
    start_buys, start_notionals = dict(plan.buys), dict(plan.notionals)

    def buy(scale: Decimal) -> bool:
        """Set the sleeves' purchases to ``scale`` × their amounts; True if cash stays at or above the minimum."""
        plan.buys, plan.notionals = dict(start_buys), dict(start_notionals)
        for _, symbols, amount in sleeves:
            each = amount * scale / len(symbols)
            for s in symbols:
                if s in plan.prices:
                    shares = int(each / plan.prices[s])
                    if shares:
                        plan.buys[s] = plan.buys.get(s, 0) + shares
                elif cents(each) > 0:
                    plan.notionals[s] = plan.notionals.get(s, Decimal(0)) + cents(each)
        return plan.cash_after() >= min_cash

    held_before_funding = _remaining(ctx, plan)
    funded = [] if buy(Decimal(1)) else _fund(ctx, plan, step, lambda: plan.cash_after() >= min_cash)
    status: Literal["applied", "partial"] = "applied"
    if plan.cash_after() < min_cash:
        # Nothing left to sell under the funding rule: buy as much of every sleeve as cash allows.
        scale = _largest(buy)
        buy(scale)
        status = "partial"
        warnings.append(
            f"{step.action}: cash and the holdings the funding rule may sell are not enough; the sleeves were "
            f"scaled to {float(scale) * 100:.1f}% of their amounts and cash ends at {cents(plan.cash_after())}"
            + (f" (the cash sleeve asks for {min_cash})" if min_cash else ""))
    for sleeve, symbols, _ in sleeves:
        for s in symbols:
            if plan.buys.get(s, 0) > start_buys.get(s, 0) or plan.notionals.get(s, 0) > start_notionals.get(s, 0):
                plan.note(s, "BUY", f"{step.action}: {sleeve.label} sleeve ({sleeve.pct:g}% of value)")
    after_funding = _remaining(ctx, plan)
    for s in funded:
        plan.note(s, "SELL", f"sold to fund {step.action} ({step.funding_rule}): "
                             f"{held_before_funding[s] - after_funding[s]} of {held_before_funding[s]} shares")
    allocation = {s: _share(_position_value(ctx, plan, s), value) for _, symbols, _ in sleeves for s in symbols}
    if min_cash:
        allocation[CASH] = _share(plan.cash_after(), value)
    added = (sum(((q - start_buys.get(s, 0)) * plan.prices[s] for s, q in plan.buys.items()), Decimal(0))
             + sum(plan.notionals.values(), Decimal(0)) - sum(start_notionals.values(), Decimal(0)))
    achieved = sum(allocation.values()) if step.mode == "raise_to" else _share(added, value)
    verb = "top up" if step.mode == "raise_to" else "add"
    sector_rule = ("; a sector sleeve buys the pack's stocks of that sector in equal amounts (whole shares, "
                   "rounded down), else its instrument" if any(s.sector for s in step.sleeves) else "")
    rule = (f"{verb} " + ", ".join(f"{s.label} {s.pct:g}%" for s in step.sleeves) + " of value before trades"
            + sector_rule + "; cash short of the target is raised by selling "
            f"{_describe_scope(step.funding_scope)} ({step.funding_rule})")
    return Recommendation(
        action=step.action, kind="allocate",
        instruments=[s for _, symbols, _ in sleeves for s in symbols] + ([CASH] if min_cash else []),
        target_allocation_pct=step.target_allocation_pct, achieved_pct=round(achieved, 4) + 0.0,
        allocation_pct=dict(sorted(allocation.items())), status=status, rule=rule,
        rationale=step.rationale + (f" Funded in part by selling {', '.join(funded)}." if funded else ""),
    )


def _position_value(ctx: _Context, plan: _Plan, symbol: str) -> Decimal:
    """Value of ``symbol`` held after the plan so far: shares at the last close, or the notional."""
    if symbol in plan.prices:
        return _held_after(ctx, plan, symbol) * plan.prices[symbol]
    return plan.notionals.get(symbol, Decimal(0))


def _share(amount: Decimal, value: Decimal) -> float:
    """``amount`` as a % of ``value`` (0 for a portfolio worth nothing)."""
    return _pct(float(amount / value)) if value else 0.0


def _held_after(ctx: _Context, plan: _Plan, symbol: str) -> int:
    return ctx.holdings.positions.get(symbol, 0) - plan.sells.get(symbol, 0) + plan.buys.get(symbol, 0)


def _fund(ctx: _Context, plan: _Plan, step: AllocateStep, enough: Callable[[], bool]) -> list[str]:
    """Sell under the step's funding rule until ``enough()``; returns the symbols sold for it."""
    remaining = _remaining(ctx, plan)
    candidates = [s for s, n in remaining.items() if n > 0 and ctx.may_cut(s, step.funding_scope)]
    start = dict(plan.sells)

    def sell(extra: dict[str, int]) -> bool:
        plan.sells = {s: start.get(s, 0) + extra.get(s, 0) for s in sorted(set(start) | set(extra))}
        plan.sells = {s: n for s, n in plan.sells.items() if n}
        return enough()

    if step.funding_rule == "pro_rata":
        def shares(f: float) -> dict[str, int]:
            return {s: min(remaining[s], _ceil(remaining[s] * f)) for s in candidates}
        if not sell(shares(1.0)):
            return sorted(candidates)
        lo, hi = 0.0, 1.0
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if sell(shares(mid)) else (mid, hi)
        sell(shares(hi))
        return sorted(s for s in candidates if shares(hi)[s])
    extra: dict[str, int] = {}
    sold = []
    for s in _beta_order(ctx, candidates):
        sold.append(s)
        extra[s] = remaining[s]
        if not sell(extra):
            continue
        lo, hi = 0, remaining[s]
        while hi - lo > 1:
            mid = (lo + hi) // 2
            extra[s] = mid
            lo, hi = (lo, mid) if sell(extra) else (mid, hi)
        extra[s] = hi
        sell(extra)
        break
    return sold


def _largest(ok: Callable[[Decimal], bool]) -> Decimal:
    """The largest scale in [0, 1] (to 1e-6) for which ``ok`` holds; ``ok(0)`` is assumed."""
    lo, hi = Decimal(0), Decimal(1)
    step = Decimal("0.000001")
    while hi - lo > step:
        mid = ((lo + hi) / 2).quantize(step)
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo


def _describe_scope(scope: Scope) -> str:
    what = " and ".join(scope.buckets or []) or ""
    if scope.asset_classes:
        what = (what + " " if what else "") + "/".join(scope.asset_classes)
    text = f"{what} holdings"
    if scope.exclude_sectors:
        text += f" outside {', '.join(scope.exclude_sectors)}"
    return text


def _pct(x: float) -> float:
    out = pct(x)
    assert out is not None
    return out


def _ratio(x: float) -> float:
    out = ratio(x)
    assert out is not None
    return out


def _exposures(ctx: _Context, model: RiskModel | None, positions: dict[str, int], cash: Decimal,
               notionals: dict[str, Decimal], value: Decimal) -> Exposures:
    instruments = ctx.playbooks.instruments
    # Notionals are passed with cash only so that weights are fractions of the whole value.
    weights, _ = position_weights(positions, ctx.last, float(cash + sum(notionals.values(), Decimal(0))))
    v = float(value)
    mix = dict.fromkeys(BUCKETS, 0.0)
    beta = instruments[CASH].assumed_beta * float(cash) / v if v else 0.0
    for s, w in weights.items():
        mix[ctx.bucket(s)] += w
        beta += w * ctx.betas[s]
    for s, n in notionals.items():
        mix[instruments[s].bucket] += float(n) / v
        beta += float(n) / v * instruments[s].assumed_beta
    mix["cash"] += float(cash) / v if v else 0.0
    vol = volatility(model.vector(weights), model.cov) if model is not None else 0.0
    return Exposures(value=value, equity_beta=_ratio(beta),
                     asset_class_mix_pct={k: _pct(x) for k, x in mix.items()}, volatility_pct=_pct(vol))


def _report(ctx: _Context, plan: _Plan, name: str, book: Regime, model: RiskModel | None, policy: Policy,
            recommendations: list[Recommendation], warnings: list[str]) -> RegimeReport:
    pack, holdings, instruments = ctx.pack, ctx.holdings, ctx.playbooks.instruments
    trades = []
    for action, side in (("SELL", plan.sells), ("BUY", plan.buys)):
        for s, q in side.items():
            if q:
                trades.append(RegimeTrade(
                    symbol=s, action=action, priced_in_pack=True, quantity=q, price=float(plan.prices[s]),
                    trade_value=cents(q * plan.prices[s]),
                    estimated_cost=trade_cost(q * plan.prices[s], plan.commission, plan.impact_bps),
                    bucket=ctx.bucket(s), beta=_ratio(ctx.betas[s]),
                    rationale="; ".join(plan.notes.get((s, action), [])) + ".",
                ))
    for s, n in plan.notionals.items():
        trades.append(RegimeTrade(
            symbol=s, action="BUY", priced_in_pack=False, quantity=None, price=None, trade_value=n,
            estimated_cost=trade_cost(n, plan.commission, plan.impact_bps), bucket=instruments[s].bucket,
            beta=instruments[s].assumed_beta,
            rationale="; ".join(plan.notes.get((s, "BUY"), [])) + f". {s} ({instruments[s].name}) is not in "
            f"pricing pack {pack.id}: a ${n:,.2f} notional, to be priced and sized in shares at execution; "
            f"beta {instruments[s].assumed_beta:g} is the playbook's assumption.",
        ))
    trades.sort(key=lambda t: (t.symbol, t.action))
    costs = plan.costs()
    cash_after = cents(plan.cash_after())
    value_after = ctx.value - costs
    after_positions = {s: n for s in sorted(set(holdings.positions) | set(plan.buys))
                       if (n := _held_after(ctx, plan, s))}
    unpriced = sorted(plan.notionals)
    weights, _ = position_weights(holdings.positions, ctx.last, float(holdings.cash))
    holding_betas = [
        HoldingBeta(symbol=s, beta=_ratio(ctx.betas[s]), weight_pct=_pct(weights[s]),
                    sector=pack.security(s).sector, bucket=ctx.bucket(s))
        for s in _beta_order(ctx, list(holdings.positions))
    ]
    window = (f"{policy.covariance_estimator} covariance of {len(model.returns)} daily returns from "
              f"{model.returns.index[0].date()} to {model.returns.index[-1].date()}") if model else "none held"
    treatment = (f"Annualized volatility of the pack-priced holdings ({window}) as a share of total value; cash "
                 "is counted with zero variance")
    if unpriced:
        treatment += (f", and so are the unpriced notionals ({', '.join(unpriced)}) because the pack has no "
                      "prices for them: the after figure leaves out their own risk and their correlation "
                      "with the holdings")
    return RegimeReport(
        pricing_pack_id=pack.id,
        asof=pack.asof.isoformat(),
        portfolio_id=holdings.portfolio_id,
        regime=name,
        narrative=book.narrative,
        playbook_version=ctx.playbooks.version,
        recommendations=recommendations,
        trades=trades,
        estimated_costs=costs,
        current_value=ctx.value,
        value_after=value_after,
        cash_before=cents(holdings.cash),
        cash_after=cash_after,
        before=_exposures(ctx, model, dict(holdings.positions), holdings.cash, {}, ctx.value),
        after=_exposures(ctx, model, after_positions, plan.cash_after(), plan.notionals, value_after),
        holding_betas=holding_betas,
        market_index=ctx.market,
        beta_assumptions={s: instruments[s].assumed_beta for s in sorted({CASH, *unpriced})},
        assumptions_note=ctx.playbooks.assumptions_note,
        unpriced_instruments=unpriced,
        unpriced_note=(f"{', '.join(unpriced)} are not in pricing pack {pack.id}: they are recommended as dollar "
                       "notionals with no share count or price; price them and size the orders in whole shares "
                       "at execution." if unpriced else None),
        volatility_treatment=treatment + ".",
        estimation=EstimationInfo(
            observations=len(model.returns), start=model.returns.index[0].date().isoformat(),
            end=model.returns.index[-1].date().isoformat(), covariance_estimator=policy.covariance_estimator,
            expected_return_estimator=policy.expected_return_estimator,
            annualization_days=policy.annualization_days,
        ) if model else None,
        warnings=warnings,
    )
