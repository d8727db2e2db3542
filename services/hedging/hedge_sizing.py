"""Scenario P&L under a linear factor model, and hedges sized by a small linear program.

Scenario P&L of holding i, worth V_i, in GICS sector s_i::

    r_i   = beta_i * equity + tilt[s_i] + sum_f b_i,f * shock_f + sum_k gamma_i,k * style_k
    pnl_i = V_i * r_i            portfolio P&L = sum_i pnl_i   (cash: no exposure)

``beta_i`` (equity beta) and ``gamma_i,k`` (style betas to the factor ETFs) are estimated from the
pack, ``b_i,f`` (rates, dollar, credit, volatility, commodities) are assumed per sector; see
``services.hedging.exposures``. ``equity``, ``shock_f``, ``tilt`` and ``style_k`` come from the scenario
(``seeds/optimizer/scenarios.json``). The loss to hedge is ``L = max(0, -sum_i pnl_i)``.

Hedge j (a catalogue instrument used in one direction, ``seeds/optimizer/instruments.json``) pays
``p_j`` per dollar of notional under the scenario and costs ``c_j`` per dollar over the hedge
horizon (``instrument_payoff``, ``instrument_cost_rate``). Notionals ``x >= 0`` solve::

    minimize    (L - p.x)+ + c.x
    subject to  p.x <= L                          no over-hedging: the residual loss stays >= 0
                sum_j x_j <= max_notional_pct * V  notional budget (V = portfolio value)
                c.x <= max_cost_bps * V            cost budget
                x_j <= cap_j                       instrument cap; a short sector ETF is also capped
                                                   at the portfolio's holdings in its sector

over the instruments that pay off under the scenario (``p_j > 0``) only. With the first
constraint the objective is linear: each dollar of notional is worth ``p_j - c_j``, so the solver
fills the budget with what offsets most per dollar of notional and of cost. Options are bought in
whole contracts: after the first solve their notionals are rounded down to contracts and fixed,
and the ETFs are re-solved in what budget is left, then rounded down to whole dollars.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from importlib.resources.abc import Traversable
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from services.allocation.costs import cents, to_decimal
from services.allocation.lazy_cvxpy import import_cvxpy
from services.allocation.optimization import SOLVER, SOLVER_SETTINGS
from services.allocation.proposal import Money, pct, ratio
from services.allocation.rebalance import Holdings, validate_holdings
from services.data.models import PricingPack
from services.errors import InputError, SolverError
from services.hedging.exposures import (
    DEFAULT_LOOKBACK_DAYS,
    EQUITY_BETA,
    SECTOR_FILE,
    STYLE_PREFIX,
    HoldingExposures,
    SectorSensitivities,
    estimate_exposures,
    load_sector_sensitivities,
)
from services.hedging.scenarios import (
    EQUITY_UNIT,
    FACTOR_UNITS,
    MACRO_FACTORS,
    Instrument,
    InstrumentCatalogue,
    Scenario,
    get_scenario,
    load_instruments,
    load_scenarios,
)

RATE_DECIMALS = 8
# Limits are applied to the solver a dollar tighter than stated, so that rounding the reported
# offsets and costs to cents can never push a total past its limit.
SLACK_DOLLARS = 1.0
BINDING_TOL = 1e-7
FACTOR_LABELS = {
    "rates_10y_bp": ("10y yield", "bp"),
    "usd_pct": ("dollar index", "%"),
    "ig_spread_bp": ("IG spreads", "bp"),
    "hy_spread_bp": ("HY spreads", "bp"),
    "vix_pts": ("VIX", " pts"),
    "commodities_pct": ("commodities", "%"),
}

Status = Literal["hedge", "not_chosen", "excluded", "no_payoff"]


@dataclass(frozen=True)
class HedgeBudget:
    """Limits on the hedges: total notional as % of portfolio value, total cost in bps of it."""

    max_notional_pct: float = 25.0
    max_cost_bps: float = 100.0


@dataclass(frozen=True)
class InstrumentPayoff:
    """How one instrument responds to a scenario, per dollar of notional."""

    equity_beta: float
    sensitivities: dict[str, float]
    sector_tilt: float
    underlying_return: float
    payoff: float


# --- output -------------------------------------------------------------------------------------


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class ExposureUsed(_Out):
    factor: str = Field(description="equity_beta, style:<ETF>, or a macro factor such as rates_10y_bp.")
    unit: str = Field(description="What one unit of the shock is; the sensitivity is return per unit.")
    sensitivity: float
    shock: float = Field(description="The scenario's shock to this factor.")
    contribution_pct: float = Field(description="sensitivity × shock, % of the holding's value.")
    source: Literal["estimated", "assumed"]
    basis: str = Field(description="How the sensitivity was estimated, or which seed it was assumed from.")


class HoldingPnl(_Out):
    symbol: str
    sector: str
    shares: int
    price: float = Field(description="The pricing pack's last close.")
    value: Money
    weight_pct: float = Field(description="% of portfolio value (holdings + cash).")
    sector_tilt_pct: float = Field(description="The scenario's extra return for this sector, %.")
    pnl: Money = Field(description="value × scenario return.")
    pnl_pct: float = Field(description="Scenario return: Σ exposure contributions + sector tilt, % of value.")
    observations: int = Field(description="Daily returns the estimated exposures used (0 if none).")
    exposures: list[ExposureUsed]
    estimated: list[str] = Field(description="Factors whose sensitivity was estimated from the pack.")
    assumed: list[str] = Field(description="Factors whose sensitivity was assumed from a seed file.")


class Hedge(_Out):
    action: Literal["BUY", "SHORT"]
    instrument: str = Field(description="Ticker of the instrument (or of the option's underlying).")
    instrument_id: str = Field(description="Catalogue id in instruments.json.")
    instrument_type: Literal["option", "etf"]
    description: str
    notional: Money = Field(description="Underlying notional: dollars traded, or contracts × multiplier × price.")
    contracts: int | None = Field(description="Option contracts; null for ETFs.")
    notional_pct: float = Field(description="Notional as % of portfolio value.")
    payoff_per_notional_pct: float = Field(description="What the hedge pays under the scenario, % of notional.")
    expected_offset: Money = Field(description="notional × payoff: the part of the scenario loss it offsets.")
    hedge_ratio: float = Field(description="expected_offset / scenario_loss_before.")
    expected_offset_pct: float = Field(description="expected_offset as % of scenario_loss_before.")
    estimated_cost: Money = Field(description="Premium, spread, commissions and short carry over the horizon.")
    cost_bps_of_notional: float
    rationale: str


class CandidateInstrument(_Out):
    """One catalogue instrument as evaluated for this scenario: its assumptions and what became of it."""

    instrument_id: str
    instrument: str
    instrument_type: Literal["option", "etf"]
    action: Literal["BUY", "SHORT"]
    equity_beta: float
    sensitivities: dict[str, float] = Field(description="Return per unit of each factor the scenario shocks.")
    sector: str | None = Field(description="GICS sector a sector ETF inherits its sensitivities and tilt from.")
    underlying_return_pct: float = Field(description="The underlying's return under the scenario, %.")
    payoff_per_notional_pct: float
    cost_bps_of_notional: float = Field(description="Cost over the hedge horizon, bps of notional.")
    cost_basis: str
    cap_pct: float | None = Field(description="Largest notional allowed, % of portfolio value (null: budget only).")
    contract_notional: Money | None = Field(description="Notional of one option contract.")
    status: Status
    note: str


class Shock(_Out):
    factor: str
    shock: float
    unit: str


class HedgeAssumptions(_Out):
    scenarios_version: str
    instruments_version: str
    sector_sensitivities_version: str
    hedge_horizon_months: int
    episode: str = Field(description="The historical episode the scenario is modelled on, and its scale.")
    shocks: list[Shock]
    sector_tilts: dict[str, float] = Field(description="Extra return per GICS sector, as a fraction.")
    style_shocks: dict[str, float] = Field(description="Market-neutral move per factor ETF, as a fraction.")
    pnl_formula: str
    instruments: list[CandidateInstrument]


class BudgetUsed(_Out):
    max_notional_pct: float
    max_cost_bps: float
    max_notional: Money
    max_cost: Money
    notional_used: Money
    cost_used: Money
    notional_used_pct: float
    cost_used_bps: float = Field(description="Hedge cost in bps of portfolio value.")
    binding: list[str] = Field(description="Limits the sizing ran into: max_notional_pct, max_cost_bps, "
                               "residual_loss_floor (fully hedged) or cap:<instrument_id>.")


class EstimationWindow(_Out):
    market: str | None = Field(description="The index the equity betas are estimated against.")
    lookback_days: int


class HedgeSuggestion(BaseModel):
    """Scenario P&L of a portfolio and the hedges that best offset its loss within a budget."""

    model_config = ConfigDict(frozen=True)

    scenario_id: str
    scenario_version: str
    scenario_name: str
    narrative: str
    pricing_pack_id: str
    asof: str
    portfolio_id: str | None
    portfolio_value: Money
    cash: Money
    scenario_pnl: list[HoldingPnl]
    scenario_pnl_total: Money
    scenario_return_pct: float
    scenario_loss_before: Money = Field(description="max(0, −scenario_pnl_total).")
    scenario_loss_after: Money = Field(description="Loss left after the hedges' offsets (before their cost).")
    hedges: list[Hedge]
    hedge_count: int
    total_expected_offset: Money
    total_hedge_cost: Money
    net_loss_after_costs: Money = Field(description="scenario_loss_after + total_hedge_cost.")
    hedged_pct: float = Field(description="total_expected_offset as % of scenario_loss_before.")
    budget: BudgetUsed
    assumptions: HedgeAssumptions
    estimation: EstimationWindow
    reason: str | None = Field(description="Why no hedge is suggested, when none is.")
    warnings: list[str]


# --- the engine ---------------------------------------------------------------------------------


def instrument_payoff(instrument: Instrument, scenario: Scenario, sectors: SectorSensitivities) -> InstrumentPayoff:
    """The instrument's underlying return and its payoff per dollar of notional under ``scenario``.

    Underlying return u = beta × equity + Σ_f s_f × shock_f (+ the sector tilt for a sector ETF).
    A bought ETF pays u, a short one −u; an option pays its intrinsic value right after the shock:
    put max(0, K − (1 + u)), call max(0, (1 + u) − K), K = strike_pct / 100.
    """
    tilt = 0.0
    if instrument.gics_sector is not None:
        entry = sectors.sectors.get(instrument.gics_sector)
        if entry is None:
            raise InputError(
                f"instruments.json: {instrument.id} takes its sensitivities from sector '{instrument.gics_sector}', "
                f"which {SECTOR_FILE} {sectors.version} does not define",
                details={"file": "instruments.json", "instrument": instrument.id},
            )
        beta, sens = entry.equity_beta, dict(entry.sensitivities)
        tilt = scenario.sector_tilts.get(instrument.gics_sector, 0.0)
    else:
        assert instrument.equity_beta is not None
        beta, sens = instrument.equity_beta, dict(instrument.sensitivities)
    shocks = scenario.shocks.macro()
    u = beta * scenario.shocks.equity + tilt + sum(sens.get(f, 0.0) * shocks[f] for f in MACRO_FACTORS)
    if instrument.option is not None:
        strike = instrument.option.strike_pct / 100.0
        payoff = max(0.0, strike - (1.0 + u)) if instrument.option.kind == "put" else max(0.0, 1.0 + u - strike)
    else:
        payoff = u if instrument.direction == "buy" else -u
    used = {f: sens[f] for f in MACRO_FACTORS if sens.get(f, 0.0) != 0.0 and shocks[f] != 0.0}
    return InstrumentPayoff(beta, used, tilt, _rate(u), _rate(payoff))


def instrument_cost_rate(instrument: Instrument, horizon_months: int) -> float:
    """Cost of holding the hedge for the horizon, as a fraction of notional.

    premium_pct / 100 + (spread_bps + commission_bps) / 10⁴, plus for shorts
    (borrow_bps_per_year + distribution_yield_bps_per_year) / 10⁴ × horizon_months / 12.
    """
    c = instrument.cost
    rate = c.premium_pct / 100.0 + (c.spread_bps + c.commission_bps) / 1e4
    if instrument.direction == "short":
        rate += (c.borrow_bps_per_year + c.distribution_yield_bps_per_year) / 1e4 * horizon_months / 12.0
    return _rate(rate)


def suggest_hedges(
    pack: PricingPack,
    holdings: Holdings,
    scenario_id: str,
    *,
    budget: HedgeBudget | None = None,
    lookback_days: int = DEFAULT_LOOKBACK_DAYS,
    root: Traversable | None = None,
) -> HedgeSuggestion:
    """Scenario P&L of ``holdings`` priced from ``pack``, and hedges sized within ``budget``.

    ``root`` is a seed directory laid out like ``seeds/optimizer`` (the packaged one by default).
    """
    budget = budget or HedgeBudget()
    library = load_scenarios(root)
    scenario = get_scenario(library, scenario_id)
    catalogue = load_instruments(root)
    sectors = load_sector_sensitivities(root)
    prices = pack.last_prices()
    validate_holdings(pack, holdings)

    exposures = estimate_exposures(pack, list(holdings.positions), sectors,
                                   style_symbols=tuple(sorted(scenario.style_shocks)), lookback_days=lookback_days)
    warnings = list(exposures.warnings)
    values = {s: cents(n * to_decimal(prices[s])) for s, n in holdings.positions.items()}
    value = sum(values.values(), Decimal("0.00")) + cents(holdings.cash)
    rows = [_holding_pnl(sym, holdings.positions[sym], prices[sym], values[sym], value, exposures.holdings[sym],
                         scenario) for sym in sorted(holdings.positions)]
    total = sum((r.pnl for r in rows), Decimal("0.00"))
    loss = max(Decimal("0.00"), -total)

    sector_values: dict[str, Decimal] = {}
    for r in rows:
        sector_values[r.sector] = sector_values.get(r.sector, Decimal("0.00")) + r.value
    candidates = [_candidate(i, scenario, sectors, catalogue, pack.id, prices, budget, value, sector_values)
                  for i in catalogue.instruments]

    reason = _no_hedge_reason(holdings, value, total, scenario, candidates)
    sized: dict[str, tuple[Decimal, int | None]] = {}
    binding: list[str] = []
    if reason is None:
        sized, binding, notes, solver_warnings = _size(candidates, float(loss), float(value), budget)
        warnings += solver_warnings
        for c in candidates:
            if c.id in notes:
                c.note = notes[c.id]
        if not sized:
            reason = ("no instrument that pays off under this scenario offsets more than it costs within the "
                      "budget and its caps; see assumptions.instruments for each one's payoff, cost and cap")

    hedges = [_hedge(c, *sized[c.id], loss, value, scenario) for c in candidates if c.id in sized]
    hedges.sort(key=lambda h: (h.instrument, h.action, h.instrument_id))
    for c in candidates:
        if c.id in sized:
            c.status = "hedge"
    offset = sum((h.expected_offset for h in hedges), Decimal("0.00"))
    cost = sum((h.estimated_cost for h in hedges), Decimal("0.00"))
    notional = sum((h.notional for h in hedges), Decimal("0.00"))
    loss_after = loss - offset
    return HedgeSuggestion(
        scenario_id=scenario_id,
        scenario_version=library.version,
        scenario_name=scenario.name,
        narrative=scenario.narrative,
        pricing_pack_id=pack.id,
        asof=pack.asof.isoformat(),
        portfolio_id=holdings.portfolio_id,
        portfolio_value=value,
        cash=cents(holdings.cash),
        scenario_pnl=rows,
        scenario_pnl_total=total,
        scenario_return_pct=pct(float(total / value) if value else 0.0),
        scenario_loss_before=loss,
        scenario_loss_after=loss_after,
        hedges=hedges,
        hedge_count=len(hedges),
        total_expected_offset=offset,
        total_hedge_cost=cost,
        net_loss_after_costs=loss_after + cost,
        hedged_pct=pct(float(offset / loss) if loss else 0.0),
        budget=_budget_used(budget, value, notional, cost, binding),
        assumptions=_assumptions(library.version, catalogue, sectors, scenario, candidates),
        estimation=EstimationWindow(market=exposures.market, lookback_days=exposures.lookback_days),
        reason=reason,
        warnings=warnings,
    )


# --- holdings -----------------------------------------------------------------------------------


def _holding_pnl(sym: str, shares: int, price: float, value: Decimal, total: Decimal, exp: HoldingExposures,
                 scenario: Scenario) -> HoldingPnl:
    """One holding's scenario return from the exposures the scenario shocks, and its P&L."""
    used: list[ExposureUsed] = []

    def add(factor: str, unit: str, shock: float) -> None:
        e = exp.get(factor)
        used.append(ExposureUsed(factor=factor, unit=unit, sensitivity=e.value, shock=shock,
                                 contribution_pct=pct(e.value * shock), source=e.source, basis=e.basis))

    add(EQUITY_BETA, f"return per unit of {EQUITY_UNIT}", scenario.shocks.equity)
    for etf, shock in sorted(scenario.style_shocks.items()):
        add(STYLE_PREFIX + etf, f"return per unit of {etf}'s market-neutral return", shock)
    for factor, shock in scenario.shocks.macro().items():
        if shock != 0.0:
            add(factor, f"return per {FACTOR_UNITS[factor]}", shock)
    tilt = scenario.sector_tilts.get(exp.sector, 0.0)
    r = _rate(sum(e.sensitivity * e.shock for e in used) + tilt)
    pnl = cents(value * to_decimal(r))
    return HoldingPnl(
        symbol=sym, sector=exp.sector, shares=shares, price=price, value=value,
        weight_pct=pct(float(value / total)) if total else 0.0, sector_tilt_pct=pct(tilt),
        pnl=pnl, pnl_pct=pct(r), observations=exp.observations, exposures=used,
        estimated=[e.factor for e in used if e.source == "estimated"],
        assumed=[e.factor for e in used if e.source == "assumed"],
    )


