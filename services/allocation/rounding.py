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
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

import numpy as np

from services.allocation.optimization import SectorCap
from services.errors import InfeasibleError

EPS = 1e-9
T = TypeVar("T")
# Below this an optimal weight is solver noise: the report prints it as 0.0000%, so it is zero.
ZERO_WEIGHT = 5e-7
# A bound on the whole-share MILP's branch-and-bound nodes (see ``whole_shares_milp``); a node
# count, not a time limit, so that the result does not depend on the machine's speed.
MILP_NODES = 20_000


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
    # Holdings not to be sold when rounding (a deposit is invested before any sale is
    # considered); a repair that a hard limit needs may still sell. None: no such names.
    no_sell: np.ndarray | None = None
    # A floor per position (min_weight_pct), as a fraction of value after trading; None: no floors.
    floors: np.ndarray | None = None
    # Short positions allowed, with this gross exposure limit Σ|w| (allow_short, max_leverage);
    # None: long only. Rounded by ``round_signed``.
    gross_limit: float | None = None

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
    over = np.abs(snap.weights) - setup.caps  # a short's size is capped like a long's
    out += [Violation("position_cap", int(i), float(over[i])) for i in np.flatnonzero(over > EPS)]
    if setup.gross_limit is not None:
        gross = float(np.abs(snap.weights).sum())
        if gross > setup.gross_limit + EPS:
            out.append(Violation("gross_exposure", None, gross - setup.gross_limit))
    if setup.floors is not None:
        under = setup.floors - snap.weights
        out += [Violation("floor", int(i), float(under[i])) for i in np.flatnonzero(under > EPS)]
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
    optimal = unadjusted = np.where(optimal < ZERO_WEIGHT, 0.0, optimal)
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
    if setup.no_sell is not None:
        shares = np.where(setup.no_sell, np.maximum(shares, setup.current), shares)
    if setup.fixed is not None:
        shares[setup.fixed] = setup.current[setup.fixed]
    if setup.floors is not None:
        _check_floors_affordable(setup)
        # Round up, not toward the holding, where truncation would leave a position under its
        # floor; a purchase the floor needs is at least the minimum trade (else it would be dropped).
        for i in np.flatnonzero(setup.floors > 0):
            shares[i] = max(int(shares[i]), _up_to_floor(setup, int(i), setup.value))

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
        if _below_minimum(setup, evaluate(setup, shares)).any():
            # The greedy rounds could not settle it (typically a binding turnover limit: closing or
            # topping up a small position costs turnover): solve for the shares exactly.
            # Nearest the optimizer's own weights: a small position may be topped up rather than
            # closed when that costs less turnover (the greedy pass had aimed at closing it).
            exact = whole_shares_milp(setup, unadjusted)
            for i in np.flatnonzero(exact != shares):
                notes[setup.symbols[i]] = (
                    f"closed: below the minimum position of {setup.min_position * 100:g}%" if exact[i] == 0
                    else "set by the whole-share solve that keeps every position at or above the minimum")
            shares = exact
    return shares, notes


def _below_minimum(setup: PlanSetup, snap: Snapshot) -> np.ndarray:
    """Positions (other than frozen or halted ones) held below the minimum position."""
    assert setup.min_position is not None
    fixed = setup.fixed if setup.fixed is not None else np.zeros(len(snap.shares), dtype=bool)
    return (snap.shares > 0) & ~fixed & (snap.weights < setup.min_position - EPS)


