"""Regime playbooks and ``optimizer.suggest_deleveraging_hedges``: cut order, costs, exposures, errors."""

from __future__ import annotations

import json
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from services.allocation.rebalance import Holdings
from services.data.models import PricingPack, Security
from services.data.policy import Policy
from services.data.seeds import seed_root
from services.errors import InputError
from services.hedging.regimes import PLAYBOOK_FILE, load_playbooks, suggest_for_regime

PACK = "PP_2022-12-28"
CENT = Decimal("0.01")


def _cost(value: Decimal) -> Decimal:
    """$5 + 15 bps of the value, the impact rounded half up to cents."""
    return Decimal("5.00") + (abs(value) * Decimal("0.0015")).quantize(CENT, ROUND_HALF_UP)


def _d(x: float) -> Decimal:
    return Decimal(repr(x))


def _c(x: Decimal) -> Decimal:
    """Rounded half up to cents, as money is reported."""
    return x.quantize(CENT, ROUND_HALF_UP)


@pytest.fixture(scope="module")
def agent(module_store):
    from agents.agent import OptimizerAgent

    return OptimizerAgent(module_store)


def _suggest(agent, portfolio_id: str, regime: str) -> dict:
    return agent.execute("optimizer.suggest_deleveraging_hedges",
                         {"portfolio_id": portfolio_id, "pricing_pack_id": PACK, "regime": regime})


def _polyfit_betas(agent, symbols) -> dict[str, float]:
    """Betas to SP500 over the last 756 daily returns, by numpy's least squares."""
    closes = agent.store.get_pack(PACK).closes
    market = closes["SP500"].pct_change().iloc[1:].tail(756).to_numpy()
    return {s: float(np.polyfit(market, closes[s].pct_change().iloc[1:].tail(756).to_numpy(), 1)[0]) for s in symbols}


def test_unknown_regime_lists_the_valid_ones(agent) -> None:
    with pytest.raises(InputError) as err:
        _suggest(agent, "demo_diversified", "STAGFLATION")
    assert "valid regimes: DELEVERAGING, LATE_EXPANSION, REFLATION" in err.value.message
    assert err.value.details["allowed"] == ["DELEVERAGING", "LATE_EXPANSION", "REFLATION"]


def test_regime_names_are_case_insensitive(agent) -> None:
    assert _suggest(agent, "demo_quality", " deleveraging ")["regime"] == "DELEVERAGING"


def test_deleveraging_cuts_the_highest_beta_holdings_first(agent) -> None:
    result = _suggest(agent, "demo_diversified", "DELEVERAGING")
    portfolio = agent.store.get_portfolio("demo_diversified")
    held = portfolio.positions()
    beta = _polyfit_betas(agent, held)
    order = sorted(held, key=lambda s: (-beta[s], s))
    assert [h["symbol"] for h in result["holding_betas"]] == order
    for h in result["holding_betas"]:
        assert h["beta"] == pytest.approx(beta[h["symbol"]], abs=1e-4)

    reduce = result["recommendations"][0]
    assert reduce["action"] == "reduce_equity_beta" and reduce["status"] == "applied"
    cut = reduce["instruments"]
    assert cut == order[: len(cut)]
    sells = {t["symbol"]: t["quantity"] for t in result["trades"] if t["action"] == "SELL"}
    assert set(sells) == set(cut)
    assert all(sells[s] == held[s] for s in cut[:-1])  # every name but the last is sold in full
    assert 0 < sells[cut[-1]] <= held[cut[-1]]

    # Beta exposure Σ shares × price × beta, recomputed: the cut reaches 40%, one share fewer does not.
    prices = agent.store.get_pack(PACK).last_prices()
    exposure = sum(n * prices[s] * beta[s] for s, n in held.items())
    removed = sum(sells[s] * prices[s] * beta[s] for s in cut)
    assert removed / exposure >= 0.40
    assert (removed - prices[cut[-1]] * beta[cut[-1]]) / exposure < 0.40
    assert reduce["achieved_pct"] == pytest.approx(removed / exposure * 100, abs=1e-3)


def test_costs_cash_and_notionals_recomputed_by_hand(agent) -> None:
    result = _suggest(agent, "demo_diversified", "DELEVERAGING")
    portfolio = agent.store.get_portfolio("demo_diversified")
    prices = agent.store.get_pack(PACK).last_prices()
    value = _c(sum(n * _d(prices[s]) for s, n in portfolio.positions().items()) + portfolio.cash)
    assert _d(result["current_value"]) == value
    cash, costs = portfolio.cash, Decimal(0)
    for t in result["trades"]:
        if t["priced_in_pack"]:
            amount = t["quantity"] * _d(t["price"])
            assert t["price"] == prices[t["symbol"]]
        else:
            assert t["quantity"] is None and t["price"] is None
            amount = _d(t["trade_value"])
        assert _d(t["estimated_cost"]) == _cost(amount)
        cash += (amount if t["action"] == "SELL" else -amount) - _cost(amount)
        costs += _cost(amount)
    assert _d(result["estimated_costs"]) == costs
    assert _d(result["cash_after"]) == _c(cash)
    assert _d(result["value_after"]) == value - costs
    # Safe havens: GLD and TLT notionals of 10% of value each, and at least 10% of value in cash.
    notionals = {t["symbol"]: _d(t["trade_value"]) for t in result["trades"] if not t["priced_in_pack"]}
    assert notionals == {"GLD": _c(value / 10), "TLT": _c(value / 10)}
    assert cash >= value / 10
    assert result["unpriced_instruments"] == ["GLD", "TLT"]
    assert "not in pricing pack PP_2022-12-28" in result["unpriced_note"]
    assert result["beta_assumptions"] == {"CASH": 0.0, "GLD": 0.0, "TLT": -0.2}


