"""Tax-loss harvesting inside the optimization: which names to sell at a loss, by a bounded branch
and bound over each name's direction.

Counting a realized loss as negative tax is exact only for a name that is not also bought (a
loss lot sold and the name bought back is a wash sale, the loss disallowed). As a function of the
name's net trade Δ its tax is then the loss-counting tax of selling −Δ for Δ < 0 and zero for a
purchase: not convex, as it starts downward from Δ = 0. Each solve of the search is one convex
problem in which every harvestable name is ``SELL_ONLY`` (not bought; its losses count),
``MAY_BUY`` (its losses count as zero) or ``RELAXED`` (charged the convex envelope of that tax,
``objective_costs.harvest_hull``). The first two cover every wash-free decision exactly: a name
that is bought realizes no loss, and one that is not is priced lot by lot.

1. The root has every name RELAXED: its optimum bounds every wash-free portfolio from below.
2. A first candidate takes each name's direction from the root (sold: SELL_ONLY, else MAY_BUY);
   one pass then flips each name in turn, in order of how much the root understated its tax,
   keeping a flip that improves the objective.
3. A depth-first branch and bound from the root proves the best candidate optimal, or finds a
   better one: a node at whose optimum the envelope is exact for every RELAXED name is a
   candidate; otherwise the name it understates most is branched on, the side the node trades it
   first. A node whose bound is no better than the best candidate is pruned.

The search makes at most ``MAX_NODES`` solves. When it stops short the best candidate stands, not
proven the best, and the proposal says so: the problem is a mixed-integer one (NP-hard in
general); a few names are proven exactly, dozens usually are not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from services.allocation.objective_costs import MAY_BUY, RELAXED, SELL_ONLY, ObjectiveCosts

MAX_NODES = 100
# Understatement of a RELAXED name's tax below which a solve counts as exact, as a fraction of
# the portfolio's value ($0.01 on $100,000): below the solver's accuracy in money.
GAP_TOLERANCE = 1e-7
# Relative margin by which a value must beat the best candidate to count as better.
PRUNE_TOLERANCE = 1e-9
# Weight below the holding at which a solve counts as selling a name.
SOLD_TOLERANCE = 1e-7

# One solve under given modes: (weights, optimal value to minimize), or None when infeasible.
NodeSolve = Callable[[np.ndarray], "tuple[np.ndarray, float] | None"]


@dataclass(frozen=True)
class Search:
    """The best wash-free modes found, and how far they are proven.

    Attributes:
        modes: per asset, the modes of the best candidate's solve.
        nodes: solves made, the root included.
        proven: the best candidate is optimal (within the solver's tolerance).
    """

    modes: np.ndarray
    nodes: int
    proven: bool


class _Budget:
    """Solves left, and the best candidate so far."""

    def __init__(self, solve_node: NodeSolve) -> None:
        self.solve_node = solve_node
        self.nodes = 1  # the root
        self.best: tuple[float, np.ndarray] | None = None

    def solve(self, modes: np.ndarray) -> tuple[np.ndarray, float] | None:
        self.nodes += 1
        return self.solve_node(modes)

    def offer(self, value: float, modes: np.ndarray) -> None:
        if not self.beaten(value):
            self.best = (value, modes)

    def beaten(self, bound: float) -> bool:
        return self.best is not None and bound >= self.best[0] - PRUNE_TOLERANCE * (1.0 + abs(self.best[0]))


def search(costs: ObjectiveCosts, current: np.ndarray, root: tuple[np.ndarray, float], solve_node: NodeSolve) -> Search:
    """The best wash-free modes, from the ``root`` solve of ``costs.modes`` (every harvestable
    name RELAXED); ``solve_node`` solves the problem under other modes."""
    assert costs.modes is not None
    run = _Budget(solve_node)
    _local_search(costs, current, root, run)
    open_nodes = _branch_and_bound(costs, current, root, run)
    if run.best is None:
        # Every name free to be bought (losses as zero) is wash free and as feasible as the root.
        modes = np.where(costs.modes == RELAXED, MAY_BUY, costs.modes).astype(np.int8)
        solved = run.solve(modes)
        assert solved is not None
        run.offer(solved[1], modes)
    assert run.best is not None
    return Search(run.best[1], run.nodes, not open_nodes)


def _local_search(costs: ObjectiveCosts, current: np.ndarray, root: tuple[np.ndarray, float], run: _Budget) -> None:
    """The root's directions as a first candidate, then one pass of single flips."""
    assert costs.modes is not None
    weights = root[0]
    harvest = np.flatnonzero(costs.modes == RELAXED)
    modes = costs.modes.copy()
    modes[harvest] = np.where(weights[harvest] < current[harvest] - SOLD_TOLERANCE, SELL_ONLY, MAY_BUY)
    solved = run.solve(modes)
    if solved is None:
        return
    run.offer(solved[1], modes)
    gap = relaxation_gap(costs, costs.modes, current, weights)
    for i in sorted(harvest, key=lambda j: (-gap[j], j)):
        if run.nodes >= MAX_NODES // 2:
            return
        assert run.best is not None
        trial = run.best[1].copy()
        trial[i] = MAY_BUY if trial[i] == SELL_ONLY else SELL_ONLY
        solved = run.solve(trial)
        if solved is not None:
            run.offer(solved[1], trial)


def _branch_and_bound(costs: ObjectiveCosts, current: np.ndarray, root: tuple[np.ndarray, float],
                      run: _Budget) -> list[tuple[np.ndarray, float]]:
    """Depth first from the root; returns the nodes left open (modes, bound) when the solves ran out."""
    assert costs.modes is not None
    stack: list[tuple[np.ndarray, tuple[np.ndarray, float] | None, float]] = [(costs.modes, root, root[1])]
    while stack:
        modes, solved, bound = stack.pop()
        if run.beaten(bound):
            continue
        if solved is None:
            if run.nodes >= MAX_NODES:
                return [(modes, bound)] + [(m, b) for m, _, b in stack if not run.beaten(b)]
            solved = run.solve(modes)
            if solved is None or run.beaten(solved[1]):
                continue
        weights, value = solved
        gap = relaxation_gap(costs, modes, current, weights)
        if float(gap.max(initial=0.0)) <= GAP_TOLERANCE:
            run.offer(value, modes)
            continue
        i = int(np.argmax(gap))
        sell_only, may_buy = modes.copy(), modes.copy()
        sell_only[i], may_buy[i] = SELL_ONLY, MAY_BUY
        first, second = (sell_only, may_buy) if weights[i] < current[i] else (may_buy, sell_only)
        # Children inherit the node's value as their bound; the side it trades is explored first.
        stack += [(second, None, value), (first, None, value)]
    return []


def relaxation_gap(costs: ObjectiveCosts, modes: np.ndarray, current: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per asset, how much a RELAXED asset's hull understates its tax at ``weights``: zero tax for
    a purchase, the loss-counting tax of the net sale otherwise, less the hull there; 0 for the
    other assets. In fractions of the portfolio's value."""
    assert costs.loss is not None and costs.hull is not None
    out = np.zeros(len(current))
    for i in np.flatnonzero(modes == RELAXED):
        delta = float(weights[i] - current[i])
        rows = costs.hull.asset == i
        hull = float(np.max(costs.hull.intercept[rows] + costs.hull.slope[rows] * delta))
        rows = costs.loss.asset == i
        tax = 0.0 if delta >= 0 else float(np.max(costs.loss.intercept[rows] + costs.loss.slope[rows] * -delta))
        out[i] = max(0.0, tax - hull)
    return out
