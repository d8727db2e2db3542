"""Risk models and solve modes: the factor models' arithmetic, what a proposal reports, and that
every hard limit holds after whole-share rounding with a factor risk model and with the fast solve.

Limits are recomputed here from the trades, the pack and an independently built covariance (the
full sample one for ``solve: fast``, the factor model's own for ``risk_model: factor``).
"""

from __future__ import annotations

import json
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from services.allocation.rebalance import Holdings, eligibility, propose_trades, risk_setup
from services.data.importers import read_pack
from services.data.models import PricingPack, Security
from services.data.policy import PolicyOverrides, parse_overrides, resolve_policy
from services.data.seeds import load_benchmarks, load_constraint_defaults, seed_root
from services.errors import InfeasibleError, InputError
from services.estimation.benchmark import project
from services.estimation.estimators import estimate_for_policy
from services.estimation.risk_models import fundamental, statistical, statistical_factor_count

STOCKS = ["AAPL", "AMD", "BAC", "BBY", "CVX", "GE", "HD", "JNJ", "JPM", "KO",
          "LLY", "MRK", "MSFT", "PEP", "PFE", "PG", "RRC", "UNH", "WMT", "XOM"]


@pytest.fixture(scope="module")
def pack() -> PricingPack:
    directory = seed_root() / "packs" / "PP_2022-12-28"
    return read_pack("PP_2022-12-28", directory / "prices.csv", directory / "securities.csv")


def _policy(**fields):
    return resolve_policy(load_constraint_defaults(), None, parse_overrides(fields), policy_id=None)


# --- the models' arithmetic ------------------------------------------------------------------


@pytest.mark.parametrize(("n", "t", "k"), [(16, 756, 15), (21, 756, 20), (200, 756, 20), (500, 756, 23),
                                           (1000, 756, 32), (2000, 756, 45), (5000, 756, 50), (40, 10, 9)])
def test_factor_count_rule(n: int, t: int, k: int) -> None:
    """max(20, ⌈√n⌉), capped at 50, below n and below the number of returns."""
    assert statistical_factor_count(n, t) == k


