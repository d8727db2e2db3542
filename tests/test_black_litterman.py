"""black_litterman: the posterior against PyPortfolioOpt's BlackLittermanModel on the same prior
and views, the prior's own consistency (no views: the benchmark is the optimum), views held, and
every limit after rounding."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pypfopt.black_litterman import BlackLittermanModel, market_implied_prior_returns

from services.allocation.rebalance import resolve_benchmark
from services.data.policy import Policy
from services.data.seeds import load_benchmarks
from services.errors import InputError
from services.estimation.black_litterman import ViewRow, posterior
from services.estimation.estimators import estimate_for_policy

PACK = "PP_2022-12-28"
VIEWS = [{"asset": "AAPL", "return_pct": 8.0, "confidence": 0.5},
         {"asset": "XOM", "versus": "CVX", "return_pct": 2.0, "confidence": 0.5}]


@pytest.fixture(scope="module")
def agent(module_store):
    from agents.agent import OptimizerAgent

    return OptimizerAgent(module_store)


def _propose(agent, portfolio="demo_diversified", **policy):
    return agent.execute("optimizer.propose_trades", {
        "pricing_pack_id": PACK, "portfolio_id": portfolio, "policy": {"method": "black_litterman", **policy}})


@pytest.fixture(scope="module")
def demo(agent):
    """The demo's Ledoit-Wolf covariance over the DEMO_20 names, and the DEMO_20 weights."""
    pack = agent.store.get_pack(PACK)
    _, bench = resolve_benchmark(pack, Policy(benchmark="DEMO_20"), load_benchmarks())
    symbols = sorted(bench)
    est = estimate_for_policy(pack, symbols, Policy())
    return {"symbols": symbols, "cov": est.cov, "w": np.array([bench[s] for s in symbols]), "est": est}