def whole_shares_milp(setup: PlanSetup, optimal: np.ndarray) -> np.ndarray:
    """The whole-share holdings nearest ``optimal`` (in value, L1) that meet every hard limit and
    the minimum position, by a mixed-integer linear program (HiGHS through SciPy's ``milp``, in
    a child process: see ``_without_stdout``).

    Exact in the quantities ``evaluate`` and ``violations`` use: costs per trade (commission,
    market impact and the half-cent margin), cash and its buffer, caps and sector limits on the
    value after costs, discretionary turnover with the forced-sale exemption, and
    ``min_trade_value`` (a trade is zero or at least the minimum, except a sale that closes a
    position). The minimum position is imposed on the value before costs, which is larger, so a
    position at it is at or above it after costs too. Tracking error (a norm) is not in the
    program; the caller checks it. Frozen, halted, restricted and forced names keep their rules.

    Raises:
        InfeasibleError: no whole-share portfolio meets the minimum position and the limits
            together; the message names the limits in conflict.
    """
    assert setup.min_position is not None
    n, price, current, value = len(setup.symbols), setup.prices, setup.current.astype(float), setup.value
    minimum = setup.min_position
    fixed = setup.fixed if setup.fixed is not None else np.zeros(n, dtype=bool)
    upper = np.floor(setup.caps * value / price + 1e-9)
    upper = np.where(setup.no_buy if setup.no_buy is not None else False, np.minimum(upper, current), upper)
    upper = np.maximum(np.where(fixed, current, upper), 0.0)
    upper[setup.forced] = 0.0
    lower = np.where(fixed, current, 0.0)
    for safety in (0.0, 0.01):  # exact first; a cent of room if the solver's tolerance showed
        out = _without_stdout(_min_position_program, setup, optimal, upper, lower, safety)
        if out is None:
            break
        snap = evaluate(setup, out)
        if not violations(setup, snap) and not _below_minimum(setup, snap).any():
            return out
    conflicts = ["min_position_pct", *(["max_turnover_pct"] if setup.max_turnover is not None else []),
                 "max_single_position_pct", "cash_buffer_pct", "min_trade_value"]
    raise InfeasibleError(
        f"infeasible policy: no whole-share portfolio keeps every position at or above "
        f"min_position_pct {minimum * 100:g}% (or closed) while meeting "
        + ("max_turnover_pct, " if setup.max_turnover is not None else "")
        + "the position and sector caps, the cash buffer and min_trade_value; lower "
        "min_position_pct" + (" or raise max_turnover_pct" if setup.max_turnover is not None else ""),
        details={"conflicts": conflicts, "min_position_pct": minimum * 100},
    )


def round_signed(setup: PlanSetup, optimal: np.ndarray) -> tuple[np.ndarray, dict[str, str]]:
    """Whole-share holdings nearest ``optimal`` weights when shorts are allowed (negative shares),
    meeting every hard limit, by a mixed-integer program like ``whole_shares_milp``.

    The limits are those of ``violations``: |holding| ≤ cap and Σ|holding| ≤ gross limit × value
    after costs, sector limits on the net value, cash after trading (short-sale proceeds
    included) at or above the buffer, discretionary turnover on |trade|, ``min_trade_value`` per
    trade (a sale that closes a long position excepted). Restricted names are never bought or
    shorted, frozen and halted ones never traded, ``no_sell`` holdings kept, forced sales completed. Tracking error is
    checked by the caller, as for ``round_to_shares``.

    Raises:
        InfeasibleError: no whole-share portfolio meets the limits together.
    """
    assert setup.gross_limit is not None
    n, price, current, value = len(setup.symbols), setup.prices, setup.current.astype(float), setup.value
    fixed = setup.fixed if setup.fixed is not None else np.zeros(n, dtype=bool)
    no_buy = setup.no_buy if setup.no_buy is not None else np.zeros(n, dtype=bool)
    reach = np.floor(setup.caps * value / price + 1e-9)
    upper = np.where(no_buy, np.minimum(reach, current), reach)
    lower = np.where(no_buy, 0.0, -reach)
    if setup.no_sell is not None:  # a deposit invested before any sale: these holdings are kept
        lower = np.where(setup.no_sell, np.maximum(lower, current), lower)
    upper, lower = np.where(fixed, current, upper), np.where(fixed, current, lower)
    upper[setup.forced] = lower[setup.forced] = 0.0
    lower = np.minimum(lower, upper)  # a holding above its cap may be trimmed, never forced up
    for safety in (0.0, 0.01):  # exact first; a cent of room if the solver's tolerance showed
        out = _without_stdout(_signed_program, setup, optimal, upper, lower, safety)
        if out is not None and not violations(setup, evaluate(setup, out)):
            notes = {setup.symbols[i]: "short position: negative target shares" for i in np.flatnonzero(out < 0)}
            return out, notes
    raise InfeasibleError(
        f"infeasible policy: no whole-share portfolio worth ${value:,.2f} meets max_leverage "
        f"{setup.gross_limit:g}, the position and sector caps, the cash buffer, min_trade_value"
        + (" and max_turnover_pct" if setup.max_turnover is not None else "")
        + " together; raise max_leverage or the caps, or add cash",
        details={"conflicts": ["max_leverage", "max_single_position_pct", "max_sector_pct", "cash_buffer_pct",
                               "min_trade_value", *(["max_turnover_pct"] if setup.max_turnover is not None else [])]},
    )