# --- instruments --------------------------------------------------------------------------------


@dataclass
class _Candidate:
    """An instrument as evaluated for one request; status and note are settled while sizing."""

    instrument: Instrument
    payoff: InstrumentPayoff
    cost_rate: float
    cap: float | None
    contract_notional: Decimal | None
    status: Status
    note: str

    @property
    def id(self) -> str:
        return self.instrument.id

    @property
    def eligible(self) -> bool:
        return self.status == "not_chosen"


def _candidate(instrument: Instrument, scenario: Scenario, sectors: SectorSensitivities,
               catalogue: InstrumentCatalogue, pack_id: str, prices: dict[str, float], budget: HedgeBudget,
               value: Decimal, sector_values: dict[str, Decimal]) -> _Candidate:
    payoff = instrument_payoff(instrument, scenario, sectors)
    cost_rate = instrument_cost_rate(instrument, catalogue.horizon_months)
    caps = []
    if instrument.max_notional_pct is not None:
        caps.append(Decimal(repr(instrument.max_notional_pct)) / 100 * value)
    held = None
    if instrument.direction == "short" and instrument.gics_sector is not None:
        held = sector_values.get(instrument.gics_sector, Decimal("0.00"))
        caps.append(held)
    cap = (float(min(caps) / value) if value else 0.0) if caps else None
    allowed = min([Decimal(repr(budget.max_notional_pct)) / 100 * value, *caps])
    contract = None
    status: Status = "not_chosen"
    note = (f"pays {payoff.payoff:.2%} of notional and costs {cost_rate:.2%}; other instruments offset "
            "more per dollar of notional and of cost within the budget")
    if payoff.payoff <= 0.0:
        status = "no_payoff"
        note = _no_payoff_note(instrument, payoff)
    elif payoff.payoff <= cost_rate:
        note = f"pays {payoff.payoff:.2%} of notional under the scenario but costs {cost_rate:.2%}"
    if instrument.option is not None:
        terms = instrument.option.contract_price
        if terms.pack_symbol is not None:
            last = prices.get(terms.pack_symbol)
            if last is None:
                return _Candidate(instrument, payoff, cost_rate, cap, None, "excluded",
                                  f"pack {pack_id} has no {terms.pack_symbol} close to size a contract")
            price = to_decimal(last) * Decimal(repr(terms.scale))
        else:
            assert terms.assumed is not None
            price = to_decimal(terms.assumed)
        contract = cents(instrument.option.contract_multiplier * price)
        if status != "no_payoff" and contract > allowed:
            status = "excluded"
            note = (f"one contract is ${contract:,.2f} of notional, more than the ${cents(allowed):,.2f} this "
                    "instrument may use under the budget and its cap")
    if status != "no_payoff" and held is not None and held <= 0:
        status = "excluded"
        note = (f"the portfolio holds no {instrument.gics_sector}; a short sector ETF is capped at the holdings "
                "it hedges")
    return _Candidate(instrument, payoff, cost_rate, cap, contract, status, note)


