"""Property tests on random portfolios and policies over the demo pack.

Whatever the portfolio and policy, a proposal either raises a typed infeasibility error or
satisfies every hard constraint after rounding to whole shares — recomputed here from the
trades and the pack, not read from the engine's own checks — and is reproducible.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from services.allocation.rebalance import Holdings, propose_trades
from services.data.importers import read_pack
from services.data.policy import parse_overrides, resolve_policy
from services.data.seeds import load_benchmarks, load_constraint_defaults, seed_root
from services.errors import InfeasibleError

STOCKS = ["AAPL", "AMD", "BAC", "BBY", "CVX", "GE", "HD", "JNJ", "JPM", "KO",
          "LLY", "MRK", "MSFT", "PEP", "PFE", "PG", "RRC", "UNH", "WMT", "XOM"]


@pytest.fixture(scope="module")
def pack():
    directory = seed_root() / "packs" / "PP_2022-12-28"
    return read_pack("PP_2022-12-28", directory / "prices.csv", directory / "securities.csv")


portfolios = st.fixed_dictionaries({
    "positions": st.dictionaries(st.sampled_from(STOCKS), st.integers(1, 3000), min_size=3, max_size=12),
    "cash": st.decimals(0, 200000, places=2),
})
policies = st.fixed_dictionaries({
    "method": st.sampled_from(["max_sharpe", "min_variance", "mean_variance", "risk_parity", "cvar", "hrp",
                               "max_sortino", "max_information_ratio", "black_litterman"]),
    "universe": st.sampled_from(["holdings", "pack", "pack"]),
    "max_single_position_pct": st.floats(12, 60),
    "max_sector_pct": st.floats(30, 70),
    "max_turnover_pct": st.one_of(st.none(), st.floats(30, 120)),
    "max_tracking_error_pct": st.one_of(st.none(), st.floats(3, 12)),
    "min_quality_score": st.one_of(st.none(), st.floats(3, 8)),
    "cash_buffer_pct": st.floats(0, 5),
    "min_trade_value": st.sampled_from([0, 100, 2500]),
    # black_litterman only: min_variance with this floor on the posterior return (None: max_sharpe).
    "bl_floor": st.one_of(st.none(), st.floats(5, 25)),
    "expected_return_estimator": st.sampled_from(["hist", "hist", "factor", "user"]),
    "min_weight_pct": st.one_of(st.none(), st.floats(0, 3)),
    "asset_class_limits_pct": st.one_of(st.none(), st.fixed_dictionaries(
        {}, optional={"equity": st.floats(55, 100), "etf": st.floats(0, 40)})),
})
FORECASTS = {"AAPL": 9.0, "MSFT": 7.5, "XOM": 5.0, "LLY": 11.0}


NEW_METHODS = ["risk_budgeting", "herc", "min_risk", "max_return", "robust", "multi_objective"]
SECTORS = ["Consumer Discretionary", "Consumer Staples", "Energy", "Financials", "Health Care", "Industrials",
           "Information Technology", "Multi-Sector"]
# The fields of one method each; budgets cover every sector, so some eligible name always has one.
method_fields = st.fixed_dictionaries({
    "risk_budget": st.one_of(st.none(), st.fixed_dictionaries({s: st.floats(0.5, 3) for s in SECTORS})),
    "risk_measure": st.sampled_from(["variance", "cvar", "cdar", "mad", "semi_variance", "evar"]),
    "robust_uncertainty": st.sampled_from(["box", "ellipsoid"]),
    "robust_confidence": st.floats(0.5, 0.99),
    "objective_weights": st.sampled_from([{"return": 1.0, "variance": 2.0, "turnover": 0.01, "cost": 1.0},
                                          {"variance": 1.0, "tracking_error": 5.0}, {"return": 1.0}]),
})
METHOD_OF = {"risk_budget": "risk_budgeting", "risk_measure": "min_risk", "robust_uncertainty": "robust",
             "robust_confidence": "robust", "objective_weights": "multi_objective"}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(portfolio=portfolios, fields=policies)
def test_every_hard_constraint_holds_after_rounding(pack, portfolio, fields) -> None:
    _check_proposal(pack, portfolio, fields)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(portfolio=portfolios, fields=policies, method=st.sampled_from(NEW_METHODS), extra=method_fields)
def test_every_hard_constraint_holds_after_rounding_under_the_newer_methods(pack, portfolio, fields, method,
                                                                            extra) -> None:
    fields = dict(fields, method=method, **{k: v for k, v in extra.items() if METHOD_OF[k] == method and v is not None})
    _check_proposal(pack, portfolio, fields)


def _check_proposal(pack, portfolio, fields) -> None:
    needs_benchmark = (fields["max_tracking_error_pct"] or fields["method"] in ("max_information_ratio", "black_litterman")
                       or "tracking_error" in fields.get("objective_weights", {}))
    fields = dict(fields, benchmark="DEMO_20" if needs_benchmark else None)
    floor = fields.pop("bl_floor")
    if fields["method"] == "black_litterman" and floor is not None:
        fields.update(bl_objective="min_variance", bl_min_return_pct=floor)
    if fields["expected_return_estimator"] == "user":
        fields["forecasts"] = FORECASTS
    policy = resolve_policy(load_constraint_defaults(), None, parse_overrides(fields), policy_id=None)
    holdings = Holdings(None, dict(sorted(portfolio["positions"].items())), portfolio["cash"])
    ratings = {"AAPL": 9.2, "XOM": 4.5, "JNJ": 9.0, "RRC": 3.5, "AMD": 6.5, "BAC": 7.0}
    try:
        result = propose_trades(pack, holdings, policy, ratings, load_benchmarks())
    except InfeasibleError as err:
        assert err.details.get("conflicts"), err.message
        event("infeasible: " + err.message.split(":")[1][:40])
        return
    event("feasible")

    prices = {t.symbol: Decimal(repr(t.price)) for t in result.trades}
    value = sum(prices[s] * n for s, n in holdings.positions.items()) + holdings.cash
    cash = holdings.cash - sum(prices[t.symbol] * (t.target_shares - t.current_shares) for t in result.trades)
    cash -= sum(t.estimated_cost for t in result.trades)
    assert cash >= 0
    assert cash.quantize(Decimal("0.01"), ROUND_HALF_UP) == result.cash_after
    value_after = value - result.estimated_costs
    assert cash / value_after >= Decimal(policy.cash_buffer_pct / 100) - Decimal("1e-6")

    sectors: dict[str, Decimal] = {}
    classes: dict[str, Decimal] = {}
    forced_sold = Decimal(0)
    for t in result.trades:
        assert isinstance(t.target_shares, int) and t.target_shares >= 0
        weight = prices[t.symbol] * t.target_shares / value_after
        assert weight <= Decimal(policy.max_single_position_pct / 100) + Decimal("1e-9"), t
        sector = pack.security(t.symbol).sector
        sectors[sector] = sectors.get(sector, Decimal(0)) + weight
        asset_class = pack.security(t.symbol).asset_class
        classes[asset_class] = classes.get(asset_class, Decimal(0)) + weight
        rating = ratings.get(t.symbol)
        if policy.min_quality_score is not None and rating is not None and rating < policy.min_quality_score:
            assert t.target_shares == 0 and t.action in ("SELL",) + (("HOLD",) if t.current_shares == 0 else ())
        if t.action == "BUY":
            assert t.trade_value >= policy.min_trade_value or "required" in t.rationale or "cap" in t.rationale
        if "Sell in full" in t.rationale:
            forced_sold += prices[t.symbol] * t.current_shares
    assert max(sectors.values()) <= Decimal(policy.max_sector_pct / 100) + Decimal("1e-9")
    if policy.min_weight_pct:
        # Every name the policy may hold (universe, quality minimum; unrated names are eligible) at its floor.
        candidates = (set(holdings.positions) if policy.universe == "holdings"
                      else {s.symbol for s in pack.securities if s.asset_class not in ("index", "cash")})
        floor = Decimal(max(policy.min_weight_pct, policy.min_position_pct or 0) / 100) - Decimal("1e-9")
        held = {t.symbol: prices[t.symbol] * t.target_shares / value_after for t in result.trades}
        for symbol in candidates:
            rating = ratings.get(symbol)
            if policy.min_quality_score is None or rating is None or rating >= policy.min_quality_score:
                assert held.get(symbol, Decimal(0)) >= floor, symbol
    for asset_class, limit in (policy.asset_class_limits_pct or {}).items():
        assert classes.get(asset_class, Decimal(0)) <= Decimal(limit / 100) + Decimal("1e-9"), asset_class

    traded = sum(prices[t.symbol] * abs(t.target_shares - t.current_shares) for t in result.trades)
    bought = sum(prices[t.symbol] * t.quantity for t in result.trades if t.action == "BUY")
    discretionary = (traded - forced_sold - min(forced_sold, bought)) / value
    if policy.max_turnover_pct is not None:
        assert discretionary <= Decimal(policy.max_turnover_pct / 100) + Decimal("1e-9")
    if policy.max_tracking_error_pct is not None:
        assert result.te_after_pct <= policy.max_tracking_error_pct + 1e-6
    if policy.bl_min_return_pct is not None and result.method == "black_litterman":
        assert result.after.expected_return_pct >= policy.bl_min_return_pct - 5e-5
    assert result.constraints_met

    again = propose_trades(pack, holdings, policy, ratings, load_benchmarks())
    assert again.model_dump_json() == result.model_dump_json()
