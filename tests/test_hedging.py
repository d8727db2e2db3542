"""optimizer.suggest_hedges: exposures, scenario P&L and hedge sizing, checked independently."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import linprog

from capabilities.base import RequestContext
from capabilities.runner import canonical_json
from services.allocation.rebalance import Holdings
from services.data.seeds import load_seed_pack
from services.errors import InputError
from services.hedging.exposures import estimate_exposures, load_sector_sensitivities
from services.hedging.hedge_sizing import HedgeBudget, suggest_hedges

PACK = "PP_2022-12-28"
SEEDS = Path(__file__).resolve().parents[1] / "seeds" / "optimizer"
STYLES = ["MTUM", "QUAL", "SIZE", "USMV", "VLUE"]
ENERGY = {"XOM": 500, "CVX": 300}
HEALTH_CARE = {"JNJ": 300, "PFE": 1000, "MRK": 400}
SCENARIOS = ["credit_spread_widening", "equity_selloff", "inflation_shock", "rates_up", "usd_up",
             "volatility_spike"]


@pytest.fixture(scope="module")
def pack():
    return load_seed_pack(PACK)


def _inline(positions: dict[str, int], cash: str = "0") -> dict:
    return {"positions": [{"symbol": s, "shares": n} for s, n in positions.items()], "cash": cash}


def _call(agent, scenario_id: str, **request) -> dict:
    payload = {"pricing_pack_id": PACK, "scenario_id": scenario_id, **request}
    return agent.execute("optimizer.suggest_hedges", payload, RequestContext())


def _raw(name: str) -> dict:
    return json.loads((SEEDS / name).read_text(encoding="utf-8"))


# --- exposures ----------------------------------------------------------------------------------


@pytest.mark.parametrize("symbol", ["AAPL", "XOM", "JNJ", "USMV"])
def test_equity_beta_equals_numpy_polyfit(pack, symbol: str) -> None:
    returns = pack.closes[[symbol, "SP500"]].pct_change().iloc[1:].tail(756)
    expected = np.polyfit(returns["SP500"].to_numpy(), returns[symbol].to_numpy(), 1)[0]
    got = estimate_exposures(pack, [symbol], load_sector_sensitivities()).holdings[symbol]
    assert got.get("equity_beta").value == pytest.approx(expected, abs=1e-6)
    assert got.get("equity_beta").source == "estimated"
    assert got.observations == 756


def test_style_betas_are_the_etf_coefficients_of_one_joint_regression(pack) -> None:
    """Frisch–Waugh: the engine's two-step style betas equal a direct OLS on [1, SP500, ETFs]."""
    returns = pack.closes[["KO", "SP500", *STYLES]].pct_change().iloc[1:]
    design = np.column_stack([np.ones(len(returns)), returns[["SP500", *STYLES]].to_numpy()])
    direct = np.linalg.lstsq(design, returns["KO"].to_numpy(), rcond=None)[0][2:]
    got = estimate_exposures(pack, ["KO"], load_sector_sensitivities(), style_symbols=tuple(STYLES)).holdings["KO"]
    for etf, coefficient in zip(STYLES, direct, strict=True):
        assert got.get(f"style:{etf}").value == pytest.approx(coefficient, abs=1e-6)


def test_a_short_lookback_falls_back_to_assumed_sector_betas_and_says_so(pack) -> None:
    exposures = estimate_exposures(pack, ["JNJ"], load_sector_sensitivities(), lookback_days=10)
    beta = exposures.holdings["JNJ"].get("equity_beta")
    assert (beta.value, beta.source) == (0.75, "assumed")
    assert any("fewer than 30" in w for w in exposures.warnings)


# --- scenario P&L -------------------------------------------------------------------------------


