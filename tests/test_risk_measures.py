"""min_risk's scenario risk measures: the engine's cvxpy forms against riskfolio-lib's own
``optimization(obj="MinRisk")`` with the same ``rm`` on the same returns and limits, and each
measure's value against a direct numpy computation.
"""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from services.allocation import risk_measures
from services.allocation.optimization import AllocationProblem, SectorCap, solve
from services.allocation.rebalance import Holdings, covariance_factor, propose_trades
from services.data.importers import read_pack
from services.data.policy import parse_overrides, resolve_policy
from services.data.seeds import load_benchmarks, load_constraint_defaults, seed_root
from services.estimation.estimators import daily_returns

PACK = "PP_2022-12-28"
NAMES = ("AAPL", "CVX", "JNJ", "JPM", "KO", "LLY", "MSFT", "PFE", "UNH", "WMT", "XOM", "HD")
RISKFOLIO_RM = {"mad": "MAD", "semi_variance": "MSV", "cdar": "CDaR", "evar": "EVaR", "cvar": "CVaR", "variance": "MV"}
SECTORS = (SectorCap("Energy", np.array([1, 10]), 0.1), SectorCap("Health Care", np.array([2, 5, 7, 8]), 0.3))


@pytest.fixture(scope="module")
def pack():
    directory = seed_root() / "packs" / PACK
    return read_pack(PACK, directory / "prices.csv", directory / "securities.csv")


@pytest.fixture(scope="module")
def returns(pack) -> pd.DataFrame:
    return daily_returns(pack, list(NAMES), 756)


def _problem(returns: pd.DataFrame, measure: str, *, cap: float, confidence: float) -> AllocationProblem:
    n = len(NAMES)
    r = returns.to_numpy()
    return AllocationProblem(
        symbols=NAMES, objective="min_risk", mu=r.mean(axis=0) * 252,
        factor=covariance_factor(np.cov(r, rowvar=False) * 252), current=np.full(n, 1.0 / n), invested=1.0,
        caps=np.full(n, cap), sectors=SECTORS, scenarios=None if measure == "variance" else r,
        risk_measure=measure, cvar_confidence=confidence,
    )


def _riskfolio(returns: pd.DataFrame, measure: str, *, cap: float, confidence: float) -> np.ndarray:
    import riskfolio as rp

    n = len(NAMES)
    port = rp.Portfolio(returns=returns, alpha=1.0 - confidence)
    port.assets_stats(method_mu="hist", method_cov="hist")
    rows = [*np.eye(n)]
    bounds = [cap] * n
    for s in SECTORS:
        row = np.zeros(n)
        row[s.members] = 1.0
        rows.append(row)
        bounds.append(s.limit)
    port.ainequality = np.array(rows)
    port.binequality = np.array(bounds).reshape(-1, 1)
    weights = port.optimization(model="Classic", rm=RISKFOLIO_RM[measure], obj="MinRisk", rf=0, hist=True)
    return weights.to_numpy().ravel()


@pytest.mark.parametrize("measure,cap,confidence", [
    ("mad", 0.2, 0.95), ("semi_variance", 0.2, 0.95), ("cdar", 0.25, 0.95), ("cdar", 0.2, 0.9),
    ("evar", 0.3, 0.95), ("evar", 0.2, 0.9), ("cvar", 0.2, 0.95), ("variance", 0.2, 0.95),
])
def test_min_risk_matches_riskfolio_with_the_same_measure_and_limits(returns, measure, cap, confidence) -> None:
    result = solve(_problem(returns, measure, cap=cap, confidence=confidence))
    assert result.objective == "min_risk"
    direct = _riskfolio(returns, measure, cap=cap, confidence=confidence)
    r = returns.to_numpy()
    if measure != "variance":
        # Same optimum value first (a flat optimum could let weights differ), then the weights.
        ours = risk_measures.value(measure, r, result.weights, confidence)
        theirs = risk_measures.value(measure, r, direct, confidence)
        assert ours == pytest.approx(theirs, rel=1e-5)
    np.testing.assert_allclose(result.weights, direct, atol=1e-4)
    assert result.weights.max() <= cap + 1e-9
    assert all(result.weights[s.members].sum() <= s.limit + 1e-9 for s in SECTORS)


@pytest.mark.parametrize("measure", ["mad", "semi_variance", "cdar", "evar", "cvar"])
def test_the_optimum_beats_every_simple_portfolio_on_its_measure(returns, measure) -> None:
    r = returns.to_numpy()
    best = risk_measures.value(measure, r, solve(_problem(returns, measure, cap=1.0, confidence=0.95)).weights, 0.95)
    others = [np.full(len(NAMES), 1.0 / len(NAMES)), *np.eye(len(NAMES))]
    others = [w for w in others if all(w[s.members].sum() <= s.limit for s in SECTORS)]
    assert others and all(best <= risk_measures.value(measure, r, w, 0.95) + 1e-12 for w in others)