def _signed_program(
    setup: PlanSetup, optimal: np.ndarray, upper: np.ndarray, lower: np.ndarray, safety: float
) -> np.ndarray | None:
    """Solve ``round_signed``'s program with ``safety`` dollars of room on every limit; the
    shares, or None when it is infeasible."""
    import cvxpy as cp

    assert setup.gross_limit is not None
    program = _trade_program(setup, optimal, upper, lower, safety)
    holding, value_after = program.holding, program.value_after
    gross = cp.Variable(len(setup.symbols), nonneg=True)  # |holding value|
    program.constraints.extend([
        gross >= holding, gross >= -holding,
        -holding <= cp.multiply(setup.caps, value_after) - safety,
        cp.sum(gross) <= setup.gross_limit * value_after - safety,
    ])
    return _solved(program)


class _TradeProgram(NamedTuple):
    """A whole-share trade list as a mixed-integer program, less what is particular to one use."""

    shares: Any  # cp.Variable(n, integer=True): the holdings after trading
    holding: Any  # their values at the pack's closes
    value_after: Any  # the portfolio's value after costs
    objective: Any  # distance in value from the optimal weights, plus a sliver of costs
    constraints: list[Any]


def _trade_program(
    setup: PlanSetup, optimal: np.ndarray, upper: np.ndarray, lower: np.ndarray, safety: float
) -> _TradeProgram:
    """The holdings between ``lower`` and ``upper`` shares nearest ``optimal`` (L1 in value), with
    ``safety`` dollars of room on every limit: costs per trade (commission, market impact and the
    half-cent margin), ``min_trade_value`` (a trade is zero or at least the minimum, unless a sale
    closes a long position smaller than that), each position and each sector under its cap of the
    value after costs, cash and its buffer, and discretionary turnover with the forced-sale
    exemption. Exact in the quantities ``evaluate`` and ``violations`` use."""
    import cvxpy as cp

    n, price, current, value = len(setup.symbols), setup.prices, setup.current.astype(float), setup.value
    shares = cp.Variable(n, integer=True)
    buy = cp.Variable(n, boolean=True)
    sell = cp.Variable(n, boolean=True)
    size = cp.Variable(n, nonneg=True)  # |trade value|
    gap = cp.Variable(n, nonneg=True)  # |holding value - optimal value|
    trade = cp.multiply(shares - current, price)
    max_buy = np.maximum(upper - current, 0.0) * price
    max_sell = np.maximum(current - lower, 0.0) * price
    held_value = np.maximum(current, 0.0) * price
    smallest_sale = np.where(held_value > 0, np.minimum(setup.min_trade_value, held_value), setup.min_trade_value)
    smallest_sale = np.minimum(smallest_sale, max_sell)
    costs = (setup.commission + 0.005) * cp.sum(buy + sell) + setup.impact_bps / 1e4 * cp.sum(size)
    value_after = value - costs
    holding = cp.multiply(shares, price)
    cons = [
        shares >= lower, shares <= upper, buy + sell <= 1,
        trade <= cp.multiply(max_buy, buy) - cp.multiply(smallest_sale, sell),
        trade >= setup.min_trade_value * buy - cp.multiply(max_sell, sell),
        size >= trade, size >= -trade,
        gap >= holding - optimal * value, gap >= optimal * value - holding,
        holding <= cp.multiply(setup.caps, value_after) - safety,
        setup.cash - cp.sum(trade) - costs >= setup.cash_buffer * value_after + safety,
    ]
    for sector in setup.sectors:
        cons.append(cp.sum(holding[sector.members]) <= sector.limit * value_after - safety)
    if setup.max_turnover is not None:
        forced_sales = float((current * price)[setup.forced].sum())
        buys = (cp.sum(trade) + cp.sum(size)) / 2
        excess = cp.sum(size) - forced_sales - setup.max_turnover * value + safety
        cons += [excess <= forced_sales, excess <= buys]
    return _TradeProgram(shares, holding, value_after, cp.sum(gap) + 1e-3 * costs, cons)