def test_two_holding_scenario_pnl_matches_a_hand_computation(agent, pack) -> None:
    positions = {"AAPL": 100, "XOM": 50}
    result = _call(agent, "rates_up", portfolio=_inline(positions, "1000"))

    scenario = _raw("scenarios.json")["scenarios"]["rates_up"]
    sectors = _raw("sector_sensitivities.json")["sectors"]
    shocks = scenario["shocks"]
    returns = pack.closes[["AAPL", "XOM", "SP500", *STYLES]].pct_change().iloc[1:].tail(756)
    design = np.column_stack([np.ones(len(returns)), returns[["SP500", *STYLES]].to_numpy()])
    last = pack.closes.iloc[-1]
    by_hand = {}
    for sym, sector in (("AAPL", "Information Technology"), ("XOM", "Energy")):
        beta = np.polyfit(returns["SP500"], returns[sym], 1)[0]
        gammas = np.linalg.lstsq(design, returns[sym].to_numpy(), rcond=None)[0][2:]
        r = beta * shocks["equity"] + scenario["sector_tilts"].get(sector, 0.0)
        r += sum(sectors[sector]["sensitivities"][f] * v for f, v in shocks.items() if f != "equity")
        r += sum(g * scenario["style_shocks"][etf] for etf, g in zip(STYLES, gammas, strict=True))
        value = round(positions[sym] * float(last[sym]), 2)
        by_hand[sym] = (value, value * r)

    rows = {row["symbol"]: row for row in result["scenario_pnl"]}
    assert set(rows) == {"AAPL", "XOM"}
    for sym, (value, pnl) in by_hand.items():
        assert rows[sym]["value"] == pytest.approx(value, abs=0.005)
        assert rows[sym]["pnl"] == pytest.approx(pnl, abs=0.02)
        assert rows[sym]["estimated"] == ["equity_beta", *[f"style:{s}" for s in STYLES]]
        assert set(rows[sym]["assumed"]) == {f for f, v in shocks.items() if f != "equity" and v != 0}
    total = sum(p for _, p in by_hand.values())
    assert result["portfolio_value"] == pytest.approx(sum(v for v, _ in by_hand.values()) + 1000, abs=0.005)
    assert result["scenario_pnl_total"] == pytest.approx(total, abs=0.04)
    assert result["scenario_loss_before"] == pytest.approx(max(0.0, -total), abs=0.04)


def test_each_exposure_says_where_it_came_from(agent) -> None:
    result = _call(agent, "credit_spread_widening", portfolio_id="demo_concentrated")
    for row in result["scenario_pnl"]:
        sources = {e["factor"]: e["source"] for e in row["exposures"]}
        assert sources["equity_beta"] == "estimated"
        assert sources["hy_spread_bp"] == "assumed"
        assert not any(f.startswith("style:") for f in sources), "credit_spread_widening has no style shocks"
        contributions = sum(e["contribution_pct"] for e in row["exposures"]) + row["sector_tilt_pct"]
        assert row["pnl_pct"] == pytest.approx(contributions, abs=1e-3)


# --- hedges -------------------------------------------------------------------------------------


@pytest.mark.parametrize("budget", [None, {"max_notional_pct": 5, "max_cost_bps": 100},
                                    {"max_notional_pct": 50, "max_cost_bps": 8}])
@pytest.mark.parametrize("scenario_id", SCENARIOS)
def test_budget_limits_and_no_over_hedging_hold(seeded_store, pack, scenario_id: str, budget) -> None:
    portfolio = seeded_store.get_portfolio("demo_diversified")
    limits = HedgeBudget(**budget) if budget else HedgeBudget()
    result = suggest_hedges(pack, Holdings(portfolio.id, portfolio.positions(), portfolio.cash), scenario_id,
                            budget=limits).model_dump(mode="json")
    value = result["portfolio_value"]
    notional = sum(h["notional"] for h in result["hedges"])
    cost = sum(h["estimated_cost"] for h in result["hedges"])
    offset = sum(h["expected_offset"] for h in result["hedges"])
    assert notional <= value * limits.max_notional_pct / 100 + 1e-6
    assert cost <= value * limits.max_cost_bps / 1e4 + 1e-6
    assert result["scenario_loss_after"] >= 0
    assert result["scenario_loss_after"] == pytest.approx(result["scenario_loss_before"] - offset, abs=0.005)
    assert result["net_loss_after_costs"] == pytest.approx(result["scenario_loss_after"] + cost, abs=0.005)
    sector_value: dict[str, float] = {}
    for row in result["scenario_pnl"]:
        sector_value[row["sector"]] = sector_value.get(row["sector"], 0.0) + row["value"]
    candidates = {c["instrument_id"]: c for c in result["assumptions"]["instruments"]}
    for h in result["hedges"]:
        c = candidates[h["instrument_id"]]
        assert c["status"] == "hedge"
        assert h["payoff_per_notional_pct"] > 0
        assert h["expected_offset"] == pytest.approx(h["notional"] * h["payoff_per_notional_pct"] / 100, abs=0.006)
        assert h["hedge_ratio"] == pytest.approx(h["expected_offset"] / result["scenario_loss_before"], abs=1e-4)
        if c["cap_pct"] is not None:
            assert h["notional"] <= value * c["cap_pct"] / 100 + 0.01
        if h["action"] == "SHORT" and c["sector"]:
            assert h["notional"] <= sector_value[c["sector"]]
        if h["instrument_type"] == "option":
            assert h["notional"] == pytest.approx(h["contracts"] * c["contract_notional"], abs=0.005)
    if result["hedges"]:
        assert result["budget"]["binding"], "a hedge worth more than it costs grows until some limit binds"