def test_equity_beta_before_and_after_recomputed(agent) -> None:
    result = _suggest(agent, "demo_diversified", "DELEVERAGING")
    held = agent.store.get_portfolio("demo_diversified").positions()
    prices = agent.store.get_pack(PACK).last_prices()
    beta = _polyfit_betas(agent, held)
    value = float(result["current_value"])
    before = sum(n * prices[s] * beta[s] for s, n in held.items()) / value
    after_shares = dict(held)
    notional_beta = 0.0
    for t in result["trades"]:
        if t["priced_in_pack"]:
            after_shares[t["symbol"]] += t["quantity"] * (1 if t["action"] == "BUY" else -1)
        else:
            notional_beta += t["trade_value"] * result["beta_assumptions"][t["symbol"]]
    after = (sum(n * prices[s] * beta[s] for s, n in after_shares.items()) + notional_beta) / result["value_after"]
    assert result["before"]["equity_beta"] == pytest.approx(before, abs=1e-4)
    assert result["after"]["equity_beta"] == pytest.approx(after, abs=1e-4)
    assert result["after"]["equity_beta"] <= 0.6 * result["before"]["equity_beta"]
    mix = result["after"]["asset_class_mix_pct"]
    assert mix["safe_haven"] + mix["cash"] >= 30.0 - 1e-4
    assert sum(mix.values()) == pytest.approx(100.0, abs=1e-3)
    assert "zero variance" in result["volatility_treatment"] and "GLD, TLT" in result["volatility_treatment"]


def test_different_portfolios_get_different_cuts(agent) -> None:
    diversified = _suggest(agent, "demo_diversified", "DELEVERAGING")
    concentrated = _suggest(agent, "demo_concentrated", "DELEVERAGING")
    sells = [{(t["symbol"], t["quantity"]) for t in r["trades"] if t["action"] == "SELL"} for r in (diversified, concentrated)]
    assert sells[0] != sells[1]
    # demo_concentrated's highest-beta holding is AAPL (it holds neither AMD nor BAC).
    assert concentrated["recommendations"][0]["instruments"][0] == "AAPL"
    assert diversified["recommendations"][0]["instruments"][0] == "AMD"


def test_late_expansion_keeps_defensives_and_buys_them(agent) -> None:
    result = _suggest(agent, "demo_diversified", "LATE_EXPANSION")
    pack = agent.store.get_pack(PACK)
    staples = {"KO", "PEP", "PG", "WMT"}
    sells = [t for t in result["trades"] if t["action"] == "SELL"]
    assert sells and not {t["symbol"] for t in sells} & staples
    buys = {t["symbol"]: t for t in result["trades"] if t["action"] == "BUY"}
    assert set(buys) == staples | {"XLU", "VNQ"}
    value = _d(result["current_value"])
    for s in staples:  # a quarter each of the 5% staples sleeve, rounded down to whole shares
        assert buys[s]["priced_in_pack"] and buys[s]["quantity"] == int(value * Decimal("0.05") / 4 / _d(pack.last_prices()[s]))
    for s in ("XLU", "VNQ"):
        assert not buys[s]["priced_in_pack"] and _d(buys[s]["trade_value"]) == _c(value * Decimal("0.05"))
    # The cut is 20% of the value of all equity, defensives included, taken from the others.
    held = agent.store.get_portfolio("demo_diversified").positions()
    prices = pack.last_prices()
    equity = sum(n * prices[s] for s, n in held.items())
    sold = sum(t["quantity"] * t["price"] for t in sells)
    assert 0.20 <= sold / equity < 0.20 + max(t["price"] for t in sells) / equity


