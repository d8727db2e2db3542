"""A portfolio's risk figures do not depend on an unrelated benchmark or trade in the request.

Before this rule, the covariance was fitted over the union of holdings, eligible names, traded
names and benchmark names: Ledoit–Wolf's shrinkage moved with every added name, and the common
window was cut to the shortest history among them. Now each estimate is over the portfolio's own
names and a benchmark is projected onto it (services.estimation.benchmark).
"""

from __future__ import annotations

import dataclasses
import math
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from services.allocation.rebalance import Holdings, propose_trades
from services.analytics.impact import TradeOrder, analyze_impact
from services.data.policy import Policy
from services.data.seeds import load_benchmarks, load_seed_pack
from services.estimation.benchmark import project
from services.estimation.estimators import Estimates, estimate_for_policy

PACK = "PP_2022-12-28"
HOLDINGS = Holdings("p", {"AAPL": 300, "JNJ": 200, "XOM": 250, "KO": 400}, Decimal("20000"))


@pytest.fixture(scope="module")
def pack():
    return load_seed_pack(PACK)


@pytest.fixture(scope="module")
def short_pack(pack):
    """The demo pack with the QUAL factor ETF priced only over its last 120 days."""
    closes = pack.closes.copy()
    closes.loc[closes.index[:-120], "QUAL"] = np.nan
    return dataclasses.replace(pack, closes=closes, content_hash="")


def _figures(proposal) -> tuple:
    return proposal.before, proposal.estimation.observations


@pytest.mark.parametrize("benchmark", ["DEMO_20", "SP500", {"AAPL": 0.5, "MSFT": 0.3, "QUAL": 0.2}])
def test_naming_a_benchmark_does_not_move_the_portfolios_figures(pack, benchmark) -> None:
    named = load_benchmarks()
    base = Policy(method="min_variance", max_single_position_pct=40.0)
    without = propose_trades(pack, HOLDINGS, base, {}, named)
    with_bench = propose_trades(pack, HOLDINGS, base.model_copy(update={"benchmark": benchmark}), {}, named)
    assert with_bench.before == without.before  # byte-identical expected return, volatility, Sharpe
    assert with_bench.after == without.after  # no tracking-error limit: the same optimum
    assert with_bench.te_before_pct is not None and with_bench.te_before_pct > 0


def test_a_short_benchmark_history_does_not_cut_the_portfolios_window(short_pack) -> None:
    named = load_benchmarks()
    base = Policy(method="min_variance", max_single_position_pct=40.0)
    without = propose_trades(short_pack, HOLDINGS, base, {}, named)
    with_bench = propose_trades(short_pack, HOLDINGS, base.model_copy(update={"benchmark": "QUAL"}), {}, named)
    assert without.estimation.observations == with_bench.estimation.observations == 756
    assert with_bench.before == without.before
    # The projection used QUAL's 119 returns and says so.
    assert any("projected onto the portfolio's symbols" in w and "119 common daily returns" in w
               for w in with_bench.warnings)


def test_an_unrelated_trade_does_not_move_the_figures_before(pack) -> None:
    policy = Policy(benchmark="DEMO_20")
    alone = analyze_impact(pack, HOLDINGS, [TradeOrder("AAPL", "BUY", 10)], policy, load_benchmarks())
    more = analyze_impact(pack, HOLDINGS, [TradeOrder("AAPL", "BUY", 10), TradeOrder("BBY", "BUY", 5)],
                          policy, load_benchmarks())
    assert more.before == alone.before
    no_bench = analyze_impact(pack, HOLDINGS, [TradeOrder("AAPL", "BUY", 10)], Policy(), load_benchmarks())
    assert no_bench.before.model_dump(exclude={"tracking_error_pct"}) == alone.before.model_dump(
        exclude={"tracking_error_pct"})
    assert no_bench.before.tracking_error_pct is None and alone.before.tracking_error_pct > 0


def test_impact_before_and_after_have_their_own_windows(short_pack) -> None:
    """Buying the short-history name cuts the window after, not before."""
    policy = Policy(lookback_days=500)
    holdings = Holdings("p", {"AAPL": 300, "JNJ": 200}, Decimal("50000"))
    report = analyze_impact(short_pack, holdings, [TradeOrder("QUAL", "BUY", 50)], policy, {})
    alone = analyze_impact(short_pack, holdings, [TradeOrder("AAPL", "BUY", 1)], policy, {})
    assert report.before == alone.before
    assert report.estimation.observations == 119
    assert any("before is measured over 500 daily returns" in w for w in report.warnings)


def test_projection_with_the_sample_covariance_is_the_unions_estimate(pack) -> None:
    """Sample covariance over one common window: the projection loses nothing, so tracking error
    equals the one on the union's covariance (an independent formula: √((w−b)ᵀΣ(w−b)))."""
    policy = Policy(covariance_estimator="hist")
    inside = ["AAPL", "JNJ", "KO", "XOM"]
    bench = {"AAPL": 0.2, "MSFT": 0.3, "CVX": 0.1, "LLY": 0.4}
    est = estimate_for_policy(pack, inside, policy)
    proj = project(est, bench, lambda symbols: estimate_for_policy(pack, symbols, policy))
    union_symbols = inside + ["CVX", "LLY", "MSFT"]
    union = estimate_for_policy(pack, union_symbols, policy)
    w = np.array([0.3, 0.2, 0.25, 0.15])
    full_w = np.concatenate([w, np.zeros(3)])
    full_b = np.array([bench.get(s, 0.0) for s in union_symbols])
    expected = math.sqrt((full_w - full_b) @ union.cov @ (full_w - full_b))
    factor = np.linalg.cholesky(est.cov).T
    assert proj.tracking_error(factor, w) == pytest.approx(expected, rel=1e-9)
    np.testing.assert_allclose(proj.extended_covariance(est.cov), union.cov, rtol=1e-9, atol=1e-15)
    assert proj.expected_return == pytest.approx(float(union.mu @ full_b), rel=1e-12)
    assert proj.outside == ("CVX", "LLY", "MSFT")


def test_tracking_error_by_hand() -> None:
    """One inside name (σ² = 0.04) and one outside: B = 0.5·A + ε with var(ε) = 0.01.

    Benchmark 60% A, 40% B acts like 0.6 + 0.4·0.5 = 0.8 of A plus 0.4·ε: holding 100% A,
    TE² = 0.2²·0.04 + 0.4²·0.01 = 0.0016 + 0.0016 = 0.0032.
    """
    dates = pd.bdate_range("2022-01-03", periods=3)
    est = Estimates(("A",), np.array([0.08]), np.array([[0.04]]),
                    pd.DataFrame({"A": [0.01, -0.01, 0.0]}, index=dates))
    union = Estimates(("A", "B"), np.array([0.08, 0.05]), np.array([[0.04, 0.02], [0.02, 0.02]]),
                      pd.DataFrame({"A": [0.01, -0.01, 0.0], "B": [0.0, 0.01, 0.0]}, index=dates))
    proj = project(est, {"A": 0.6, "B": 0.4}, lambda symbols: union)
    assert proj.weights == pytest.approx([0.8])
    assert proj.residual_variance == pytest.approx(0.4**2 * 0.01)
    assert proj.tracking_error(np.array([[0.2]]), np.array([1.0])) == pytest.approx(math.sqrt(0.0032))
    assert proj.expected_return == pytest.approx(0.6 * 0.08 + 0.4 * 0.05)