def _no_payoff_note(instrument: Instrument, payoff: InstrumentPayoff) -> str:
    u = payoff.underlying_return
    if instrument.option is not None:
        strike_move = instrument.option.strike_pct / 100.0 - 1.0
        return (f"the underlying moves {u:+.2%}, not past the strike (a {strike_move:+.2%} move): "
                "no intrinsic value")
    if instrument.direction == "short":
        return f"the underlying moves {u:+.2%}: a short position would lose"
    return f"the underlying moves {u:+.2%}: a long position would not gain"


def _no_hedge_reason(holdings: Holdings, value: Decimal, total: Decimal, scenario: Scenario,
                     candidates: list[_Candidate]) -> str | None:
    if not holdings.positions:
        return (f"the portfolio holds only cash (${value:,.2f}): nothing is exposed to the {scenario.name.lower()} "
                "scenario, so there is nothing to hedge")
    if total >= 0:
        return (f"under the {scenario.name.lower()} scenario this portfolio gains ${total:,.2f}: there is no loss "
                "to hedge")
    if not any(c.status != "no_payoff" for c in candidates):
        return "no instrument in the catalogue pays off under this scenario"
    return None


# --- sizing -------------------------------------------------------------------------------------


def _size(candidates: list[_Candidate], loss: float, value: float, budget: HedgeBudget
          ) -> tuple[dict[str, tuple[Decimal, int | None]], list[str], dict[str, str], list[str]]:
    """Notionals (and contracts) per instrument id, the binding limits, notes for the unsized, warnings."""
    pool = [c for c in candidates if c.eligible]
    if not pool:
        return {}, [], {}, []
    slack = SLACK_DOLLARS / value
    limits = np.array([loss / value - slack, budget.max_notional_pct / 100.0 - slack,
                       budget.max_cost_bps / 1e4 - slack]).clip(min=0.0)
    p = np.array([c.payoff.payoff for c in pool])
    cost = np.array([c.cost_rate for c in pool])
    caps = np.array([limits[1] if c.cap is None else max(0.0, min(c.cap, limits[1])) for c in pool])
    x, inaccurate = _solve(p, cost, caps, limits)
    notes: dict[str, str] = {}
    contracts: dict[int, int] = {}
    for i, c in enumerate(pool):
        if c.contract_notional is None:
            continue
        size = float(c.contract_notional) / value
        # Rounding down keeps every limit; 1e-9 of a contract absorbs the solver's tolerance.
        contracts[i] = math.floor(x[i] / size + 1e-9)
        if contracts[i] == 0 and x[i] * value >= 1.0:
            notes[c.id] = (f"the optimal ${x[i] * value:,.2f} is less than one contract "
                           f"(${c.contract_notional:,.2f}); not used")
        x[i] = contracts[i] * size
    etfs = np.array([i not in contracts for i in range(len(pool))])
    if contracts and etfs.any():
        # Re-size the ETFs in what the whole-contract options leave of each limit.
        options = ~etfs
        left = limits - np.array([p[options] @ x[options], x[options].sum(), cost[options] @ x[options]])
        x[etfs], more_inaccurate = _solve(p[etfs], cost[etfs], caps[etfs], left.clip(min=0.0))
        inaccurate = inaccurate or more_inaccurate
    sized: dict[str, tuple[Decimal, int | None]] = {}
    for i, c in enumerate(pool):
        if i in contracts:
            if contracts[i] > 0:
                assert c.contract_notional is not None
                sized[c.id] = (contracts[i] * c.contract_notional, contracts[i])
            continue
        dollars = Decimal(repr(float(x[i] * value))).to_integral_value(rounding=ROUND_FLOOR)
        if dollars > 0:
            sized[c.id] = (dollars.quantize(Decimal("0.01")), None)
    warnings = [f"solver {SOLVER} reported an inaccurate optimum sizing the hedges; every limit was "
                "re-checked after rounding"] if inaccurate else []
    return sized, _binding(pool, x, p, cost, caps, limits), notes, warnings


