"""``services.analytics.impact`` and ``optimizer.analyze_impact``: trades applied, costs by hand, risk recomputed."""

from __future__ import annotations

import json
import shutil
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from capabilities.runner import canonical_json
from services.allocation.rebalance import Holdings
from services.analytics.impact import TradeOrder, analyze_impact, apply_trades
from services.data.models import PricingPack, Security
from services.data.policy import Policy
from services.errors import InputError

PACK = "PP_2022-12-28"
# The propose_trades result whose trades the analyze_impact golden case replays.
PROPOSAL = Path(__file__).parent / "golden" / "optimizer" / "quality_xom_sold" / "expected.json"


def _test_pack() -> PricingPack:
    """Three stocks and an index over 80 business days; AAPL closes at exactly 232.50."""
    rng = np.random.default_rng(3)
    dates = pd.bdate_range("2022-01-03", periods=80)
    market = rng.normal(0.0003, 0.01, 80)
    closes = pd.DataFrame(
        {
            "AAPL": 180 * np.cumprod(1 + 1.2 * market + rng.normal(0, 0.008, 80)),
            "JNJ": 160 * np.cumprod(1 + 0.5 * market + rng.normal(0, 0.006, 80)),
            "SP500": 4000 * np.cumprod(1 + market),
            "XOM": 90 * np.cumprod(1 + 0.9 * market + rng.normal(0, 0.012, 80)),
        },
        index=dates,
    ).round(3)
    closes.loc[dates[-1], "AAPL"] = 232.5
    securities = (
        Security("AAPL", "Apple Inc.", "Information Technology", "equity"),
        Security("JNJ", "Johnson & Johnson", "Health Care", "equity"),
        Security("SP500", "S&P 500 Index", "Index", "index"),
        Security("XOM", "Exxon Mobil Corporation", "Energy", "equity"),
    )
    return PricingPack("PP_TEST", securities, closes)


def _cost(value: Decimal) -> Decimal:
    """$5 + 15 bps of the value, the impact rounded half up to cents: written out independently."""
    impact = (abs(value) * Decimal("0.0015")).quantize(Decimal("0.01"), rounding="ROUND_HALF_UP")
    return Decimal("5.00") + impact


@pytest.fixture(scope="module")
def pack() -> PricingPack:
    return _test_pack()


@pytest.fixture(scope="module")
def agent(module_store):
    from agents.agent import OptimizerAgent

    return OptimizerAgent(module_store)


def _impact(agent, **request):
    request.setdefault("pricing_pack_id", PACK)
    return agent.execute("optimizer.analyze_impact", request)


def test_selling_100_aapl_at_232_50_costs_39_88(pack) -> None:
    # 23,250.00 × 15 bps = 34.875 → 34.88, plus the $5 commission.
    result = apply_trades(pack, Holdings("p", {"AAPL": 100}, Decimal("0")), [TradeOrder("AAPL", "SELL", 100)],
                          commission=Decimal("5.00"), impact_bps=15.0)
    (trade,) = result.trades
    assert trade.trade_value == Decimal("23250.00")
    assert trade.estimated_cost == Decimal("39.88") == _cost(Decimal("23250.00"))
    assert result.costs == Decimal("39.88")
    assert result.holdings.cash == Decimal("23210.12")
    assert result.holdings.positions == {}


def test_sales_pay_for_purchases_and_holds_are_no_ops(pack) -> None:
    prices = pack.last_prices()
    orders = [TradeOrder("XOM", "BUY", 10), TradeOrder("AAPL", "SELL", 40), TradeOrder("JNJ", "HOLD", 0)]
    result = apply_trades(pack, Holdings("p", {"AAPL": 100, "JNJ": 5}, Decimal("0")), orders,
                          commission=Decimal("5.00"), impact_bps=15.0)
    sold, bought = Decimal("40") * Decimal("232.5"), 10 * Decimal(repr(prices["XOM"]))
    cash = sold - bought - _cost(sold) - _cost(bought)
    assert [(t.symbol, t.action, t.quantity) for t in result.trades] == [("AAPL", "SELL", 40), ("XOM", "BUY", 10)]
    assert result.holdings.positions == {"AAPL": 60, "JNJ": 5, "XOM": 10}
    assert result.holdings.cash == cash.quantize(Decimal("0.01"))
    assert result.costs == _cost(sold) + _cost(bought)


def test_overselling_names_the_trade_and_the_rule(pack) -> None:
    with pytest.raises(InputError) as err:
        apply_trades(pack, Holdings("p", {"XOM": 200}, Decimal("0")), [TradeOrder("XOM", "SELL", 300)],
                     commission=Decimal("5"), impact_bps=15)
    assert "SELL 300 XOM" in err.value.message and "holds 200" in err.value.message
    assert err.value.details["problems"] == [
        {"symbol": "XOM", "action": "SELL", "quantity": 300, "rule": "sells more than is held: the portfolio holds 200 share(s)"}
    ]


