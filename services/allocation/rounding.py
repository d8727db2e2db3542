"""From optimal weights to whole shares that still satisfy every hard constraint.

The optimizer's weights are continuous; orders are whole shares, cost money, and smaller trades
than ``min_trade_value`` are not worth sending. This module evaluates any candidate share
vector against the constraints (one evaluation serves the rounding and the final report), and
rounds: trades are first truncated toward the current holding (so turnover never grows), small
trades are dropped, violations are repaired, and leftover cash is spent one share at a time on
the names rounding left furthest below their optimal weight.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from services.allocation.optimization import SectorCap
from services.errors import InfeasibleError

EPS = 1e-9
# Below this an optimal weight is solver noise: the report prints it as 0.0000%, so it is zero.
ZERO_WEIGHT = 5e-7


@dataclass(frozen=True, eq=False)
class PlanSetup:
    """Static inputs of a rebalance, indexed like ``symbols`` (held ∪ eligible, sorted).

    Money here is float for speed; each trade's cost is over-estimated by half a cent so that a
    plan feasible in floats is feasible in the exact Decimal accounting of the report.
    """

    symbols: tuple[str, ...]
    prices: np.ndarray
    current: np.ndarray
    cash: float
    forced: np.ndarray
    caps: np.ndarray
    sectors: tuple[SectorCap, ...]
    cash_buffer: float
    max_turnover: float | None
    max_tracking_error: float | None
    te_factor: np.ndarray | None
    te_offset: np.ndarray | None
    commission: float
    impact_bps: float
    min_trade_value: float
    # Never bought (restricted) and never traded (frozen or halted); None: no such names.
    no_buy: np.ndarray | None = None
    fixed: np.ndarray | None = None
    # Smallest position other than zero, as a fraction of value; None: no minimum.
    min_position: float | None = None

    @property
    def value(self) -> float:
        """Portfolio value before trading: holdings at the pack's last closes plus cash."""
        return float(self.current @ self.prices) + self.cash


@dataclass(frozen=True, eq=False)
class Snapshot:
    """A candidate share vector and every quantity the constraints are stated in."""

    shares: np.ndarray
    trade_values: np.ndarray
    costs: float
    cash_after: float
    value_after: float
    weights: np.ndarray
    turnover: float
    forced_turnover: float
    tracking_error: float | None
    exposure: np.ndarray | None = None

    @property
    def discretionary_turnover(self) -> float:
        return self.turnover - self.forced_turnover


@dataclass(frozen=True)
class Violation:
    kind: str
    index: int | None = None
    amount: float = 0.0


def evaluate(
    setup: PlanSetup, shares: np.ndarray, costs: np.ndarray | None = None, exposure: np.ndarray | None = None
) -> Snapshot:
    """Costs, cash, weights, turnover and tracking error of holding ``shares`` after trading.

    ``costs`` are the exact per-trade costs when the caller has them (the report does); without
    them each trade's cost is estimated half a cent high, so float checks err on the safe side.
    ``exposure`` (the risk factor times the holdings' values) may be passed when the caller has
    updated it for a one-share change, which saves the k × n product.
    """
    trade_values = (shares - setup.current) * setup.prices
    traded = shares != setup.current
    if costs is None:
        costs = traded * (setup.commission + np.abs(trade_values) * setup.impact_bps / 1e4 + 0.005)
    costs = float(np.sum(costs))
    cash_after = setup.cash - float(trade_values.sum()) - costs
    value_after = setup.value - costs
    weights = shares * setup.prices / value_after
    value = setup.value
    forced_sales = float(-trade_values[setup.forced].clip(max=0).sum())
    buys = float(trade_values.clip(min=0).sum())
    te = None
    if setup.te_factor is not None and setup.te_offset is not None:
        if exposure is None:
            exposure = setup.te_factor @ (shares * setup.prices)
        te = float(np.linalg.norm(exposure / value_after - setup.te_offset))
    return Snapshot(
        shares=shares,
        trade_values=trade_values,
        costs=costs,
        cash_after=cash_after,
        value_after=value_after,
        weights=weights,
        turnover=float(np.abs(trade_values).sum()) / value,
        forced_turnover=(forced_sales + min(forced_sales, buys)) / value,
        tracking_error=te,
        exposure=exposure,
    )


def violations(setup: PlanSetup, snap: Snapshot) -> list[Violation]:
    """Hard constraints that ``snap`` breaks, in the order they are repaired."""
    out: list[Violation] = []
    over = snap.weights - setup.caps
    out += [Violation("position_cap", int(i), float(over[i])) for i in np.flatnonzero(over > EPS)]
    for k, sector in enumerate(setup.sectors):
        excess = float(snap.weights[sector.members].sum()) - sector.limit
        if excess > EPS:
            out.append(Violation("sector_cap", k, excess))
    required_cash = setup.cash_buffer * snap.value_after
    if snap.cash_after < required_cash - 1e-6:
        out.append(Violation("cash", None, required_cash - snap.cash_after))
    if setup.max_turnover is not None and snap.discretionary_turnover > setup.max_turnover + EPS:
        out.append(Violation("turnover", None, snap.discretionary_turnover - setup.max_turnover))
    return out