def _solve(p: np.ndarray, c: np.ndarray, caps: np.ndarray, limits: np.ndarray) -> tuple[np.ndarray, bool]:
    """The LP of the module docstring, in fractions of portfolio value; also whether it was inaccurate."""
    cp = import_cvxpy()  # here, not at the top: listing capabilities should not load the solver

    loss, max_notional, max_cost = (float(v) for v in limits)
    x = cp.Variable(len(p), nonneg=True)
    constraints = [p @ x <= loss, cp.sum(x) <= max_notional, c @ x <= max_cost, x <= caps]
    problem = cp.Problem(cp.Minimize(cp.pos(loss - p @ x) + c @ x), constraints)
    try:
        problem.solve(solver=SOLVER, **SOLVER_SETTINGS)
    except cp.error.SolverError as exc:
        raise SolverError(f"solver {SOLVER} failed sizing hedges: {exc}",
                          details={"solver": SOLVER, "status": "error"}) from exc
    if problem.status not in ("optimal", "optimal_inaccurate") or x.value is None:
        raise SolverError(f"solver {SOLVER} ended with status '{problem.status}' sizing hedges",
                          details={"solver": SOLVER, "status": str(problem.status)})
    return np.clip(np.asarray(x.value, dtype=float), 0.0, caps), problem.status == "optimal_inaccurate"


