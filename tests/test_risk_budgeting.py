"""risk_budgeting and herc against riskfolio-lib on the same covariance and returns, and the
proposals they make under the policy's limits.

riskfolio is imported here directly (only services/estimation/riskfolio_adapter.py may import it in
the product): its ``rp_optimization`` solves the same log-barrier problem with its own code, its
``HCPortfolio(model="HERC")`` is the reference HERC.
"""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from services.allocation.optimization import AllocationProblem, SectorCap, risk_contributions, solve
from services.allocation.rebalance import covariance_factor
from services.data.importers import read_pack
from services.data.policy import parse_overrides, resolve_policy
from services.data.seeds import load_constraint_defaults, seed_root
from services.errors import InfeasibleError, InputError
from services.estimation.estimators import daily_returns, estimate_for_policy

PACK = "PP_2022-12-28"
NAMES = ("AAPL", "CVX", "JNJ", "JPM", "KO", "LLY", "MSFT", "PFE", "UNH", "WMT", "XOM", "HD")
DAYS = 252


@pytest.fixture(scope="module")
def pack():
    directory = seed_root() / "packs" / PACK
    return read_pack(PACK, directory / "prices.csv", directory / "securities.csv")


@pytest.fixture(scope="module")
def market(pack) -> dict:
    returns = daily_returns(pack, list(NAMES), 756)
    return {"returns": returns, "cov": np.cov(returns.to_numpy(), rowvar=False) * DAYS}


BUDGETS = np.array([3.0, 1.0, 2.0, 1.0, 1.0, 2.0, 3.0, 1.0, 1.0, 2.0, 1.0, 2.0])


def _problem(m, budget, *, cap=1.0, sectors=(), turnover=None) -> AllocationProblem:
    n = len(NAMES)
    return AllocationProblem(
        symbols=NAMES, objective="risk_budgeting", mu=np.zeros(n), factor=covariance_factor(m["cov"]),
        current=np.full(n, 1.0 / n), invested=1.0, caps=np.full(n, cap), sectors=sectors,
        max_turnover=turnover, risk_budget=budget / budget.sum(),
    )


def _riskfolio_rp(m, budget, *, cap=None, sectors=()) -> np.ndarray:
    import riskfolio as rp

    n = len(NAMES)
    port = rp.Portfolio(returns=m["returns"])
    port.mu = pd.DataFrame([np.zeros(n)], columns=m["returns"].columns)
    port.cov = pd.DataFrame(m["cov"], index=m["returns"].columns, columns=m["returns"].columns)
    rows, bounds = [], []
    if cap is not None:
        rows += list(np.eye(n))
        bounds += [cap] * n
    for s in sectors:
        row = np.zeros(n)
        row[s.members] = 1.0
        rows.append(row)
        bounds.append(s.limit)
    if rows:
        port.ainequality = np.array(rows)
        port.binequality = np.array(bounds).reshape(-1, 1)
    b = (budget / budget.sum()).reshape(-1, 1)
    weights = port.rp_optimization(model="Classic", rm="MV", rf=0, b=b, hist=True)
    return weights.to_numpy().ravel()


@pytest.mark.parametrize("budget", [np.ones(len(NAMES)), BUDGETS])
def test_risk_budgets_match_riskfolio_and_hold_exactly(market, budget) -> None:
    p = _problem(market, budget)
    result = solve(p)
    assert result.objective == "risk_budgeting"
    np.testing.assert_allclose(result.weights, _riskfolio_rp(market, budget), atol=1e-4)
    # Without a binding limit the contributions w_i(Σw)_i / w'Σw are the budgets themselves.
    np.testing.assert_allclose(risk_contributions(p, result.weights), budget / budget.sum(), atol=1e-6)
    # Computed here from the covariance itself, not from the engine's factor.
    w = result.weights
    np.testing.assert_allclose(w * (market["cov"] @ w) / (w @ market["cov"] @ w), budget / budget.sum(), atol=1e-6)


def test_risk_budgets_under_caps_and_sectors_match_riskfolio(market) -> None:
    # Richard–Roncalli constrained risk budgeting: the same homogenized problem in both.
    sectors = (SectorCap("Energy", np.array([1, 10]), 0.08), SectorCap("Health Care", np.array([2, 5, 7, 8]), 0.3))
    p = _problem(market, BUDGETS, cap=0.14, sectors=sectors)
    result = solve(p)
    direct = _riskfolio_rp(market, BUDGETS, cap=0.14, sectors=sectors)
    np.testing.assert_allclose(result.weights, direct, atol=1e-4)
    assert result.weights.max() <= 0.14 + 1e-9
    assert result.weights[[1, 10]].sum() <= 0.08 + 1e-9
    assert set(result.binding) >= {"sector_limit:Energy"}


def test_a_binding_limit_moves_risk_from_its_names_to_the_others(market) -> None:
    sectors = (SectorCap("Energy", np.array([1, 10]), 0.05),)
    p = _problem(market, BUDGETS, sectors=sectors)
    rc = risk_contributions(p, solve(p).weights)
    share = BUDGETS / BUDGETS.sum()
    assert rc[[1, 10]].sum() < share[[1, 10]].sum() - 0.01
    free = [i for i in range(len(NAMES)) if i not in (1, 10)]
    assert (rc[free] > share[free]).all()
    np.testing.assert_allclose(solve(p).weights, _riskfolio_rp(market, BUDGETS, sectors=sectors), atol=1e-4)


def test_turnover_limit_is_in_the_same_problem(market) -> None:
    p = _problem(market, BUDGETS, turnover=0.1)
    w = solve(p).weights
    assert np.abs(w - p.current).sum() <= 0.1 + 1e-7
    assert np.abs(solve(_problem(market, BUDGETS)).weights - p.current).sum() > 0.1


