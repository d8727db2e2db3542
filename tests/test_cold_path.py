"""The cold path: which heavy libraries each command imports (a behaviour, not a time), and
thread pools sized once on purpose.

Each command runs in a fresh interpreter with ``-X importtime``, whose report on stderr names
every module the process imported.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agents.wiring import THREAD_VARIABLES, configure_threads, resolve_threads

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("pandas", "numpy", "scipy", "sklearn", "sqlalchemy", "cvxpy", "clarabel", "riskfolio",
         "langchain_core", "langgraph")
SOLVERS_AND_LLM = {"cvxpy", "clarabel", "riskfolio", "sklearn", "scipy", "langchain_core", "langgraph"}
REQUEST = {"portfolio_id": "demo_diversified", "pricing_pack_id": "PP_2022-12-28", "policy_id": "quality_focused"}


def imported_modules(home: Path, *args: str, stdin: str | None = None) -> set[str]:
    """Every module a CLI command imports, from ``-X importtime``."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPROFILEIMPORTTIME"}
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "agents.cli", "--home", str(home), *args],
        cwd=ROOT, capture_output=True, text=True, input=stdin, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {m.group(1) for m in re.finditer(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)$", proc.stderr,
                                            flags=re.MULTILINE)}


def heavy_imports(home: Path, *args: str, stdin: str | None = None) -> set[str]:
    """The heavy top-level packages a CLI command imports."""
    return {name.split(".")[0] for name in imported_modules(home, *args, stdin=stdin)} & set(HEAVY)


def test_help_imports_no_heavy_library(seeded_home: Path) -> None:
    assert heavy_imports(seeded_home, "--help") == set()
    assert heavy_imports(seeded_home, "call", "--help") == set()


@pytest.mark.parametrize("listing", [["packs", "list"], ["portfolios", "list"], ["policies", "list"],
                                     ["users", "list"]])
def test_listings_import_the_store_only(seeded_home: Path, listing: list[str]) -> None:
    assert heavy_imports(seeded_home, *listing) == {"sqlalchemy"}


def test_capability_listing_imports_no_solver_and_no_llm_framework(seeded_home: Path) -> None:
    assert not heavy_imports(seeded_home, "capabilities") & SOLVERS_AND_LLM


def test_a_max_sharpe_call_imports_the_solver_but_not_riskfolio_sklearn_or_langchain(seeded_home: Path) -> None:
    modules = imported_modules(seeded_home, "call", "optimizer.propose_trades", "--input", "-",
                               stdin=json.dumps(REQUEST))
    used = {name.split(".")[0] for name in modules} & set(HEAVY)
    assert {"cvxpy", "clarabel"} <= used
    assert not used & {"riskfolio", "sklearn", "langchain_core", "langgraph"}
    # cvxpy's import loads scipy.stats for an atom never built here (services/allocation/lazy_cvxpy.py).
    assert "scipy.stats" not in modules and "scipy.sparse" in modules
    # Patterns are validated with jsonschema only when a pattern is loaded.
    assert "jsonschema" not in modules


def test_riskfolio_is_imported_for_the_methods_it_owns(seeded_home: Path) -> None:
    request = dict(REQUEST, policy={"method": "hrp"})
    used = heavy_imports(seeded_home, "call", "optimizer.propose_trades", "--input", "-", stdin=json.dumps(request))
    assert "riskfolio" in used and not used & {"langchain_core", "langgraph"}


def test_a_pattern_run_imports_langgraph(seeded_home: Path) -> None:
    used = heavy_imports(seeded_home, "run", "policy_rebalance", "--input",
                         str(ROOT / "patterns" / "examples" / "policy_rebalance.json"))
    assert "langgraph" in used


# --- threads -----------------------------------------------------------------------------------


def test_threads_resolve_from_option_then_environment_then_one(monkeypatch) -> None:
    monkeypatch.delenv("OPTIMIZER_THREADS", raising=False)
    assert resolve_threads() == 1
    monkeypatch.setenv("OPTIMIZER_THREADS", "3")
    assert resolve_threads() == 3
    assert resolve_threads(2) == 2
    monkeypatch.setenv("OPTIMIZER_THREADS", "many")
    with pytest.raises(ValueError, match="OPTIMIZER_THREADS='many'"):
        resolve_threads()
    with pytest.raises(ValueError, match="--threads='0'"):
        resolve_threads(0)


def test_configure_threads_sizes_loaded_pools_and_later_ones(monkeypatch) -> None:
    import numpy  # noqa: F401  (a BLAS pool to resize)
    from threadpoolctl import threadpool_info, threadpool_limits

    before = {p["filepath"]: p["num_threads"] for p in threadpool_info()}
    for name in THREAD_VARIABLES:
        monkeypatch.setenv(name, os.environ.get(name, ""))  # restored after the test
    try:
        assert configure_threads(1) == 1
        assert all(p["num_threads"] == 1 for p in threadpool_info() if p["user_api"] == "blas")
        assert all(os.environ[name] == "1" for name in THREAD_VARIABLES)
    finally:
        for info in threadpool_info():
            threadpool_limits(limits={info["prefix"]: before.get(info["filepath"], info["num_threads"])})


def test_the_cli_rejects_a_bad_thread_count(seeded_home: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "agents.cli", "--home", str(seeded_home), "--threads", "0",
                           "packs", "list"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert json.loads(proc.stderr)["details"] == {"field": "threads"}


def test_warm_up_loads_the_solver_and_estimators_before_the_first_request(seeded_home: Path) -> None:
    code = ("import sys\nfrom pathlib import Path\nfrom agents.agent import OptimizerAgent\n"
            f"agent = OptimizerAgent(home=Path({str(seeded_home)!r}))\n"
            "before = {m for m in ('cvxpy', 'clarabel') if m in sys.modules}\n"
            "agent.warm_up()\n"
            "print(sorted(before), sorted(m for m in ('cvxpy', 'clarabel', 'riskfolio', 'langgraph') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         timeout=300).stdout
    assert out.strip() == "[] ['clarabel', 'cvxpy']"


# --- garbage collection in a one-command process ------------------------------------------------


def _collector_after(home: Path, *args: str) -> list[object]:
    """``[gc enabled, objects frozen > 0]`` after ``main()`` ran ``args`` as a process's command."""
    code = ("import gc, sys\nfrom agents.cli import main\n"
            f"sys.argv = ['optimizer', '--home', {str(home)!r}, *{list(args)!r}]\n"
            "code = main()\n"
            "print(code, gc.isenabled(), gc.get_freeze_count() > 0)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         timeout=300).stdout
    return out.split()[-3:]


def test_collection_pauses_while_a_command_imports_and_resumes_once_the_agent_is_built(seeded_home: Path) -> None:
    # A listing builds no agent: collection stays paused until the process exits.
    assert _collector_after(seeded_home, "packs", "list") == ["0", "False", "False"]
    # Building the agent ends the import phase: collection resumes, the imported heap frozen.
    assert _collector_after(seeded_home, "capabilities") == ["0", "True", "True"]


def test_an_in_process_caller_keeps_its_collector_settings(seeded_home: Path, capsys) -> None:
    import gc

    from agents.cli import main

    frozen = gc.get_freeze_count()
    assert main(["--home", str(seeded_home), "capabilities"]) == 0
    assert "optimizer.propose_trades" in capsys.readouterr().out
    assert gc.isenabled() and gc.get_freeze_count() == frozen