def _binding(pool: list[_Candidate], x: np.ndarray, p: np.ndarray, c: np.ndarray, caps: np.ndarray,
             limits: np.ndarray) -> list[str]:
    loss, max_notional, max_cost = (float(v) for v in limits)
    out = []
    if float(x.sum()) >= max_notional - BINDING_TOL:
        out.append("max_notional_pct")
    if float(c @ x) >= max_cost - BINDING_TOL:
        out.append("max_cost_bps")
    if float(p @ x) >= loss - BINDING_TOL:
        out.append("residual_loss_floor")
    out += [f"cap:{cand.id}" for cand, xi, cap in zip(pool, x, caps, strict=True)
            if cap < max_notional - BINDING_TOL and xi > BINDING_TOL and xi >= cap - BINDING_TOL]
    return sorted(out)


# --- report -------------------------------------------------------------------------------------


def _hedge(c: _Candidate, notional: Decimal, contracts: int | None, loss: Decimal, value: Decimal,
           scenario: Scenario) -> Hedge:
    inst = c.instrument
    offset = cents(notional * to_decimal(c.payoff.payoff))
    cost = cents(notional * to_decimal(c.cost_rate))
    share = float(offset / loss) if loss else 0.0
    action = "BUY" if inst.direction == "buy" else "SHORT"
    how = (f"Buy {contracts} contract{'s' if contracts != 1 else ''}" if contracts is not None
           else f"{'Buy' if action == 'BUY' else 'Sell short'} ${notional:,.0f}")
    payoff = (f"the {inst.option.kind} pays its intrinsic value, {c.payoff.payoff:.2%} of notional"
              if inst.option is not None
              else f"the {'long' if action == 'BUY' else 'short'} position gains {c.payoff.payoff:.2%}")
    capped = ""
    if c.cap is not None and notional >= cents(Decimal(repr(c.cap)) * value) - 1:
        capped = (f" Sized at its cap of {c.cap:.2%} of portfolio value"
                  + (f" (the portfolio's {inst.gics_sector} holdings)." if inst.direction == "short"
                     and inst.gics_sector else "."))
    return Hedge(
        action=action, instrument=inst.symbol, instrument_id=inst.id, instrument_type=inst.type,
        description=inst.name, notional=notional, contracts=contracts,
        notional_pct=pct(float(notional / value)), payoff_per_notional_pct=pct(c.payoff.payoff),
        expected_offset=offset, hedge_ratio=ratio(share), expected_offset_pct=pct(share),
        estimated_cost=cost, cost_bps_of_notional=ratio(c.cost_rate * 1e4, 2),
        rationale=(f"{how} of {inst.symbol} ({inst.name}): under {scenario.name.lower()} the underlying moves "
                   f"{c.payoff.underlying_return:+.2%} ({_drivers(c.payoff, scenario)}), so {payoff}. "
                   f"That offsets ${offset:,.2f}, {share:.1%} of the ${loss:,.2f} scenario loss, for ${cost:,.2f} "
                   f"({c.cost_rate:.2%} of notional: {inst.cost.basis}){capped}"),
    )