def test_the_posterior_matches_pyportfolioopt_with_its_default_omega(demo) -> None:
    # Confidence 0.5 is He and Litterman's ω = τ pᵀΣp, PyPortfolioOpt's default Ω: an independent check of Ω too.
    symbols, cov, w = demo["symbols"], demo["cov"], demo["w"]
    views = [ViewRow("AAPL", 0.08, 0.5), ViewRow("XOM", 0.02, 0.5, versus="CVX"), ViewRow("LLY", 0.12, 0.5)]
    ours = posterior(symbols, cov, w, 2.5, 0.05, views, risk_free_rate=0.02)
    cov_df = pd.DataFrame(cov, index=symbols, columns=symbols)
    prior = market_implied_prior_returns(pd.Series(w, index=symbols), 2.5, cov_df, risk_free_rate=0.02)
    np.testing.assert_allclose(ours.prior, prior.to_numpy(), rtol=1e-12, atol=1e-14)
    peer = BlackLittermanModel(cov_df, pi=prior, P=ours.picks, Q=ours.targets, tau=0.05)
    np.testing.assert_allclose(ours.omega, peer.omega, rtol=1e-12, atol=1e-16)
    np.testing.assert_allclose(ours.mu, peer.bl_returns().to_numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours.cov, peer.bl_cov().to_numpy(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("confidence", [0.2, 0.9])
def test_other_confidences_match_pyportfolioopt_given_the_same_omega(demo, confidence) -> None:
    symbols, cov, w = demo["symbols"], demo["cov"], demo["w"]
    views = [ViewRow("AAPL", 0.08, confidence), ViewRow("XOM", 0.02, confidence, versus="CVX")]
    ours = posterior(symbols, cov, w, 3.0, 0.025, views, risk_free_rate=0.02)
    # ω = τ pᵀΣp (1 − c)/c, written out by hand for these two views.
    aapl, xom, cvx = (symbols.index(s) for s in ("AAPL", "XOM", "CVX"))
    factor = (1 - confidence) / confidence
    expected_omega = np.diag([0.025 * cov[aapl, aapl] * factor,
                              0.025 * (cov[xom, xom] + cov[cvx, cvx] - 2 * cov[xom, cvx]) * factor])
    np.testing.assert_allclose(ours.omega, expected_omega, rtol=1e-12)
    cov_df = pd.DataFrame(cov, index=symbols, columns=symbols)
    peer = BlackLittermanModel(cov_df, pi=pd.Series(ours.prior, index=symbols), P=ours.picks, Q=ours.targets,
                               omega=expected_omega, tau=0.025)
    np.testing.assert_allclose(ours.mu, peer.bl_returns().to_numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours.cov, peer.bl_cov().to_numpy(), rtol=0, atol=1e-12)


def test_a_certain_view_is_held_exactly(demo) -> None:
    symbols = demo["symbols"]
    ours = posterior(symbols, demo["cov"], demo["w"], 2.5, 0.05,
                     [ViewRow("AAPL", 0.08, 1.0), ViewRow("XOM", 0.02, 1.0, versus="CVX")], risk_free_rate=0.02)
    assert ours.mu[symbols.index("AAPL")] == pytest.approx(0.08, abs=1e-12)
    assert ours.mu[symbols.index("XOM")] - ours.mu[symbols.index("CVX")] == pytest.approx(0.02, abs=1e-12)


def test_without_views_the_benchmark_is_the_optimum(agent, demo) -> None:
    # π = rf + δΣw_b makes w_b the tangency portfolio: max_sharpe over the prior returns the benchmark.
    result = _propose(agent, benchmark="DEMO_20", universe="pack")
    weights = {t["symbol"]: t["optimal_weight_pct"] for t in result["trades"]}
    for sym, w in zip(demo["symbols"], demo["w"], strict=True):
        assert weights.get(sym, 0.0) == pytest.approx(w * 100, abs=2e-3), sym
    assert result["method"] == "black_litterman"
    assert result["black_litterman"]["views"] == 0
    assert result["black_litterman"]["risk_aversion_source"] == "benchmark"


def _proposal_covariance(pack, held: list[str], symbols: list[str]) -> np.ndarray:
    """The covariance a proposal over ``held`` states the DEMO_20 names in, rebuilt by hand: the
    held names' own Ledoit-Wolf estimate, the other names regressed on them over the union's
    (services.estimation.benchmark), ordered like ``symbols``."""
    own = estimate_for_policy(pack, held, Policy()).cov
    outside = [s for s in symbols if s not in held]
    union = estimate_for_policy(pack, held + outside, Policy()).cov
    n = len(held)
    beta = np.linalg.solve(union[:n, :n], union[:n, n:]).T
    resid = union[n:, n:] - beta @ union[:n, n:]
    full = np.block([[own, own @ beta.T], [beta @ own, beta @ own @ beta.T + resid]])
    order = [(held + outside).index(s) for s in symbols]
    return full[np.ix_(order, order)]


def test_the_reported_posterior_is_pyportfolioopts_on_the_proposals_covariance(agent, demo) -> None:
    result = _propose(agent, benchmark="DEMO_20", views=VIEWS, market_risk_aversion=2.5)
    info = result["black_litterman"]
    assert info["symbols"] == demo["symbols"] and info["risk_aversion"] == 2.5 and info["tau"] == 0.05
    held = sorted(t["symbol"] for t in result["trades"])
    assert len(held) < len(demo["symbols"])  # the benchmark holds names outside the portfolio's estimate
    cov = _proposal_covariance(agent.store.get_pack(PACK), held, demo["symbols"])
    cov_df = pd.DataFrame(cov, index=demo["symbols"], columns=demo["symbols"])
    prior = market_implied_prior_returns(pd.Series(demo["w"], index=demo["symbols"]), 2.5, cov_df, risk_free_rate=0.02)
    picks = np.zeros((2, len(demo["symbols"])))
    picks[0, demo["symbols"].index("AAPL")] = 1
    picks[1, demo["symbols"].index("XOM")], picks[1, demo["symbols"].index("CVX")] = 1, -1
    peer = BlackLittermanModel(cov_df, pi=prior, P=picks, Q=np.array([0.08, 0.02]), tau=0.05)
    np.testing.assert_allclose(info["prior_returns_pct"], prior.to_numpy() * 100, atol=1e-4)
    np.testing.assert_allclose(info["posterior_returns_pct"], peer.bl_returns().to_numpy() * 100, atol=1e-4)
    np.testing.assert_allclose(info["posterior_covariance"], peer.bl_cov().to_numpy(), atol=1e-9)
    # The reported expected return uses the posterior.
    after = {t["symbol"]: t["target_weight_pct"] / 100 for t in result["trades"]}
    mu = dict(zip(info["symbols"], np.array(info["posterior_returns_pct"]) / 100, strict=True))
    cash = 1 - sum(after.values())
    assert result["after"]["expected_return_pct"] == pytest.approx(
        (sum(mu[s] * w for s, w in after.items()) + cash * 0.02) * 100, abs=1e-3)


@pytest.mark.parametrize("policy", [
    {"benchmark": "DEMO_20", "views": VIEWS, "max_single_position_pct": 12.0, "max_sector_pct": 30.0,
     "max_turnover_pct": 25.0, "max_tracking_error_pct": 3.0},
    {"benchmark": "SP500", "views": VIEWS[:1], "bl_objective": "mean_variance", "risk_aversion": 3.0,
     "max_single_position_pct": 15.0},
])
def test_proposals_hold_every_limit_in_whole_shares(agent, policy) -> None:
    result = _propose(agent, **policy)
    assert result["method"] == "black_litterman"
    assert result["constraints_met"] is True
    assert max(t["target_weight_pct"] for t in result["trades"]) <= policy["max_single_position_pct"]
    if "max_tracking_error_pct" in policy:
        assert result["te_after_pct"] <= policy["max_tracking_error_pct"]


@pytest.mark.parametrize(("policy", "field"), [
    ({}, "policy.benchmark"),
    ({"benchmark": "DEMO_20", "views": [{"asset": "NFLX", "return_pct": 5.0, "confidence": 0.5}]}, "policy.views[0]"),
    ({"benchmark": "DEMO_20", "views": [{"asset": "XOM", "versus": "XOM", "return_pct": 5.0, "confidence": 0.5}]},
     "policy.views[0].versus"),
    ({"benchmark": "DEMO_20", "views": [{"asset": "XOM", "return_pct": 5.0, "confidence": 1.0}] * 2}, "policy.views"),
])
def test_bad_inputs_are_named(agent, policy, field) -> None:
    with pytest.raises(InputError) as err:
        _propose(agent, **policy)
    assert err.value.details["field"] == field


@pytest.mark.parametrize("view", [
    {"asset": "XOM", "return_pct": 5.0, "confidence": 0.0},
    {"asset": "XOM", "return_pct": 500.0, "confidence": 0.5},
    {"asset": "XOM", "return_pct": 5.0},
    {"asset": "XOM", "return_pct": 5.0, "confidence": 0.5, "weight": 1},
])
def test_malformed_views_are_refused(agent, view) -> None:
    with pytest.raises(InputError, match="views"):
        _propose(agent, benchmark="DEMO_20", views=[view])


def test_views_under_another_method_are_ignored_with_a_warning(agent) -> None:
    result = agent.execute("optimizer.propose_trades", {
        "pricing_pack_id": PACK, "portfolio_id": "demo_diversified",
        "policy": {"method": "min_variance", "views": VIEWS, "bl_tau": 0.1}})
    assert "views is set but only black_litterman uses it; ignored under method min_variance" in result["warnings"]
    assert "bl_tau is set but only black_litterman uses it; ignored under method min_variance" in result["warnings"]
    assert "black_litterman" not in result
