"""cvxpy imported with scipy.stats deferred: the same cvxpy, the real scipy.stats once used.

Each check runs in a fresh interpreter, since what matters is what the first import of cvxpy in a
process does to ``sys.modules``.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(code: str) -> list[str]:
    """The lines ``code`` prints in a fresh interpreter started at the repository root."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.split()


def test_cvxpy_imports_without_scipy_stats_and_the_stand_in_is_gone() -> None:
    out = run("""
        import sys
        from services.allocation.lazy_cvxpy import import_cvxpy
        cp = import_cvxpy()
        import scipy
        print(cp is sys.modules["cvxpy"], "scipy.stats" in sys.modules, "stats" in vars(scipy))
        import scipy.stats
        print(type(scipy.stats.norm).__name__, getattr(scipy.stats, "__optimizer_stand_in__", False))
    """)
    assert out == ["True", "False", "False", "norm_gen", "False"]


def test_the_deferred_attribute_loads_the_real_function_when_used() -> None:
    # D(X||Y) for diagonal X = diag(0.3, 0.7), Y = diag(0.5, 0.5): sum x ln(x / y), by hand.
    expected = 0.3 * math.log(0.3 / 0.5) + 0.7 * math.log(0.7 / 0.5)
    out = run("""
        import sys
        import numpy as np
        from services.allocation.lazy_cvxpy import import_cvxpy
        cp = import_cvxpy()
        atom_module = sys.modules["cvxpy.atoms.quantum_rel_entr"]
        print("scipy.stats" in sys.modules, atom_module.entropy([0.5, 0.5]), "scipy.stats" in sys.modules)
        x, y = cp.Constant(np.diag([0.3, 0.7])), cp.Constant(np.diag([0.5, 0.5]))
        print(cp.quantum_rel_entr(x, y).value)
    """)
    assert out[:3] == ["False", repr(math.log(2)), "True"]
    assert math.isclose(float(out[3]), expected, rel_tol=1e-9)


def test_a_process_that_loaded_scipy_stats_imports_cvxpy_as_usual() -> None:
    out = run("""
        import sys
        import scipy.stats
        from services.allocation.lazy_cvxpy import import_cvxpy
        import_cvxpy()
        print(sys.modules["cvxpy.atoms.quantum_rel_entr"].entropy is scipy.stats.entropy)
    """)
    assert out == ["True"]


def test_solves_are_unchanged_by_the_deferred_import() -> None:
    # The same two-asset minimum-variance problem, solved after each way of importing cvxpy.
    code = """
        import json
        import numpy as np
        {prelude}
        from services.allocation.optimization import AllocationProblem, solve
        factor = np.array([[0.2, 0.0], [0.05, 0.1]])
        result = solve(AllocationProblem(symbols=("A", "B"), objective="min_variance", mu=np.zeros(2),
                                         factor=factor, current=np.zeros(2), invested=1.0, caps=np.ones(2)))
        print(json.dumps(result.weights.tolist()))
    """
    deferred = run(code.format(prelude="pass"))
    usual = run(code.format(prelude="import scipy.stats"))
    assert deferred == usual
    # Σ = FᵀF = [[0.0425, 0.005], [0.005, 0.01]]; w_A = (σ_B² - σ_AB) / (σ_A² + σ_B² - 2σ_AB) = 0.005 / 0.0425.
    weights = json.loads(" ".join(deferred))
    assert math.isclose(weights[0], 0.005 / 0.0425, abs_tol=1e-6) and math.isclose(sum(weights), 1.0, abs_tol=1e-9)