def _drivers(payoff: InstrumentPayoff, scenario: Scenario) -> str:
    parts = []
    if payoff.equity_beta and scenario.shocks.equity:
        parts.append(f"S&P 500 {scenario.shocks.equity:+.0%} × beta {payoff.equity_beta:g}")
    shocks = scenario.shocks.macro()
    for f, s in payoff.sensitivities.items():
        label, unit = FACTOR_LABELS[f]
        parts.append(f"{label} {shocks[f]:+g}{unit} → {s * shocks[f]:+.2%}")
    if payoff.sector_tilt:
        parts.append(f"sector tilt {payoff.sector_tilt:+.0%}")
    return "; ".join(parts) or "no factor it responds to is shocked"


def _budget_used(budget: HedgeBudget, value: Decimal, notional: Decimal, cost: Decimal,
                 binding: list[str]) -> BudgetUsed:
    return BudgetUsed(
        max_notional_pct=budget.max_notional_pct, max_cost_bps=budget.max_cost_bps,
        max_notional=cents(value * Decimal(repr(budget.max_notional_pct)) / 100),
        max_cost=cents(value * Decimal(repr(budget.max_cost_bps)) / 10000),
        notional_used=notional, cost_used=cost,
        notional_used_pct=pct(float(notional / value)) if value else 0.0,
        cost_used_bps=ratio(float(cost / value) * 1e4, 2) if value else 0.0,
        binding=binding,
    )


