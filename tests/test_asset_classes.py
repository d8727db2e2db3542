"""asset_class_limits_pct: validated against the pack, held in whole shares, explained when binding,
and relaxed by name when they conflict."""

from __future__ import annotations

import pytest

from services.errors import InfeasibleError, InputError

PACK = "PP_2022-12-28"
OPEN = {"universe": "pack", "min_quality_score": None}


@pytest.fixture(scope="module")
def agent(module_store):
    from agents.agent import OptimizerAgent

    return OptimizerAgent(module_store)


def _propose(agent, **policy):
    return agent.execute("optimizer.propose_trades", {
        "pricing_pack_id": PACK, "portfolio_id": "demo_diversified", "policy": {**OPEN, **policy},
        "explain_limits": True})


def _class_weights(agent, result) -> dict[str, float]:
    pack = agent.store.get_pack(PACK)
    out: dict[str, float] = {}
    for t in result["trades"]:
        asset_class = pack.security(t["symbol"]).asset_class
        out[asset_class] = out.get(asset_class, 0.0) + t["target_weight_pct"]
    return out


def test_a_misspelt_asset_class_is_an_input_error_listing_them(agent) -> None:
    with pytest.raises(InputError) as err:
        _propose(agent, asset_class_limits_pct={"Etf": 10})
    assert str(err.value) == ("policy.asset_class_limits_pct: 'Etf' is not an asset class of pack PP_2022-12-28; "
                              "its asset classes are: equity, etf")
    assert err.value.details == {"field": "policy.asset_class_limits_pct", "invalid": ["Etf"],
                                 "allowed": ["equity", "etf"]}


@pytest.mark.parametrize("value", [-1, 101, "10"])
def test_values_are_percentages(agent, value) -> None:
    with pytest.raises(InputError):
        _propose(agent, asset_class_limits_pct={"etf": value})


def test_the_limit_binds_holds_in_whole_shares_and_is_explained(agent) -> None:
    # min_variance over the pack puts 16.18% in the ETFs without a limit.
    free = _class_weights(agent, _propose(agent, method="min_variance"))
    assert free.get("etf", 0.0) > 10
    result = _propose(agent, method="min_variance", asset_class_limits_pct={"etf": 10})
    assert _class_weights(agent, result)["etf"] <= 10 + 1e-9
    assert "asset_class_limit:etf" in result["binding_constraints"]
    check = next(c for c in result["constraints"] if c["constraint"] == "asset_class_limit:etf")
    assert check["limit"] == 10.0 and check["met"]
    explained = next(e for e in result["binding_explanations"] if e["constraint"] == "asset_class_limit:etf")
    assert explained["explanation"].startswith("the 10% limit on asset class etf binds: allowing 11% would lower the "
                                               "volatility (%) from ")
    assert explained["relaxed_value"] < explained["value"]


def test_zero_excludes_the_class(agent) -> None:
    result = _propose(agent, method="min_variance", asset_class_limits_pct={"etf": 0})
    assert _class_weights(agent, result).get("etf", 0.0) == 0.0


def test_a_conflict_with_the_sector_limits_is_relaxed_by_name(agent) -> None:
    # Equities at most 50% leave 50% for the ETFs, all in the Multi-Sector sector capped at 20%.
    with pytest.raises(InfeasibleError) as err:
        _propose(agent, asset_class_limits_pct={"equity": 50}, max_sector_pct=20)
    fix = err.value.details["smallest_relaxation"]
    assert set(fix) == {"asset_class_limits_pct", "sector_limits_pct"}
    assert fix["asset_class_limits_pct"]["equity"] - 50 + fix["sector_limits_pct"]["Multi-Sector"] - 20 == \
        pytest.approx(30, abs=0.02)
    result = _propose(agent, max_sector_pct=20, asset_class_limits_pct=fix["asset_class_limits_pct"],
                      sector_limits_pct=fix["sector_limits_pct"])
    assert result["constraints_met"]