def test_measure_values_by_hand() -> None:
    # Four daily returns of one asset: 1%, −2%, 3%, −1%.
    r = np.array([[0.01], [-0.02], [0.03], [-0.01]])
    w = np.ones(1)
    assert risk_measures.value("mad", r, w, 0.95) == pytest.approx((0.0075 + 0.0225 + 0.0275 + 0.0125) / 4)
    assert risk_measures.value("semi_variance", r, w, 0.95) == pytest.approx(np.sqrt((0.0225**2 + 0.0125**2) / 3))
    # Cumulative 1, −1, 2, 1 (%): drawdowns from the running peak (0 included) 0, 2, 0, 1 (%).
    # At α = 0.5 the CDaR is the mean of the worst two: 1.5%.
    assert risk_measures.value("cdar", r, w, 0.5) == pytest.approx(0.015)
    # CVaR at α = 0.5: mean of the two worst losses 2% and 1%.
    assert risk_measures.value("cvar", r, w, 0.5) == pytest.approx(0.015)
    # EVaR lies between CVaR and the worst loss, and with α = 1/T it is the worst loss itself.
    evar = risk_measures.value("evar", r, w, 0.5)
    assert 0.015 <= evar <= 0.02
    assert risk_measures.value("evar", r, w, 0.75) == pytest.approx(0.02, abs=1e-6)


def _policy(**fields):
    return resolve_policy(load_constraint_defaults(), None, parse_overrides(fields), policy_id=None)


@pytest.mark.parametrize("measure", ["cdar", "evar", "mad", "semi_variance"])
def test_min_risk_proposals_hold_every_limit(pack, measure) -> None:
    holdings = Holdings(None, {s: 500 for s in NAMES}, Decimal("10000"))
    policy = _policy(method="min_risk", risk_measure=measure, max_single_position_pct=15.0, max_sector_pct=30.0,
                     max_turnover_pct=40.0, benchmark="DEMO_20", max_tracking_error_pct=6.0, cash_buffer_pct=2.0)
    result = propose_trades(pack, holdings, policy, {}, load_benchmarks())
    assert result.method == "min_risk" and result.constraints_met
    assert max(t.target_weight_pct for t in result.trades) <= 15.0
    assert result.discretionary_turnover_pct <= 40.0 and result.te_after_pct <= 6.0
    assert not any("ignored" in w for w in result.warnings)


@pytest.mark.parametrize("limits", [{"max_single_position_pct": 20.0, "max_turnover_pct": 40.0},
                                    {"universe": "pack", "max_single_position_pct": 10.0}])
def test_evar_proposals_on_the_demo_portfolio(pack, limits) -> None:
    # No single unit of evar's cones solves every case: above, the 30%-cap case fails in percent and
    # the uncapped one in decimals and in riskfolio's ×1000 (each checked by fixing EVAR_UNITS to
    # one unit); through the capability, demo_diversified under a 20% cap and 40% turnover failed
    # in decimals. The units are tried in turn.
    import csv

    rows = csv.DictReader((seed_root() / "portfolios" / "demo_diversified.csv").read_text().splitlines())
    holdings = Holdings(None, {r["symbol"]: int(r["shares"]) for r in rows}, Decimal("24987.15"))
    result = propose_trades(pack, holdings, _policy(method="min_risk", risk_measure="evar", **limits), {},
                            load_benchmarks())
    assert result.constraints_met and result.risk_measure is not None
    assert result.risk_measure.after_pct < result.risk_measure.before_pct


def test_the_result_reports_the_measure_before_and_after(pack) -> None:
    holdings = Holdings(None, {s: 500 for s in NAMES}, Decimal(0))
    result = propose_trades(pack, holdings, _policy(method="min_risk", risk_measure="cdar", cvar_confidence=0.9), {},
                            load_benchmarks())
    info = result.risk_measure
    assert info is not None and info.measure == "cdar" and info.confidence == 0.9
    r = daily_returns(pack, sorted(NAMES), 756).to_numpy()
    prices = pack.last_prices()
    by_symbol = {t.symbol: t for t in result.trades}
    value_after = float(result.value_after)
    before = np.array([prices[s] * 500 for s in sorted(NAMES)]) / float(result.portfolio_value)
    after = np.array([prices[s] * by_symbol[s].target_shares / value_after for s in sorted(NAMES)])
    assert info.before_pct == pytest.approx(risk_measures.value("cdar", r, before, 0.9) * 100, abs=1e-4)
    assert info.after_pct == pytest.approx(risk_measures.value("cdar", r, after, 0.9) * 100, abs=1e-4)
    assert info.after_pct < info.before_pct
    plain = propose_trades(pack, holdings, _policy(method="min_risk"), {}, load_benchmarks())
    assert plain.risk_measure is None and "risk_measure" not in plain.model_dump()


def test_risk_measure_without_min_risk_is_ignored_with_a_warning(pack) -> None:
    holdings = Holdings(None, {s: 500 for s in NAMES}, Decimal(0))
    result = propose_trades(pack, holdings, _policy(method="min_variance", risk_measure="cdar"), {}, load_benchmarks())
    assert "risk_measure is set but only min_risk uses it; ignored under method min_variance" in result.warnings
