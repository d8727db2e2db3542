"""Tax-loss harvesting: thresholds, replacements (the policy's map or the most correlated name of
the sector), the exposure kept, and the harvested name blocked from purchase."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest

PACK = "PP_2022-12-28"
POLICY = {"tax_rates": {"short_term_pct": 37, "long_term_pct": 20}, "harvest_losses": True,
          "max_turnover_pct": 60, "max_tracking_error_pct": None}


@pytest.fixture(scope="module")
def agent(module_store):
    from agents.agent import OptimizerAgent

    return OptimizerAgent(module_store)


def _propose(agent, **fields):
    return agent.execute("optimizer.propose_trades", {
        "portfolio_id": "demo_diversified", "pricing_pack_id": PACK, "policy_id": "aggressive_growth",
        "policy": {**POLICY, **fields}})


def test_the_loss_lot_is_sold_and_replaced_by_the_most_correlated_name_of_its_sector(agent) -> None:
    out = _propose(agent, min_harvest_loss=1000)
    [h] = out["tax"]["harvests"]
    # AMD: one lot of 1250 shares bought at 125.23, a loss at the pack's close.
    price = Decimal(repr(agent.store.get_pack(PACK).last_prices()["AMD"]))
    assert (h["symbol"], h["shares"], Decimal(repr(h["loss"]))) == ("AMD", 1250, 1250 * (Decimal("125.23") - price))
    # The replacement is the Information Technology name whose returns correlate most with AMD's.
    pack = agent.store.get_pack(PACK)
    peers = [s.symbol for s in pack.securities if s.sector == pack.security("AMD").sector
             and s.symbol != "AMD" and s.asset_class in ("equity", "etf")]
    returns = pack.closes[["AMD", *peers]].pct_change().iloc[-756:].dropna()
    corr = returns.corr()["AMD"].drop("AMD")
    assert h["replacement"] == corr.idxmax() and h["source"] == "correlation"
    assert h["correlation"] == pytest.approx(float(corr.max()), abs=1e-4)
    trades = {t["symbol"]: t for t in out["trades"]}
    assert trades["AMD"]["action"] == "SELL" and trades["AMD"]["quantity"] == 1250
    assert trades[h["replacement"]]["action"] == "BUY"
    assert out["tax"]["wash_sale_blocks"] == [{"symbol": "AMD", "rule": "no_purchase", "since": "2022-12-28",
                                               "until": "2023-01-27"}]
    amd = [r for r in out["tax"]["lots_sold"] if r["symbol"] == "AMD"]
    assert [r["gain"] for r in amd] == [-h["loss"]]
    assert out["constraints_met"]


def test_a_loss_below_the_threshold_is_not_harvested(agent) -> None:
    assert _propose(agent, min_harvest_loss=100_000)["tax"]["harvests"] == []
    # 78,325 of loss on 156,537.50 of basis is about 50%: a 60% threshold leaves it.
    assert _propose(agent, min_harvest_loss_pct=60)["tax"]["harvests"] == []
    assert [h["symbol"] for h in _propose(agent, min_harvest_loss_pct=40)["tax"]["harvests"]] == ["AMD"]


def test_the_replacements_map_wins_and_the_exposure_is_kept(agent) -> None:
    out = _propose(agent, replacements={"AMD": "AAPL"}, min_harvest_loss=1000)
    [h] = out["tax"]["harvests"]
    assert (h["replacement"], h["source"], h["correlation"]) == ("AAPL", "replacements", None)
    aapl = next(t for t in out["trades"] if t["symbol"] == "AAPL")
    amd = next(t for t in out["trades"] if t["symbol"] == "AMD")
    # AAPL ends at least at its weight plus AMD's, or at the 15% cap.
    wanted = min(15.0, aapl["current_weight_pct"] + amd["current_weight_pct"])
    assert aapl["optimal_weight_pct"] >= wanted - 1e-4
    assert np.isclose(aapl["target_weight_pct"], aapl["optimal_weight_pct"], atol=0.2)


def test_a_replacement_that_cannot_be_held_is_an_input_error(agent) -> None:
    from services.errors import InputError

    with pytest.raises(InputError) as err:
        _propose(agent, replacements={"AMD": "SP500"})
    assert "policy.replacements" in str(err.value)