def _policy(**fields):
    return resolve_policy(load_constraint_defaults(), None, parse_overrides(fields), policy_id=None)


def test_herc_target_is_riskfolio_herc_on_the_same_estimate(pack) -> None:
    import riskfolio as rp

    from services.allocation.rebalance import Holdings, propose_trades
    from services.data.seeds import load_benchmarks

    positions = {s: 100 for s in NAMES}
    policy = _policy(method="herc")
    result = propose_trades(pack, Holdings(None, positions, Decimal(0)), policy, {}, load_benchmarks())
    est = estimate_for_policy(pack, sorted(NAMES), policy)
    port = rp.HCPortfolio(returns=est.returns)
    cov = pd.DataFrame(est.cov, index=est.returns.columns, columns=est.returns.columns)
    expected = port.optimization(model="HERC", codependence="pearson", rm="MV", rf=0, linkage="ward",
                                 method_cov="custom_cov", custom_cov=cov, leaf_order=True)
    optimal = {t.symbol: t.optimal_weight_pct / 100 for t in result.trades}
    for sym in NAMES:
        assert optimal[sym] == pytest.approx(float(expected.loc[sym, "weights"]), abs=1e-4)
    assert result.method == "herc" and result.warnings == []


def test_herc_under_a_cap_says_how_the_limits_were_applied(pack) -> None:
    from services.allocation.rebalance import Holdings, propose_trades
    from services.data.seeds import load_benchmarks

    positions = {s: 100 for s in NAMES}
    result = propose_trades(pack, Holdings(None, positions, Decimal(0)), _policy(method="herc", max_single_position_pct=10.0),
                            {}, load_benchmarks())
    assert max(t.target_weight_pct for t in result.trades) <= 10.0
    assert any(w.startswith("herc is a hierarchical allocation, so the limits cannot join it") for w in result.warnings)


def _propose(pack, **fields):
    from services.allocation.rebalance import Holdings, propose_trades
    from services.data.seeds import load_benchmarks

    positions = {s: 1000 for s in NAMES}
    return propose_trades(pack, Holdings(None, positions, Decimal(0)), _policy(method="risk_budgeting", **fields), {},
                          load_benchmarks())


def test_proposal_reports_budgets_and_contributions(pack) -> None:
    # No costs: with them, the largest purchase is cut to pay them from cash (AAPL by 0.08 points).
    result = _propose(pack, risk_budget={s: 2.0 if s in ("AAPL", "MSFT") else 1.0 for s in NAMES},
                      commission_per_trade="0", market_impact_bps=0.0)
    info = result.risk_contributions
    assert info is not None and info.symbols == sorted(NAMES)
    assert info.budget_pct[info.symbols.index("AAPL")] == pytest.approx(200 / 14, abs=1e-4)
    np.testing.assert_allclose(info.optimal_pct, info.budget_pct, atol=1e-3)
    # Whole shares of a $2.4M portfolio (a share is at most 0.03% of it) move contributions by
    # hundredths of a point.
    np.testing.assert_allclose(info.after_pct, info.budget_pct, atol=0.03)
    assert sum(info.after_pct) == pytest.approx(100, abs=1e-3)


def test_sector_budgets_split_equally_within_the_sector(pack) -> None:
    sectors = {pack.security(s).sector for s in NAMES}
    budget = {sector: (3.0 if sector == "Health Care" else 1.0) for sector in sectors}
    info = _propose(pack, risk_budget=budget).risk_contributions
    assert info is not None
    health = [s for s in NAMES if pack.security(s).sector == "Health Care"]
    total = 3.0 + (len(sectors) - 1)
    by_symbol = dict(zip(info.symbols, info.optimal_pct, strict=True))
    assert sum(by_symbol[s] for s in health) == pytest.approx(300 / total, abs=1e-3)
    for s in health:
        assert by_symbol[s] == pytest.approx(300 / total / len(health), abs=1e-3)


def test_names_without_a_budget_are_not_held(pack) -> None:
    result = _propose(pack, risk_budget={s: 1.0 for s in NAMES if s != "XOM"})
    xom = next(t for t in result.trades if t.symbol == "XOM")
    assert xom.target_shares == 0 and xom.action == "SELL"
    assert "risk_budget: no budget for XOM; they get no risk and are not held" in result.warnings


def test_budgets_only_on_names_that_may_not_be_held_are_infeasible(pack) -> None:
    # Energy at 0% leaves the only budgeted names (CVX, XOM) capped at 0.
    with pytest.raises(InfeasibleError) as err:
        _propose(pack, risk_budget={"CVX": 1.0, "XOM": 1.0}, sector_limits_pct={"Energy": 0.0})
    assert "no name with a positive risk_budget may be held" in err.value.message
    assert err.value.details["budgeted"] == ["CVX", "XOM"]


def test_unknown_budget_keys_are_an_input_error(pack) -> None:
    with pytest.raises(InputError) as err:
        _propose(pack, risk_budget={"AAPL": 1.0, "Enrgy": 1.0})
    assert "'Enrgy' is neither a symbol nor a sector of pack PP_2022-12-28" in err.value.message
    assert err.value.details["invalid"] == ["Enrgy"]


def test_budget_field_under_another_method_is_ignored_with_a_warning(pack) -> None:
    from services.allocation.rebalance import Holdings, propose_trades
    from services.data.seeds import load_benchmarks

    result = propose_trades(pack, Holdings(None, {s: 100 for s in NAMES}, Decimal(0)),
                            _policy(method="min_variance", risk_budget={"AAPL": 1.0}), {}, load_benchmarks())
    assert "risk_budget is set but only risk_budgeting uses it; ignored under method min_variance" in result.warnings
    assert result.risk_contributions is None and "risk_contributions" not in result.model_dump()