def test_reflation_without_bonds_says_there_is_no_duration_to_cut(agent) -> None:
    result = _suggest(agent, "demo_concentrated", "REFLATION")
    duration = result["recommendations"][0]
    assert duration["action"] == "cut_duration" and duration["status"] == "not_applicable"
    assert duration["achieved_pct"] == 0.0 and duration["instruments"] == []
    assert "no bond holdings" in duration["rationale"]
    notionals = {t["symbol"]: t["trade_value"] for t in result["trades"] if not t["priced_in_pack"]}
    value = _d(result["current_value"])
    assert {s: _d(v) for s, v in notionals.items()} == {
        "DBC": _c(value * Decimal("0.06")), "GLD": _c(value * Decimal("0.07")), "TIP": _c(value * Decimal("0.07"))}
    # Funded pro rata: every holding sold in the same proportion, up to one share of rounding.
    held = agent.store.get_portfolio("demo_concentrated").positions()
    fractions = {t["symbol"]: t["quantity"] / held[t["symbol"]] for t in result["trades"] if t["action"] == "SELL"}
    assert set(fractions) == set(held)
    low = min(fractions.values())
    assert all(f - low <= 1 / held[s] + 1e-12 for s, f in fractions.items())
    assert result["cash_after"] >= 0


def _bond_pack() -> PricingPack:
    """Two stocks, a bond fund and an index over 60 business days."""
    rng = np.random.default_rng(5)
    dates = pd.bdate_range("2022-03-01", periods=60)
    market = rng.normal(0.0002, 0.01, 60)
    closes = pd.DataFrame(
        {
            "AGG": 100 * np.cumprod(1 - 0.1 * market + rng.normal(0, 0.002, 60)),
            "HIB": 50 * np.cumprod(1 + 1.6 * market + rng.normal(0, 0.01, 60)),
            "LOB": 80 * np.cumprod(1 + 0.6 * market + rng.normal(0, 0.006, 60)),
            "SP500": 4000 * np.cumprod(1 + market),
        },
        index=dates,
    ).round(3)
    securities = (
        Security("AGG", "Aggregate Bond Fund", "Fixed Income", "bond"),
        Security("HIB", "High Beta Corp", "Information Technology", "equity"),
        Security("LOB", "Low Beta Corp", "Utilities", "equity"),
        Security("SP500", "S&P 500 Index", "Index", "index"),
    )
    return PricingPack("PP_BONDS", securities, closes)


def test_reflation_cuts_half_of_every_bond_holding() -> None:
    pack = _bond_pack()
    holdings = Holdings("b", {"AGG": 301, "HIB": 200, "LOB": 100}, Decimal("1000"))
    result = suggest_for_regime(pack, holdings, load_playbooks(), "REFLATION", Policy())
    duration = result.recommendations[0]
    assert duration.status == "applied" and duration.instruments == ["AGG"]
    sells = {t.symbol: t.quantity for t in result.trades if t.action == "SELL"}
    assert sells["AGG"] == 151  # 50% of 301 rounded up; the hedges are funded from equity only
    assert duration.achieved_pct == pytest.approx(151 / 301 * 100, abs=1e-4)
    assert set(sells) == {"AGG"}  # the bond proceeds and cash pay for the 20% of hedges
    assert result.cash_after >= 0


def test_funding_shortfall_scales_the_sleeves_and_says_so() -> None:
    # Only a bond holding and no cash: DELEVERAGING may sell equity only, so nothing funds the safe havens.
    pack = _bond_pack()
    result = suggest_for_regime(pack, Holdings("b", {"AGG": 100}, Decimal("0")), load_playbooks(),
                                "DELEVERAGING", Policy())
    statuses = {r.action: r.status for r in result.recommendations}
    assert statuses == {"reduce_equity_beta": "not_applicable", "exit_high_yield": "not_applicable",
                        "raise_safe_havens": "partial"}
    assert result.trades == [] and result.cash_after == 0
    assert any("scaled to 0.0%" in w for w in result.warnings)


def test_deleveraging_sells_high_beta_before_low_beta_on_a_test_pack() -> None:
    pack = _bond_pack()
    result = suggest_for_regime(pack, Holdings("b", {"HIB": 100, "LOB": 100}, Decimal("0")), load_playbooks(),
                                "DELEVERAGING", Policy())
    assert [h.symbol for h in result.holding_betas] == ["HIB", "LOB"]
    assert result.recommendations[0].instruments[0] == "HIB"


def test_same_request_twice_gives_identical_json() -> None:
    pack = _bond_pack()
    holdings = Holdings("b", {"AGG": 50, "HIB": 120, "LOB": 90}, Decimal("2500"))
    for regime in ("DELEVERAGING", "LATE_EXPANSION", "REFLATION"):
        first = suggest_for_regime(pack, holdings, load_playbooks(), regime, Policy()).model_dump_json()
        second = suggest_for_regime(pack, holdings, load_playbooks(), regime, Policy()).model_dump_json()
        assert first == second


def test_a_broken_playbook_file_is_refused(tmp_path: Path) -> None:
    data = json.loads((seed_root() / PLAYBOOK_FILE).read_text(encoding="utf-8"))
    assert data["version"] == "2026.11"
    data["regimes"]["REFLATION"]["steps"][1]["sleeves"][0]["pct"] = 9.0  # sleeves no longer add up to 20%
    (tmp_path / PLAYBOOK_FILE).write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(InputError, match="add up to 22%"):
        load_playbooks(tmp_path)
