"""Restricted (never bought), frozen (never traded) and halted (no close on the asof) names."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.allocation.rebalance import Holdings, propose_trades
from services.data.models import PricingPack
from services.data.policy import Policy
from services.data.seeds import load_benchmarks

PACK = "PP_2022-12-28"
DIVERSIFIED_POLICY = {"method": "max_sharpe", "universe": "pack", "max_single_position_pct": 12.0,
                      "max_turnover_pct": 30.0}


@pytest.fixture(scope="module")
def env(module_store):
    pack = module_store.get_pack(PACK)
    portfolio = module_store.get_portfolio("demo_diversified")
    holdings = Holdings(portfolio.id, portfolio.positions(), portfolio.cash)
    return pack, holdings, module_store.get_ratings(), load_benchmarks()


def _trades(env, pack=None, **policy):
    base_pack, holdings, ratings, benchmarks = env
    proposal = propose_trades(pack or base_pack, holdings, Policy(**{**DIVERSIFIED_POLICY, **policy}), ratings, benchmarks)
    return proposal, {t.symbol: t for t in proposal.trades}


def test_the_unrestricted_proposal_buys_and_sells_what_the_tests_restrict(env) -> None:
    _, trades = _trades(env)
    assert trades["LLY"].action == "BUY" and trades["AMD"].action == "SELL"


def test_restricted_names_are_never_bought(env) -> None:
    proposal, trades = _trades(env, restricted_symbols=["LLY", "XOM"])
    assert trades["LLY"].action in ("HOLD", "SELL") and "XOM" not in trades
    assert "restricted: never bought" in trades["LLY"].rationale
    assert proposal.constraints_met


def test_frozen_names_are_never_traded(env) -> None:
    proposal, trades = _trades(env, frozen_symbols=["AMD", "LLY"])
    assert (trades["AMD"].action, trades["AMD"].quantity) == ("HOLD", 0)
    assert (trades["LLY"].action, trades["LLY"].quantity) == ("HOLD", 0)
    assert "frozen: never traded" in trades["AMD"].rationale
    assert proposal.constraints_met


def test_a_frozen_name_the_policy_would_sell_in_full_is_kept(env) -> None:
    # A 6.5 minimum excludes AMD (rated 6.3); frozen, it stays.
    proposal, trades = _trades(env, min_quality_score=6.5, frozen_symbols=["AMD"])
    assert trades["AMD"].action == "HOLD"
    assert any(w.startswith("AMD is frozen: kept although quality") for w in proposal.warnings)


def test_halted_security_is_neither_bought_nor_sold_and_valued_at_its_last_close(env) -> None:
    base, *_ = env
    closes = base.closes.copy()
    closes.loc[closes.index[-1], ["AMD", "XOM"]] = np.nan  # no close on the asof: halted
    halted_pack = PricingPack(id="PP_halted", securities=base.securities, closes=closes)
    proposal, trades = _trades(env, pack=halted_pack)
    assert (trades["AMD"].action, trades["AMD"].quantity) == ("HOLD", 0) and "XOM" not in trades
    # Valued at the last close before the asof.
    assert trades["AMD"].price == float(base.closes["AMD"].iloc[-2])
    assert any(w.startswith("AMD is halted (no close on 2022-12-28)") for w in proposal.warnings)
    assert "halted" in trades["AMD"].rationale


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(restricted=st.sets(st.sampled_from(["AAPL", "LLY", "CVX", "XOM", "MSFT", "UNH"]), max_size=3),
       frozen=st.sets(st.sampled_from(["AMD", "KO", "BAC", "JPM", "HD"]), max_size=3))
def test_no_restricted_or_frozen_name_is_traded_against_its_rule(env, restricted, frozen) -> None:
    proposal, trades = _trades(env, restricted_symbols=sorted(restricted), frozen_symbols=sorted(frozen))
    for sym in restricted:
        assert sym not in trades or trades[sym].action != "BUY"
    for sym in frozen:
        assert trades[sym].quantity == 0
    assert proposal.cash_after >= 0


@pytest.mark.parametrize("minimum", [4.0, 6.0])
def test_min_position_pct_leaves_no_position_below_it_other_than_zero(env, minimum) -> None:
    # Without a turnover limit: closing small positions and redeploying their weight is free to happen.
    _, trades = _trades(env, max_turnover_pct=None)
    assert any(0 < t.target_weight_pct < minimum for t in trades.values())  # the rule has work to do
    proposal, trades = _trades(env, max_turnover_pct=None, min_position_pct=minimum)
    for t in trades.values():
        assert t.target_shares == 0 or t.target_weight_pct >= minimum - 1e-4, t
    check = next(c for c in proposal.constraints if c.constraint == "min_position_pct")
    assert check.met and check.limit == minimum
    assert proposal.cash_after >= 0 and proposal.constraints_met
    # The freed weight is spread over the remaining positions within their 12% caps.
    held = [t for t in trades.values() if t.target_shares]
    assert all(t.target_weight_pct <= 12.0 for t in held)


def test_min_position_pct_holds_under_a_binding_turnover_limit(env) -> None:
    # The greedy rounding alone left positions under 6% here (turnover was spent); the
    # whole-share MILP (services.allocation.rounding.whole_shares_milp) settles it.
    proposal, trades = _trades(env, min_position_pct=6.0)
    check = next(c for c in proposal.constraints if c.constraint == "min_position_pct")
    small = [t for t in trades.values() if t.target_shares and t.target_weight_pct < 6.0 - 1e-4]
    assert not small and check.met and proposal.constraints_met
    turnover = next(c for c in proposal.constraints if c.constraint == "max_turnover_pct")
    assert turnover.met and turnover.value <= 30.0