def test_statistical_keeps_total_variance_and_is_exact_at_full_rank() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 12)) @ rng.normal(size=(12, 12))
    cov = np.cov(x, rowvar=False)
    three = statistical(cov, 3)
    assert three.k == 3
    np.testing.assert_allclose(np.diag(three.covariance()), np.diag(cov), rtol=1e-12)
    # The top three eigenpairs are reproduced: Σ_F v = λ v for them (the diagonal aside).
    values, vectors = np.linalg.eigh(cov)
    low_rank = three.loadings.T @ three.loadings
    np.testing.assert_allclose(low_rank @ vectors[:, -1], values[-1] * vectors[:, -1], rtol=1e-9, atol=1e-12)
    full = statistical(cov, 12)
    np.testing.assert_allclose(full.covariance(), cov, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(full.dense_factor().T @ full.dense_factor(), full.covariance(), rtol=1e-12)


def _factor_pack(noise: float) -> tuple[PricingPack, np.ndarray, np.ndarray]:
    """Three assets driven by two factor series MKT and VAL with known betas (plus ``noise``)."""
    rng = np.random.default_rng(7)
    t = 400
    f = rng.normal(0.0004, 0.01, size=(t, 2))
    betas = np.array([[1.2, 0.3], [0.8, -0.5], [1.0, 0.0]])
    r = f @ betas.T + noise * rng.normal(size=(t, 3))
    closes = 100 * np.cumprod(1 + np.column_stack([r, f]), axis=0)
    dates = pd.bdate_range("2024-01-02", periods=t)
    frame = pd.DataFrame(closes, index=dates, columns=["A", "B", "C", "MKT", "VAL"])
    securities = tuple([Security(s, s, "Tech", "equity") for s in "ABC"]
                       + [Security("MKT", "market", "Index", "index"), Security("VAL", "value", "Factor", "etf")])
    pack = PricingPack(id="PP_T", securities=securities, closes=frame)
    return pack, betas, f


def test_fundamental_equals_a_hand_regression() -> None:
    pack, _, _ = _factor_pack(noise=0.004)
    policy = _policy(covariance_estimator="hist", risk_model="factor", factor_model="fundamental",
                     lookback_days=5000)
    est = estimate_for_policy(pack, ["A", "B", "C"], policy)
    model = fundamental(pack, est, None, covariance_estimator="hist", ewma_decay=0.94, annualization_days=252)
    assert model.factors == ("MKT", "VAL")  # the pack's index and ETF series
    # By hand: OLS with intercept, sample factor covariance, residual variance with ddof = k + 1.
    r = est.returns.to_numpy()
    f = pack.closes[["MKT", "VAL"]].pct_change().loc[est.returns.index].to_numpy()
    x = np.column_stack([np.ones(len(r)), f])
    coef = np.linalg.solve(x.T @ x, x.T @ r)
    resid = r - x @ coef
    expected = 252 * (coef[1:].T @ np.cov(f, rowvar=False) @ coef[1:] + np.diag((resid**2).sum(0) / (len(r) - 3)))
    np.testing.assert_allclose(model.covariance(), expected, rtol=1e-9)


def test_fundamental_rejects_unknown_factor_series() -> None:
    pack, _, _ = _factor_pack(noise=0.004)
    policy = _policy(lookback_days=5000)
    est = estimate_for_policy(pack, ["A", "B"], policy)
    with pytest.raises(InputError) as err:
        fundamental(pack, est, ["MKT", "NOPE"], covariance_estimator="hist", ewma_decay=0.94, annualization_days=252)
    assert err.value.details["invalid"] == ["NOPE"]


# --- the fields, unset and set -----------------------------------------------------------------


def test_unset_fields_leave_requests_and_policies_as_before() -> None:
    """Not given, the new fields appear in no dump, so inputs_hash and outputs are unchanged."""
    new = {"risk_model", "factor_model", "factor_count", "factor_symbols", "solve"}
    assert not new & set(PolicyOverrides.model_validate({"max_turnover_pct": 20}).model_dump(mode="json"))
    assert not new & set(_policy().model_dump(mode="json"))
    assert PolicyOverrides(solve="fast").model_dump(mode="json")["solve"] == "fast"


@pytest.mark.parametrize(("fields", "n", "mode"), [({}, 200, "exact"), ({}, 201, "fast"), ({"solve": "fast"}, 20, "fast"),
                                                   ({"solve": "exact"}, 900, "exact"),
                                                   ({"risk_model": "factor", "solve": "fast"}, 900, "exact")])
def test_solve_mode(fields, n: int, mode: str) -> None:
    assert _policy(**fields).solve_mode(n) == mode


@pytest.mark.parametrize("fields", [{"factor_count": 0}, {"factor_count": 51}, {"solve": "quick"},
                                    {"risk_model": "pca"}])
def test_invalid_values_are_input_errors(fields) -> None:
    with pytest.raises(InputError):
        _policy(**fields)


def _engine_symbols(pack, holdings, policy) -> tuple[list[str], list[str]]:
    """Eligible names and the symbols the engine estimates on, in its order (a statistical model
    depends on the set of symbols it is fitted to): the portfolio's own names, never a benchmark's
    (services.estimation.benchmark projects those)."""
    eligible = list(eligibility(pack, holdings, policy, {}).eligible)
    return eligible, eligible + sorted(set(holdings.positions) - set(eligible))


def _holdings() -> Holdings:
    return Holdings("t", {"AAPL": 300, "JNJ": 250, "XOM": 400, "KO": 600, "MSFT": 150, "JPM": 200}, Decimal("25000"))


def test_default_result_carries_no_risk_block_and_a_given_field_does(pack) -> None:
    base = propose_trades(pack, _holdings(), _policy(universe="pack"), {}, load_benchmarks())
    assert "risk" not in base.estimation.model_dump(mode="json")
    exact = propose_trades(pack, _holdings(), _policy(universe="pack", solve="exact"), {}, load_benchmarks())
    assert exact.estimation.risk.model_dump() == {"risk_model": "sample", "k": None, "factors": [], "solve": "exact",
                                                  "solves": 1}
    # Asking for what the default does changes only the report of it.
    assert exact.model_dump(exclude={"estimation"}) == base.model_dump(exclude={"estimation"})


def test_factor_model_figures_use_the_factor_covariance(pack) -> None:
    policy = _policy(universe="pack", risk_model="factor", factor_count=4, max_single_position_pct=15,
                     benchmark="DEMO_20", max_tracking_error_pct=6)
    result = propose_trades(pack, _holdings(), policy, {}, load_benchmarks())
    info = result.estimation.risk
    assert (info.risk_model, info.k, info.solve) == ("statistical", 4, "exact")
    # Volatility after trading, recomputed from the target weights and Σ_F built by hand from eigh.
    weights = {t.symbol: t.target_weight_pct / 100 for t in result.trades}
    bench = load_benchmarks()["DEMO_20"]
    _, symbols = _engine_symbols(pack, _holdings(), policy)  # every DEMO_20 name is in the universe
    est = estimate_for_policy(pack, symbols, policy)
    values, vectors = np.linalg.eigh(est.cov)
    loadings = vectors[:, -4:] * np.sqrt(values[-4:])
    cov = loadings @ loadings.T
    cov += np.diag(np.diag(est.cov) - np.diag(cov))
    w = np.array([weights.get(s, 0.0) for s in symbols])
    b = np.array([bench.get(s, 0.0) for s in symbols]) / sum(bench.values())
    assert result.after.volatility_pct == pytest.approx(100 * np.sqrt(w @ cov @ w), abs=2e-3)
    assert result.te_after_pct == pytest.approx(100 * np.sqrt((w - b) @ cov @ (w - b)), abs=2e-3)
    assert result.te_after_pct <= 6 + 1e-9 and result.constraints_met


def test_fast_solve_reports_under_the_full_covariance(pack) -> None:
    policy = _policy(universe="pack", solve="fast", factor_count=2, max_single_position_pct=15,
                     benchmark="DEMO_20", max_tracking_error_pct=3)
    result = propose_trades(pack, _holdings(), policy, {}, load_benchmarks())
    info = result.estimation.risk
    assert (info.risk_model, info.k, info.solve) == ("sample", 2, "fast") and info.solves >= 1
    weights = {t.symbol: t.target_weight_pct / 100 for t in result.trades}
    bench = load_benchmarks()["DEMO_20"]
    _, symbols = _engine_symbols(pack, _holdings(), policy)  # Ledoit-Wolf depends on the set too
    cov = estimate_for_policy(pack, symbols, policy).cov  # the full sample (Ledoit-Wolf) covariance
    w = np.array([weights.get(s, 0.0) for s in symbols])
    b = np.array([bench.get(s, 0.0) for s in symbols]) / sum(bench.values())
    assert result.te_after_pct == pytest.approx(100 * np.sqrt((w - b) @ cov @ (w - b)), abs=2e-3)
    assert result.te_after_pct <= 3 + 1e-9 and result.constraints_met
    if info.solves > 1:
        assert any("understated tracking error" in w for w in result.warnings)


def test_risk_setup_structures(pack) -> None:
    est = estimate_for_policy(pack, STOCKS, _policy())
    exact = risk_setup(pack, est, _policy(), 20)
    assert exact.structured is None and (exact.model, exact.solve) == ("sample", "exact")
    fast = risk_setup(pack, est, _policy(solve="fast", factor_count=5), 20)
    assert fast.structured.k == 5 and fast.approximate
    np.testing.assert_allclose(fast.factor.T @ fast.factor, est.cov, rtol=1e-8, atol=1e-12)


# --- property: hard limits after rounding, factor model and fast solve -------------------------


portfolios = st.fixed_dictionaries({
    "positions": st.dictionaries(st.sampled_from(STOCKS), st.integers(1, 3000), min_size=3, max_size=12),
    "cash": st.decimals(0, 200000, places=2),
})
policies = st.fixed_dictionaries({
    "engine": st.sampled_from([{"risk_model": "factor"}, {"risk_model": "factor", "factor_model": "fundamental"},
                               {"solve": "fast"}]),
    "factor_count": st.one_of(st.none(), st.integers(1, 8)),
    "method": st.sampled_from(["max_sharpe", "min_variance", "mean_variance", "risk_parity"]),
    "universe": st.sampled_from(["holdings", "pack"]),
    "max_single_position_pct": st.floats(12, 60),
    "max_sector_pct": st.floats(30, 70),
    "max_turnover_pct": st.one_of(st.none(), st.floats(30, 120)),
    "max_tracking_error_pct": st.one_of(st.none(), st.floats(3, 12)),
    "cash_buffer_pct": st.floats(0, 5),
})


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(portfolio=portfolios, drawn=policies)
def test_hard_limits_hold_after_rounding_with_factor_model_and_fast_solve(pack, portfolio, drawn) -> None:
    fields = {k: v for k, v in drawn.items() if k != "engine"} | drawn["engine"]
    if fields["factor_count"] is None:
        del fields["factor_count"]
    fields["benchmark"] = "DEMO_20" if fields["max_tracking_error_pct"] else None
    policy = _policy(**fields)
    holdings = Holdings(None, dict(sorted(portfolio["positions"].items())), portfolio["cash"])
    try:
        result = propose_trades(pack, holdings, policy, {}, load_benchmarks())
    except InfeasibleError as err:
        assert err.details.get("conflicts"), err.message
        event("infeasible")
        return
    event(f"feasible {json.dumps(drawn['engine'], sort_keys=True)}")
    assert result.estimation.risk is not None
    prices = {t.symbol: Decimal(repr(t.price)) for t in result.trades}
    value = sum(prices[s] * n for s, n in holdings.positions.items()) + holdings.cash
    value_after = value - result.estimated_costs
    cash = holdings.cash - sum(prices[t.symbol] * (t.target_shares - t.current_shares) for t in result.trades)
    cash -= sum(t.estimated_cost for t in result.trades)
    assert cash >= 0
    assert cash / value_after >= Decimal(policy.cash_buffer_pct / 100) - Decimal("1e-6")
    sectors: dict[str, Decimal] = {}
    for t in result.trades:
        weight = prices[t.symbol] * t.target_shares / value_after
        assert weight <= Decimal(policy.max_single_position_pct / 100) + Decimal("1e-9"), t
        sector = pack.security(t.symbol).sector
        sectors[sector] = sectors.get(sector, Decimal(0)) + weight
    assert max(sectors.values()) <= Decimal(policy.max_sector_pct / 100) + Decimal("1e-9")
    traded = sum(prices[t.symbol] * abs(t.target_shares - t.current_shares) for t in result.trades)
    if policy.max_turnover_pct is not None:  # nothing is forced here: no quality minimum, no narrowing
        forced = sum(prices[t.symbol] * t.current_shares for t in result.trades if "Sell in full" in t.rationale)
        bought = sum(prices[t.symbol] * t.quantity for t in result.trades if t.action == "BUY")
        assert (traded - forced - min(forced, bought)) / value <= Decimal(policy.max_turnover_pct / 100) + Decimal("1e-9")
    if policy.max_tracking_error_pct is not None:
        # Under the covariance the limit is stated in: the full sample one for fast, Σ_F for a factor model.
        weights = {t.symbol: float(prices[t.symbol] * t.target_shares / value_after) for t in result.trades}
        bench = load_benchmarks()["DEMO_20"]
        eligible, symbols = _engine_symbols(pack, holdings, policy)
        est = estimate_for_policy(pack, symbols, policy)
        cov = est.cov if policy.risk_model is None else risk_setup(pack, est, policy, len(eligible)).structured.covariance()
        w = np.array([weights.get(s, 0.0) for s in symbols])
        # The benchmark's names the portfolio does not own are projected onto its own estimate; the
        # part they cannot replicate adds its residual variance (tested against a regression in
        # tests/test_estimation_window.py).
        total = sum(bench.values())
        proj = project(est, {s: v / total for s, v in bench.items()},
                       lambda names: estimate_for_policy(pack, names, policy))
        active = w - proj.weights
        assert np.sqrt(active @ cov @ active + proj.residual_variance) * 100 <= policy.max_tracking_error_pct + 1e-6
    assert result.constraints_met


def test_auto_solves_fast_above_200_assets_and_keeps_every_limit_under_the_full_covariance() -> None:
    """205 synthetic names (3 factors + noise): auto chooses fast with k = max(20, ⌈√205⌉) = 20."""
    rng = np.random.default_rng(11)
    n, t = 205, 400
    returns = rng.normal(0.0003, 0.01, size=(t, 3)) @ rng.normal(0.6, 0.4, size=(3, n))
    returns += rng.normal(0.0002, 0.015, size=(t, n))
    symbols = [f"S{i:03d}" for i in range(n)]
    frame = pd.DataFrame(100 * np.cumprod(1 + returns, axis=0), index=pd.bdate_range("2024-01-02", periods=t),
                         columns=symbols)
    sectors = ["Energy", "Financials", "Health Care", "Industrials", "Utilities"]
    pack = PricingPack(id="PP_SYN", securities=tuple(Security(s, s, sectors[i % 5], "equity")
                                                      for i, s in enumerate(symbols)), closes=frame)
    bench = {s: 1 / 50 for s in symbols[:50]}
    prices = frame.iloc[-1]
    holdings = Holdings("syn", {s: int(20_000 // prices[s]) for s in symbols[:40]}, Decimal("50000"))
    policy = _policy(universe="pack", max_single_position_pct=5, max_sector_pct=30, benchmark="EQ50",
                     max_tracking_error_pct=4, max_turnover_pct=40, min_trade_value=0)
    result = propose_trades(pack, holdings, policy, {}, {"EQ50": bench})
    info = result.estimation.risk
    assert (info.risk_model, info.solve, info.k) == ("sample", "fast", 20) and info.solves >= 1
    assert result.constraints_met
    weights = {t_.symbol: t_.target_weight_pct / 100 for t_ in result.trades}
    assert max(weights.values()) <= 0.05 + 1e-6
    cov = estimate_for_policy(pack, symbols, policy).cov  # every name is eligible: the engine's symbols
    w = np.array([weights.get(s, 0.0) for s in symbols])
    b = np.array([bench.get(s, 0.0) for s in symbols])
    te = 100 * np.sqrt((w - b) @ cov @ (w - b))
    assert te <= 4 + 1e-6 and result.te_after_pct == pytest.approx(te, abs=2e-3)