def tracking_error_ok(setup: PlanSetup, snap: Snapshot) -> bool:
    return setup.max_tracking_error is None or snap.tracking_error is None or (
        snap.tracking_error <= setup.max_tracking_error + EPS
    )


def round_to_shares(setup: PlanSetup, optimal: np.ndarray) -> tuple[np.ndarray, dict[str, str]]:
    """Whole-share holdings close to ``optimal`` weights (of the pre-trade value) that meet the caps,
    cash and turnover limits. Tracking error is checked by the caller, who may re-solve tighter.

    Returns the shares and a note per symbol whose trade was changed by rounding rules.
    """
    notes: dict[str, str] = {}
    optimal = np.where(optimal < ZERO_WEIGHT, 0.0, optimal)
    if setup.min_position is not None:
        optimal = _without_small_positions(setup, optimal)
    desired = optimal * setup.value / setup.prices
    delta = desired - setup.current
    # Truncate toward the current holding; a hair of float noise is not a share.
    steps = np.where(np.abs(delta - np.round(delta)) < 1e-6, np.round(delta), np.trunc(delta))
    shares = (setup.current + steps).astype(np.int64)
    # A position the optimum puts below half a share is closed, not left with one share.
    shares[desired < 0.5] = 0
    shares[setup.forced] = 0
    if setup.no_buy is not None:
        shares = np.where(setup.no_buy, np.minimum(shares, setup.current), shares)
    if setup.fixed is not None:
        shares[setup.fixed] = setup.current[setup.fixed]

    # A sale that closes a position is never too small: dropping it would keep a sliver.
    for i in np.flatnonzero((shares != setup.current) & ~setup.forced & (shares != 0)):
        value = abs(int(shares[i] - setup.current[i])) * setup.prices[i]
        if value < setup.min_trade_value:
            shares[i] = setup.current[i]
            notes[setup.symbols[i]] = f"trade of ${value:,.2f} below the ${setup.min_trade_value:,.2f} minimum; dropped"

    shares = _repair(setup, shares, optimal, notes)
    shares = _fill(setup, shares, optimal)
    if setup.min_position is not None:
        # Rounding and repairs can leave a position a little under the minimum: top up or close,
        # then repair again (closing adds turnover); a few rounds settle it.
        for _ in range(3):
            before = shares.copy()
            shares = _repair(setup, _minimum_positions(setup, shares, optimal, notes), optimal, notes)
            if np.array_equal(shares, before):
                break
    return shares, notes


def repair(setup: PlanSetup, shares: np.ndarray, optimal: np.ndarray, notes: dict[str, str]) -> np.ndarray:
    """``shares`` changed as little as the rounding rules do so that caps, cash and turnover hold."""
    return _repair(setup, shares, optimal, notes)


def _repair(setup: PlanSetup, shares: np.ndarray, optimal: np.ndarray, notes: dict[str, str]) -> np.ndarray:
    tradable = np.ones(len(shares), dtype=bool) if setup.fixed is None else ~setup.fixed
    for _ in range(20 * len(shares) + 20):
        snap = evaluate(setup, shares)
        # A frozen or halted holding over its cap stays: it cannot be traded.
        found = [v for v in violations(setup, snap) if v.kind != "position_cap" or tradable[v.index]]
        if not found:
            return shares
        v = found[0]
        price = setup.prices
        if v.kind == "position_cap":
            i = v.index
            assert i is not None
            allowed = math.floor(setup.caps[i] * snap.value_after * (1 - 1e-9) / price[i])
            shares[i] = min(int(shares[i]), allowed)
            notes.setdefault(setup.symbols[i], "trimmed to the position cap after rounding to whole shares")
        elif v.kind == "sector_cap":
            assert v.index is not None
            members = setup.sectors[v.index].members
            candidates = members[(shares[members] > 0) & tradable[members]]
            if not len(candidates):
                raise InfeasibleError(
                    f"infeasible policy: sector {setup.sectors[v.index].name} is over its limit with frozen "
                    "or halted holdings only, which cannot be traded; raise the sector limit or unfreeze one",
                    details={"conflicts": [f"sector_limit:{setup.sectors[v.index].name}", "frozen_symbols"]},
                )
            i = _most_overweight(snap, optimal, candidates)
            cut = max(1, math.ceil(v.amount * snap.value_after / price[i]))
            shares[i] = max(0, int(shares[i]) - cut)
            notes.setdefault(setup.symbols[i], "trimmed to the sector cap after rounding to whole shares")
        elif v.kind == "cash":
            buys = np.flatnonzero(shares > setup.current)
            if len(buys):
                i = _most_overweight(snap, optimal, buys)
                cut = min(int(shares[i] - setup.current[i]), max(1, math.ceil(v.amount / price[i])))
                shares[i] -= cut
                if 0 < (shares[i] - setup.current[i]) * price[i] < setup.min_trade_value:
                    shares[i] = setup.current[i]
                notes.setdefault(setup.symbols[i], "purchase reduced so that costs are paid from cash")
            else:
                held = np.flatnonzero((shares > 0) & tradable)
                if not len(held):
                    raise InfeasibleError(
                        "infeasible: cash cannot be raised: every holding left is frozen or halted",
                        details={"conflicts": ["cash", "frozen_symbols"]},
                    )
                i = _most_overweight(snap, optimal, held)
                shares[i] = max(0, int(shares[i]) - max(1, math.ceil(v.amount / price[i])))
                notes.setdefault(setup.symbols[i], "sold to keep the cash buffer and pay costs")
        else:
            # Turnover: shrink the largest purchase (which can break no cap), else the largest sale.
            buys = np.flatnonzero(shares > setup.current)
            movable = buys if len(buys) else np.flatnonzero((shares != setup.current) & ~setup.forced)
            i = movable[np.argmax(np.abs(snap.trade_values[movable]))]
            cut = max(1, math.ceil(v.amount * setup.value / price[i]))
            step = int(np.sign(shares[i] - setup.current[i]))
            shares[i] -= step * min(cut, abs(int(shares[i] - setup.current[i])))
            notes.setdefault(setup.symbols[i], "trade reduced to respect the turnover limit after rounding")
    raise RuntimeError("whole-share repair did not converge")  # a bug, not a user error


