"""min_weight_pct: a floor per position, in the same convex problem, held after whole-share rounding.

The optimum is checked against a min-variance model written here with the floors as bounds, on
the estimates the engine used; the rounded proposal is checked name by name from its trades.
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest

from capabilities.propose_trades import ProposeTradesInput, resolve
from services.allocation.rebalance import estimation_symbols
from services.errors import InfeasibleError, InputError
from services.estimation.estimators import estimate_for_policy

PACK = "PP_2022-12-28"
OPEN = {"universe": "pack", "min_quality_score": None, "method": "min_variance", "max_single_position_pct": 25}


@pytest.fixture(scope="module")
def agent(module_store):
    from agents.agent import OptimizerAgent

    return OptimizerAgent(module_store)


def _request(**policy) -> dict:
    return {"pricing_pack_id": PACK, "portfolio_id": "demo_diversified", "policy": {**OPEN, **policy}}


def _weights(result) -> dict[str, float]:
    return {t["symbol"]: t["target_weight_pct"] for t in result["trades"]}


def test_one_number_floors_every_eligible_name_in_whole_shares(agent) -> None:
    plain = agent.execute("optimizer.propose_trades", _request())
    assert min(w for w in _weights(plain).values()) == 0.0  # min_variance leaves names out without a floor
    result = agent.execute("optimizer.propose_trades", _request(min_weight_pct=2))
    pack = agent.store.get_pack(PACK)
    holdable = {s.symbol for s in pack.securities if s.asset_class not in ("index", "cash")}
    weights = _weights(result)
    assert set(weights) == holdable and all(w >= 2.0 for w in weights.values())
    check = next(c for c in result["constraints"] if c["constraint"] == "min_weight_pct")
    assert check["met"] and check["limit"] == 2.0 and check["value"] == min(weights.values())
    assert all(t["optimal_weight_pct"] >= 2.0 - 1e-4 for t in result["trades"])


def test_a_map_floors_the_names_given_and_the_optimum_is_the_direct_models(agent) -> None:
    floors = {"XOM": 6.0, "KO": 4.0, "AMD": 3.0}
    request = _request(min_weight_pct=floors)
    result = agent.execute("optimizer.propose_trades", request)
    weights = _weights(result)
    assert all(weights[s] >= f for s, f in floors.items())

    inputs = resolve(ProposeTradesInput.model_validate(request), agent.runner.services)
    symbols = estimation_symbols(inputs.pack, inputs.holdings, inputs.policy, inputs.ratings, inputs.benchmarks)
    est = estimate_for_policy(inputs.pack, symbols, inputs.policy)
    w = cp.Variable(len(est.symbols))
    lower = np.array([floors.get(s, 0.0) / 100 for s in est.symbols])
    cp.Problem(cp.Minimize(cp.quad_form(w, cp.psd_wrap(est.cov))), [w >= lower, w <= 0.25, cp.sum(w) == 1]).solve(
        solver="CLARABEL")
    direct = dict(zip(est.symbols, np.asarray(w.value), strict=True))
    for t in result["trades"]:
        assert t["optimal_weight_pct"] == pytest.approx(direct[t["symbol"]] * 100, abs=1e-2), t["symbol"]


@pytest.mark.parametrize(("floors", "message"), [
    ({"NOPE": 1}, "NOPE: not in pricing pack PP_2022-12-28"),
    ({"SP500": 1}, "SP500: not eligible under the policy's universe and quality minimum"),
])
def test_a_floor_on_a_name_the_policy_cannot_hold_is_an_input_error(agent, floors, message) -> None:
    with pytest.raises(InputError) as err:
        agent.execute("optimizer.propose_trades", _request(min_weight_pct=floors))
    assert message in str(err.value) and err.value.details["field"] == "policy.min_weight_pct"


def test_a_frozen_name_cannot_have_a_floor(agent) -> None:
    with pytest.raises(InputError) as err:
        agent.execute("optimizer.propose_trades", _request(min_weight_pct={"JNJ": 3}, frozen_symbols=["JNJ"]))
    assert "JNJ: frozen or halted: held at its weight" in str(err.value)


@pytest.mark.parametrize("value", [-1, 101, {"XOM": 120}, "2"])
def test_floors_are_percentages(agent, value) -> None:
    with pytest.raises(InputError):
        agent.execute("optimizer.propose_trades", _request(min_weight_pct=value))


def test_floors_above_what_is_invested_or_above_a_cap_are_infeasible(agent) -> None:
    with pytest.raises(InfeasibleError) as err:
        agent.execute("optimizer.propose_trades", _request(min_weight_pct=5, cash_buffer_pct=10))
    assert "the minimum weights add up to 125%, more than the 90% invested" in str(err.value)
    with pytest.raises(InfeasibleError) as err:
        agent.execute("optimizer.propose_trades", _request(min_weight_pct={"XOM": 30}))
    assert "min_weight_pct is above the position cap for XOM" in str(err.value)


def _small_proposal(shares: int, **fields):
    """A portfolio of ``shares`` each of AAPL, AMD and BAC, no cash, under max_sharpe over the pack."""
    from decimal import Decimal

    from services.allocation.rebalance import Holdings, propose_trades
    from services.data.importers import read_pack
    from services.data.policy import parse_overrides, resolve_policy
    from services.data.seeds import load_benchmarks, load_constraint_defaults, seed_root

    directory = seed_root() / "packs" / PACK
    pack = read_pack(PACK, directory / "prices.csv", directory / "securities.csv")
    policy = resolve_policy(load_constraint_defaults(), None, parse_overrides(
        {"method": "max_sharpe", "universe": "pack", "max_single_position_pct": 12, "max_sector_pct": 30,
         "min_trade_value": 0, **fields}), policy_id=None)
    positions = {"AAPL": shares, "AMD": shares, "BAC": shares}
    return pack, propose_trades(pack, Holdings(None, positions, Decimal(0)), policy, {}, load_benchmarks())


def test_floors_whole_shares_cannot_buy_is_an_infeasibility_not_a_crash() -> None:
    # A 1% floor on every name of the pack needs a share of each (hundreds of dollars): the
    # repair used to ping-pong between floors and cash until it gave up with a RuntimeError.
    with pytest.raises(InfeasibleError) as err:
        _small_proposal(1, min_weight_pct=1.0)  # $220
    assert err.value.details["conflicts"] == ["min_weight_pct", "whole shares", "portfolio value"]
    assert err.value.details["floors_cost"] > err.value.details["investable"]


def test_a_purchase_a_floor_needs_is_at_least_the_minimum_trade() -> None:
    # Reaching a floor with one share worth less than min_trade_value used to leave that trade,
    # marked "dropped", in the proposal; it is now raised to the minimum trade.
    # $22,054: a 0.3% floor on BBY ($78.28) is one share, $78.28; the minimum trade is $100.
    _, result = _small_proposal(100, min_weight_pct={"BBY": 0.3}, min_trade_value=100, max_single_position_pct=25)
    bby = next(t for t in result.trades if t.symbol == "BBY")
    assert (bby.current_shares, bby.target_shares) == (0, 2)
    assert bby.trade_value >= 100 and "dropped" not in bby.rationale
