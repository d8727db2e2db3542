"""Failing fast: common infeasibilities are found by arithmetic before any solver is built, and a
solve that stops short is retried once, then reported with its status and iterations."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from services.allocation import optimization
from services.allocation.optimization import AllocationProblem, SectorCap, solve, turnover_floor
from services.errors import InfeasibleError, SolverError

ROOT = Path(__file__).resolve().parents[1]


def _problem(**overrides) -> AllocationProblem:
    rng = np.random.default_rng(3)
    n = 6
    g = rng.normal(size=(n, n)) * 0.1
    fields = dict(symbols=tuple(f"S{i}" for i in range(n)), objective="min_variance",
                  mu=np.linspace(0.03, 0.12, n), factor=g, current=np.array([0.5, 0.3, 0.2, 0, 0, 0]),
                  invested=1.0, caps=np.full(n, 0.4))
    fields.update(overrides)
    return AllocationProblem(**fields)


def test_turnover_floor_by_hand() -> None:
    # 0.5 in S0 over its 0.4 cap: sell 0.1 and buy it back elsewhere -> 0.2 turnover.
    assert turnover_floor(_problem()) == pytest.approx(0.2)
    # With 10% forced sales outside the problem, rebuying their proceeds is exempt:
    # current sums to 0.9, so 0.1 net must be bought on top of the 0.1 swap -> 0.3 - 0.1.
    p = _problem(current=np.array([0.5, 0.3, 0.1, 0, 0, 0]), forced_weight=0.1)
    assert turnover_floor(p) == pytest.approx(0.2)
    # A sector {S1, S2} capped at 0.3 holds 0.5: 0.2 more must be sold (and bought elsewhere).
    p = _problem(sectors=(SectorCap("X", np.array([1, 2]), 0.3),))
    assert turnover_floor(p) == pytest.approx(0.6)


@pytest.mark.parametrize("sectors", [(), (SectorCap("X", np.array([1, 2]), 0.3),)])
def test_turnover_floor_is_a_lower_bound_of_the_exact_minimum(sectors) -> None:
    p = _problem(sectors=sectors)
    exact = optimization._min_turnover(p)
    assert exact is not None and turnover_floor(p) <= exact + 1e-7
    if not sectors:
        assert turnover_floor(p) == pytest.approx(exact, abs=1e-7)  # exact without sector caps


def test_turnover_floor_conflict_is_found_without_a_solver() -> None:
    """The check runs before cvxpy is even imported (in a fresh interpreter)."""
    code = (
        "import sys, numpy as np\n"
        "from services.allocation.optimization import AllocationProblem, solve\n"
        "from services.errors import InfeasibleError\n"
        "p = AllocationProblem(symbols=('A','B','C'), objective='max_sharpe', mu=np.array([.1,.1,.1]),\n"
        "    factor=np.eye(3)*.2, current=np.array([.8,.2,0]), invested=1.0, caps=np.full(3,.5), max_turnover=.2)\n"
        "try:\n    solve(p)\nexcept InfeasibleError as e:\n    print(e.details['smallest_relaxation'])\n"
        "print('cvxpy' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["{'max_turnover_pct':", "60.0}", "False"]  # sell 0.3, buy 0.3


def test_a_solve_stopped_by_the_iteration_limit_is_retried(monkeypatch) -> None:
    monkeypatch.setitem(optimization.SOLVER_SETTINGS, "max_iter", 2)
    allocation = solve(_problem(objective="max_sharpe"))
    assert allocation.status == "optimal"
    assert allocation.weights.sum() == pytest.approx(1.0, abs=1e-6)


def test_a_retry_that_stops_short_names_status_and_iterations(monkeypatch) -> None:
    monkeypatch.setitem(optimization.SOLVER_SETTINGS, "max_iter", 2)
    monkeypatch.setitem(optimization.RETRY_SETTINGS, "max_iter", 3)
    with pytest.raises(SolverError) as err:
        solve(_problem(objective="min_variance"))
    assert err.value.details == {"solver": "CLARABEL", "status": "user_limit", "iterations": 3,
                                 "first_status": "user_limit", "first_iterations": 2}
    assert "after 3 iterations" in err.value.message


def test_max_sharpe_without_a_return_above_the_risk_free_rate_falls_back_to_min_variance() -> None:
    allocation = solve(_problem(objective="max_sharpe", risk_free_rate=0.5))
    assert allocation.objective == "min_variance" and allocation.status == "optimal"
    assert any("fell back to min_variance" in w for w in allocation.warnings)


def test_infeasible_caps_are_named_before_solving() -> None:
    with pytest.raises(InfeasibleError) as err:
        solve(_problem(caps=np.full(6, 0.1)))
    assert err.value.details["smallest_relaxation"]["max_single_position_pct"] == pytest.approx(16.67)
