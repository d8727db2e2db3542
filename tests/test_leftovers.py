"""Whole-share rounding leaves no stray share of a name whose optimal weight is zero (issue 12)."""

from __future__ import annotations

import numpy as np

from services.allocation.rounding import PlanSetup, round_to_shares

PACK = "PP_2022-12-28"


def _setup(current: list[int], cash: float, prices: list[float], min_trade: float = 100.0) -> PlanSetup:
    n = len(current)
    return PlanSetup(
        symbols=tuple(f"S{i}" for i in range(n)), prices=np.array(prices, dtype=float),
        current=np.array(current, dtype=np.int64), cash=cash, forced=np.zeros(n, dtype=bool),
        caps=np.ones(n), sectors=(), cash_buffer=0.0, max_turnover=None, max_tracking_error=None,
        te_factor=None, te_offset=None, commission=5.0, impact_bps=15.0, min_trade_value=min_trade,
    )


def test_solver_noise_weight_closes_the_position_and_buys_nothing() -> None:
    # 250 shares at $100 and $25,000 cash = $50,000. The optimum: all in S1, S0 at 1e-8 (noise),
    # S2 (not held) at 3e-7 (noise). Before the fix S0 kept 1 share (truncation toward the holding)
    # and the fill step bought a share of S2 because its shortfall was a hair above zero.
    setup = _setup([250, 0, 0], 25_000.0, [100.0, 50.0, 10.0])
    shares, _ = round_to_shares(setup, np.array([1e-8, 0.99, 3e-7]))
    assert shares[0] == 0 and shares[2] == 0
    # 0.99 × 50,000 / 50 = 990 shares wanted; costs of the two trades must be paid from the
    # $25,000 + $25,000 of sales, so the buy is 990 or fewer and cash stays non-negative.
    assert 980 <= shares[1] <= 990


def test_closing_sale_below_min_trade_value_is_not_dropped() -> None:
    # 1 share at $40 is below the $100 minimum trade, but it closes a position the optimum drops.
    setup = _setup([1, 100], 0.0, [40.0, 100.0])
    shares, _ = round_to_shares(setup, np.array([0.0, 0.999]))
    assert shares[0] == 0


def test_partial_sale_below_min_trade_value_is_still_dropped() -> None:
    # Selling 1 of 100 shares at $40 is a $40 trade below the $100 minimum: not worth sending.
    setup = _setup([100, 10], 0.0, [40.0, 100.0])
    value = 100 * 40 + 10 * 100
    shares, notes = round_to_shares(setup, np.array([99 * 40 / value, 10 * 100 / value]))
    assert shares[0] == 100 and "below" in notes["S0"]


def test_demo_case_from_the_issue_sells_all_of_a_zero_weight_holding(agent) -> None:
    # A $295k portfolio under max_sharpe with 10% positions and 25% sectors: the optimum drops BBY.
    # Before the fix the proposal sold 299 of 300 BBY and bought 1 SIZE, both at weight 0.0000%.
    result = agent.execute("optimizer.propose_trades", {
        "pricing_pack_id": PACK,
        "portfolio": {"positions": [{"symbol": "XOM", "shares": 250}, {"symbol": "BBY", "shares": 300},
                                    {"symbol": "AAPL", "shares": 500}, {"symbol": "MSFT", "shares": 300},
                                    {"symbol": "JNJ", "shares": 300}], "cash": "60000"},
        "policy": {"method": "max_sharpe", "universe": "pack", "max_single_position_pct": 10,
                   "max_sector_pct": 25},
    })
    for trade in result["trades"]:
        if trade["optimal_weight_pct"] == 0.0:
            assert trade["target_shares"] == 0, trade
    bby = next(t for t in result["trades"] if t["symbol"] == "BBY")
    assert (bby["action"], bby["quantity"], bby["target_shares"]) == ("SELL", 300, 0)