def test_every_invalid_trade_is_reported_at_once(pack) -> None:
    orders = [TradeOrder("TSLA", "BUY", 5), TradeOrder("SP500", "BUY", 1), TradeOrder("JNJ", "SELL", 1),
              TradeOrder("AAPL", "BUY", 0), TradeOrder("AAPL", "HOLD", 3)]
    with pytest.raises(InputError) as err:
        apply_trades(pack, Holdings("p", {}, Decimal("1000000")), orders, commission=Decimal("5"), impact_bps=15)
    problems: dict[tuple[str, str], str] = {}
    for p in err.value.details["problems"]:
        problems[(p["symbol"], p["action"])] = problems.get((p["symbol"], p["action"]), "") + p["rule"] + "|"
    assert "not in pricing pack PP_TEST" in problems[("TSLA", "BUY")]
    assert "AAPL, JNJ, XOM" in problems[("TSLA", "BUY")]  # the symbols that can be bought
    assert "index series cannot be held" in problems[("SP500", "BUY")]
    assert "holds 0" in problems[("JNJ", "SELL")]
    assert "at least 1 share" in problems[("AAPL", "BUY")]
    assert "once" in problems[("AAPL", "HOLD")] and "quantity must be 0" in problems[("AAPL", "HOLD")]
    assert err.value.code == "invalid_input"


def test_not_enough_cash_names_the_purchase(pack) -> None:
    price = Decimal(repr(pack.last_prices()["XOM"]))
    with pytest.raises(InputError) as err:
        apply_trades(pack, Holdings("p", {}, Decimal("1000")), [TradeOrder("XOM", "BUY", 1000)],
                     commission=Decimal("5"), impact_bps=15)
    assert "BUY 1000 XOM" in err.value.message and "may not go negative" in err.value.message
    expected = Decimal("1000") - 1000 * price - _cost(1000 * price)
    assert err.value.details["problems"][0]["cash_after"] == float(expected.quantize(Decimal("0.01")))


def test_analyze_impact_on_a_test_pack_measures_both_sides(pack) -> None:
    holdings = Holdings("p", {"AAPL": 100, "XOM": 200}, Decimal("500"))
    report = analyze_impact(pack, holdings, [TradeOrder("XOM", "SELL", 200), TradeOrder("JNJ", "BUY", 50)],
                            Policy(benchmark="SP500"), {})
    assert report.value_delta == -report.estimated_costs
    assert report.post_rebalance_value == report.current_value - report.estimated_costs
    assert report.before.holdings_count == 2 and report.after.holdings_count == 2
    assert set(report.after.sector_weights_pct) == {"Health Care", "Information Technology"}
    assert report.market_index == "SP500"
    assert report.estimation.observations == 79
    assert report.warnings == ["lookback_days=756 but the pack has 79 common daily returns for these symbols "
                               "(2022-01-04 to 2022-04-22); used those"]


def test_demo_quality_rebalance_matches_propose_trades_and_independent_numbers(agent) -> None:
    proposal = json.loads(PROPOSAL.read_text(encoding="utf-8"))
    result = _impact(agent, portfolio_id="demo_quality", proposed_trades=proposal["trades"])
    # The same before/after risk as the proposal that produced the trades.
    for side in ("before", "after"):
        for key in ("expected_return_pct", "volatility_pct", "sharpe"):
            assert result[side][key] == pytest.approx(proposal[side][key], abs=1e-4)
    assert result["before"]["tracking_error_pct"] == pytest.approx(proposal["te_before_pct"], abs=1e-4)
    assert result["after"]["tracking_error_pct"] == pytest.approx(proposal["te_after_pct"], abs=1e-4)
    assert result["estimated_costs"] == proposal["estimated_costs"]
    assert result["cash_after"] == proposal["cash_after"]
    assert result["post_rebalance_value"] == proposal["value_after"]

    # Independent: weights from shares × closes, beta with polyfit, VaR with np.percentile, HHI by hand.
    pack = agent.store.get_pack(PACK)
    prices = pack.last_prices()
    returns = pack.closes[["AAPL", "JNJ", "XOM"]].pct_change().iloc[1:]
    market = pack.closes["SP500"].pct_change().iloc[1:]
    for side, shares, cash in (("before", {"AAPL": 100, "JNJ": 150, "XOM": 200}, 0.0),
                               ("after", {"AAPL": 285, "JNJ": 138}, 79.74)):
        values = {s: n * prices[s] for s, n in shares.items()}
        total = sum(values.values()) + cash
        w = np.array([values.get(s, 0.0) / total for s in returns.columns])
        rp = returns.to_numpy() @ w
        block = result[side]
        assert block["beta"] == pytest.approx(np.polyfit(market.to_numpy(), rp, 1)[0], abs=1e-4)
        assert block["var_95_1d_pct"] == pytest.approx(-np.percentile(rp, 5) * 100, abs=1e-4)
        assert block["var_95_1d"] == pytest.approx(-np.percentile(rp, 5) * float(block["value"]), abs=0.01)
        invested = sum(values.values())
        assert block["hhi"] == pytest.approx(sum((v / invested) ** 2 for v in values.values()), abs=1e-6)
        assert sum(c["risk_contribution_pct"] for c in block["top_risk_contributors"]) == pytest.approx(100, abs=1e-3)
    assert result["current_concentration_top10"] == 100.0
    assert result["delta_concentration"] == pytest.approx(
        result["post_concentration_top10"] - result["current_concentration_top10"], abs=1e-9)


