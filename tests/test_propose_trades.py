"""``optimizer.propose_trades`` end to end on the demo pack: every reported number recomputed."""

from __future__ import annotations

import json
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import pytest

from agents.cli import main
from capabilities.base import RequestContext
from services.errors import InputError, NotFoundError
from services.estimation.estimators import daily_returns

PACK = "PP_2022-12-28"


def _propose(agent, **request):
    request.setdefault("pricing_pack_id", PACK)
    return agent.execute("optimizer.propose_trades", request)


def _cost(value: Decimal) -> Decimal:
    return Decimal("5.00") + (abs(value) * Decimal(15) / Decimal(10000)).quantize(Decimal("0.01"), ROUND_HALF_UP)


@pytest.fixture(scope="module")
def diversified(request):
    """quality_focused on demo_diversified, computed once for the module."""
    agent = request.getfixturevalue("agent")
    return _propose(agent, portfolio_id="demo_diversified", policy_id="quality_focused")


@pytest.fixture(scope="module")
def agent(module_store):
    from agents.agent import OptimizerAgent

    return OptimizerAgent(module_store)


def test_costs_cash_and_turnover_recomputed_from_the_trades(agent, diversified) -> None:
    portfolio = agent.store.get_portfolio("demo_diversified")
    prices = agent.store.get_pack(PACK).last_prices()
    value = sum(Decimal(repr(prices[s])) * n for s, n in portfolio.positions().items()) + portfolio.cash
    assert Decimal(repr(diversified["portfolio_value"])) == value.quantize(Decimal("0.01"))
    cash, costs, traded = portfolio.cash, Decimal(0), Decimal(0)
    for t in diversified["trades"]:
        signed = {"BUY": 1, "SELL": -1, "HOLD": 0}[t["action"]] * t["quantity"]
        assert t["target_shares"] == t["current_shares"] + signed
        amount = Decimal(repr(t["price"])) * signed
        cost = _cost(amount) if signed else Decimal(0)
        assert Decimal(repr(t["estimated_cost"])) == cost
        cash, costs, traded = cash - amount - cost, costs + cost, traded + abs(amount)
    assert Decimal(repr(diversified["estimated_costs"])) == costs
    assert Decimal(repr(diversified["cash_after"])) == cash.quantize(Decimal("0.01"))
    assert cash >= 0
    assert diversified["turnover_pct"] == pytest.approx(float(traded / value * 100), abs=1e-4)
    assert diversified["cost_bps"] == pytest.approx(float(costs / traded * 10000), abs=0.01)


def test_hard_constraints_hold_after_rounding(agent, diversified) -> None:
    pack = agent.store.get_pack(PACK)
    value_after = Decimal(repr(diversified["value_after"]))
    sectors: dict[str, float] = {}
    for t in diversified["trades"]:
        weight = float(t["target_shares"] * Decimal(repr(t["price"])) / value_after)
        assert weight <= 0.10 + 1e-9, t["symbol"]
        sectors[pack.security(t["symbol"]).sector] = sectors.get(pack.security(t["symbol"]).sector, 0) + weight
    assert max(sectors.values()) <= 0.25 + 1e-9
    assert diversified["discretionary_turnover_pct"] <= 20.0
    assert diversified["constraints_met"] is True