def test_a_tight_cost_budget_binds(agent) -> None:
    result = _call(agent, "equity_selloff", portfolio_id="demo_diversified",
                   hedge_budget={"max_notional_pct": 50, "max_cost_bps": 8})
    assert "max_cost_bps" in result["budget"]["binding"]
    assert result["budget"]["cost_used_bps"] <= 8
    assert result["total_hedge_cost"] <= result["budget"]["max_cost"]


def test_hedge_sizes_match_an_independent_linear_program(agent) -> None:
    """scipy's HiGHS on the same payoffs, costs and caps reaches the engine's offset − cost (to rounding)."""
    result = _call(agent, "rates_up", portfolio_id="demo_diversified")
    assert not any(h["instrument_type"] == "option" for h in result["hedges"])
    value, loss = result["portfolio_value"], result["scenario_loss_before"]
    pool = [c for c in result["assumptions"]["instruments"] if c["status"] in ("hedge", "not_chosen")]
    p = np.array([c["payoff_per_notional_pct"] / 100 for c in pool])
    c = np.array([c["cost_bps_of_notional"] / 1e4 for c in pool])
    budget = 0.25 * value
    caps = [min(budget, value * x["cap_pct"] / 100) if x["cap_pct"] is not None else budget for x in pool]
    lp = linprog(-(p - c), A_ub=np.vstack([p, np.ones(len(p)), c]), b_ub=[loss, budget, 0.01 * value],
                 bounds=list(zip([0.0] * len(p), caps, strict=True)), method="highs")
    assert lp.status == 0
    engine = result["total_expected_offset"] - result["total_hedge_cost"]
    assert engine <= -lp.fun + 0.01
    assert engine == pytest.approx(-lp.fun, abs=10.0)


def test_energy_and_health_care_books_get_different_hedges(agent) -> None:
    energy = _call(agent, "equity_selloff", portfolio=_inline(ENERGY))
    health = _call(agent, "equity_selloff", portfolio=_inline(HEALTH_CARE))
    energy_ids = {h["instrument_id"] for h in energy["hedges"]}
    health_ids = {h["instrument_id"] for h in health["hedges"]}
    assert energy["hedges"] and health["hedges"]
    assert energy_ids != health_ids
    assert "xle_short" in energy_ids, "an energy book is hedged with the energy sector ETF"
    assert not any(i.startswith("xl") for i in health_ids), "no catalogue sector ETF matches health care"
    xle = {c["instrument_id"]: c for c in health["assumptions"]["instruments"]}["xle_short"]
    assert xle["status"] == "excluded" and "holds no Energy" in xle["note"]


def test_a_book_that_gains_gets_no_hedge_and_a_reason(agent) -> None:
    result = _call(agent, "inflation_shock", portfolio=_inline(ENERGY))
    assert result["scenario_pnl_total"] > 0
    assert result["hedges"] == [] and result["scenario_loss_before"] == 0
    assert "no loss to hedge" in result["reason"]


