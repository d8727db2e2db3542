"""Policy fields checked against the pack, and binding limits named only when someone set them."""

from __future__ import annotations

import numpy as np
import pytest

from services.allocation.optimization import AllocationProblem, binding_constraints
from services.errors import InputError

PACK = "PP_2022-12-28"
DEMO_SECTORS = ["Consumer Discretionary", "Consumer Staples", "Energy", "Financials", "Health Care",
                "Industrials", "Information Technology", "Multi-Sector"]


@pytest.fixture(scope="module")
def agent(module_store):
    from agents.agent import OptimizerAgent

    return OptimizerAgent(module_store)


def _propose(agent, **request):
    request.setdefault("pricing_pack_id", PACK)
    request.setdefault("portfolio_id", "demo_diversified")
    return agent.execute("optimizer.propose_trades", request)


def test_the_demo_sectors_are_the_ones_the_errors_list(agent) -> None:
    pack = agent.store.get_pack(PACK)
    holdable = {s.sector for s in pack.securities if s.asset_class not in ("index", "cash")}
    assert sorted(holdable) == DEMO_SECTORS


def test_a_misspelt_sector_is_an_input_error_listing_the_sectors(agent) -> None:
    with pytest.raises(InputError) as err:
        _propose(agent, policy={"sector_limits_pct": {"Enrgy": 10.0, "Financials": 20.0}})
    message = str(err.value)
    assert "'Enrgy' is not a sector of pack PP_2022-12-28" in message
    assert "its sectors are: " + ", ".join(DEMO_SECTORS) in message
    assert err.value.details == {"field": "policy.sector_limits_pct", "invalid": ["Enrgy"], "allowed": DEMO_SECTORS}


@pytest.mark.parametrize("value", [-0.5, 100.5])
def test_sector_limits_outside_0_to_100_are_refused(agent, value) -> None:
    with pytest.raises(InputError, match="sector_limits_pct"):
        _propose(agent, policy={"sector_limits_pct": {"Energy": value}})


def test_a_zero_sector_limit_sells_the_sector(agent) -> None:
    pack = agent.store.get_pack(PACK)
    result = _propose(agent, policy={"method": "min_variance", "sector_limits_pct": {"Energy": 0.0}})
    energy = [t for t in result["trades"] if pack.security(t["symbol"]).sector == "Energy"]
    assert energy, "demo_diversified holds energy names"
    assert all(t["target_shares"] == 0 for t in energy)
    assert result["constraints_met"] is True


def test_ratings_of_symbols_outside_the_pack_are_an_input_error(agent) -> None:
    with pytest.raises(InputError) as err:
        _propose(agent, policy_id="quality_focused", ratings={"AAPL": 8.0, "APPL": 9.0, "ZZZ": 7.0})
    assert "ratings: APPL, ZZZ not in pricing pack PP_2022-12-28" in str(err.value)
    assert err.value.details["invalid"] == ["APPL", "ZZZ"]


def test_ratings_above_10_are_refused(agent) -> None:
    with pytest.raises(InputError, match="ratings"):
        _propose(agent, policy_id="quality_focused", ratings={"AAPL": 10.5})


def test_an_implicit_100pct_cap_is_not_reported_as_binding(agent) -> None:
    # Risk aversion 0 is a linear objective: everything in the highest expected return.
    result = _propose(agent, policy={"method": "mean_variance", "risk_aversion": 0.0})
    held = [t for t in result["trades"] if t["target_shares"] > 0]
    assert len(held) == 1 and held[0]["optimal_weight_pct"] == pytest.approx(100.0, abs=1e-4)
    assert result["binding_constraints"] == []


def test_a_position_cap_that_was_set_is_reported_at_100pct(agent) -> None:
    result = _propose(agent, policy={"method": "mean_variance", "risk_aversion": 0.0, "max_single_position_pct": 100.0})
    held = [t["symbol"] for t in result["trades"] if t["target_shares"] > 0]
    assert result["binding_constraints"] == [f"max_single_position_pct:{held[0]}"]


def test_binding_names_the_field_that_set_each_cap() -> None:
    problem = AllocationProblem(
        symbols=("A", "B", "C", "D"), objective="min_variance", mu=np.zeros(4), factor=np.eye(4),
        current=np.zeros(4), invested=1.0, caps=np.array([0.4, 0.2, 1.0, 0.3]),
        cap_limits=("max_single_position_pct", "restricted_symbols", None, None),
    )
    weights = np.array([0.4, 0.2, 0.1, 0.3])
    assert binding_constraints(problem, weights) == ("max_single_position_pct:A", "restricted_symbols:B")


def test_a_restricted_holding_at_its_weight_is_named_restricted(agent) -> None:
    portfolio = agent.store.get_portfolio("demo_diversified")
    held = sorted(portfolio.positions())
    result = _propose(agent, policy={"method": "max_sharpe", "universe": "pack", "restricted_symbols": held})
    # Nothing may be bought, so every name the optimizer would buy sits at its current weight.
    restricted = [b for b in result["binding_constraints"] if b.startswith("restricted_symbols:")]
    assert restricted
    assert not any(b.startswith("max_single_position_pct:") for b in result["binding_constraints"])


def test_a_fraction_that_makes_the_policy_infeasible_keeps_its_hint(agent) -> None:
    # 0.1 meant as 10%: 16 names under a 0.1% cap cannot be invested; the error says so and why.
    from services.errors import InfeasibleError

    with pytest.raises(InfeasibleError) as err:
        _propose(agent, portfolio_id="demo_diversified", policy={"max_single_position_pct": 0.1})
    assert "max_single_position_pct" in err.value.details["conflicts"]
    assert err.value.details["hints"] == [
        "max_single_position_pct=0.1 is read as 0.1% (percent fields take 15.0 for 15%); did you mean 10%?"]
    assert err.value.message.endswith("Note: max_single_position_pct=0.1 is read as 0.1% (percent fields take "
                                      "15.0 for 15%); did you mean 10%?")
    # A policy without such a value keeps the error as it was: no hints.
    with pytest.raises(InfeasibleError) as plain:
        _propose(agent, portfolio_id="demo_diversified", policy={"max_single_position_pct": 5})
    assert "hints" not in plain.value.details