def _solved(program: _TradeProgram) -> np.ndarray | None:
    """The program's whole shares (HiGHS through SciPy, a node limit rather than a time limit so
    that the answer does not depend on the machine's speed), or None when it has none."""
    import cvxpy as cp

    problem = cp.Problem(cp.Minimize(program.objective), program.constraints)
    try:
        problem.solve(solver=cp.SCIPY, scipy_options={"node_limit": MILP_NODES})
    except cp.SolverError:
        return None
    if problem.status not in ("optimal", "optimal_inaccurate") or program.shares.value is None:
        return None
    return np.round(program.shares.value).astype(np.int64)


def _without_stdout(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a fresh child process whose stdout is /dev/null.

    HiGHS writes to the process's stdout from C (a banner, debug lines) whatever its options
    say, and stdout carries the CLI's results and the MCP stdio protocol: it must not reach it.
    Redirecting file descriptor 1 in this process would also swallow what other threads write
    meanwhile, so the solve runs in a spawned child. A daemonic process (a batch worker) may not
    have children, and a child may fail to start; there descriptor 1 is redirected around the
    call instead.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    if multiprocessing.current_process().daemon:
        return _in_process_without_stdout(fn, *args)
    context = multiprocessing.get_context("spawn")
    try:
        with ProcessPoolExecutor(1, mp_context=context, initializer=_silence_stdout) as pool:
            return pool.submit(fn, *args).result()
    except BrokenProcessPool:
        # The child could not start (e.g. a __main__ read from stdin cannot be re-imported).
        return _in_process_without_stdout(fn, *args)


def _in_process_without_stdout(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` here, with file descriptor 1 pointed at /dev/null around the call."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        _silence_stdout()
        return fn(*args)
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _silence_stdout() -> None:
    """Point file descriptor 1 at /dev/null."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)


def _min_position_program(
    setup: PlanSetup, optimal: np.ndarray, upper: np.ndarray, lower: np.ndarray, safety: float
) -> np.ndarray | None:
    """Solve ``whole_shares_milp``'s program with ``safety`` dollars of room on every limit; the
    shares, or None when it is infeasible."""
    import cvxpy as cp

    assert setup.min_position is not None
    n, value = len(setup.symbols), setup.value
    fixed = setup.fixed if setup.fixed is not None else np.zeros(n, dtype=bool)
    program = _trade_program(setup, optimal, upper, lower, safety)
    shares, holding = program.shares, program.holding
    free = ~fixed & ~setup.forced
    if free.any():
        held = cp.Variable(n, boolean=True)
        idx = np.flatnonzero(free)
        program.constraints.extend([
            shares[idx] <= cp.multiply(upper[idx], held[idx]),
            holding[idx] >= setup.min_position * value * held[idx] + safety * held[idx],
        ])
    if setup.floors is not None:
        program.constraints.append(
            holding >= cp.multiply(setup.floors, program.value_after) + safety * (setup.floors > 0))
    return _solved(program)


def _floor_shares(setup: PlanSetup, value: float) -> np.ndarray:
    """The fewest shares of each name that keep it at its floor in a portfolio worth ``value``."""
    assert setup.floors is not None
    return np.ceil(setup.floors * value * (1 + 1e-9) / setup.prices - 1e-9).astype(np.int64)


def _up_to_floor(setup: PlanSetup, i: int, value: float) -> int:
    """The fewest shares of name ``i`` at its floor in a portfolio worth ``value``; a purchase that
    takes it there is at least ``min_trade_value`` (a smaller one would be dropped as too small)."""
    target = int(_floor_shares(setup, value)[i])
    current = int(setup.current[i])
    if target > current and (target - current) * setup.prices[i] < setup.min_trade_value:
        target = current + math.ceil(setup.min_trade_value / setup.prices[i] - 1e-9)
    return target


def _check_floors_affordable(setup: PlanSetup) -> None:
    """Whole shares of every name at its floor (the purchases with their commission and impact)
    must fit the portfolio's value less its cash buffer; else no rounding can meet the floors.

    Raises:
        InfeasibleError: the floors' whole shares cost more than there is to invest.
    """
    assert setup.floors is not None
    floored = np.flatnonzero(setup.floors > 0)
    need = np.array([_up_to_floor(setup, int(i), setup.value) for i in floored], dtype=float)
    buys = np.maximum(need - setup.current[floored], 0) * setup.prices[floored]
    costs = float(np.count_nonzero(buys) * setup.commission + buys.sum() * setup.impact_bps / 1e4)
    cost = float((need * setup.prices[floored]).sum()) + costs
    investable = setup.value * (1 - setup.cash_buffer)
    if cost > investable:
        raise InfeasibleError(
            f"infeasible policy: in whole shares, min_weight_pct needs {len(floored)} positions of at least one "
            f"share each (with their purchases' costs ${cost:,.2f}), more than the ${investable:,.2f} this "
            "portfolio can invest; lower min_weight_pct, floor fewer names, or add cash",
            details={"conflicts": ["min_weight_pct", "whole shares", "portfolio value"],
                     "floors_cost": round(cost, 2), "investable": round(investable, 2)},
        )


def repair(setup: PlanSetup, shares: np.ndarray, optimal: np.ndarray, notes: dict[str, str],
           *, held_back: np.ndarray | None = None) -> np.ndarray:
    """``shares`` changed as little as the rounding rules do so that caps, cash and turnover hold.

    ``held_back``: per symbol, shares no cut other than a position cap's may go below (the tax rules'
    floors: a sale that raises cash must not take a lot with a short-term gain).
    """
    return _repair(setup, shares, optimal, notes, held_back)


def _repair(setup: PlanSetup, shares: np.ndarray, optimal: np.ndarray, notes: dict[str, str],
            held_back: np.ndarray | None = None) -> np.ndarray:
    fixed = np.zeros(len(shares), dtype=bool) if setup.fixed is None else setup.fixed
    for _ in range(20 * len(shares) + 20):
        snap = evaluate(setup, shares)
        # Shares a cut may take: not frozen or halted, and none below a floor (``keep``).
        keep = np.zeros(len(shares), dtype=np.int64) if setup.floors is None else _floor_shares(setup, snap.value_after)
        if held_back is not None:
            keep = np.maximum(keep, held_back)
        tradable = ~fixed & (shares > keep)
        # A frozen or halted holding over its cap stays: it cannot be traded.
        found = [v for v in violations(setup, snap) if v.kind != "position_cap" or not fixed[v.index]]
        if not found:
            return shares
        v = found[0]
        price = setup.prices
        if v.kind == "floor":
            i = v.index
            assert i is not None
            shares[i] = max(int(shares[i]), _up_to_floor(setup, i, snap.value_after))
            notes[setup.symbols[i]] = "raised to its minimum weight after rounding to whole shares"
        elif v.kind == "position_cap":
            i = v.index
            assert i is not None
            allowed = math.floor(setup.caps[i] * snap.value_after * (1 - 1e-9) / price[i])
            shares[i] = min(int(shares[i]), allowed)
            sold = int(setup.current[i] - shares[i])
            if sold > 0 and shares[i] > 0 and sold * price[i] < setup.min_trade_value:
                # A sale the cap needs is still a trade: at least the minimum, or the whole position.
                shares[i] = max(0, int(setup.current[i]) - math.ceil(setup.min_trade_value / price[i] - 1e-9))
            notes[setup.symbols[i]] = "trimmed to the position cap after rounding to whole shares"
        elif v.kind == "sector_cap":
            assert v.index is not None
            members = setup.sectors[v.index].members
            candidates = members[(shares[members] > 0) & tradable[members]]
            if setup.no_sell is not None and (shares[candidates] > setup.current[candidates]).any():
                # Cut a purchase before selling a holding the deposit was meant to spare.
                candidates = candidates[shares[candidates] > setup.current[candidates]]
            if not len(candidates):
                raise InfeasibleError(
                    f"infeasible policy: {setup.sectors[v.index].id} is over its limit with frozen "
                    "or halted holdings only, which cannot be traded; raise the limit or unfreeze one",
                    details={"conflicts": [setup.sectors[v.index].id, "frozen_symbols"]},
                )
            i = _most_overweight(snap, optimal, candidates)
            cut = max(1, math.ceil(v.amount * snap.value_after / price[i]))
            spared = setup.no_sell is not None and shares[i] > setup.current[i]
            shares[i] = max(int(setup.current[i]) if spared else 0, int(keep[i]), int(shares[i]) - cut)
            notes.setdefault(setup.symbols[i], "trimmed to the sector cap after rounding to whole shares")
        elif v.kind == "cash":
            buys = np.flatnonzero((shares > setup.current) & tradable)
            if len(buys):
                i = _most_overweight(snap, optimal, buys)
                cut = min(int(shares[i] - max(setup.current[i], keep[i])), max(1, math.ceil(v.amount / price[i])))
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
                shares[i] = max(int(keep[i]), int(shares[i]) - max(1, math.ceil(v.amount / price[i])))
                notes.setdefault(setup.symbols[i], "sold to keep the cash buffer and pay costs")
        else:
            # Turnover: shrink the largest purchase (which can break no cap), else the largest sale.
            buys = np.flatnonzero((shares > setup.current) & tradable)
            movable = buys if len(buys) else np.flatnonzero((shares < setup.current) & ~setup.forced)
            if not len(movable):
                raise InfeasibleError(
                    "infeasible policy: in whole shares the minimum weights and the turnover limit cannot both "
                    "hold; lower min_weight_pct or raise max_turnover_pct",
                    details={"conflicts": ["min_weight_pct", "max_turnover_pct", "whole shares"]},
                )
            i = movable[np.argmax(np.abs(snap.trade_values[movable]))]
            cut = max(1, math.ceil(v.amount * setup.value / price[i]))
            step = int(np.sign(shares[i] - setup.current[i]))
            room = int(shares[i] - max(setup.current[i], keep[i])) if step > 0 else abs(int(shares[i] - setup.current[i]))
            shares[i] -= step * min(cut, room)
            if step > 0 and 0 < (shares[i] - setup.current[i]) * price[i] < setup.min_trade_value:
                # What is left of the purchase is below the minimum trade: drop it, as the cash repair does.
                shares[i] = max(int(setup.current[i]), int(keep[i]))
            notes.setdefault(setup.symbols[i], "trade reduced to respect the turnover limit after rounding")
    if setup.floors is not None:
        # Floors, caps and cash pull against each other share by share: no whole-share
        # portfolio close to this one meets them all.
        raise InfeasibleError(
            "infeasible policy: no whole-share portfolio was found that keeps every minimum weight "
            "(min_weight_pct) within the position, sector and cash limits at this portfolio's value; "
            "lower min_weight_pct or add cash",
            details={"conflicts": ["min_weight_pct", "whole shares", "portfolio value"]},
        )
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
        if 0 < abs(trade) < setup.min_trade_value:
            continue  # a buy, or what is left of a sale, smaller than the minimum trade
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