def _assumptions(version: str, catalogue: InstrumentCatalogue, sectors: SectorSensitivities, scenario: Scenario,
                 candidates: list[_Candidate]) -> HedgeAssumptions:
    ep = scenario.episode
    shocks = [Shock(factor="equity", shock=scenario.shocks.equity, unit=EQUITY_UNIT)]
    shocks += [Shock(factor=f, shock=s, unit=FACTOR_UNITS[f]) for f, s in scenario.shocks.macro().items()]
    return HedgeAssumptions(
        scenarios_version=version,
        instruments_version=catalogue.version,
        sector_sensitivities_version=sectors.version,
        hedge_horizon_months=catalogue.horizon_months,
        episode=f"{ep.name}, {ep.start.isoformat()} to {ep.end.isoformat()}, scale {ep.scale:g}",
        shocks=shocks,
        sector_tilts=dict(sorted(scenario.sector_tilts.items())),
        style_shocks=dict(sorted(scenario.style_shocks.items())),
        pnl_formula="pnl_i = value_i × (beta_i × equity + sector_tilt + Σ_f sensitivity_i,f × shock_f "
                    "+ Σ_k style_beta_i,k × style_shock_k)",
        instruments=[
            CandidateInstrument(
                instrument_id=c.id, instrument=c.instrument.symbol, instrument_type=c.instrument.type,
                action="BUY" if c.instrument.direction == "buy" else "SHORT",
                equity_beta=c.payoff.equity_beta, sensitivities=c.payoff.sensitivities,
                sector=c.instrument.gics_sector,
                underlying_return_pct=pct(c.payoff.underlying_return),
                payoff_per_notional_pct=pct(c.payoff.payoff),
                cost_bps_of_notional=ratio(c.cost_rate * 1e4, 2), cost_basis=c.instrument.cost.basis,
                cap_pct=pct(c.cap) if c.cap is not None else None, contract_notional=c.contract_notional,
                status=c.status, note=c.note if c.status != "hedge" else "sized as a hedge; see hedges",
            )
            for c in candidates
        ],
    )


def _rate(x: float) -> float:
    return round(float(x), RATE_DECIMALS) + 0.0
