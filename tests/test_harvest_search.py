"""Losses counted as negative tax (harvest_losses): the branch and bound over each name's direction
against enumeration of every direction, each solved by a model written here with a variable per lot."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.allocation.objective_costs import (
    MAY_BUY,
    RELAXED,
    ObjectiveCosts,
    envelope,
    harvest_hull,
    pieces,
)
from services.allocation.optimization import AllocationProblem, solve


def _costs(lots: list[list[tuple[float, float]]], current) -> ObjectiveCosts:
    """Lots as (weight, tax per unit of weight sold), cheapest first (``optimal`` selection); every
    name with a loss lot harvestable (RELAXED at the start); caps of 1."""
    ordered = [sorted(asset, key=lambda lot: lot[1]) for asset in lots]
    sizes = [[s for s, _ in a] for a in ordered]
    slopes = [[t for _, t in a] for a in ordered]
    harvestable = [min(t) < 0 for t in slopes]
    loss = [envelope(q, t, losses=True) if h else [] for q, t, h in zip(sizes, slopes, harvestable, strict=True)]
    hull = [harvest_hull(q, t, 1.0 - c) if h else []
            for q, t, c, h in zip(sizes, slopes, current, harvestable, strict=True)]
    return ObjectiveCosts(tax=pieces([envelope(q, t) for q, t in zip(sizes, slopes, strict=True)]),
                          loss=pieces(loss), hull=pieces(hull),
                          modes=np.array([RELAXED if h else MAY_BUY for h in harvestable], dtype=np.int8))


def _problem(objective: str, lots, current, target, factor, aversion=None, mu=None, **fields) -> AllocationProblem:
    n = len(current)
    return AllocationProblem(symbols=tuple("ABCDEFG"[:n]), objective=objective,
                             mu=np.zeros(n) if mu is None else np.asarray(mu), factor=factor,
                             current=np.asarray(current), invested=1.0, caps=np.ones(n),
                             target=None if target is None else np.asarray(target), costs=_costs(lots, current),
                             tax_aversion=aversion, **fields)


def _enumerated(objective: str, lots, current, target, factor, aversion=None, mu=None, risk_aversion=1.0):
    """The best over every choice of direction for the names with a loss lot: 'sell' (not bought;
    each lot's tax counted, losses negative) or 'buy' (may be bought; losses count as zero). Lots
    are free to be chosen in any order. Returns (objective value, weights)."""
    import cvxpy as cp

    n = len(current)
    current = np.asarray(current)
    losers = [i for i, a in enumerate(lots) if any(t < 0 for _, t in a)]
    best = None
    for choice in itertools.product(("sell", "buy"), repeat=len(losers)):
        direction = dict(zip(losers, choice, strict=True))
        w = cp.Variable(n, nonneg=True)
        cons = [cp.sum(w) == 1]
        tax = 0
        for i, asset in enumerate(lots):
            x = cp.Variable(len(asset), nonneg=True)
            cons.append(x <= np.array([s for s, _ in asset]))
            if direction.get(i) == "sell":
                cons.append(w[i] == current[i] - cp.sum(x))
                tax += np.array([t for _, t in asset]) @ x
            else:
                cons.append(cp.sum(x) >= current[i] - w[i])
                tax += np.array([max(t, 0.0) for _, t in asset]) @ x
        if objective == "track":
            goal = cp.sum_squares(factor @ (w - np.asarray(target))) + 1e-6 * cp.sum_squares(w - np.asarray(target))
            goal = goal + aversion * tax
        else:
            goal = -(np.asarray(mu) @ w - risk_aversion * cp.sum_squares(factor @ w) - tax)
        problem = cp.Problem(cp.Minimize(goal), cons)
        problem.solve(solver="CLARABEL")
        if problem.status == "optimal" and (best is None or problem.value < best[0]):
            best = (problem.value, np.asarray(w.value))
    assert best is not None
    return best


def _exact_track(lots, current, target, factor, aversion, w) -> float:
    """The true objective at ``w``: lots sold cheapest first, losses negative (no name bought and sold)."""
    total = 0.0
    for asset, need in zip(lots, np.clip(np.asarray(current) - w, 0, None), strict=True):
        for size, t in sorted(asset, key=lambda lot: lot[1]):
            take = min(size, need)
            total += take * t
            need -= take
    d = factor @ (w - np.asarray(target))
    return float(d @ d + 1e-6 * np.sum((w - np.asarray(target)) ** 2) + aversion * total)


def test_a_loss_worth_more_than_the_tracking_it_costs_is_realized() -> None:
    # A is at its target (0.5) with one lot at a loss: tax per unit sold −0.2. Selling s of it costs
    # 2s² of distance (G = I, s moves to B) and saves a·0.2·s: s* = a·0.2/4 = 0.05 at a = 1. The
    # relaxation would sell the lot and buy A back (saving 0.1 with no distance): a wash sale.
    lots = [[(0.5, -0.2)], [(0.5, 0.0)]]
    problem = _problem("track", lots, (0.5, 0.5), (0.5, 0.5), np.eye(2), aversion=1.0)
    out = solve(problem)
    assert 0.5 - out.weights[0] == pytest.approx(0.05, abs=1e-5)
    assert not out.warnings


def test_a_name_worth_buying_realizes_no_loss() -> None:
    # A is under its target (0.3 of 0.6) with a small loss lot: buying it back to the target beats
    # harvesting the loss, so the proposal buys and its losses count as zero.
    lots = [[(0.3, -0.01)], [(0.7, 0.0)]]
    out = solve(_problem("track", lots, (0.3, 0.7), (0.6, 0.4), np.eye(2), aversion=1.0))
    assert out.weights[0] == pytest.approx(0.6, abs=1e-5)


@pytest.mark.parametrize("aversion", [0.05, 0.5, 3.0])
def test_track_matches_enumeration_of_every_direction(aversion) -> None:
    rng = np.random.default_rng(11)
    factor = rng.normal(0.0, 0.2, (4, 4))
    current, target = (0.35, 0.3, 0.2, 0.15), (0.25, 0.25, 0.25, 0.25)
    # Per name: (weight in the lot, tax per unit of weight sold); negatives are losses.
    lots = [[(0.15, -0.06), (0.15, 0.07), (0.05, -0.015)], [(0.175, -0.032), (0.075, 0.086), (0.05, 0.015)],
            [(0.075, -0.05), (0.125, 0.06)], [(0.075, -0.07), (0.075, 0.036)]]
    ours = solve(_problem("track", lots, current, target, factor, aversion=aversion))
    value, weights = _enumerated("track", lots, current, target, factor, aversion=aversion)
    assert not ours.warnings  # four names: the search proves its choice the best
    assert ours.weights == pytest.approx(weights, abs=2e-5)
    assert _exact_track(lots, current, target, factor, aversion, ours.weights) == pytest.approx(value, abs=1e-7)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), aversion=st.sampled_from([0.02, 0.2, 1.0, 5.0]))
def test_track_matches_enumeration_on_random_cases(seed, aversion) -> None:
    rng = np.random.default_rng(seed)
    n = 4
    factor = rng.normal(0.0, 0.25, (n, n))
    current = rng.dirichlet(np.ones(n))
    target = rng.dirichlet(np.ones(n))
    lots = []
    for i in range(n):
        split = rng.dirichlet(np.ones(2)) * current[i]
        lots.append([(float(s), float(rng.uniform(-0.1, 0.1))) for s in split])
    ours = solve(_problem("track", lots, current, target, factor, aversion=aversion))
    value, _ = _enumerated("track", lots, current, target, factor, aversion=aversion)
    assert _exact_track(lots, current, target, factor, aversion, ours.weights) == pytest.approx(value, abs=1e-6)


def test_mean_variance_matches_enumeration() -> None:
    rng = np.random.default_rng(3)
    factor = rng.normal(0.0, 0.2, (3, 3))
    mu = np.array([0.02, 0.09, 0.06])
    current = (0.5, 0.2, 0.3)
    lots = [[(0.3, -0.04), (0.2, 0.05)], [(0.2, -0.08)], [(0.3, 0.02)]]
    ours = solve(_problem("mean_variance", lots, current, None, factor, mu=mu, risk_aversion=1.0))
    _, weights = _enumerated("mean_variance", lots, current, None, factor, mu=mu)
    assert ours.weights == pytest.approx(weights, abs=2e-5)


def test_cash_may_float_with_max_cash_pct() -> None:
    # A and B at their targets (0.5 each); A's only lot is at a loss, tax per unit sold −0.2. Selling
    # s of A into B costs 2s² of distance (G = I): s* = 0.2/4 = 0.05. Left in cash it costs s²:
    # s* = 0.2/2 = 0.1, within the 20% of cash allowed (min_invested 0.8).
    lots = [[(0.5, -0.2)], [(0.5, 0.0)]]
    invested = solve(_problem("track", lots, (0.5, 0.5), (0.5, 0.5), np.eye(2), aversion=1.0))
    assert invested.weights == pytest.approx([0.45, 0.55], abs=1e-5)
    floating = solve(_problem("track", lots, (0.5, 0.5), (0.5, 0.5), np.eye(2), aversion=1.0, min_invested=0.8))
    assert floating.weights == pytest.approx([0.4, 0.5], abs=1e-5)
    # At most 5% of cash: the bound binds, and of s sold, s − 0.05 goes into B: s² + (s − 0.05)² − 0.2s
    # is least at 4s = 0.3, s = 0.075 (A 0.425, B 0.525).
    capped = solve(_problem("track", lots, (0.5, 0.5), (0.5, 0.5), np.eye(2), aversion=1.0, min_invested=0.95))
    assert capped.weights == pytest.approx([0.425, 0.525], abs=1e-5)


@pytest.fixture(scope="module")
def agent(module_store):
    from agents.agent import OptimizerAgent

    return OptimizerAgent(module_store)


def _target_request(**policy):
    return {"portfolio_id": "demo_diversified", "pricing_pack_id": "PP_2022-12-28",
            "policy": {"method": "target", "universe": "holdings",
                       "target_weights_pct": {"AAPL": 50, "MSFT": 50}, **policy}}


def test_max_cash_pct_below_the_cash_buffer_is_refused(agent) -> None:
    from services.errors import InputError

    with pytest.raises(InputError) as err:
        agent.execute("optimizer.propose_trades", _target_request(cash_buffer_pct=5, max_cash_pct=2))
    assert err.value.details == {"field": "policy.max_cash_pct", "value": 2.0, "minimum": 5.0}
    assert "max_cash_pct: 2 is below cash_buffer_pct 5" in err.value.message


def test_max_cash_pct_outside_a_tracking_method_is_ignored_with_a_warning(agent) -> None:
    out = agent.execute("optimizer.propose_trades", {
        "portfolio_id": "demo_diversified", "pricing_pack_id": "PP_2022-12-28",
        "policy": {"method": "min_variance", "universe": "holdings", "max_cash_pct": 30}})
    assert "max_cash_pct is set but only target or risk_parity or hrp or herc uses it; ignored under method min_variance" \
        in out["warnings"]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(policy=st.sampled_from([
    {"method": "max_sharpe"}, {"method": "mean_variance"}, {"method": "min_variance", "tax_aversion": 1},
    {"method": "target", "target_weights_pct": {"AAPL": 30, "MSFT": 30, "JNJ": 40}, "tax_aversion": 5},
    {"method": "target", "target_weights_pct": {"AAPL": 30, "MSFT": 30, "JNJ": 40}, "tax_aversion": 5,
     "max_cash_pct": 20}]),
    minimum=st.sampled_from([0, 1000, 20000]), rates=st.sampled_from([(37, 20), (50, 30)]))
def test_harvesting_proposals_keep_every_rule(agent, policy, minimum, rates) -> None:
    request = {"portfolio_id": "demo_diversified", "pricing_pack_id": "PP_2022-12-28",
               "policy": {"universe": "holdings", "harvest_losses": True, "min_harvest_loss": minimum,
                          "tax_rates": {"short_term_pct": rates[0], "long_term_pct": rates[1]}, **policy}}
    out = agent.execute("optimizer.propose_trades", request)
    assert out["constraints_met"], [c for c in out["constraints"] if not c["met"]]
    assert out["cash_after"] >= 0
    cash_pct = 100 * out["cash_after"] / (out["cash_after"] + sum(t["target_shares"] * t["price"] for t in out["trades"]))
    assert cash_pct <= policy.get("max_cash_pct", 0) + 1.0  # whole shares leave at most a little cash
    # A name sold at a loss is not bought: every loss lot sold belongs to a SELL.
    sold = {t["symbol"] for t in out["trades"] if t["action"] == "SELL"}
    assert {r["symbol"] for r in out["tax"]["lots_sold"] if r["gain"] < 0} <= sold
