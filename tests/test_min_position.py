"""``min_position_pct`` holds after whole-share rounding even under a binding turnover limit
(issue 12 §3): the greedy rounding first, then an exact mixed-integer program
(``whole_shares_milp``) when the greedy leaves a position under the minimum; when no whole-share
portfolio can meet the minimum and the limits together, an InfeasibleError names them — never a
proposal that breaks a hard limit."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.allocation.rebalance import Holdings, propose_trades
from services.allocation.rounding import PlanSetup, evaluate, violations, whole_shares_milp
from services.data.policy import Policy
from services.data.seeds import load_benchmarks
from services.errors import InfeasibleError

PACK = "PP_2022-12-28"


def _setup(current, prices, cash, **extra) -> PlanSetup:
    n = len(current)
    base = dict(
        symbols=tuple(f"S{i}" for i in range(n)), prices=np.array(prices, dtype=float),
        current=np.array(current, dtype=np.int64), cash=cash, forced=np.zeros(n, dtype=bool),
        caps=np.ones(n), sectors=(), cash_buffer=0.0, max_turnover=None, max_tracking_error=None,
        te_factor=None, te_offset=None, commission=0.0, impact_bps=0.0, min_trade_value=0.0,
    )
    return PlanSetup(**{**base, **extra})


def test_by_hand_a_small_position_is_topped_up_when_turnover_cannot_pay_for_closing_it() -> None:
    # $10,000: S0 = 20 × $100 (20%), S1 = 78 × $100 (78%), $200 cash; no commission nor impact,
    # but every trade is costed half a cent high (evaluate's safety margin); minimum 25%.
    # Closing S0 trades $2,000 (20% turnover). Topping it up to 25 shares buys $500; the $200
    # cash and 3 S1 sold ($300) leave cash at -$0.01 after the two half-cents, so 4 S1 are sold:
    # $900 of trades, 9% turnover — the least there is. At 8% nothing meets the minimum.
    setup = _setup([20, 78], [100.0, 100.0], 200.0, min_position=0.25, max_turnover=0.08)
    with pytest.raises(InfeasibleError) as err:
        whole_shares_milp(setup, np.array([0.20, 0.78]))
    assert "min_position_pct 25%" in err.value.message and "max_turnover_pct" in err.value.details["conflicts"]
    setup = _setup([20, 78], [100.0, 100.0], 200.0, min_position=0.25, max_turnover=0.09)
    shares = whole_shares_milp(setup, np.array([0.20, 0.78]))
    assert shares.tolist() == [25, 74]
    snap = evaluate(setup, shares)
    assert not violations(setup, snap)
    assert snap.turnover == pytest.approx(0.09) and snap.cash_after == pytest.approx(99.99)


def test_by_hand_min_trade_value_and_costs_are_respected() -> None:
    # $10,000: S0 = 30 × $100, S1 = 69 × $100, $100 cash; costs $1 a trade + 10 bps (+ the half-cent
    # margin); minimum trade $300; minimum position 33%, imposed on the value before costs: S0
    # needs 33 shares. Buying 3 ($300, just the minimum trade) costs $301.31 with its costs; the
    # $100 cash is short, and S1 may only be sold by $300 or more (not closing): 3 shares.
    setup = _setup([30, 69], [100.0, 100.0], 100.0, min_position=0.33, commission=1.0, impact_bps=10.0,
                   min_trade_value=300.0)
    shares = whole_shares_milp(setup, np.array([0.30, 0.69]))
    assert shares.tolist() == [33, 66]
    snap = evaluate(setup, shares)
    assert not violations(setup, snap)
    assert snap.cash_after == pytest.approx(100 - 300 + 300 - 2 * (1 + 0.30 + 0.005))


@pytest.fixture(scope="module")
def env(module_store):
    return (module_store.get_pack(PACK),
            {pid: module_store.get_portfolio(pid) for pid in ("demo_diversified", "demo_concentrated", "demo_quality")},
            module_store.get_ratings(), load_benchmarks())


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(portfolio=st.sampled_from(["demo_diversified", "demo_concentrated", "demo_quality"]),
       minimum=st.sampled_from([2.0, 4.0, 6.0, 8.0]),
       turnover=st.sampled_from([None, 5.0, 15.0, 30.0]),
       cap=st.sampled_from([12.0, 20.0]),
       deposit=st.sampled_from([None, 25_000]),
       min_trade=st.sampled_from([None, 2_000]))
def test_a_proposal_never_holds_a_position_under_the_minimum(env, portfolio, minimum, turnover, cap, deposit,
                                                              min_trade) -> None:
    pack, portfolios, ratings, benchmarks = env
    p = portfolios[portfolio]
    policy = {"method": "max_sharpe", "universe": "pack", "max_single_position_pct": cap,
              "max_turnover_pct": turnover, "min_position_pct": minimum}
    if min_trade is not None:
        policy["min_trade_value"] = min_trade
    try:
        proposal = propose_trades(pack, Holdings(p.id, p.positions(), p.cash), Policy(**policy), ratings, benchmarks,
                                  cash_flow=Decimal(deposit) if deposit else None)
    except InfeasibleError as err:
        assert "min_position_pct" in err.details.get("conflicts", []) or "max_turnover_pct" in err.message
        return
    assert proposal.constraints_met, [c for c in proposal.constraints if not c.met]
    # Recomputed from the trades: each position held is at least the minimum of the value after costs.
    value_after = sum(t.target_shares * t.price for t in proposal.trades) + float(proposal.cash_after)
    for t in proposal.trades:
        if t.target_shares:
            assert t.target_shares * t.price / value_after >= minimum / 100.0 - 1e-9, t
        if min_trade is not None and t.quantity and t.target_shares:
            assert t.quantity * t.price >= min_trade - 1e-6, t  # only a closing sale may be smaller


def test_a_sale_the_cap_needs_is_at_least_the_minimum_trade(env) -> None:
    # demo_concentrated holds UNH at 12.58%: the optimum's 3-share trim ($1,573) is below the
    # $2,000 minimum and was dropped, then the 12% cap trimmed 3 shares anyway (and filling cash
    # bought back what a larger trim sold). The cap's sale is now 4 shares, $2,097.69.
    pack, portfolios, ratings, benchmarks = env
    p = portfolios["demo_concentrated"]
    policy = Policy(method="max_sharpe", universe="pack", max_single_position_pct=12.0, min_trade_value=2000)
    proposal = propose_trades(pack, Holdings(p.id, p.positions(), p.cash), policy, ratings, benchmarks)
    unh = next(t for t in proposal.trades if t.symbol == "UNH")
    assert (unh.action, unh.current_shares, unh.target_shares) == ("SELL", 60, 56)
    for t in proposal.trades:
        if t.quantity and t.target_shares:
            assert t.quantity * t.price >= 2000 - 1e-6, t


def test_the_solver_writes_nothing_on_stdout(home, tmp_path) -> None:
    # HiGHS prints from C to the process's stdout; the CLI's stdout must stay one JSON document.
    import json

    from serving import cli

    request = {"portfolio_id": "demo_diversified", "pricing_pack_id": PACK,
               "policy": {"method": "max_sharpe", "universe": "pack", "max_single_position_pct": 12.0,
                          "max_turnover_pct": 30.0, "min_position_pct": 6.0}}
    done = cli("call", "optimizer.propose_trades", "--input", "-", "--user", "demo", stdin=json.dumps(request))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)  # nothing else on stdout
    check = next(c for c in result["constraints"] if c["constraint"] == "min_position_pct")
    assert check["met"] and any("whole-share solve" in t["rationale"] for t in result["trades"])
