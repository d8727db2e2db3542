"""black_litterman with bl_objective min_variance: the least variance whose posterior expected
return reaches bl_min_return_pct, cross-checked against a direct cvxpy model on the same inputs."""

from __future__ import annotations

from decimal import Decimal

import cvxpy as cp
import numpy as np
import pytest

from services.allocation.rebalance import Holdings, propose_trades
from services.data.policy import Policy
from services.data.seeds import load_benchmarks, load_seed_pack
from services.errors import InfeasibleError, InputError
from services.estimation.estimators import estimate_for_policy

PACK = "PP_2022-12-28"
HOLDINGS = Holdings("p", {"AAPL": 300, "JNJ": 200, "XOM": 250, "KO": 400, "MSFT": 100, "JPM": 150}, Decimal("20000"))
VIEWS = [{"asset": "AAPL", "return_pct": 14.0, "confidence": 0.6},
         {"asset": "XOM", "versus": "KO", "return_pct": 3.0, "confidence": 0.5}]


@pytest.fixture(scope="module")
def pack():
    return load_seed_pack(PACK)


def _policy(**fields) -> Policy:
    return Policy(method="black_litterman", bl_objective="min_variance", benchmark="DEMO_20",
                  market_risk_aversion=2.5, views=VIEWS, max_single_position_pct=35.0, **fields)


def _direct(pack, proposal, floor: float, cap: float) -> dict[str, float]:
    """min wᵀΣw s.t. μ_postᵀw ≥ floor, Σw = 1, 0 ≤ w ≤ cap, on the portfolio's own covariance."""
    symbols = sorted(HOLDINGS.positions)
    cov = estimate_for_policy(pack, symbols, Policy()).cov
    post = dict(zip(proposal.black_litterman.symbols, proposal.black_litterman.posterior_returns_pct, strict=True))
    mu = np.array([post[s] / 100 for s in symbols])
    w = cp.Variable(len(symbols), nonneg=True)
    cp.Problem(cp.Minimize(cp.quad_form(w, cp.psd_wrap(cov))),
               [cp.sum(w) == 1, w <= cap, mu @ w >= floor]).solve(solver=cp.CLARABEL)
    return dict(zip(symbols, w.value, strict=True))


@pytest.mark.parametrize("floor_pct", [15.5, 16.3])
def test_the_least_variance_reaching_the_floor_matches_a_direct_model(pack, floor_pct) -> None:
    proposal = propose_trades(pack, HOLDINGS, _policy(bl_min_return_pct=floor_pct), {}, load_benchmarks())
    assert proposal.method == "black_litterman"
    optimal = {t.symbol: t.optimal_weight_pct / 100 for t in proposal.trades}
    # The floor the optimal weights were solved with: the policy's, or raised (and said so) when
    # whole shares and costs fell short of it.
    raised = [w for w in proposal.warnings if w.startswith("bl_min_return_pct: whole shares")]
    solved = float(raised[0].split("raised to ")[1].split("%")[0]) if raised else floor_pct
    assert solved >= floor_pct
    direct = _direct(pack, proposal, solved / 100, 0.35)
    for s, w in direct.items():
        assert optimal.get(s, 0.0) == pytest.approx(w, abs=1e-4)
    assert "bl_min_return_pct" in proposal.binding_constraints
    # Whole shares and costs keep the floor: the solver's floor is raised by any shortfall.
    check = next(c for c in proposal.constraints if c.constraint == "bl_min_return_pct")
    assert check.met and proposal.after.expected_return_pct >= floor_pct and proposal.constraints_met


def test_a_floor_below_the_minimum_variance_return_does_not_bind(pack) -> None:
    plain = propose_trades(pack, HOLDINGS, Policy(method="min_variance", max_single_position_pct=35.0), {}, {})
    low = propose_trades(pack, HOLDINGS, _policy(bl_min_return_pct=-50.0), {}, load_benchmarks())
    assert [t.optimal_weight_pct for t in low.trades] == pytest.approx([t.optimal_weight_pct for t in plain.trades],
                                                                     abs=1e-5)
    assert "bl_min_return_pct" not in low.binding_constraints


def test_an_unreachable_floor_names_the_highest_reachable(pack) -> None:
    with pytest.raises(InfeasibleError) as err:
        propose_trades(pack, HOLDINGS, _policy(bl_min_return_pct=60.0), {}, load_benchmarks())
    relaxed = err.value.details["smallest_relaxation"]["bl_min_return_pct"]
    assert "bl_min_return_pct" in err.value.details["conflicts"] and 0 < relaxed < 60
    assert "highest posterior expected return reachable" in err.value.message
    # At the highest reachable return exactly, whole shares and costs fall short: the error says
    # so and names what the rounded portfolio reached, which holds.
    with pytest.raises(InfeasibleError) as err:
        propose_trades(pack, HOLDINGS, _policy(bl_min_return_pct=relaxed), {}, load_benchmarks())
    assert err.value.details["conflicts"] == ["bl_min_return_pct", "whole shares", "costs"]
    relaxed = err.value.details["smallest_relaxation"]["bl_min_return_pct"]
    ok = propose_trades(pack, HOLDINGS, _policy(bl_min_return_pct=relaxed), {}, load_benchmarks())
    check = next(c for c in ok.constraints if c.constraint == "bl_min_return_pct")
    assert ok.constraints_met and check.met and ok.after.expected_return_pct >= relaxed


def test_min_variance_needs_a_floor(pack) -> None:
    with pytest.raises(InputError) as err:
        propose_trades(pack, HOLDINGS, _policy(), {}, load_benchmarks())
    assert err.value.details["field"] == "policy.bl_min_return_pct"


def test_a_floor_under_another_objective_is_ignored_with_a_warning(pack) -> None:
    policy = _policy(bl_min_return_pct=10.0).model_copy(update={"bl_objective": "max_sharpe"})
    proposal = propose_trades(pack, HOLDINGS, policy, {}, load_benchmarks())
    assert any("bl_min_return_pct is set but only bl_objective min_variance uses it" in w for w in proposal.warnings)