def test_plain_trades_and_propose_trades_items_give_the_same_result(agent) -> None:
    proposal = json.loads(PROPOSAL.read_text(encoding="utf-8"))
    plain = [{"symbol": t["symbol"], "action": t["action"], "quantity": t["quantity"]} for t in proposal["trades"]]
    a = _impact(agent, portfolio_id="demo_quality", proposed_trades=plain)
    b = _impact(agent, portfolio_id="demo_quality", proposed_trades=proposal["trades"])
    a.pop("_metadata"), b.pop("_metadata")
    assert a == b


def test_unknown_keys_in_a_trade_are_refused(agent) -> None:
    with pytest.raises(InputError, match="proposed_trades.0.qty"):
        _impact(agent, portfolio_id="demo_quality",
                proposed_trades=[{"symbol": "XOM", "action": "SELL", "quantity": 1, "qty": 1}])


def test_oversell_through_the_capability(agent) -> None:
    with pytest.raises(InputError) as err:
        _impact(agent, portfolio_id="demo_quality", proposed_trades=[{"symbol": "XOM", "action": "SELL", "quantity": 201}])
    assert "SELL 201 XOM: sells more than is held: the portfolio holds 200 share(s)" in err.value.message


def test_cost_overrides_and_quote_warnings(agent) -> None:
    result = _impact(agent, portfolio_id="demo_quality", commission_per_trade=0, market_impact_bps=0,
                     proposed_trades=[{"symbol": "XOM", "action": "SELL", "quantity": 200, "price": 100.0,
                                       "current_shares": 250}])
    assert result["estimated_costs"] == 0.0
    assert result["cash_after"] == pytest.approx(200 * 106.627)
    assert any("quotes price 100" in w for w in result["warnings"])
    assert any("assumes 250 share(s) held but the portfolio holds 200" in w for w in result["warnings"])


def test_benchmark_choices(agent) -> None:
    trades = [{"symbol": "XOM", "action": "SELL", "quantity": 100}]
    by_index = _impact(agent, portfolio_id="demo_quality", proposed_trades=trades, benchmark="SP500")
    none = _impact(agent, portfolio_id="demo_quality", proposed_trades=trades, benchmark=None)
    assert by_index["benchmark"] == "SP500" and by_index["before"]["tracking_error_pct"] > 0
    assert none["benchmark"] is None and none["after"]["tracking_error_pct"] is None
    with pytest.raises(InputError, match="DEMO_20"):
        _impact(agent, portfolio_id="demo_quality", proposed_trades=trades, benchmark="NOPE")


def test_same_request_twice_gives_identical_json(agent, tmp_path, seeded_db, pack) -> None:
    from agents.agent import OptimizerAgent
    from agents.wiring import DB_FILENAME, open_store

    request = {"pricing_pack_id": PACK, "portfolio_id": "demo_diversified",
               "proposed_trades": [{"symbol": "AMD", "action": "SELL", "quantity": 500},
                                   {"symbol": "KO", "action": "BUY", "quantity": 300}]}
    shutil.copyfile(seeded_db, tmp_path / DB_FILENAME)
    # Two agents, so the second result is computed afresh rather than read from a cache.
    first = agent.execute("optimizer.analyze_impact", dict(request))
    second = OptimizerAgent(open_store(tmp_path)).execute("optimizer.analyze_impact", dict(request))
    assert first["_metadata"]["cached"] is False and second["_metadata"]["cached"] is False
    assert canonical_json(first) == canonical_json(second)
    assert first["_metadata"]["source"] == f"optimizer:{PACK}" and first["_metadata"]["ttl"] == 300
    holdings = Holdings("p", {"AAPL": 100, "XOM": 200}, Decimal("500"))
    orders = [TradeOrder("XOM", "SELL", 200), TradeOrder("JNJ", "BUY", 50)]
    runs = [analyze_impact(pack, holdings, orders, Policy(benchmark="SP500"), {}).model_dump_json() for _ in range(2)]
    assert runs[0] == runs[1]