def test_tracking_error_recomputed_from_the_pack(agent, diversified) -> None:
    """Ex-ante TE of the target vs DEMO_20 with sklearn's Ledoit-Wolf: independent of the engine.

    The portfolio's names keep their own Ledoit-Wolf estimate; the benchmark's other names enter
    by their regression on them over the union's estimate (services.estimation.benchmark), so
    TE² = aᵀΣ_UU a + b_Bᵀ Σ_ε b_B with a = w − b_U − βᵀ b_B.
    """
    from sklearn.covariance import LedoitWolf

    from services.data.seeds import load_benchmarks

    bench = load_benchmarks()["DEMO_20"]
    pack = agent.store.get_pack(PACK)
    held = sorted({t["symbol"] for t in diversified["trades"]})
    outside = sorted(set(bench) - set(held))
    assert outside  # the benchmark holds names the portfolio's estimate does not

    def lw(symbols):
        return LedoitWolf().fit(daily_returns(pack, symbols, 756).to_numpy()).covariance_ * 252

    own, union = lw(held), lw(held + outside)
    n = len(held)
    beta = np.linalg.solve(union[:n, :n], union[:n, n:]).T
    resid = union[n:, n:] - beta @ union[:n, n:]
    b_out = np.array([bench[s] for s in outside])
    value_after = float(diversified["value_after"])
    target = np.array([sum(t["target_shares"] * t["price"] for t in diversified["trades"] if t["symbol"] == s)
                       for s in held]) / value_after
    active = target - np.array([bench.get(s, 0.0) for s in held]) - beta.T @ b_out
    expected = np.sqrt(active @ own @ active + b_out @ resid @ b_out) * 100
    # sklearn's LW uses the 1/T sample covariance, riskfolio's the same estimator: agree to 0.1%
    assert diversified["te_after_pct"] == pytest.approx(expected, rel=2e-3)
    assert diversified["te_before_pct"] == pytest.approx(3.52, abs=0.02)
    assert diversified["te_after_pct"] <= 2.0


def test_quality_minimum_forces_full_sales_and_no_purchases(agent) -> None:
    result = _propose(agent, portfolio_id="demo_quality", policy_id="quality_focused",
                      policy={"universe": "pack", "max_turnover_pct": None, "max_tracking_error_pct": None})
    trades = {t["symbol"]: t for t in result["trades"]}
    assert trades["XOM"]["action"] == "SELL" and trades["XOM"]["target_shares"] == 0
    ratings = agent.store.get_ratings()
    bought = [t["symbol"] for t in result["trades"] if t["action"] == "BUY"]
    assert bought and all(ratings.get(s, 10) >= 6.0 for s in bought)
    assert any("XOM sold in full: quality 4.5 below the minimum 6" in w for w in result["warnings"])
    assert result["forced_turnover_pct"] > 0


def test_unrated_holdings_are_eligible_by_default_with_a_warning(agent) -> None:
    result = _propose(agent, portfolio={"positions": [{"symbol": "AAPL", "shares": 50}, {"symbol": "MTUM", "shares": 40}],
                                        "cash": "1000"},
                      policy={"min_quality_score": 6, "max_single_position_pct": 70})
    assert any("no quality rating for MTUM" in w and "treated as eligible" in w for w in result["warnings"])
    excluded = _propose(agent, portfolio={"positions": [{"symbol": "AAPL", "shares": 50}, {"symbol": "MTUM", "shares": 40}]},
                        policy={"min_quality_score": 6, "unrated": "exclude"})
    mtum = next(t for t in excluded["trades"] if t["symbol"] == "MTUM")
    assert mtum["action"] == "SELL" and mtum["target_shares"] == 0


def test_small_trades_are_dropped_with_a_note(agent) -> None:
    result = _propose(agent, portfolio_id="demo_diversified", policy_id="quality_focused",
                      policy={"min_trade_value": 20000})
    for t in result["trades"]:
        if t["action"] != "HOLD":
            assert t["trade_value"] >= 20000 or "below" in t["rationale"]
    assert any("minimum; dropped" in t["rationale"] for t in result["trades"])


def test_short_history_falls_back_to_equal_weight_with_a_warning(agent) -> None:
    result = _propose(agent, portfolio_id="demo_diversified", policy={"lookback_days": 20, "max_single_position_pct": 20})
    assert result["method"] == "equal_weight"
    assert result["estimation"]["fallback"] == "equal_weight"
    assert any("fewer than 30" in w for w in result["warnings"])


def test_no_positions_gives_zero_trades_with_a_warning(agent) -> None:
    result = _propose(agent, portfolio={"positions": [], "cash": "0"})
    assert result["trade_count"] == 0 and result["trades"] == []
    assert any("no positions" in w for w in result["warnings"])


def test_a_limit_without_benchmark_is_not_applied_and_says_so(agent) -> None:
    result = _propose(agent, portfolio_id="demo_diversified", policy={"max_tracking_error_pct": 2.0})
    assert result["te_after_pct"] is None
    assert any("no benchmark" in w for w in result["warnings"])


