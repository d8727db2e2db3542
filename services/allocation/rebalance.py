"""Propose trades: from a pack, holdings and a resolved policy to a whole-share, costed proposal.

The steps, each in its own module: decide which names may be held (universe, quality), estimate
risk and return (``estimation``), solve the constrained allocation (``optimization``), round to
whole shares within every hard constraint (``rounding``), and report with exact costs.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from decimal import Decimal
from typing import Any

import numpy as np

from services.allocation.costs import cents, to_decimal, trade_cost
from services.allocation.elastic import joint_infeasible
from services.allocation.explain import explain_binding
from services.allocation.frontier import frontier_weights, limits_sentence
from services.allocation.harvest import choose_harvests
from services.allocation.methods import (
    HIERARCHICAL,
    hierarchical_warning,
    risk_contribution_report,
    risk_measure_report,
)
from services.allocation.methods import configure as configure_method
from services.allocation.optimization import (
    TAX_AVERSION_OBJECTIVES,
    Allocation,
    AllocationProblem,
    SectorCap,
    objective_value,
    solve,
)
from services.allocation.proposal import (
    BlackLittermanInfo,
    ConstraintCheck,
    EfficientFrontier,
    EstimationInfo,
    RiskModelInfo,
    RiskReturn,
    Trade,
    TradeProposal,
    pct,
    ratio,
)
from services.allocation.rounding import (
    EPS,
    PlanSetup,
    evaluate,
    round_signed,
    round_to_shares,
    tracking_error_ok,
)
from services.allocation.shorts import validate_shorts, with_shorts
from services.allocation.tax_plan import (
    RETURN_OBJECTIVES,
    TaxPlan,
    enforce,
    objective_costs,
    realized_tax,
)
from services.data.models import Lot, PricingPack
from services.data.policy import Policy
from services.errors import InfeasibleError, InputError
from services.estimation import riskfolio_adapter
from services.estimation.benchmark import BenchmarkProjection, project
from services.estimation.black_litterman import ViewRow, implied_risk_aversion, posterior
from services.estimation.cache import EstimateCache
from services.estimation.estimators import Estimates, estimate_for_policy
from services.estimation.risk_models import (
    FactorRisk,
    full_factor,
    fundamental,
    statistical,
    statistical_factor_count,
)
from services.tax.lots import TaxSettings, numbered
from services.tax.preview import Harvest, Sale, TaxComparison, preview
from services.tax.wash import WINDOW_DAYS, WashHistory, WashSaleBlock, wash_sale_blocks

NOT_HOLDABLE = ("index", "cash")
TE_MARGINS = (0.005, 0.02, 0.05, 0.1)
FAST_RESOLVES = 4  # per margin: re-solves of a fast solve whose tracking error the approximation understated


@dataclass(frozen=True, eq=False)
class RiskSetup:
    """The risk model of a proposal and how the solver sees it.

    Attributes:
        factor: G with GᵀG = Σ of the risk model over ``Estimates.symbols``: every reported
            figure and every limit check after rounding uses it.
        structured: the k-factor structure the solver is given instead of ``factor`` (a factor
            risk model itself, or the fast solve's approximation of the sample covariance); None
            when the solver uses ``factor``.
        model: sample, statistical or fundamental; solve: exact or fast.
    """

    factor: np.ndarray
    structured: FactorRisk | None
    model: str
    solve: str

    @property
    def approximate(self) -> bool:
        """The solver's covariance differs from the reported one (sample risk, fast solve)."""
        return self.solve == "fast"


@dataclass(frozen=True)
class Holdings:
    """What the proposal starts from: whole shares per symbol and cash."""

    portfolio_id: str | None
    positions: dict[str, int]
    cash: Decimal


@dataclass(frozen=True)
class Eligibility:
    eligible: tuple[str, ...]
    forced: dict[str, str]
    warnings: tuple[str, ...]


def _fraction_hints(propose: Callable[..., TradeProposal]) -> Callable[..., TradeProposal]:
    """``propose`` whose infeasibility errors repeat the policy's "did you mean 10%?" hints: a
    fraction typed into a percent field (0.1 for 10%) is the likeliest cause of the conflict."""

    @functools.wraps(propose)
    def hinted(pack: PricingPack, holdings: Holdings, policy: Policy, *args: Any, **kwargs: Any) -> TradeProposal:
        try:
            return propose(pack, holdings, policy, *args, **kwargs)
        except InfeasibleError as err:
            hints = policy.suspicious_values()
            if not hints:
                raise
            raise InfeasibleError(f"{err.message} Note: {'; '.join(hints)}",
                                  details={**err.details, "hints": hints}) from None

    return hinted


@_fraction_hints
def propose_trades(
    pack: PricingPack,
    holdings: Holdings,
    policy: Policy,
    ratings: dict[str, float],
    named_benchmarks: dict[str, dict[str, float]],
    cash_flow: Decimal | None = None,
    estimates: EstimateCache | None = None,
    drift_band_pct: float | None = None,
    notes: Sequence[str] = (),
    frontier_points: int | None = None,
    explain_limits: bool = False,
    lots: tuple[Lot, ...] | None = None,
    wash_history: WashHistory | None = None,
) -> TradeProposal:
    """The best whole-share rebalance of ``holdings`` under ``policy``, priced from ``pack``.

    For a taxable account (``policy.tax_rates``) the proposal carries a tax preview of its sales
    from ``lots``, the portfolio's tax lots (None: each position is one lot of unknown basis), and
    the wash-sale rule (from the lots' dates and ``wash_history``) is a constraint: blocked names
    are not bought, and their loss lots not sold.

    ``cash_flow`` is a deposit (positive) to invest or a withdrawal (negative) to raise: it is
    added to cash before the allocation, whose invested fraction then applies to the new value,
    and the turnover limit is widened by the flow's share of that value (see ``with_cash_flow``).
    A deposit is invested before any sale is considered (``_deposit_first``): holdings are sold
    only when investing it without sales cannot meet the policy's limits or, under method
    ``target`` with ``drift_band_pct``, leaves a line further than that from its target.
    ``estimates`` shares estimation between proposals (a batch); without it every call
    estimates for itself. The result is the same either way. ``notes`` are warnings the caller
    found while gathering the inputs (where stored ratings came from), reported first.
    ``frontier_points`` adds the efficient frontier under the same limits, risk model and
    expected returns (``frontier``); ``explain_limits`` the cost of each binding limit, by
    re-solving with it relaxed (``explain``).
    """
    prices = pack.last_prices()
    validate_holdings(pack, holdings)
    validate_sector_limits(pack, policy)
    validate_forecasts(pack, policy)
    validate_asset_class_limits(pack, policy)
    validate_shorts(policy, frontier_points=frontier_points, explain_limits=explain_limits)
    warnings = list(notes) + policy.suspicious_values() + _unused_method_fields(policy)
    if cash_flow:
        holdings, note = with_cash_flow(holdings, cash_flow, prices, policy)
        warnings.append(note)
    choice = eligibility(pack, holdings, policy, ratings)
    warnings += choice.warnings
    choice, no_buy, fixed, held_notes = trading_restrictions(pack, holdings, policy, choice, warnings)
    blocks = wash_blocks(pack, holdings, policy, lots, wash_history)
    if blocks:
        choice, no_buy, held_notes = _wash_sale_restrictions(choice, holdings, no_buy, held_notes, blocks)
    settings = tax_settings(policy, blocks)
    harvests: tuple[Harvest, ...] = ()
    if settings is not None and policy.harvest_losses:
        choice, harvests, blocks = _harvest(pack, holdings, policy, ratings, settings, lots, choice, no_buy | fixed,
                                            blocks, warnings)
    benchmark_name, bench = resolve_benchmark(pack, policy, named_benchmarks)
    if policy.max_tracking_error_pct is not None and bench is None:
        warnings.append("max_tracking_error_pct is set but no benchmark is named; the tracking-error limit was not applied")

    if not holdings.positions and (holdings.cash <= 0 or not choice.eligible):
        warnings.append("the portfolio has no positions" + ("" if holdings.cash <= 0 else " and nothing is eligible to buy")
                        + "; no trades proposed")
        return with_tax_preview(_empty_proposal(pack, holdings, policy, warnings), pack, holdings, policy, lots, {},
                                blocks=blocks)

    plan_symbols = tuple(sorted(set(holdings.positions) | set(choice.eligible)))
    risk_symbols = _risk_symbols(holdings, choice)

    def estimate_over(symbols: list[str]) -> Estimates:
        return (estimate_for_policy(pack, symbols, policy) if estimates is None
                else estimates.estimates_for(pack, symbols, policy))

    est = estimate_over(risk_symbols)
    warnings += est.warnings
    risk = risk_setup(pack, est, policy, len(choice.eligible))
    factor = risk.factor
    # The benchmark is projected onto the portfolio's own estimate, never fitted with it: naming
    # one must not move the portfolio's figures (services.estimation.benchmark).
    proj = project(est, bench, estimate_over) if bench else None
    if proj is not None:
        warnings += proj.warnings
    bench_vec = proj.weights if proj is not None else None
    offset = factor @ bench_vec if bench_vec is not None else None
    bl_info = None
    if policy.method == "black_litterman" and not est.too_short:
        # The posterior replaces the expected returns everywhere: objective and reported figures.
        est, bl_info = black_litterman(est, risk, policy, proj)

    setup = _plan_setup(pack, holdings, policy, choice, plan_symbols, prices, factor, est, offset, proj)
    if no_buy or fixed:
        setup = replace(setup, no_buy=np.array([s in no_buy for s in plan_symbols]),
                        fixed=np.array([s in fixed for s in plan_symbols]))
    if policy.min_position_pct is not None:
        setup = replace(setup, min_position=policy.min_position_pct / 100.0)
    floors = minimum_weights(pack, policy, choice, fixed)
    if floors:
        setup = replace(setup, floors=_vector(floors, plan_symbols))
    if cash_flow and setup.max_turnover is not None:
        # Trades that invest a deposit or raise a withdrawal are the client's, not discretionary.
        widening = float(abs(cash_flow)) / setup.value
        setup = replace(setup, max_turnover=setup.max_turnover + widening)
        warnings.append(f"cash flow: the turnover limit is widened by {widening * 100:.4f} points to "
                        f"{setup.max_turnover * 100:.4f}% for the trades that move the cash flow")
    problem, fallback = _allocation_problem(pack, policy, choice, setup, est, risk, proj, warnings)
    if floors:
        problem = replace(problem, floors=_vector(floors, problem.symbols))
        _check_floors(problem, floors)
    if no_buy or fixed:
        problem = _restricted_problem(problem, no_buy, fixed)
    if policy.allow_short:
        problem = with_shorts(problem, policy, no_buy, fixed)
        if problem.gross_limit is None:
            warnings.append(f"allow_short: not applied under the {problem.objective} fallback, which is long only")
        setup = replace(setup, gross_limit=problem.gross_limit)
    if harvests:
        problem, setup = _harvest_limits(problem, setup, harvests)
    tax_plan = blind = None
    if policy.tax_aversion is not None and (settings is None or problem.objective not in TAX_AVERSION_OBJECTIVES):
        warnings.append("tax_aversion is set but only a taxable account (tax_rates) under method target, risk_parity, "
                        "hrp, herc or min_variance uses it; ignored")
    if settings is not None or policy.costs_in_objective:
        account = numbered(account_lots(holdings, lots))
        if settings is not None and policy.tax_aversion is not None and problem.objective in TAX_AVERSION_OBJECTIVES:
            # The policy's rate is %² of distance per 1% of value; both sides as fractions: / 100.
            problem = replace(problem, tax_aversion=policy.tax_aversion / 100.0)
            blind = objective_costs(problem, setup, policy, None, account, pack.asof)[0]
        if settings is not None and _objective(policy) in RETURN_OBJECTIVES and not est.too_short:
            blind = objective_costs(problem, setup, policy, None, account, pack.asof)[0]
        withdrawal = float(-cash_flow) if cash_flow and cash_flow < 0 else 0.0
        problem, tax_plan = objective_costs(problem, setup, policy, settings, account, pack.asof, withdrawal=withdrawal)

    attempts = [(problem, setup)]
    if cash_flow and cash_flow > 0:
        attempts.insert(0, _deposit_first(problem, setup))
    solves = 0
    floor = problem.min_return
    for n, (candidate, candidate_setup) in enumerate(attempts):
        try:
            last = n == len(attempts) - 1
            shares, optimal, allocation, share_notes, problem, used, margin = _solve_and_round(
                candidate, candidate_setup, risk, policy, est, explain_infeasible=last, tax_plan=tax_plan)
        except InfeasibleError as err:
            if last:
                raise
            warnings.append(f"cash flow: the deposit alone cannot meet every limit without selling "
                            f"({err.message}); holdings may be sold")
            solves += len(TE_MARGINS)
            continue
        solves += used
        if not last and (why := _outside_band(policy, candidate_setup, shares, drift_band_pct)):
            warnings.append(f"cash flow: investing the deposit without selling leaves {why}; holdings may be sold")
            continue
        setup = candidate_setup
        break
    share_notes.update(held_notes)
    assert shares is not None and optimal is not None and allocation is not None
    warnings += [*allocation.warnings, *hierarchical_warning(policy, problem, allocation)]
    if floor is not None and problem.min_return is not None and problem.min_return > floor:
        warnings.append(f"bl_min_return_pct: whole shares and costs left the expected return below "
                        f"{floor * 100:g}%; solved with the floor raised to {problem.min_return * 100:.6f}% "
                        "so that the rounded portfolio keeps it")
    rounded = evaluate(setup, shares)
    extras: dict = {}
    if problem.risk_budget is not None and allocation.objective == "risk_budgeting":
        decision = [setup.symbols.index(s) for s in problem.symbols]
        extras["risk_contributions"] = risk_contribution_report(problem, allocation.weights,
                                                                rounded.weights[decision], warnings)
    if allocation.objective == "min_risk" and problem.risk_measure != "variance":
        weights_now = setup.current * setup.prices / setup.value
        extras["risk_measure"] = risk_measure_report(problem, est.returns[list(setup.symbols)].to_numpy(),
                                                     weights_now, rounded.weights)
    binding = allocation.binding
    if risk.approximate and setup.max_tracking_error is not None:
        if problem.max_tracking_error is not None and problem.max_tracking_error < setup.max_tracking_error:
            warnings.append(
                f"solve fast: the {risk.structured.k if risk.structured else 0}-factor approximation understated "
                f"tracking error; re-solved with its limit tightened to {problem.max_tracking_error * 100:.4f}% "
                "so that the full covariance meets max_tracking_error_pct"
            )
        # Binding is judged under the full covariance, like every reported figure.
        te_binding = _plan_te(setup, optimal) >= setup.max_tracking_error * 0.98
        binding = tuple(sorted({b for b in binding if b != "max_tracking_error_pct"}
                               | ({"max_tracking_error_pct"} if te_binding else set())))
    info = None
    if policy.risk_model is not None or policy.solve is not None or risk.solve == "fast":
        info = RiskModelInfo(
            risk_model=risk.model, k=risk.structured.k if risk.structured is not None else None,
            factors=list(risk.structured.factors) if risk.structured is not None else [],
            solve=risk.solve, solves=solves,
        )
    # Report the method that produced the weights: the policy's, unless the engine fell back.
    method = fallback or (policy.method if allocation.objective in ("track", _objective(policy))
                          else allocation.objective)
    proposal = _report(pack, holdings, policy, choice, setup, est, factor, proj, benchmark_name,
                       binding, method, optimal, shares, share_notes, warnings, fallback, info, bl_info)
    explanations = (explain_binding(problem, allocation.objective, allocation.weights, binding, margin)
                    if explain_limits else None)
    if explanations:
        extras["binding_explanations"] = explanations
    if extras:
        proposal = proposal.model_copy(update=extras)
    comparison = None
    if blind is not None and tax_plan is not None and (allocation.objective in RETURN_OBJECTIVES
                                                       or problem.tax_aversion is not None):
        comparison = _tax_comparison(problem, blind, allocation, tax_plan, setup, plan_symbols, margin)
    forced = dict(choice.forced)
    if tax_plan is not None:
        # A sale the position cap needs beyond the lots without a short-term gain is forced by the cap;
        # without a cap, a position worth more than the whole portfolio after a withdrawal by the withdrawal.
        raised = f"the withdrawal of ${-cash_flow:,.2f}" if cash_flow and cash_flow < 0 else "the cash buffer"
        cap = (raised if policy.max_single_position_pct is None
               else f"the {policy.max_single_position_pct:g}% position cap")
        forced.update({s: cap for s in sorted(tax_plan.cap_forced)})
        if tax_plan.withdrawal:
            # A sale below the short-term floor raises the withdrawal: forced by it.
            forced.update({s: raised for i, s in enumerate(setup.symbols)
                           if s not in forced and shares[i] < tax_plan.floor_shares[i]})
    proposal = with_tax_preview(proposal, pack, holdings, policy, lots, forced, comparison, blocks, harvests)
    if frontier_points is None:
        return proposal
    points = [_risk_return(est, factor, dict(zip(problem.symbols, w, strict=True)), policy.risk_free_rate)
              for w in frontier_weights(problem, frontier_points)]
    frontier = EfficientFrontier(
        points=sorted(points, key=lambda r: (r.volatility_pct, r.expected_return_pct)),
        current=proposal.before, proposed=proposal.after,
        limits=limits_sentence(problem, policy, benchmark_name),
    )
    return proposal.model_copy(update={"efficient_frontier": frontier})


def _solve_and_round(
    problem: AllocationProblem, setup: PlanSetup, risk: RiskSetup, policy: Policy, est: Estimates,
    *, explain_infeasible: bool = True, tax_plan: TaxPlan | None = None,
) -> tuple[np.ndarray, np.ndarray, Allocation, dict[str, str], AllocationProblem, int, float]:
    """Solve, round to whole shares, and re-solve while the rounded portfolio breaks a limit the
    solver cannot see in whole shares; (shares, optimal, allocation, notes, problem, solves,
    tracking-error margin).

    Tracking error: re-solved with a tighter margin. A floor on expected return
    (``problem.min_return``): re-solved with the floor raised by what whole shares and costs lost.

    An infeasible problem is explained with every limit that must move at once
    (``joint_infeasible``, an elastic solve) when ``explain_infeasible``; a caller that has
    another problem to try next passes False and gets the solver's own error. With a
    ``tax_plan`` the tax rules are enforced on the whole shares (``enforce``).

    Raises:
        InfeasibleError: the problem is infeasible, or whole shares cannot keep tracking error
            (or the return floor) within the limit even at the largest margin.
    """
    solves = 0
    floor = problem.min_return
    short = 0.0
    rounded = None
    for margin in TE_MARGINS:
        for _ in range(FAST_RESOLVES):
            try:
                allocation = _solve_taxed(problem, margin, tax_plan)
            except InfeasibleError as err:
                if short:
                    raise _floor_in_whole_shares(policy, setup.value, est, setup, rounded) from None
                # The elastic problem is long only: with shorts the solve's own explanation stands.
                if (not explain_infeasible or "max_realized_gain" in err.details.get("conflicts", ())
                        or problem.gross_limit is not None):
                    raise
                # One conflict named by the solve; the elastic problem finds whether more must move at once.
                raise joint_infeasible(problem, margin, err) from None
            solves += 1
            optimal = _vector(dict(zip(problem.symbols, allocation.weights, strict=True)), setup.symbols)
            understated = _understated_te(risk, setup, optimal, margin)
            if understated is None:
                break
            # The approximation understated tracking error: tighten its limit by the ratio and re-solve.
            assert problem.max_tracking_error is not None
            problem = replace(problem, max_tracking_error=problem.max_tracking_error * understated)
        shares, notes = (round_to_shares if setup.gross_limit is None else round_signed)(setup, optimal)
        if tax_plan is not None:
            shares = enforce(tax_plan, setup, shares, optimal, notes)
        rounded = evaluate(setup, shares)
        short = _floor_shortfall(floor, est, setup, rounded, policy.risk_free_rate)
        if tracking_error_ok(setup, rounded) and not short:
            return shares, optimal, allocation, notes, problem, solves, margin
        if short:
            # Whole shares and their costs left the expected return below the floor: raise the
            # floor the solver sees by the shortfall and solve again.
            assert problem.min_return is not None
            problem = replace(problem, min_return=problem.min_return + short)
    if short:
        raise _floor_in_whole_shares(policy, setup.value, est, setup, rounded)
    # Whole shares are too coarse for this portfolio's size: a discrete conflict, not a solver fault.
    raise InfeasibleError(
        f"infeasible policy: in whole shares, a portfolio worth ${setup.value:,.2f} cannot hold the "
        f"optimal weights closely enough to keep tracking error within {policy.max_tracking_error_pct:g}%: "
        f"the rounded portfolio reaches {rounded.tracking_error * 100:.2f}% even when solved with a "
        f"{TE_MARGINS[-1]:.0%} margin. Raise max_tracking_error_pct, add cash, or narrow the universe.",
        details={"conflicts": ["max_tracking_error_pct", "whole shares", "portfolio value"],
                 "portfolio_value": round(setup.value, 2),
                 "rounded_tracking_error_pct": round(rounded.tracking_error * 100, 4),
                 "smallest_relaxation": {"max_tracking_error_pct": math.ceil(rounded.tracking_error * 1e4) / 100}},
    )


def _deposit_first(problem: AllocationProblem, setup: PlanSetup) -> tuple[AllocationProblem, PlanSetup]:
    """``problem`` and ``setup`` under which a deposit is invested before any sale is considered.

    Every eligible holding keeps at least its current weight (of the value after the deposit),
    or its cap when it is over the cap even so: the only sales left are those the policy forces
    whatever the cash (ineligible names, positions over their cap). Rounding then sells none of
    the spared holdings unless a hard limit needs it. The caller falls back to the problem
    without these floors when they make it infeasible (a sector, tracking-error, turnover or
    cash limit the deposit alone cannot meet), and says so.
    """
    base = problem.floors if problem.floors is not None else np.zeros(problem.n)
    floors = np.maximum(base, np.minimum(problem.current, problem.caps))
    weight = setup.current * setup.prices / setup.value
    no_sell = (setup.current > 0) & ~setup.forced & (weight <= setup.caps)
    return replace(problem, floors=floors), replace(setup, no_sell=no_sell)


def _outside_band(policy: Policy, setup: PlanSetup, shares: np.ndarray, band_pct: float | None) -> str | None:
    """Under method ``target``, the largest drift from the target beyond ``band_pct`` points that
    holding ``shares`` leaves, described; None when every line is within the band (or no band).

    Drift is judged as ``check_drift`` judges it: at 4 decimals, strictly beyond the band.
    """
    if band_pct is None or policy.method != "target" or policy.target_weights_pct is None:
        return None
    weights = evaluate(setup, shares).weights * 100.0
    after = dict(zip(setup.symbols, weights, strict=True))
    target = policy.target_weights_pct
    drifts = {s: round(after.get(s, 0.0) - target.get(s, 0.0), 4) for s in sorted(set(after) | set(target))}
    worst = max(drifts, key=lambda s: (abs(drifts[s]), s))
    if abs(drifts[worst]) <= band_pct:
        return None
    return f"{worst} {drifts[worst]:+.4f} points from its target, outside the {band_pct:g}-point band"


def _harvest(pack: PricingPack, holdings: Holdings, policy: Policy, ratings: dict[str, float], settings: TaxSettings,
             lots: tuple[Lot, ...] | None, choice: Eligibility, untradable: set[str], blocks: list[WashSaleBlock],
             warnings: list[str]) -> tuple[Eligibility, tuple[Harvest, ...], list[WashSaleBlock]]:
    """The losses to harvest; their replacements join the eligible names and the harvested names
    are blocked from purchase for 30 days (the wash-sale rule, listed with the other blocks)."""
    last = pack.closes.iloc[-1]
    no_purchase = {b.symbol for b in blocks if b.rule == "no_purchase"}
    excluded = set(policy.restricted_symbols) | set(policy.frozen_symbols) | no_purchase | set(choice.forced)

    def quality_ok(sym: str) -> bool:
        score = ratings.get(sym)
        if policy.min_quality_score is None:
            return True
        return policy.unrated == "eligible" if score is None else score >= policy.min_quality_score

    buyable = {s.symbol for s in pack.securities
               if s.asset_class in ("equity", "etf") and s.symbol in last.index and last[s.symbol] == last[s.symbol]
               and s.symbol not in excluded and quality_ok(s.symbol)}
    tradable = set(choice.eligible) - untradable - set(choice.forced)
    chosen = choose_harvests(pack, policy, settings, numbered(account_lots(holdings, lots)), holdings.positions,
                             tradable, buyable, pack.asof)
    warnings += chosen.warnings
    if not chosen.harvests:
        return choice, (), blocks
    eligible = tuple(sorted(set(choice.eligible) | {h.replacement for h in chosen.harvests}))
    until = (pack.asof + timedelta(days=WINDOW_DAYS)).isoformat()
    harvested = [WashSaleBlock(symbol=h.symbol, rule="no_purchase", since=pack.asof.isoformat(), until=until)
                 for h in chosen.harvests]
    merged = sorted([b for b in blocks if not (b.rule == "no_purchase" and b.symbol in {h.symbol for h in chosen.harvests})]
                    + harvested, key=lambda b: (b.symbol, b.rule))
    return Eligibility(eligible, choice.forced, choice.warnings), chosen.harvests, merged


def _harvest_limits(problem: AllocationProblem, setup: PlanSetup,
                    harvests: tuple[Harvest, ...]) -> tuple[AllocationProblem, PlanSetup]:
    """Cap each harvested name at its shares outside the loss lots; hold each replacement at
    least at its weight plus the harvested weight (within its cap)."""
    pos = {s: i for i, s in enumerate(problem.symbols)}
    plan = {s: i for i, s in enumerate(setup.symbols)}
    caps, plan_caps = problem.caps.copy(), setup.caps.copy()
    floors = problem.floors.copy() if problem.floors is not None else np.zeros(problem.n)
    labels = list(problem.cap_limits or ("max_single_position_pct",) * problem.n)
    value = setup.value
    for h in harvests:
        i, k = pos[h.symbol], plan[h.symbol]
        kept = (setup.current[k] - h.shares) * setup.prices[k] / value
        caps[i], plan_caps[k], labels[i] = min(caps[i], kept), min(plan_caps[k], kept), None
        j = pos[h.replacement]
        floors[j] = min(caps[j], max(floors[j], problem.current[j] + h.shares * setup.prices[k] / value))
    return (replace(problem, caps=caps, floors=floors, cap_limits=tuple(labels)),
            replace(setup, caps=plan_caps))


def wash_blocks(pack: PricingPack, holdings: Holdings, policy: Policy, lots: tuple[Lot, ...] | None,
                history: WashHistory | None) -> list[WashSaleBlock]:
    """The wash-sale blocks of a taxable account on the pack's asof; [] for a tax-exempt one."""
    if policy.tax_rates is None:
        return []
    history = history or WashHistory()
    return wash_sale_blocks(pack.asof, numbered(account_lots(holdings, lots)), history.sales, history.buys)


def tax_settings(policy: Policy, blocks: list[WashSaleBlock]) -> TaxSettings | None:
    """The policy's tax settings with the names whose loss lots the wash-sale rule holds back."""
    settings = TaxSettings.from_policy(policy)
    if settings is None:
        return None
    return replace(settings, no_loss_sales=frozenset(b.symbol for b in blocks if b.rule == "no_loss_sale"))


def _wash_sale_restrictions(choice: Eligibility, holdings: Holdings, no_buy: set[str], notes: dict[str, str],
                            blocks: list[WashSaleBlock]) -> tuple[Eligibility, set[str], dict[str, str]]:
    """Names sold at a loss in the last 30 days are not bought: held ones kept at most, others
    not eligible."""
    blocked = {b.symbol: b.until for b in blocks if b.rule == "no_purchase"}
    held = {s for s in blocked if s in holdings.positions}
    notes = dict(notes)
    for sym in sorted(held - no_buy):
        notes[sym] = f"wash sale: not bought through {blocked[sym]}"
    eligible = tuple(s for s in choice.eligible if s not in blocked or s in held)
    return Eligibility(eligible, choice.forced, choice.warnings), no_buy | held, notes


def _solve_taxed(problem: AllocationProblem, margin: float, plan: TaxPlan | None) -> Allocation:
    """``solve``; an infeasible problem that is feasible without the gain cap names the cap."""
    try:
        return solve(problem, te_margin=margin)
    except InfeasibleError:
        if plan is None or plan.max_gain is None or problem.costs is None:
            raise
        solve(replace(problem, costs=replace(problem.costs, max_gain=None)), te_margin=margin)  # raises if still infeasible
        raise InfeasibleError(
            f"infeasible policy: max_realized_gain ${plan.max_gain:,.2f} cannot be met: the sales that the position, "
            "sector, turnover or tracking-error limits and forced sales require realize more gain. Raise "
            "max_realized_gain or relax those limits.",
            details={"conflicts": ["max_realized_gain", "max_single_position_pct", "max_sector_pct",
                                   "max_turnover_pct", "max_tracking_error_pct"],
                     "max_realized_gain": plan.max_gain},
        ) from None


def _tax_comparison(problem: AllocationProblem, blind: AllocationProblem, aware: Allocation, plan: TaxPlan,
                    setup: PlanSetup, plan_symbols: tuple[str, ...], margin: float) -> TaxComparison:
    """The tax-aware solution against the same problem solved without taxes, at continuous weights."""
    untaxed = solve(replace(blind, max_tracking_error=problem.max_tracking_error), te_margin=margin)

    def tax_of(weights: np.ndarray) -> Decimal:
        plan_w = _vector(dict(zip(problem.symbols, weights, strict=True)), plan_symbols)
        return cents(to_decimal(realized_tax(plan, setup, plan_w * setup.value / setup.prices)))

    aware_tax, blind_tax = tax_of(aware.weights), tax_of(untaxed.weights)
    aware_obj, blind_obj = objective_value(problem, aware.weights), objective_value(problem, untaxed.weights)
    return TaxComparison(
        objective=problem.objective, tax_aware_estimated_tax=aware_tax, tax_blind_estimated_tax=blind_tax,
        tax_saved=blind_tax - aware_tax, tax_aware_objective=ratio(aware_obj, 6), tax_blind_objective=ratio(blind_obj, 6),
        objective_loss=None if aware_obj is None or blind_obj is None else ratio(
            (aware_obj - blind_obj) if problem.objective in TAX_AVERSION_OBJECTIVES else (blind_obj - aware_obj), 6),
    )


def with_tax_preview(proposal: TradeProposal, pack: PricingPack, holdings: Holdings, policy: Policy,
                     lots: tuple[Lot, ...] | None, forced: dict[str, str],
                     comparison: TaxComparison | None = None, blocks: list[WashSaleBlock] | None = None,
                     harvests: tuple[Harvest, ...] = ()) -> TradeProposal:
    """``proposal`` with the tax preview of its sales and the checks of the tax rules for a
    taxable account; unchanged otherwise."""
    settings = tax_settings(policy, blocks or [])
    if settings is None:
        return proposal
    sales = [Sale(t.symbol, t.quantity, to_decimal(t.price), forced.get(t.symbol))
             for t in proposal.trades if t.action == "SELL"]
    tax = preview(numbered(account_lots(holdings, lots)), sales, settings, pack.asof, blocks)
    if comparison is not None or harvests:
        tax = tax.model_copy(update={"comparison": comparison, "harvests": list(harvests)})
    checks = list(proposal.constraints)
    if settings.avoid_short_term_gains:
        unforced = sorted({r.symbol for r in tax.lots_sold if r.term == "short" and not r.forced
                           and (r.gain is None or r.gain > 0)})
        checks.append(ConstraintCheck(constraint="avoid_short_term_gains", value=float(len(unforced)), limit=0.0,
                                      met=not unforced))
    if settings.max_realized_gain is not None:
        checks.append(ConstraintCheck(constraint="max_realized_gain", value=float(tax.totals.net_realized_gain),
                                      limit=float(settings.max_realized_gain),
                                      met=tax.totals.net_realized_gain <= settings.max_realized_gain))
    return proposal.model_copy(update={"tax": tax, "constraints": checks,
                                       "constraints_met": all(c.met for c in checks)})


def account_lots(holdings: Holdings, lots: tuple[Lot, ...] | None) -> tuple[Lot, ...]:
    """The tax lots of ``holdings``: ``lots`` when known, else one lot of unknown basis per position."""
    if lots is not None:
        return lots
    return tuple(Lot(symbol=s, shares=n) for s, n in sorted(holdings.positions.items()))


def _objective(policy: Policy) -> str:
    """The optimizer objective of ``policy.method`` (black_litterman: its ``bl_objective``)."""
    if policy.method == "black_litterman":
        return policy.bl_objective or "max_sharpe"
    return policy.method


def black_litterman(est: Estimates, risk: RiskSetup, policy: Policy,
                    proj: BenchmarkProjection | None) -> tuple[Estimates, BlackLittermanInfo]:
    """``est`` with its expected returns replaced by the Black–Litterman posterior, and the report.

    The prior rf + δΣw_b is implied by the benchmark under the policy's risk model; δ is the policy's
    ``market_risk_aversion`` or else the benchmark's historical excess return over its variance.
    """
    if proj is None:
        raise InputError(
            "policy.benchmark: method black_litterman implies its prior returns from a benchmark; name one "
            "(an index symbol, a named benchmark such as DEMO_20, or weights)",
            details={"field": "policy.benchmark", "value": None, "method": "black_litterman"},
        )
    # Over the estimate's symbols then the benchmark's names outside them, so views may name those.
    cov = proj.extended_covariance(risk.factor.T @ risk.factor)
    symbols = est.symbols + proj.outside
    bench_vec = proj.full_weights()
    tau = 0.05 if policy.bl_tau is None else policy.bl_tau
    source = "policy"
    delta = policy.market_risk_aversion
    if delta is None:
        source = "benchmark"
        variance = float(bench_vec @ cov @ bench_vec)
        delta = implied_risk_aversion(proj.daily.to_numpy(), variance, policy.risk_free_rate,
                                      policy.annualization_days)
        if not delta > 0:
            raise InputError(
                f"policy.market_risk_aversion: the benchmark's historical return over the lookback is not above "
                f"the risk-free rate (implied risk aversion {delta:.4g}), so it implies no positive prior; "
                "set market_risk_aversion (e.g. 2.5)",
                details={"field": "policy.market_risk_aversion", "implied": delta},
            )
    views = [ViewRow(v.asset, v.return_pct / 100.0, v.confidence, v.versus) for v in policy.views or []]
    post = posterior(symbols, cov, bench_vec, delta, tau, views, policy.risk_free_rate)
    order = sorted(range(len(symbols)), key=lambda i: symbols[i])
    info = BlackLittermanInfo(
        risk_aversion=ratio(delta, 6), risk_aversion_source=source, tau=tau, views=len(views),
        symbols=[symbols[i] for i in order],
        prior_returns_pct=[pct(post.prior[i]) for i in order],
        posterior_returns_pct=[pct(post.mu[i]) for i in order],
        posterior_covariance=[[ratio(post.cov[i, j], 10) for j in order] for i in order],
    )
    return replace(est, mu=post.mu[: len(est.symbols)]), info


def risk_setup(pack: PricingPack, est: Estimates, policy: Policy, n_assets: int) -> RiskSetup:
    """The policy's risk model over ``est.symbols`` and the form the solver gets it in."""
    mode = policy.solve_mode(n_assets)
    k = policy.factor_count or statistical_factor_count(max(n_assets, 1), est.observations)
    if policy.risk_model == "factor":
        if policy.factor_model == "fundamental":
            model = fundamental(pack, est, policy.factor_symbols, covariance_estimator=policy.covariance_estimator,
                                ewma_decay=policy.ewma_decay, annualization_days=policy.annualization_days)
        else:
            model = statistical(est.cov, k)
        return RiskSetup(model.dense_factor(), model, model.model, "exact")
    if mode == "fast":
        return RiskSetup(full_factor(est.cov), statistical(est.cov, k), "sample", "fast")
    return RiskSetup(covariance_factor(est.cov), None, "sample", "exact")


def _plan_te(setup: PlanSetup, weights: np.ndarray) -> float:
    """Tracking error of plan-indexed continuous weights under the reported (full) risk model."""
    assert setup.te_factor is not None and setup.te_offset is not None
    return float(np.linalg.norm(setup.te_factor @ weights - setup.te_offset))


def _understated_te(risk: RiskSetup, setup: PlanSetup, weights: np.ndarray, margin: float) -> float | None:
    """For a fast solve whose weights break the (margin-tightened) limit under the full
    covariance, the factor to tighten the solver's limit by; None when nothing is to re-solve."""
    if not risk.approximate or setup.max_tracking_error is None or setup.te_factor is None:
        return None
    target = setup.max_tracking_error * (1.0 - margin)
    te = _plan_te(setup, weights)
    if te <= target * (1.0 + 1e-6):
        return None
    return target / te * (1.0 - 1e-3)


def trading_restrictions(
    pack: PricingPack, holdings: Holdings, policy: Policy, choice: Eligibility, warnings: list[str]
) -> tuple[Eligibility, set[str], set[str], dict[str, str]]:
    """Apply restricted (never buy), frozen (never trade) and halted names to the eligibility.

    A security is halted when the pack marks it so (``halted`` in its security master) or has
    no close for it on its asof (``PricingPack.halted``): it is neither bought nor sold and is
    valued at its last close. A frozen or halted holding is kept even when the
    policy would sell it. Returns the eligibility, the held names not to buy, the held names
    not to trade, and a note per such holding for its trade's rationale.
    """
    held = set(holdings.positions)
    halted = set(pack.halted) & (held | set(choice.eligible))
    frozen = set(policy.frozen_symbols)
    restricted = set(policy.restricted_symbols)
    fixed = (frozen | halted) & held
    no_buy = restricted & held
    notes: dict[str, str] = {}
    forced = dict(choice.forced)
    for sym in sorted(fixed):
        if sym in forced:
            warnings.append(f"{sym} is {'halted' if sym in halted else 'frozen'}: kept although {forced.pop(sym)}")
    for sym in sorted(halted):
        last = pack.closes[sym].last_valid_index()
        warnings.append(f"{sym} is halted ({pack.halted[sym]}): neither bought nor sold, "
                        f"valued at its last close of {last.date().isoformat()}")
        if sym in held:
            notes[sym] = "halted: neither bought nor sold, valued at its last close"
    for sym in sorted(frozen & held - halted):
        notes[sym] = "frozen: never traded"
    for sym in sorted(no_buy - fixed):
        notes[sym] = "restricted: never bought"
    excluded = (restricted | frozen | halted) - held
    eligible = tuple(sorted((set(choice.eligible) - excluded) | fixed))
    return Eligibility(eligible, forced, choice.warnings), no_buy, fixed, notes


def _restricted_problem(problem: AllocationProblem, no_buy: set[str], fixed: set[str]) -> AllocationProblem:
    """Restricted holdings capped at their weight; frozen and halted ones held at exactly it.

    A restricted holding's cap is reported as ``restricted_symbols`` when it is below the
    position cap; a frozen or halted weight is not a limit the optimizer pushes against, so it is
    never reported as binding.
    """
    caps = problem.caps.copy()
    # Minimum weights (min_weight_pct) stay; a frozen or halted name's floor is its weight.
    floors = problem.floors.copy() if problem.floors is not None else np.zeros(problem.n)
    labels = list(problem.cap_limits or ("max_single_position_pct",) * problem.n)
    for i, sym in enumerate(problem.symbols):
        if sym in fixed:
            caps[i] = floors[i] = problem.current[i]
            labels[i] = None
        elif sym in no_buy and problem.current[i] < caps[i]:
            caps[i] = problem.current[i]
            labels[i] = "restricted_symbols"
    return replace(problem, caps=caps, floors=floors if fixed or problem.floors is not None else None,
                   cap_limits=tuple(labels))


def with_cash_flow(
    holdings: Holdings, cash_flow: Decimal, prices: dict[str, float], policy: Policy
) -> tuple[Holdings, str]:
    """``holdings`` with the cash flow added to cash (negative cash is raised by selling), and a note.

    Raises:
        InputError: a withdrawal larger than cash plus everything the holdings fetch after costs;
            the message names the shortfall.
    """
    flow = cents(cash_flow)
    if flow < 0:
        proceeds = Decimal("0.00")
        for sym, n in holdings.positions.items():
            value = cents(n * to_decimal(prices[sym]))
            proceeds += value - trade_cost(value, policy.commission_per_trade, policy.market_impact_bps)
        available = holdings.cash + proceeds
        if -flow > available:
            shortfall = -flow - available
            raise InputError(
                f"cash_flow: a withdrawal of ${-flow:,.2f} exceeds cash ${holdings.cash:,.2f} plus "
                f"${proceeds:,.2f} from selling every holding after costs; shortfall ${shortfall:,.2f}",
                details={"field": "cash_flow", "value": float(flow), "available": float(available),
                         "shortfall": float(shortfall)},
            )
        note = (f"cash flow: withdrawal of ${-flow:,.2f} raised from cash ${holdings.cash:,.2f} "
                "and by selling toward the policy's weights")
    else:
        note = f"cash flow: deposit of ${flow:,.2f} added to cash ${holdings.cash:,.2f} and invested"
    return Holdings(holdings.portfolio_id, holdings.positions, holdings.cash + flow), note


def estimation_symbols(
    pack: PricingPack,
    holdings: Holdings,
    policy: Policy,
    ratings: dict[str, float],
    named_benchmarks: dict[str, dict[str, float]],
    cash_flow: Decimal | None = None,
) -> list[str] | None:
    """The symbols ``propose_trades`` estimates for, in its order; None when it estimates nothing.

    Lets a caller running many proposals estimate once per distinct set (``services.batch``).
    Raises what ``propose_trades`` raises first for the same inputs; follows its steps up to
    estimation (cash flow, eligibility, trading restrictions), so the two cannot disagree.
    """
    validate_holdings(pack, holdings)
    validate_sector_limits(pack, policy)
    validate_forecasts(pack, policy)
    validate_asset_class_limits(pack, policy)
    if cash_flow:
        holdings, _ = with_cash_flow(holdings, cash_flow, pack.last_prices(), policy)
    choice = eligibility(pack, holdings, policy, ratings)
    choice = trading_restrictions(pack, holdings, policy, choice, [])[0]
    resolve_benchmark(pack, policy, named_benchmarks)  # raises what propose_trades raises for a bad benchmark
    if not holdings.positions and (holdings.cash <= 0 or not choice.eligible):
        return None
    return _risk_symbols(holdings, choice)


def _risk_symbols(holdings: Holdings, choice: Eligibility) -> list[str]:
    """Eligible names first (the decision assets), then other holdings.

    Benchmark names are not estimated with them (see ``services.estimation.benchmark``).
    """
    return list(choice.eligible) + sorted(set(holdings.positions) - set(choice.eligible))


def eligibility(pack: PricingPack, holdings: Holdings, policy: Policy, ratings: dict[str, float]) -> Eligibility:
    """Split candidates into eligible names and forced sales (with the reason for each)."""
    if policy.universe == "holdings":
        candidates = set(holdings.positions)
    elif policy.universe == "pack":
        candidates = {s.symbol for s in pack.securities if s.asset_class not in NOT_HOLDABLE}
    else:
        unknown = sorted(set(policy.universe) - set(pack.symbols))
        not_holdable = sorted(s for s in set(policy.universe) - set(unknown)
                              if pack.security(s).asset_class in NOT_HOLDABLE)
        if unknown or not_holdable:
            raise InputError(
                f"policy.universe: {', '.join(unknown + not_holdable)} cannot be held "
                f"({'not in pack ' + pack.id if unknown else 'index series'}); choose from: "
                f"{', '.join(s.symbol for s in pack.securities if s.asset_class not in NOT_HOLDABLE)}",
                details={"field": "policy.universe", "invalid": unknown + not_holdable},
            )
        candidates = set(policy.universe)
    if policy.method == "target":
        candidates |= _target_symbols(pack, policy)
    forced: dict[str, str] = {}
    for sym in sorted(set(holdings.positions) - candidates):
        forced[sym] = "not in the policy's universe"
    eligible: list[str] = []
    unrated: list[str] = []
    for sym in sorted(candidates | set(holdings.positions)):
        if sym in forced:
            continue
        score = ratings.get(sym)
        if policy.min_quality_score is not None and score is None:
            unrated.append(sym)
            if policy.unrated == "exclude":
                if sym in holdings.positions:
                    forced[sym] = f"unrated; the policy excludes unrated names (minimum quality {policy.min_quality_score:g})"
                continue
        elif policy.min_quality_score is not None and score is not None and score < policy.min_quality_score:
            if sym in holdings.positions:
                forced[sym] = f"quality {score:g} below the minimum {policy.min_quality_score:g}"
            continue
        eligible.append(sym)
    warnings = []
    if unrated:
        treatment = "treated as eligible" if policy.unrated == "eligible" else "excluded"
        warnings.append(f"no quality rating for {', '.join(unrated)}; {treatment} (policy field 'unrated')")
    return Eligibility(tuple(eligible), forced, tuple(warnings))


def _target_symbols(pack: PricingPack, policy: Policy) -> set[str]:
    """The symbols of a ``target`` policy's weights, which must be holdable names of the pack."""
    weights = policy.target_weights_pct
    if not weights:
        raise InputError(
            "policy.target_weights_pct: method 'target' needs target weights; set a target with "
            "`optimizer targets set PORTFOLIO --weights FILE.csv` or give target_weights_pct",
            details={"field": "policy.target_weights_pct"},
        )
    holdable = {s.symbol for s in pack.securities if s.asset_class not in NOT_HOLDABLE}
    bad = sorted(set(weights) - holdable)
    total = sum(weights.values())
    if bad or any(not 0 <= w <= 100 for w in weights.values()) or total > 100 + 1e-6:
        raise InputError(
            f"policy.target_weights_pct: weights must be 0-100% each, at most 100% in total, on holdable "
            f"symbols of pack {pack.id}; got sum {total:g}%" + (f", cannot hold {', '.join(bad)}" if bad else ""),
            details={"field": "policy.target_weights_pct", "invalid": bad, "sum": total},
        )
    return {s for s, w in weights.items() if w > 0}


def resolve_benchmark(
    pack: PricingPack, policy: Policy, named: dict[str, dict[str, float]]
) -> tuple[str | None, dict[str, float] | None]:
    """Benchmark weights from an index symbol, a named seed benchmark, or explicit weights."""
    b = policy.benchmark
    if b is None:
        return None, None
    if isinstance(b, str):
        if b in pack.symbols:
            return b, {b: 1.0}
        if b in named:
            weights, label = dict(named[b]), b
        else:
            raise InputError(
                f"policy.benchmark: '{b}' is neither a symbol in pack {pack.id} nor a named benchmark; "
                f"valid: {', '.join(sorted(named) + sorted(s.symbol for s in pack.securities if s.asset_class == 'index'))}, "
                "or explicit weights {symbol: weight}",
                details={"field": "policy.benchmark", "value": b, "allowed": sorted(named)},
            )
    else:
        weights, label = dict(b), "custom weights"
    unknown = sorted(set(weights) - set(pack.symbols))
    total = sum(weights.values())
    if unknown or any(w < 0 for w in weights.values()) or not (abs(total - 1) < 1e-6 or abs(total - 100) < 1e-4):
        raise InputError(
            f"policy.benchmark: weights must be non-negative, sum to 1 (or 100) and name symbols in pack "
            f"{pack.id}; got sum {total:g}" + (f", unknown {', '.join(unknown)}" if unknown else ""),
            details={"field": "policy.benchmark", "sum": total, "unknown": unknown},
        )
    return label, {s: w / total for s, w in sorted(weights.items()) if w > 0}


def covariance_factor(cov: np.ndarray) -> np.ndarray:
    """G with GᵀG = cov, from the eigen-decomposition; eigenvalues at noise level are dropped."""
    values, vectors = np.linalg.eigh(cov)
    keep = values > values.max() * 1e-12
    return (vectors[:, keep] * np.sqrt(values[keep])).T


def validate_holdings(pack: PricingPack, holdings: Holdings) -> None:
    """Every position is a holdable, priced symbol of ``pack`` with non-negative shares; cash ≥ 0."""
    prices = pack.last_prices()
    known = set(pack.symbols)
    problems = []
    for sym, n in sorted(holdings.positions.items()):
        if sym not in known:
            problems.append(f"{sym}: not in pricing pack {pack.id}")
        elif pack.security(sym).asset_class in NOT_HOLDABLE:
            problems.append(f"{sym}: an {pack.security(sym).asset_class} series cannot be held")
        elif sym not in prices:
            problems.append(f"{sym}: no close in pricing pack {pack.id}")
        if n < 0:
            problems.append(f"{sym}: negative shares {n}")
    if holdings.cash < 0:
        problems.append(f"cash: negative ({holdings.cash})")
    if problems:
        raise InputError("portfolio: " + "; ".join(problems), details={"field": "portfolio", "problems": problems})


METHOD_FIELDS = {
    "min_acceptable_return": ("max_sortino",),
    "views": ("black_litterman",),
    "bl_objective": ("black_litterman",),
    "bl_tau": ("black_litterman",),
    "bl_min_return_pct": ("black_litterman",),
    "market_risk_aversion": ("black_litterman",),
    "risk_budget": ("risk_budgeting",),
    "risk_measure": ("min_risk",),
    "robust_uncertainty": ("robust",),
    "robust_confidence": ("robust",),
    "objective_weights": ("multi_objective",),
    "max_cash_pct": ("target", "risk_parity", "hrp", "herc"),
}


ESTIMATOR_FIELDS = ("forecasts", "forecast_fallback")  # used by expected_return_estimator 'user' only


def _unused_method_fields(policy: Policy) -> list[str]:
    """Warnings for fields set for a method (or estimator) the policy does not use (views under max_sharpe)."""
    out = [f"{name} is set but only {' or '.join(methods)} uses it; ignored under method {policy.method}"
           for name, methods in METHOD_FIELDS.items()
           if getattr(policy, name) is not None and policy.method not in methods]
    if policy.method == "black_litterman" and policy.bl_min_return_pct is not None and _objective(policy) != "min_variance":
        out.append("bl_min_return_pct is set but only bl_objective min_variance uses it; ignored under "
                   f"bl_objective {_objective(policy)}")
    if policy.expected_return_estimator != "user":
        out += [f"{name} is set but only expected_return_estimator 'user' uses it; ignored under "
                f"'{policy.expected_return_estimator}'" for name in ESTIMATOR_FIELDS if getattr(policy, name) is not None]
    return out


def validate_forecasts(pack: PricingPack, policy: Policy) -> None:
    """Every symbol ``policy.forecasts`` names is a holdable symbol of ``pack`` (a typo would
    forecast nothing, silently)."""
    holdable = sorted(s.symbol for s in pack.securities if s.asset_class not in NOT_HOLDABLE)
    unknown = sorted(set(policy.forecasts or {}) - set(holdable))
    if unknown:
        raise InputError(
            f"policy.forecasts: {', '.join(unknown)} {'is not a holdable symbol' if len(unknown) == 1 else 'are not holdable symbols'} "
            f"of pack {pack.id}; forecasts may name: {', '.join(holdable)}",
            details={"field": "policy.forecasts", "invalid": unknown, "allowed": holdable},
        )


def holdable_sectors(pack: PricingPack) -> list[str]:
    """The sectors of the securities of ``pack`` that can be held, sorted."""
    return sorted({s.sector for s in pack.securities if s.asset_class not in NOT_HOLDABLE})


def validate_sector_limits(pack: PricingPack, policy: Policy) -> None:
    """Every ``sector_limits_pct`` key is a sector of ``pack``'s holdable securities.

    A misspelt sector (``Enrgy``) would otherwise be a limit on nothing, silently.
    """
    sectors = holdable_sectors(pack)
    unknown = sorted(set(policy.sector_limits_pct) - set(sectors))
    if unknown:
        raise InputError(
            f"policy.sector_limits_pct: {', '.join(repr(k) for k in unknown)} "
            f"{'is not a sector' if len(unknown) == 1 else 'are not sectors'} of pack {pack.id}; "
            f"its sectors are: {', '.join(sectors)}",
            details={"field": "policy.sector_limits_pct", "invalid": unknown, "allowed": sectors},
        )


def validate_asset_class_limits(pack: PricingPack, policy: Policy) -> None:
    """Every ``asset_class_limits_pct`` key is an asset class of ``pack``'s holdable securities."""
    classes = sorted({s.asset_class for s in pack.securities if s.asset_class not in NOT_HOLDABLE})
    unknown = sorted(set(policy.asset_class_limits_pct or {}) - set(classes))
    if unknown:
        raise InputError(
            f"policy.asset_class_limits_pct: {', '.join(repr(k) for k in unknown)} "
            f"{'is not an asset class' if len(unknown) == 1 else 'are not asset classes'} of pack {pack.id}; "
            f"its asset classes are: {', '.join(classes)}",
            details={"field": "policy.asset_class_limits_pct", "invalid": unknown, "allowed": classes},
        )


def validate_ratings(pack: PricingPack, ratings: dict[str, float]) -> None:
    """Every symbol a request rates is a symbol of ``pack`` (a typo would rate nothing, silently)."""
    unknown = sorted(set(ratings) - set(pack.symbols))
    if unknown:
        raise InputError(
            f"ratings: {', '.join(unknown)} not in pricing pack {pack.id}; rate symbols of the pack "
            f"({', '.join(sorted(pack.symbols))})",
            details={"field": "ratings", "invalid": unknown, "allowed": sorted(pack.symbols)},
        )


def _vector(values: dict[str, float], symbols: tuple[str, ...] | list[str]) -> np.ndarray:
    return np.array([values.get(s, 0.0) for s in symbols], dtype=float)


def _plan_setup(pack, holdings, policy, choice, plan_symbols, prices, factor, est, offset,
                proj: BenchmarkProjection | None = None) -> PlanSetup:
    cap = (policy.max_single_position_pct or 100.0) / 100.0
    eligible = set(choice.eligible)
    sym_index = {s: i for i, s in enumerate(plan_symbols)}
    sectors = tuple(
        SectorCap(name, np.array([sym_index[s] for s in members]), limit)
        for name, members, limit in _sector_caps(pack, policy, plan_symbols)
    ) + tuple(
        SectorCap(name, np.array([sym_index[s] for s in members]), limit, kind="asset_class_limit")
        for name, members, limit in _asset_class_caps(pack, policy, plan_symbols)
    )
    te_factor = factor[:, est.index_of(plan_symbols)] if offset is not None else None
    if te_factor is not None and proj is not None and proj.residual_variance > 0.0:
        # One more risk coordinate that no holding loads on: the benchmark's unreplicable part.
        te_factor = np.vstack([te_factor, np.zeros((1, te_factor.shape[1]))])
        offset = np.append(offset, proj.residual)
    return PlanSetup(
        symbols=plan_symbols,
        prices=np.array([prices[s] for s in plan_symbols]),
        current=np.array([holdings.positions.get(s, 0) for s in plan_symbols], dtype=np.int64),
        cash=float(holdings.cash),
        forced=np.array([s in choice.forced for s in plan_symbols]),
        caps=np.array([cap if s in eligible else 0.0 for s in plan_symbols]),
        sectors=sectors,
        cash_buffer=policy.cash_buffer_pct / 100.0,
        max_turnover=None if policy.max_turnover_pct is None else policy.max_turnover_pct / 100.0,
        max_tracking_error=None if offset is None or policy.max_tracking_error_pct is None
        else policy.max_tracking_error_pct / 100.0,
        te_factor=te_factor,
        te_offset=offset,
        commission=float(policy.commission_per_trade),
        impact_bps=policy.market_impact_bps,
        min_trade_value=float(policy.min_trade_value),
    )


def _sector_caps(pack: PricingPack, policy: Policy, symbols) -> list[tuple[str, list[str], float]]:
    by_sector: dict[str, list[str]] = {}
    for s in symbols:
        by_sector.setdefault(pack.security(s).sector, []).append(s)
    out = []
    for sector, members in sorted(by_sector.items()):
        limit = policy.sector_limits_pct.get(sector, policy.max_sector_pct)
        if limit is not None:
            out.append((sector, members, limit / 100.0))
    return out


def minimum_weights(pack: PricingPack, policy: Policy, choice: Eligibility, fixed: set[str]) -> dict[str, float]:
    """``min_weight_pct`` as {symbol: floor fraction}: one number floors every eligible name (frozen
    and halted ones are held at their weight instead); a map floors the names it gives, which
    must be eligible. A floor is raised to ``min_position_pct`` when that is larger.

    Raises:
        InputError: a named symbol not in the pack, not eligible, or frozen or halted.
    """
    spec = policy.min_weight_pct
    if spec is None:
        return {}
    if isinstance(spec, dict):
        unknown = sorted(set(spec) - set(pack.symbols))
        blocked = sorted(s for s in set(spec) - set(unknown) if s not in choice.eligible or s in fixed)
        if unknown or blocked:
            why = {s: choice.forced.get(s, "frozen or halted: held at its weight" if s in fixed
                                        else "not eligible under the policy's universe and quality minimum")
                   for s in blocked}
            raise InputError(
                "policy.min_weight_pct: a minimum weight needs a symbol the policy may hold; "
                + "; ".join([f"{s}: not in pricing pack {pack.id}" for s in unknown] + [f"{s}: {r}" for s, r in why.items()]),
                details={"field": "policy.min_weight_pct", "invalid": unknown + blocked,
                         "allowed": sorted(set(choice.eligible) - fixed)},
            )
        floors = {s: v / 100.0 for s, v in spec.items() if v > 0}
    else:
        floors = {s: spec / 100.0 for s in choice.eligible if s not in fixed} if spec > 0 else {}
    if policy.min_position_pct is not None:
        floors = {s: max(f, policy.min_position_pct / 100.0) for s, f in floors.items()}
    # A percentage so small its fraction underflows to 0 (5e-324%) is no floor at all.
    return {s: f for s, f in floors.items() if f > 0}


def _check_floors(problem: AllocationProblem, floors: dict[str, float]) -> None:
    """Floors above their position cap, or adding up to more than is invested, in words."""
    over = sorted(s for s, c in zip(problem.symbols, problem.caps, strict=True) if floors.get(s, 0.0) > c + 1e-12)
    if over:
        raise InfeasibleError(
            f"infeasible policy: min_weight_pct is above the position cap for {', '.join(over)} "
            f"(a restricted holding's cap is its current weight); lower min_weight_pct or raise the cap",
            details={"conflicts": ["min_weight_pct", "max_single_position_pct", "restricted_symbols"],
                     "symbols": over},
        )
    total = sum(floors.values())
    if total > problem.invested + 1e-12:
        raise InfeasibleError(
            f"infeasible policy: the minimum weights add up to {total * 100:.4g}%, more than the "
            f"{problem.invested * 100:g}% invested; lower min_weight_pct (or cash_buffer_pct)",
            details={"conflicts": ["min_weight_pct", "invested fraction (100 - cash_buffer_pct)"],
                     "min_weight_total_pct": round(total * 100, 4)},
        )


def _asset_class_caps(pack: PricingPack, policy: Policy, symbols) -> list[tuple[str, list[str], float]]:
    """``asset_class_limits_pct`` as (asset class, members among ``symbols``, limit) for the classes
    that have members."""
    out = []
    for asset_class, limit in sorted((policy.asset_class_limits_pct or {}).items()):
        members = [s for s in symbols if pack.security(s).asset_class == asset_class]
        if members:
            out.append((asset_class, members, limit / 100.0))
    return out


def _solver_risk(risk: RiskSetup, idx: np.ndarray, proj: BenchmarkProjection | None):
    """Factor, specific volatilities, benchmark offset and residual as the solver takes them.

    The residual is the benchmark's active risk no decision asset can offset: its specific risk on
    names outside the decision assets, and the part of it outside the estimate's symbols.
    """
    bench_vec = None if proj is None else proj.weights
    if risk.structured is None:
        if bench_vec is None:
            return risk.factor[:, idx], None, None, 0.0
        return risk.factor[:, idx], None, risk.factor @ bench_vec, _with_projection(0.0, proj)
    loadings, specific = risk.structured.loadings, risk.structured.specific
    assert specific is not None
    if bench_vec is None:
        return loadings[:, idx], specific[idx], None, 0.0
    outside = np.ones(len(bench_vec), dtype=bool)
    outside[idx] = False
    offset = np.concatenate([loadings @ bench_vec, specific[idx] * bench_vec[idx]])
    residual = float(np.linalg.norm(specific[outside] * bench_vec[outside]))
    return loadings[:, idx], specific[idx], offset, _with_projection(residual, proj)


def _with_projection(residual: float, proj: BenchmarkProjection | None) -> float:
    """``residual`` combined with the projected benchmark's own residual volatility."""
    if proj is None or proj.residual_variance == 0.0:
        return residual
    return float(np.hypot(residual, proj.residual))


def _allocation_problem(pack, policy, choice, setup, est: Estimates, risk: RiskSetup,
                        proj: BenchmarkProjection | None, warnings):
    n = len(choice.eligible)
    idx = est.index_of(choice.eligible)
    bench_vec = None if proj is None else proj.weights
    factor, specific, offset, residual = _solver_risk(risk, idx, proj)
    elig_pos = {s: i for i, s in enumerate(choice.eligible)}
    sectors = tuple(
        SectorCap(name, np.array([elig_pos[s] for s in members if s in elig_pos]), limit)
        for name, members, limit in _sector_caps(pack, policy, choice.eligible)
    ) + tuple(
        SectorCap(name, np.array([elig_pos[s] for s in members]), limit, kind="asset_class_limit")
        for name, members, limit in _asset_class_caps(pack, policy, choice.eligible)
    )
    plan_pos = {s: i for i, s in enumerate(setup.symbols)}
    weights_now = setup.current * setup.prices / setup.value
    current = np.array([weights_now[plan_pos[s]] for s in choice.eligible])
    forced_weight = float(sum(weights_now[plan_pos[s]] for s in choice.forced))
    invested = 1.0 - policy.cash_buffer_pct / 100.0
    objective, target, fallback = _objective(policy), None, None
    if est.too_short:
        objective, target, fallback = "track_euclidean", np.full(n, invested / n), "equal_weight"
        warnings.append(
            f"only {est.observations} daily returns in the lookback (fewer than 30); fell back to "
            "equal weight within the constraints instead of method " + policy.method
        )
    elif policy.method == "target":
        # Nearest to the target in tracking error, under every limit; the target's cash stays cash.
        weights = policy.target_weights_pct or {}
        target = np.array([weights.get(s, 0.0) / 100.0 for s in choice.eligible])
        invested = min(invested, float(target.sum()))
        objective = "track"
    elif policy.method == "max_information_ratio" and bench_vec is None:
        raise InputError(
            "policy.benchmark: method max_information_ratio measures active return and tracking error "
            "against a benchmark; name one (an index symbol, a named benchmark such as DEMO_20, or weights)",
            details={"field": "policy.benchmark", "value": None, "method": "max_information_ratio"},
        )
    elif policy.method in ("risk_parity", *HIERARCHICAL) and n > 0:
        returns = est.returns[list(choice.eligible)]
        # The targets use the risk model's covariance (the sample one unless a factor model is asked for).
        cov = est.cov if risk.model == "sample" else risk.factor.T @ risk.factor
        if policy.method == "risk_parity":
            base = riskfolio_adapter.risk_parity_weights(returns, cov[np.ix_(idx, idx)])
        elif policy.method == "herc":
            base = riskfolio_adapter.herc_weights(returns, cov[np.ix_(idx, idx)])
        else:
            base = riskfolio_adapter.hrp_weights(returns, cov[np.ix_(idx, idx)])
        objective, target = "track", base * invested
    min_invested = None
    if policy.max_cash_pct is not None and objective == "track":
        if policy.max_cash_pct < policy.cash_buffer_pct:
            raise InputError(
                f"policy.max_cash_pct: {policy.max_cash_pct:g} is below cash_buffer_pct {policy.cash_buffer_pct:g}; "
                "the cash the optimizer may leave must include the buffer: set max_cash_pct at least "
                f"{policy.cash_buffer_pct:g} (or lower cash_buffer_pct)",
                details={"field": "policy.max_cash_pct", "value": policy.max_cash_pct,
                         "minimum": policy.cash_buffer_pct},
            )
        min_invested = min(invested, 1.0 - policy.max_cash_pct / 100.0)
    problem = AllocationProblem(
        symbols=choice.eligible,
        objective=objective,
        min_invested=min_invested,
        mu=est.mu[idx],
        factor=factor,
        specific=specific,
        offset_residual=residual,
        current=current,
        invested=invested,
        caps=setup.caps[[plan_pos[s] for s in choice.eligible]] if n else np.zeros(0),
        cap_limits=(("max_single_position_pct" if policy.max_single_position_pct is not None else None),) * n,
        sectors=sectors,
        benchmark_offset=offset,
        max_tracking_error=setup.max_tracking_error,
        max_turnover=setup.max_turnover,
        forced_weight=forced_weight,
        risk_free_rate=policy.risk_free_rate,
        risk_aversion=policy.risk_aversion,
        target=target,
        scenarios=est.returns[list(choice.eligible)].to_numpy() if policy.method in ("cvar", "max_sortino") else None,
        cvar_confidence=policy.cvar_confidence,
        min_acceptable_return=(policy.risk_free_rate if policy.min_acceptable_return is None
                               else policy.min_acceptable_return),
        benchmark_return=proj.expected_return if proj is not None else 0.0,
        benchmark_weights=_decision_benchmark(proj, idx),
        min_return=_bl_floor(policy),
        annualization_days=policy.annualization_days,
    )
    if not est.too_short:
        problem = configure_method(problem, policy, pack, est, warnings)
    return problem, fallback


def _rounded_return(est: Estimates, setup: PlanSetup, rounded, rf: float) -> float:
    """Annual expected return of the rounded portfolio, its cash earning ``rf``."""
    w = _vector(dict(zip(setup.symbols, rounded.weights, strict=True)), est.symbols)
    return float(est.mu @ w) + (1.0 - float(w.sum())) * rf


def _floor_shortfall(floor: float | None, est: Estimates, setup: PlanSetup, rounded, rf: float) -> float:
    """How far the rounded portfolio's expected return falls below ``floor`` (0: not below, or no floor)."""
    return 0.0 if floor is None else max(floor - _rounded_return(est, setup, rounded, rf), 0.0)


def _floor_in_whole_shares(policy: Policy, value: float, est: Estimates, setup: PlanSetup, rounded) -> InfeasibleError:
    """The floor on expected return cannot be kept once whole shares are bought and costs paid;
    the relaxation named is what the last rounded portfolio reached."""
    assert policy.bl_min_return_pct is not None
    reached = _rounded_return(est, setup, rounded, policy.risk_free_rate)
    relaxation = math.floor(reached * 1e4) / 100
    return InfeasibleError(
        f"infeasible policy: in whole shares and after costs, a portfolio worth ${value:,.2f} cannot keep "
        f"the posterior expected return at bl_min_return_pct {policy.bl_min_return_pct:g}% (the rounded "
        f"portfolio reaches {reached * 100:.3f}%). Lower bl_min_return_pct to at most {relaxation:g}, or add cash.",
        details={"conflicts": ["bl_min_return_pct", "whole shares", "costs"], "portfolio_value": round(value, 2),
                 "smallest_relaxation": {"bl_min_return_pct": relaxation}},
    )


def _bl_floor(policy: Policy) -> float | None:
    """black_litterman's min_variance floor on expected return (decimal), or None."""
    if policy.method != "black_litterman" or _objective(policy) != "min_variance":
        return None
    if policy.bl_min_return_pct is None:
        raise InputError(
            "policy.bl_min_return_pct: black_litterman with bl_objective min_variance minimizes variance "
            "subject to a floor on the posterior expected return; give the floor in % (e.g. 8.0)",
            details={"field": "policy.bl_min_return_pct", "value": None, "bl_objective": "min_variance"},
        )
    return policy.bl_min_return_pct / 100.0


def _decision_benchmark(proj: BenchmarkProjection | None, idx: np.ndarray) -> np.ndarray | None:
    """The benchmark's weights on the decision assets ``idx``, if it holds nothing else."""
    if proj is None or len(idx) == 0 or proj.outside:
        return None
    bench_vec = proj.weights
    inside = bench_vec[idx]
    return inside if abs(float(inside.sum()) - float(bench_vec.sum())) < 1e-12 else None


def _risk_return(est: Estimates, factor: np.ndarray, weights_by_symbol: dict[str, float], rf: float) -> RiskReturn:
    w = _vector(weights_by_symbol, est.symbols)
    cash = 1.0 - w.sum()
    expected = float(est.mu @ w) + cash * rf
    vol = float(np.linalg.norm(factor @ w))
    return RiskReturn(
        expected_return_pct=pct(expected),
        volatility_pct=pct(vol),
        sharpe=ratio((expected - rf) / vol) if vol > 1e-12 else None,
    )


def _report(pack, holdings, policy, choice, setup: PlanSetup, est, factor, proj, benchmark_name,
            binding, method, optimal, shares, notes, warnings, fallback, risk_info=None,
            bl_info=None) -> TradeProposal:
    price_dec = [to_decimal(float(p)) for p in setup.prices]
    qty = [int(s - c) for s, c in zip(shares, setup.current, strict=True)]
    values = [cents(q * p) for q, p in zip(qty, price_dec, strict=True)]
    costs = [trade_cost(q * p, policy.commission_per_trade, policy.market_impact_bps) for q, p in zip(qty, price_dec, strict=True)]
    total_cost = sum(costs, Decimal("0.00"))
    cash_after = cents(holdings.cash - sum((q * p for q, p in zip(qty, price_dec, strict=True)), Decimal(0)) - total_cost)
    value_before = cents(sum((int(c) * p for c, p in zip(setup.current, price_dec, strict=True)), Decimal(0)) + holdings.cash)
    value_after = value_before - total_cost

    exact = evaluate(setup, shares, costs=np.array([float(c) for c in costs]))
    weights_before = setup.current * setup.prices / setup.value
    trades: list[Trade] = []
    for i, sym in enumerate(setup.symbols):
        if qty[i] == 0 and setup.current[i] == 0:
            continue
        action = "BUY" if qty[i] > 0 else "SELL" if qty[i] < 0 else "HOLD"
        trades.append(Trade(
            symbol=sym, action=action, quantity=abs(qty[i]),
            current_shares=int(setup.current[i]), target_shares=int(shares[i]),
            current_weight_pct=pct(weights_before[i]), target_weight_pct=pct(exact.weights[i]),
            optimal_weight_pct=pct(optimal[i]), price=float(setup.prices[i]),
            trade_value=abs(values[i]), estimated_cost=costs[i],
            sector=pack.security(sym).sector,
            rationale=_rationale(sym, action, choice, notes, weights_before[i], optimal[i], method),
        ))
    trades.sort(key=lambda t: (t.symbol, t.action))
    total_traded = sum((abs(v) for v in values), Decimal("0.00"))
    checks = _checks(policy, choice, setup, exact)
    floor = _bl_floor(policy)
    if floor is not None:
        reached = _rounded_return(est, setup, exact, policy.risk_free_rate)
        checks.append(ConstraintCheck(constraint="bl_min_return_pct", value=pct(reached),
                                      limit=policy.bl_min_return_pct, met=reached >= floor - 1e-12))
    before_w = dict(zip(setup.symbols, weights_before, strict=True))
    after_w = dict(zip(setup.symbols, exact.weights, strict=True))
    te_before = None
    if proj is not None:
        te_before = proj.tracking_error(factor, _vector(before_w, est.symbols))
    for sym, reason in sorted(choice.forced.items()):
        warnings.append(f"{sym} sold in full: {reason}")
    return TradeProposal(
        pricing_pack_id=pack.id,
        asof=pack.asof.isoformat(),
        portfolio_id=holdings.portfolio_id,
        policy_id=policy.policy_id,
        method=method,
        trade_count=sum(1 for t in trades if t.action != "HOLD"),
        trades=trades,
        portfolio_value=value_before,
        cash_before=cents(holdings.cash),
        cash_after=cash_after,
        value_after=value_after,
        total_trade_value=total_traded,
        estimated_costs=total_cost,
        cost_bps=ratio(float(total_cost / total_traded * 10000) if total_traded else 0.0, 2),
        turnover_pct=pct(exact.turnover),
        forced_turnover_pct=pct(exact.forced_turnover),
        discretionary_turnover_pct=pct(exact.discretionary_turnover),
        te_before_pct=pct(te_before),
        te_after_pct=pct(exact.tracking_error),
        benchmark=benchmark_name,
        before=_risk_return(est, factor, before_w, policy.risk_free_rate),
        after=_risk_return(est, factor, after_w, policy.risk_free_rate),
        binding_constraints=list(binding),
        constraints=checks,
        constraints_met=all(c.met for c in checks),
        estimation=EstimationInfo(
            observations=est.observations,
            start=est.returns.index[0].date().isoformat(),
            end=est.returns.index[-1].date().isoformat(),
            covariance_estimator=policy.covariance_estimator,
            expected_return_estimator=policy.expected_return_estimator,
            annualization_days=policy.annualization_days,
            fallback=fallback,
            expected_return_sources=dict(sorted(est.mu_sources)) if est.mu_sources else None,
            risk=risk_info,
        ),
        black_litterman=bl_info,
        warnings=warnings,
    )


def _checks(policy: Policy, choice: Eligibility, setup: PlanSetup, snap) -> list[ConstraintCheck]:
    checks = [ConstraintCheck(constraint="cash_non_negative", value=ratio(snap.cash_after, 2), limit=0.0,
                              met=snap.cash_after >= -1e-9)]
    if policy.cash_buffer_pct > 0:
        held_cash = snap.cash_after / snap.value_after
        checks.append(ConstraintCheck(constraint="cash_buffer_pct", value=pct(held_cash), limit=policy.cash_buffer_pct,
                                      met=held_cash >= setup.cash_buffer - 1e-6))
    if policy.max_single_position_pct is not None:
        # A short's size counts (long only, |w| is w).
        largest = float(np.abs(snap.weights).max()) if len(snap.weights) else 0.0
        checks.append(ConstraintCheck(constraint="max_single_position_pct", value=pct(largest),
                                      limit=policy.max_single_position_pct,
                                      met=bool(np.all(np.abs(snap.weights) <= setup.caps + EPS))))
    if setup.gross_limit is not None:
        gross = float(np.abs(snap.weights).sum())
        checks.append(ConstraintCheck(constraint="max_leverage", value=ratio(gross, 6), limit=setup.gross_limit,
                                      met=gross <= setup.gross_limit + EPS))
    for sector in setup.sectors:
        weight = float(snap.weights[sector.members].sum())
        checks.append(ConstraintCheck(constraint=sector.id, value=pct(weight),
                                      limit=round(sector.limit * 100, 6), met=weight <= sector.limit + EPS))
    if choice.forced:
        left = [s for i, s in enumerate(setup.symbols) if setup.forced[i] and snap.shares[i] != 0]
        checks.append(ConstraintCheck(constraint="forced_sales_complete", value=float(len(left)), limit=0.0,
                                      met=not left))
    if policy.min_position_pct is not None:
        held = snap.weights[snap.shares > 0]
        smallest = float(held.min()) if len(held) else 0.0
        fixed = setup.fixed if setup.fixed is not None else np.zeros(len(snap.shares), dtype=bool)
        small = (snap.shares > 0) & ~fixed & (snap.weights < policy.min_position_pct / 100.0 - EPS)
        checks.append(ConstraintCheck(constraint="min_position_pct", value=pct(smallest),
                                      limit=policy.min_position_pct, met=not small.any()))
    if setup.floors is not None:
        floored = np.flatnonzero(setup.floors > 0)
        margin = snap.weights[floored] - setup.floors[floored]
        tightest = floored[int(np.argmin(margin))]
        checks.append(ConstraintCheck(constraint="min_weight_pct", value=pct(snap.weights[tightest]),
                                      limit=pct(setup.floors[tightest]), met=bool(np.all(margin >= -EPS))))
    if setup.max_turnover is not None:
        checks.append(ConstraintCheck(constraint="max_turnover_pct", value=pct(snap.discretionary_turnover),
                                      limit=policy.max_turnover_pct,
                                      met=snap.discretionary_turnover <= setup.max_turnover + EPS))
    if setup.max_tracking_error is not None:
        checks.append(ConstraintCheck(constraint="max_tracking_error_pct", value=pct(snap.tracking_error),
                                      limit=policy.max_tracking_error_pct, met=tracking_error_ok(setup, snap)))
    return checks


def _rationale(sym, action, choice, notes, before, optimal, method) -> str:
    if sym in choice.forced:
        return f"Sell in full: {choice.forced[sym]}."
    text = {
        "BUY": f"Buy toward the {method} weight of {optimal * 100:.2f}% (from {before * 100:.2f}%).",
        "SELL": f"Sell toward the {method} weight of {optimal * 100:.2f}% (from {before * 100:.2f}%).",
        "HOLD": f"Hold: current weight {before * 100:.2f}% is at the {method} weight within whole shares.",
    }[action]
    return text + (f" Note: {notes[sym]}." if sym in notes else "")


def _empty_proposal(pack: PricingPack, holdings: Holdings, policy: Policy, warnings: list[str]) -> TradeProposal:
    cash = cents(holdings.cash)
    zero = Decimal("0.00")
    flat = RiskReturn(expected_return_pct=pct(policy.risk_free_rate), volatility_pct=0.0, sharpe=None)
    return TradeProposal(
        pricing_pack_id=pack.id, asof=pack.asof.isoformat(), portfolio_id=holdings.portfolio_id,
        policy_id=policy.policy_id, method=policy.method, trade_count=0, trades=[],
        portfolio_value=cash, cash_before=cash, cash_after=cash, value_after=cash,
        total_trade_value=zero, estimated_costs=zero, cost_bps=0.0, turnover_pct=0.0,
        forced_turnover_pct=0.0, discretionary_turnover_pct=0.0, te_before_pct=None, te_after_pct=None,
        benchmark=None, before=flat, after=flat, binding_constraints=[], constraints=[],
        constraints_met=True, estimation=None, warnings=warnings,
    )