def test_an_all_cash_portfolio_gets_no_hedge_and_a_reason(agent) -> None:
    result = _call(agent, "equity_selloff", portfolio=_inline({}, "50000"))
    assert result["hedges"] == [] and result["hedge_count"] == 0
    assert result["scenario_pnl"] == [] and result["scenario_loss_before"] == 0
    assert result["portfolio_value"] == 50000
    assert "only cash" in result["reason"]
    assert result["budget"]["notional_used"] == 0


def test_large_index_options_are_left_out_when_one_contract_exceeds_the_budget(agent) -> None:
    result = _call(agent, "equity_selloff", portfolio_id="demo_diversified")
    spx = {c["instrument_id"]: c for c in result["assumptions"]["instruments"]}["spx_put_3m_95"]
    assert spx["status"] == "excluded"
    assert spx["contract_notional"] == pytest.approx(100 * 3783.22)
    assert "one contract" in spx["note"]


def test_unknown_scenario_is_an_input_error_listing_valid_ids(agent) -> None:
    with pytest.raises(InputError) as err:
        _call(agent, "alien_invasion", portfolio_id="demo_quality")
    assert err.value.code == "unknown_scenario"
    assert err.value.details["allowed"] == SCENARIOS
    assert "equity_selloff" in err.value.message


@pytest.mark.parametrize("bad", [{"hedge_budget": {"max_notional_pct": 0}},
                                 {"hedge_budget": {"max_cost_bps": 10, "max_loss": 1}},
                                 {"lookback_days": 1}])
def test_bad_budget_or_lookback_is_an_input_error(agent, bad: dict) -> None:
    with pytest.raises(InputError):
        _call(agent, "rates_up", portfolio_id="demo_quality", **bad)


def test_same_request_gives_identical_json(seeded_store) -> None:
    from agents.agent import OptimizerAgent

    request = {"portfolio_id": "demo_concentrated", "pricing_pack_id": PACK, "scenario_id": "equity_selloff",
               "hedge_budget": {"max_notional_pct": 20, "max_cost_bps": 80}}
    first = OptimizerAgent(seeded_store).execute("optimizer.suggest_hedges", request)
    second = OptimizerAgent(seeded_store).execute("optimizer.suggest_hedges", request)
    assert canonical_json(first) == canonical_json(second)
    assert first["_metadata"]["source"] == f"optimizer:{PACK}"
    assert first["_metadata"]["ttl"] == 300
    assert first["_metadata"]["asof"] == first["asof"] == "2022-12-28"
    assert first["hedges"] == sorted(first["hedges"], key=lambda h: (h["instrument"], h["action"],
                                                                      h["instrument_id"]))
    assert [r["symbol"] for r in first["scenario_pnl"]] == sorted(r["symbol"] for r in first["scenario_pnl"])


def test_money_is_reported_in_cents(agent) -> None:
    result = _call(agent, "usd_up", portfolio_id="demo_concentrated")
    amounts = [result[k] for k in ("portfolio_value", "scenario_loss_before", "scenario_loss_after",
                                   "total_hedge_cost")]
    amounts += [h[k] for h in result["hedges"] for k in ("notional", "expected_offset", "estimated_cost")]
    amounts += [r["pnl"] for r in result["scenario_pnl"]]
    for amount in amounts:
        assert Decimal(str(amount)) == Decimal(str(amount)).quantize(Decimal("0.01"))


def test_an_option_worth_less_than_one_contract_is_left_out_with_a_note(agent) -> None:
    """demo_concentrated: the solver wants about $5,000 of SPY puts, under one $37,832 contract."""
    result = _call(agent, "equity_selloff", portfolio_id="demo_concentrated")
    spy = {c["instrument_id"]: c for c in result["assumptions"]["instruments"]}["spy_put_3m_95"]
    assert spy["status"] == "not_chosen"
    assert "less than one contract" in spy["note"]
    assert all(h["contracts"] >= 1 for h in result["hedges"] if h["instrument_type"] == "option")
    assert result["budget"]["notional_used"] <= result["budget"]["max_notional"]


def test_an_index_cannot_be_held(agent) -> None:
    with pytest.raises(InputError, match="SP500: an index series cannot be held"):
        _call(agent, "equity_selloff", portfolio=_inline({"SP500": 10}))
