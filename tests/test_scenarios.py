"""The scenario, instrument and sector-sensitivity seed files: shape, units, provenance, validation."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from services.data.seeds import load_seed_pack
from services.errors import InputError
from services.hedging.exposures import load_sector_sensitivities
from services.hedging.hedge_sizing import instrument_cost_rate, instrument_payoff
from services.hedging.scenarios import (
    GICS_SECTORS,
    MACRO_FACTORS,
    get_scenario,
    load_instruments,
    load_scenarios,
    scenario_ids,
)

SEEDS = Path(__file__).resolve().parents[1] / "seeds" / "optimizer"
REQUIRED_SCENARIOS = {"equity_selloff", "rates_up", "usd_up", "credit_spread_widening", "volatility_spike",
                      "inflation_shock"}
# Plausible one-quarter stress magnitudes: each shock must lie inside these bounds.
BOUNDS = {"equity": (-0.4, 0.0), "rates_10y_bp": (-150, 150), "usd_pct": (-15, 15), "ig_spread_bp": (-50, 300),
          "hy_spread_bp": (-100, 1000), "vix_pts": (-10, 60), "commodities_pct": (-40, 40)}


def _raw(name: str) -> dict:
    return json.loads((SEEDS / name).read_text(encoding="utf-8"))


def test_scenario_library_is_versioned_and_complete() -> None:
    library = load_scenarios()
    assert library.version == "2026.11"
    assert set(library.scenarios) >= REQUIRED_SCENARIOS
    assert scenario_ids() == sorted(library.scenarios)
    assert set(library.units) >= {"equity", *MACRO_FACTORS, "sector_tilts", "style_shocks"}


@pytest.mark.parametrize("scenario_id", sorted(REQUIRED_SCENARIOS))
def test_each_scenario_cites_its_episode_and_stays_plausible(scenario_id: str) -> None:
    scenario = get_scenario(load_scenarios(), scenario_id)
    assert "\n" not in scenario.narrative
    assert re.search(r"\b(19|20)\d\d\b", scenario.narrative), "the narrative names the episode's year"
    assert "assumption" in scenario.narrative
    assert scenario.episode.start < scenario.episode.end
    shocks = {"equity": scenario.shocks.equity, **scenario.shocks.macro()}
    for factor, (low, high) in BOUNDS.items():
        assert low <= shocks[factor] <= high, f"{scenario_id}.{factor} = {shocks[factor]}"
    assert scenario.shocks.equity < 0, "every shipped scenario is a stress for a long equity book"
    assert set(scenario.sector_tilts) <= set(GICS_SECTORS)
    assert all(abs(t) <= 0.15 for t in scenario.sector_tilts.values())


def test_rates_up_hurts_bond_proxies_and_long_duration_tech_and_helps_banks() -> None:
    """The sector pattern asked of rates_up, from tilts and sector rate sensitivities together."""
    scenario = get_scenario(load_scenarios(), "rates_up")
    sectors = _raw("sector_sensitivities.json")["sectors"]
    rates = scenario.shocks.rates_10y_bp

    def extra(sector: str) -> float:
        return sectors[sector]["sensitivities"]["rates_10y_bp"] * rates + scenario.sector_tilts.get(sector, 0.0)

    for hurt in ("Utilities", "Real Estate", "Information Technology"):
        assert extra(hurt) < 0
    assert extra("Financials") > 0


def test_style_shocks_are_reproduced_from_the_pack() -> None:
    """scale × (R_ETF − β_ETF × R_SP500) over the episode, β by numpy.polyfit on all daily returns."""
    pack = load_seed_pack("PP_2022-12-28")
    closes = pack.closes
    returns = closes.pct_change().iloc[1:]
    checked = 0
    for scenario in load_scenarios().scenarios.values():
        start, end = (str(d) for d in (scenario.episode.start, scenario.episode.end))
        for etf, shock in scenario.style_shocks.items():
            beta = np.polyfit(returns["SP500"], returns[etf], 1)[0]
            r_etf = closes.loc[end, etf] / closes.loc[start, etf] - 1
            r_mkt = closes.loc[end, "SP500"] / closes.loc[start, "SP500"] - 1
            assert shock == pytest.approx(scenario.episode.scale * (r_etf - beta * r_mkt), abs=5e-4 + 1e-9)
            checked += 1
    assert checked >= 20


def test_sector_sensitivities_cover_every_gics_sector_in_scenario_units() -> None:
    sectors = load_sector_sensitivities()
    assert sectors.version == "2026.11"
    assert set(GICS_SECTORS) <= set(sectors.sectors)
    for name, entry in sectors.sectors.items():
        assert list(entry.sensitivities) == list(MACRO_FACTORS), name
        assert entry.sensitivities["ig_spread_bp"] == 0.0, "credit reaches equities through HY only"
        assert entry.sensitivities["vix_pts"] == 0.0, "volatility reaches equities through beta and styles"
    assert all(v == 0.0 for v in sectors.sectors["Multi-Sector"].sensitivities.values())


def test_instrument_catalogue_has_the_hedges_and_a_methodology() -> None:
    catalogue = load_instruments()
    assert catalogue.version == "2026.11"
    assert catalogue.horizon_months == 3
    assert len(catalogue.methodology) >= 5
    by_symbol = {(i.symbol, i.type, i.direction) for i in catalogue.instruments}
    for needed in [("SPY", "option", "buy"), ("SPX", "option", "buy"), ("VIX", "option", "buy"),
                   ("TLT", "etf", "buy"), ("IEF", "etf", "buy"), ("UUP", "etf", "buy"), ("LQD", "option", "buy"),
                   ("HYG", "option", "buy"), ("GLD", "etf", "buy"), ("XLU", "etf", "short"),
                   ("XLP", "etf", "short"), ("XLE", "etf", "buy"), ("XLF", "etf", "short"), ("XLK", "etf", "short")]:
        assert needed in by_symbol, needed
    assert [i.id for i in catalogue.instruments] == sorted(i.id for i in catalogue.instruments)
    for i in catalogue.instruments:
        assert i.cost.basis, i.id


def test_instrument_sensitivities_are_in_scenario_units() -> None:
    """TLT: duration 17 → −17% per +100 bp; SPY put: 15% of notional when the index falls 20%."""
    catalogue = {i.id: i for i in load_instruments().instruments}
    sectors = load_sector_sensitivities()
    library = load_scenarios()
    assert catalogue["tlt_long"].sensitivities["rates_10y_bp"] * 100 == pytest.approx(-0.17)
    rates_up = get_scenario(library, "rates_up")
    assert instrument_payoff(catalogue["tlt_short"], rates_up, sectors).payoff == pytest.approx(0.17)
    assert instrument_payoff(catalogue["tlt_long"], rates_up, sectors).payoff == pytest.approx(-0.17)
    selloff = get_scenario(library, "equity_selloff")
    assert instrument_payoff(catalogue["spy_put_3m_95"], selloff, sectors).payoff == pytest.approx(0.95 - 0.80)
    # VIX 22 + 28 = 50 against a strike of 30, per dollar of 22-point notional.
    vix = instrument_payoff(catalogue["vix_call_3m_30"], selloff, sectors).payoff
    assert vix == pytest.approx((50 - 30) / 22, abs=1e-4)
    assert instrument_payoff(catalogue["uup_long"], get_scenario(library, "usd_up"), sectors).payoff == 0.08
    # A put that stays out of the money pays nothing.
    assert instrument_payoff(catalogue["spy_put_3m_95"], get_scenario(library, "usd_up"), sectors).payoff == 0.0


def test_sector_etf_payoff_comes_from_the_sector_file_and_the_tilt() -> None:
    raw = _raw("sector_sensitivities.json")["sectors"]["Information Technology"]
    scenario_raw = _raw("scenarios.json")["scenarios"]["rates_up"]
    shocks = scenario_raw["shocks"]
    by_hand = -(raw["equity_beta"] * shocks["equity"]
                + sum(raw["sensitivities"][f] * shocks[f] for f in MACRO_FACTORS)
                + scenario_raw["sector_tilts"]["Information Technology"])
    xlk = next(i for i in load_instruments().instruments if i.id == "xlk_short")
    payoff = instrument_payoff(xlk, get_scenario(load_scenarios(), "rates_up"), load_sector_sensitivities())
    assert payoff.payoff == pytest.approx(by_hand, abs=1e-8)


def test_cost_rate_adds_premium_spread_commission_and_short_carry() -> None:
    catalogue = {i.id: i for i in load_instruments().instruments}
    # (1 + 1) bps to trade + (25 + 300) bps a year for three months.
    assert instrument_cost_rate(catalogue["tlt_short"], 3) == pytest.approx(0.0002 + 0.0325 / 4)
    assert instrument_cost_rate(catalogue["tlt_long"], 3) == pytest.approx(0.0002)
    assert instrument_cost_rate(catalogue["spy_put_3m_95"], 3) == pytest.approx(0.024 + 0.00017)


def test_unknown_scenario_lists_the_valid_ids() -> None:
    with pytest.raises(InputError) as err:
        get_scenario(load_scenarios(), "market_melt")
    assert err.value.code == "unknown_scenario"
    assert err.value.details["allowed"] == scenario_ids()
    for sid in REQUIRED_SCENARIOS:
        assert sid in err.value.message


def _seed_copy(tmp_path: Path) -> Path:
    root = tmp_path / "seeds"
    root.mkdir()
    for name in ("scenarios.json", "instruments.json", "sector_sensitivities.json"):
        shutil.copyfile(SEEDS / name, root / name)
    return root


def test_an_unknown_key_in_a_scenario_is_refused(tmp_path: Path) -> None:
    root = _seed_copy(tmp_path)
    data = _raw("scenarios.json")
    data["scenarios"]["rates_up"]["shocks"]["rates_2y_bp"] = 50
    (root / "scenarios.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(InputError) as err:
        load_scenarios(root)
    assert "scenarios.json" in err.value.message
    assert "rates_2y_bp" in err.value.message


def test_an_unknown_sector_tilt_is_refused(tmp_path: Path) -> None:
    root = _seed_copy(tmp_path)
    data = _raw("scenarios.json")
    data["scenarios"]["rates_up"]["sector_tilts"]["Tech"] = -0.05
    (root / "scenarios.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(InputError, match="unknown GICS sector"):
        load_scenarios(root)


def test_an_instrument_with_an_unknown_factor_is_refused(tmp_path: Path) -> None:
    root = _seed_copy(tmp_path)
    data = _raw("instruments.json")
    data["instruments"][0]["sensitivities"]["oil_pct"] = 0.5
    (root / "instruments.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(InputError, match="oil_pct"):
        load_instruments(root)


def test_a_sector_entry_must_state_every_factor(tmp_path: Path) -> None:
    root = _seed_copy(tmp_path)
    data = _raw("sector_sensitivities.json")
    del data["sectors"]["Energy"]["sensitivities"]["usd_pct"]
    (root / "sector_sensitivities.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(InputError, match="usd_pct"):
        load_sector_sensitivities(root)
