"""A taxable or cost-aware rebalance: its taxes and costs as terms of the allocation problem, and
the tax rules re-imposed on whole shares.

``objective_costs`` turns the policy's tax fields and lots into ``ObjectiveCosts`` (the convex
envelope of each decision asset's tax and gain of selling, in the lot sale order) and floors: with
``avoid_short_term_gains`` (or ``specific`` lots) a holding is sold at most down to the shares in
the lots it may take, unless a position cap forces more. Forced sales are outside the problem;
their net gain uses up ``max_realized_gain`` first.

Rounding to whole shares then may sell differently from the continuous optimum (a repair sells
to raise cash, or the envelope of a fixed lot order understated a gain), so ``enforce`` checks
the rounded plan against the exact lot-by-lot figures and buys back shares until both rules
hold, then repairs cash and caps again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal

import numpy as np

from services.allocation.costs import to_decimal
from services.allocation.harvest import harvestable_loss
from services.allocation.objective_costs import (
    MAY_BUY,
    RELAXED,
    ObjectiveCosts,
    envelope,
    harvest_hull,
    pieces,
)
from services.allocation.optimization import AllocationProblem
from services.allocation.rounding import PlanSetup, repair
from services.data.policy import Policy
from services.tax.lots import TaxLot, TaxSettings, sale_order

RETURN_OBJECTIVES = ("mean_variance", "max_sharpe", "max_sortino", "max_information_ratio")


@dataclass(frozen=True, eq=False)
class TaxPlan:
    """The tax side of a plan, indexed like ``PlanSetup.symbols``.

    Attributes:
        orders: per plan symbol, the lots in the order a sale takes them.
        floor_shares: per plan symbol, the fewest shares a non-forced sale may leave (0: no floor).
        max_gain: the cap on realized net gains in money, or None.
        cap_forced: plan symbols whose position cap needs more sold than their lots without a
            short-term gain hold: such a sale is forced by the cap.
        withdrawal: the withdrawal being raised, in money, when the lots without a short-term
            gain cannot raise it (0: otherwise); its sales may then go below ``floor_shares``
            where the continuous optimum does (``enforce``).
    """

    settings: TaxSettings
    asof: date
    orders: tuple[tuple[TaxLot, ...], ...]
    floor_shares: np.ndarray
    max_gain: float | None
    cap_forced: frozenset[str] = frozenset()
    withdrawal: float = 0.0


def objective_costs(problem: AllocationProblem, setup: PlanSetup, policy: Policy, settings: TaxSettings | None,
                    lots: tuple[TaxLot, ...], asof: date, *,
                    withdrawal: float = 0.0) -> tuple[AllocationProblem, TaxPlan | None]:
    """``problem`` with the policy's costs and taxes, and the tax plan (None: not taxable).

    A ``withdrawal`` (money) is a forced sale: when the lots without a short-term gain cannot
    raise it, the short-term floors may be released by the shortfall (at most the withdrawal),
    the optimizer choosing which lots (least tax, when tax is charged).
    """
    plan_pos = {s: i for i, s in enumerate(setup.symbols)}
    idx = [plan_pos[s] for s in problem.symbols]
    linear = power = None
    if policy.costs_in_objective:
        linear = np.full(problem.n, policy.market_impact_bps / 1e4)
        coefficients = policy.impact_power_coefficients or {}
        power = np.array([coefficients.get(s, coefficients.get("*", 0.0)) for s in problem.symbols])
        power = power if power.any() else None
    if settings is None:
        return replace(problem, costs=ObjectiveCosts(linear=linear, power=power)), None
    value = setup.value
    orders = tuple(tuple(sale_order(lots, s, to_decimal(float(setup.prices[i])), asof, settings))
                   for i, s in enumerate(setup.symbols))
    floor_shares = np.zeros(len(setup.symbols), dtype=np.int64)
    cap_forced = set()
    for i, order in enumerate(orders):
        if not setup.forced[i]:
            sellable = _sellable(order, to_decimal(float(setup.prices[i])), asof, settings)
            # A sale a position cap forces is not held back by the short-term rule.
            cap_shares = math.floor(float(setup.caps[i]) * value / float(setup.prices[i]) + 1e-9)
            floor_shares[i] = min(max(0, int(setup.current[i]) - sellable), cap_shares)
            if cap_shares < int(setup.current[i]) - sellable:
                cap_forced.add(setup.symbols[i])
    taxes, gains, losses, hulls = [], [], [], []
    floors = problem.floors.copy() if problem.floors is not None else np.zeros(problem.n)
    base = floors.copy()
    for j, i in enumerate(idx):
        price = float(setup.prices[i])
        order = orders[i]
        sizes = [lot.shares * price / value for lot in order]
        slopes = [_tax_slope(lot, price, asof, settings) for lot in order]
        taxes.append(envelope(sizes, slopes))
        gains.append(envelope(sizes, [1.0 - float(lot.basis or 0) / price for lot in order]))
        harvested = policy.harvest_losses and harvestable_loss(order, to_decimal(price), policy) is not None
        losses.append(envelope(sizes, slopes, losses=True) if harvested else [])
        headroom = min(float(problem.caps[j]), problem.invested) - float(problem.current[j])
        hulls.append(harvest_hull(sizes, slopes, headroom) if harvested else [])
        floors[j] = max(floors[j], min(floor_shares[i] * price / value, problem.caps[j]))
    max_gain = None if settings.max_realized_gain is None else float(settings.max_realized_gain)
    budget = None
    if max_gain is not None:
        forced_gain = sum(_realized_gain(orders[i], int(setup.current[i]), float(setup.prices[i]))
                          for i in np.flatnonzero(setup.forced))
        budget = max(0.0, max_gain - forced_gain) / value
    costs = ObjectiveCosts(linear=linear, power=power, tax=pieces(taxes), gain=pieces(gains), max_gain=budget)
    if any(losses):
        # harvest_losses: these names' losses count where they are not bought (``optimization.solve``).
        costs = replace(costs, loss=pieces(losses), hull=pieces(hulls),
                        modes=np.array([RELAXED if rows else MAY_BUY for rows in losses], dtype=np.int8))
    problem = replace(problem, costs=costs, floors=floors if floors.any() else problem.floors)
    shortfall = float(floors.sum()) - problem.invested
    if withdrawal > 0 and shortfall > 0:
        problem = replace(problem, relievable=floors - base, floor_relief=min(shortfall, withdrawal / value))
    else:
        withdrawal = 0.0  # the lots without a short-term gain raise it: nothing is forced
    return problem, TaxPlan(settings, asof, orders, floor_shares, max_gain, frozenset(cap_forced), withdrawal)


def _sellable(order: tuple[TaxLot, ...], price: Decimal, asof: date, settings: TaxSettings) -> int:
    """Shares a non-forced sale may take: the lots in the order (only the named ones with
    ``specific``), up to the first with a short-term gain when those are avoided."""
    total = 0
    for lot in order:
        if settings.avoid_short_term_gains and lot.short_term_gain(price, asof, settings):
            break
        total += lot.shares
    return total


def _tax_slope(lot: TaxLot, price: float, asof: date, settings: TaxSettings) -> float:
    """Tax per unit of weight sold; a lot without a basis is taxed as if its basis were zero."""
    rate = float(settings.rate(lot.term(asof, settings.holding_period_days)))
    return rate * (1.0 - float(lot.basis or 0) / price)


def taken(order: tuple[TaxLot, ...], quantity: float) -> list[tuple[TaxLot, float]]:
    """(lot, shares) a sale of ``quantity`` (possibly fractional) shares takes in ``order``."""
    out, left = [], quantity
    for lot in order:
        if left <= 0:
            break
        n = min(left, lot.shares)
        out.append((lot, n))
        left -= n
    return out


def _realized_gain(order: tuple[TaxLot, ...], quantity: float, price: float) -> float:
    return sum(n * (price - float(lot.basis or 0)) for lot, n in taken(order, quantity))


def realized_tax(plan: TaxPlan, setup: PlanSetup, shares: np.ndarray) -> float:
    """The estimated tax (losses negative) of moving from the current holdings to ``shares``
    (fractional allowed), lot by lot in the sale order, in money."""
    total = 0.0
    for i, order in enumerate(plan.orders):
        sold = float(setup.current[i] - shares[i])
        if sold > 0:
            price = float(setup.prices[i])
            for lot, n in taken(order, sold):
                total += n * (price - float(lot.basis or 0)) * float(
                    plan.settings.rate(lot.term(plan.asof, plan.settings.holding_period_days)))
    return total


def enforce(plan: TaxPlan, setup: PlanSetup, shares: np.ndarray, optimal: np.ndarray,
            notes: dict[str, str]) -> np.ndarray:
    """Whole ``shares`` that keep the short-term rule and the gain cap, and every rounding limit.

    Buying back (selling fewer) is the only move: it never adds turnover; the cash it costs
    comes from purchases, which ``repair`` cuts. A few rounds settle the interplay.
    """
    floor_shares = plan.floor_shares
    if plan.withdrawal > 0:
        # The withdrawal's forced sales: down to the continuous optimum's whole shares, no further.
        # 1e-3 share of slack: a solver's 59.9999 shares at a floor of 60 is the floor, not a sale.
        below = np.floor(optimal * setup.value / setup.prices + 1e-3).astype(np.int64)
        floor_shares = np.minimum(floor_shares, below)
    for _ in range(5):
        before = shares.copy()
        free = ~setup.forced
        held_back = free & (shares < floor_shares)
        for i in np.flatnonzero(held_back):
            notes[setup.symbols[i]] = "sale limited to lots without a short-term gain after rounding"
        shares = np.where(held_back, floor_shares, shares)
        if plan.max_gain is not None:
            shares = _within_gain_cap(plan, setup, shares, notes)
        if np.array_equal(shares, before):
            return shares
        shares = repair(setup, shares, optimal, notes, held_back=np.where(free, floor_shares, 0))
    return shares


def _within_gain_cap(plan: TaxPlan, setup: PlanSetup, shares: np.ndarray, notes: dict[str, str]) -> np.ndarray:
    """Sell fewer shares, last lots taken first, of the non-forced sales with the largest gain per
    share until the net realized gain is within the cap."""
    assert plan.max_gain is not None
    shares = shares.copy()
    for _ in range(10 * len(shares) + 10):
        gains = np.array([_realized_gain(plan.orders[i], float(setup.current[i] - shares[i]), float(setup.prices[i]))
                          if shares[i] < setup.current[i] else 0.0 for i in range(len(shares))])
        excess = float(gains.sum()) - plan.max_gain
        if excess <= 1e-6:
            return shares
        best, per_share, room = None, 0.0, 0
        for i in np.flatnonzero(~setup.forced & (shares < setup.current)):
            lot, n = taken(plan.orders[i], float(setup.current[i] - shares[i]))[-1]
            gps = float(setup.prices[i]) - float(lot.basis or 0)
            if gps > per_share:
                best, per_share, room = i, gps, int(n)
        if best is None:
            return shares  # only forced sales (or losses) left: the check reports the cap as not met
        shares[best] += min(room, max(1, math.ceil(excess / per_share)))
        notes[setup.symbols[best]] = "sale reduced to keep realized gains within max_realized_gain"
    return shares