def _fill(setup: PlanSetup, shares: np.ndarray, optimal: np.ndarray) -> np.ndarray:
    """Spend cash that truncation left, one share at a time, where rounding cost the most weight."""
    snap = evaluate(setup, shares)
    shortfall = (optimal * setup.value - shares * setup.prices) / setup.prices
    order = np.argsort(-shortfall, kind="stable")
    for i in order:
        if shortfall[i] <= 0 or setup.forced[i] or setup.caps[i] <= 0:
            continue
        if (setup.no_buy is not None and setup.no_buy[i]) or (setup.fixed is not None and setup.fixed[i]):
            continue
        trial = shares.copy()
        trial[i] += 1
        trade = (trial[i] - setup.current[i]) * setup.prices[i]
        if 0 < trade < setup.min_trade_value:
            continue
        exposure = None
        if snap.exposure is not None and setup.te_factor is not None:
            exposure = snap.exposure + setup.prices[i] * setup.te_factor[:, i]
        trial_snap = evaluate(setup, trial, exposure=exposure)
        if violations(setup, trial_snap) or (
            tracking_error_ok(setup, snap) and not tracking_error_ok(setup, trial_snap)
        ):
            continue
        shares, snap = trial, trial_snap
    return shares


def _without_small_positions(setup: PlanSetup, optimal: np.ndarray) -> np.ndarray:
    """Optimal weights below the minimum position set to zero, their weight spread pro rata over
    the other positions within their caps (frozen and halted names are left as they are)."""
    assert setup.min_position is not None
    fixed = setup.fixed if setup.fixed is not None else np.zeros(len(optimal), dtype=bool)
    small = (optimal > 0) & (optimal < setup.min_position) & ~fixed
    if not small.any():
        return optimal
    freed = float(optimal[small].sum())
    out = np.where(small, 0.0, optimal)
    room = np.where((out > 0) & ~fixed, np.maximum(setup.caps - out, 0.0), 0.0)
    weight = np.where(room > 0, out, 0.0)
    if weight.sum() > 0:
        out = out + np.minimum(room, freed * weight / weight.sum())
    return out


def _minimum_positions(setup: PlanSetup, shares: np.ndarray, optimal: np.ndarray, notes: dict[str, str]) -> np.ndarray:
    """Positions under the minimum raised to it when every hard constraint still holds and the
    optimum wants at least the minimum; otherwise closed (a closing sale is never too small)."""
    assert setup.min_position is not None
    minimum = setup.min_position
    shares = shares.copy()
    for i in range(len(shares)):
        if setup.fixed is not None and setup.fixed[i]:
            continue
        snap = evaluate(setup, shares)
        if not 0 < snap.weights[i] < minimum - EPS:
            continue
        needed = math.ceil(minimum * snap.value_after / setup.prices[i] - 1e-9)
        may_buy = not (setup.no_buy is not None and setup.no_buy[i] and needed > setup.current[i])
        if optimal[i] >= minimum and may_buy:
            trial = shares.copy()
            trial[i] = needed
            trial_snap = evaluate(setup, trial)
            te_kept = tracking_error_ok(setup, trial_snap) or not tracking_error_ok(setup, snap)
            if not violations(setup, trial_snap) and te_kept:
                shares = trial
                notes.setdefault(setup.symbols[i], "raised to the minimum position")
                continue
        shares[i] = 0
        notes[setup.symbols[i]] = f"closed: below the minimum position of {minimum * 100:g}%"
    return shares


def _most_overweight(snap: Snapshot, optimal: np.ndarray, candidates: np.ndarray) -> int:
    excess = snap.weights[candidates] - optimal[candidates]
    return int(candidates[int(np.argmax(excess))])