def test_percentage_that_looks_like_a_fraction_earns_a_warning(agent) -> None:
    result = _propose(agent, portfolio_id="demo_diversified",
                      policy={"cash_buffer_pct": 0.5, "max_single_position_pct": 30})
    assert any("cash_buffer_pct=0.5" in w and "did you mean 50%" in w for w in result["warnings"])


def test_unknown_policy_field_lists_the_valid_ones(agent) -> None:
    with pytest.raises(InputError) as info:
        _propose(agent, portfolio_id="demo_quality", policy={"max_position": 10})
    error = info.value.details["errors"][0]
    assert error["field"] == "policy.max_position"
    assert "max_single_position_pct" in error["allowed"]


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        ({"portfolio": {"positions": [{"symbol": "AAPL", "shares": -5}]}}, "portfolio.positions.0.shares"),
        ({"portfolio": {"positions": [], "cash": "NaN"}}, "portfolio.cash"),
        ({"portfolio_id": "demo_quality", "portfolio": {"positions": []}}, "(root)"),
        ({"portfolio_id": "demo_quality", "policy": {"method": "magic"}}, "policy.method"),
    ],
)
def test_bad_requests_name_the_field(agent, request_, field) -> None:
    with pytest.raises(InputError) as info:
        _propose(agent, **request_)
    assert any(e["field"] == field for e in info.value.details["errors"]), info.value.details


def test_unknown_pack_is_a_domain_error_listing_the_packs(agent) -> None:
    with pytest.raises(NotFoundError) as info:
        _propose(agent, portfolio_id="demo_quality", pricing_pack_id="PP_1999-01-01")
    assert PACK in info.value.message


def test_someone_elses_portfolio_looks_like_an_unknown_one(agent) -> None:
    ctx = RequestContext(user="mallory")
    with pytest.raises(NotFoundError) as other:
        agent.execute("optimizer.propose_trades", {"portfolio_id": "demo_quality", "pricing_pack_id": PACK}, ctx)
    with pytest.raises(NotFoundError) as unknown:
        agent.execute("optimizer.propose_trades", {"portfolio_id": "nope", "pricing_pack_id": PACK}, ctx)
    assert other.value.code == unknown.value.code
    assert other.value.message.replace("demo_quality", "X") == unknown.value.message.replace("nope", "X")


def test_result_metadata_comes_from_the_pack(diversified) -> None:
    meta = diversified["_metadata"]
    assert meta["source"] == f"optimizer:{PACK}"
    assert meta["asof"] == "2022-12-28"
    assert meta["ttl"] == 300
    assert len(meta["inputs_hash"]) == 64
    assert meta["engine"]["solver"] == "CLARABEL"
    assert diversified["pricing_pack_id"] == PACK


def test_cli_prints_byte_identical_json_and_maps_errors_to_exit_codes(seeded_home, tmp_path, capsys) -> None:
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"portfolio_id": "demo_diversified", "pricing_pack_id": PACK,
                                   "policy_id": "conservative_income", "policy": {"universe": "pack"}}))
    outputs = []
    for _ in range(2):
        code = main(["call", "optimizer.propose_trades", "--input", str(request)])
        captured = capsys.readouterr()
        outputs.append((code, captured.out, captured.err))
    assert outputs[0][0] in (0, 3)
    assert outputs[0] == outputs[1]

    request.write_text(json.dumps({"portfolio_id": "demo_quality", "pricing_pack_id": PACK, "policy": {"bogus": 1}}))
    assert main(["call", "optimizer.propose_trades", "--input", str(request)]) == 2
    error = json.loads(capsys.readouterr().err)
    assert error["code"] == "invalid_input" and "bogus" in error["message"]

    request.write_text(json.dumps({"portfolio_id": "demo_quality", "pricing_pack_id": PACK, "policy_id": "quality_focused"}))
    assert main(["call", "optimizer.propose_trades", "--input", str(request)]) == 3
    error = json.loads(capsys.readouterr().err)
    # Two names under 10% caps and 25% sectors: the cap alone is not the conflict; every limit that must move is named.
    assert error["code"] == "infeasible" and "max_single_position_pct from 10% to 50%" in error["message"]
    assert "2 × 10% = 20% < 100%" in error["details"]["single_limit_diagnosis"]["message"]
