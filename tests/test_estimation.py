"""Estimators: the adapter's shortcut for shrinkage estimators equals riskfolio's own result."""

from __future__ import annotations

import numpy as np
import pytest
import riskfolio

from services.data.importers import read_pack
from services.data.seeds import seed_root
from services.estimation import riskfolio_adapter
from services.estimation.estimators import daily_returns


@pytest.fixture(scope="module")
def returns():
    directory = seed_root() / "packs" / "PP_2022-12-28"
    pack = read_pack("PP_2022-12-28", directory / "prices.csv", directory / "securities.csv")
    return daily_returns(pack, ["AAPL", "JNJ", "XOM", "MSFT", "KO", "SP500"], 756)


@pytest.mark.parametrize(("ours", "theirs"), [("ledoit", "ledoit"), ("oas", "oas"), ("hist", "hist"), ("ewma", "ewma1")])
def test_covariance_equals_riskfolio(returns, ours, theirs) -> None:
    expected = np.asarray(riskfolio.ParamsEstimation.covar_matrix(returns, method=theirs, d=0.94), dtype=float)
    np.testing.assert_allclose(riskfolio_adapter.covariance(returns, ours, decay=0.94), expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize(("ours", "theirs"), [("ledoit", "ledoit"), ("ewma", "ewma1")])
def test_hrp_on_our_covariance_equals_riskfolio_estimating_it(returns, ours, theirs) -> None:
    port = riskfolio.HCPortfolio(returns=returns)
    expected = port.optimization(model="HRP", codependence="pearson", rm="MV", rf=0, linkage="single",
                                 method_cov=theirs, dict_cov={"d": 0.94} if theirs == "ewma1" else {},
                                 leaf_order=True)
    cov = riskfolio_adapter.covariance(returns, ours, decay=0.94) * 252  # HRP is scale-free
    np.testing.assert_allclose(riskfolio_adapter.hrp_weights(returns, cov),
                               expected.to_numpy().ravel(), rtol=1e-9)


@pytest.mark.parametrize(("ours", "theirs"), [("hist", "hist"), ("ewma", "ewma1")])
def test_mean_returns_equal_riskfolio_exactly(returns, ours, theirs) -> None:
    """Computed without importing riskfolio, to the same bits as its mean_vector."""
    expected = np.asarray(riskfolio.ParamsEstimation.mean_vector(returns, method=theirs, d=0.94), dtype=float).ravel()
    np.testing.assert_array_equal(riskfolio_adapter.mean_returns(returns, ours, decay=0.94), expected)


@pytest.mark.parametrize(("t", "n"), [(756, 1), (756, 20), (300, 1001), (120, 2050)])
def test_ledoit_wolf_is_bit_identical_to_sklearn(t: int, n: int) -> None:
    """Computed without importing scikit-learn, including the blocked sums above 1000 assets."""
    from sklearn.covariance import LedoitWolf

    x = np.random.default_rng(n).normal(0.0005, 0.02, size=(t, n)) @ np.diag(np.linspace(0.5, 2.0, n))
    expected = LedoitWolf(store_precision=False).fit(x).covariance_
    np.testing.assert_array_equal(riskfolio_adapter._ledoit_wolf(x), expected)
