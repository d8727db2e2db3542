"""Measure our tax-aware rebalance against ``taxrebalance`` 0.2.0 on the cases of
``tests/test_taxrebalance_comparison.py``: realized tax, tracking error, gross turnover, solve time.

Run from the repository root: ``python -m benchmarks.bench_taxrebalance`` (about 20 s); it writes
``benchmarks/results/taxrebalance.json`` (``--json PATH`` for another file). The inputs, the policy
mapping and the evaluator are ``tests/taxrebalance_cases.py``; the test module asserts, this
script only reports. Times are wall-clock medians of ``--repeat`` calls, each after one untimed
warm-up call of the same side (imports, cvxpy's first use):

- ours: ``optimizer.propose_trades`` through a fresh ``OptimizerAgent`` each call (no result
  cache): validation, estimation from the pack's closes, the solve, whole-share rounding, the
  report. The pack is read from the store once (the store keeps it).
- theirs: ``taxrebalance.rebalance(..., method="tax_aware")`` with its per-scenario caches cleared
  before each call (its ``lru_cache`` of arrays and covariance root, and its per-thread compiled
  models), so each call builds its problems as it would for a new portfolio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "taxrebalance.json"


def _median_time(call: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Median wall time of ``repeat`` calls after one untimed warm-up, and the last result."""
    result = call()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def _clear_their_caches() -> None:
    from tax_rebalancing import optimizer

    optimizer._arrays.cache_clear()
    optimizer._covariance_root.cache_clear()
    optimizer._thread_models.__dict__.clear()


def _figures(cases: Any, scenario: Any, outcome: Any) -> dict[str, float]:
    return {"realized_tax": round(cases.realized_tax(scenario, outcome), 2),
            "tracking_error_pct": round(100 * cases.tracking_error(scenario, outcome), 4),
            "gross_turnover_pct": round(100 * cases.gross_turnover(scenario, outcome), 4),
            "fees": round(cases.fees(scenario, outcome), 2)}


def run_case(cases: Any, name: str, scenario: Any, seed: int, directory: Path, repeat: int) -> dict[str, Any]:
    """Both sides on one scenario: figures by the evaluator, times, and each side's own report."""
    from agents.agent import OptimizerAgent
    from agents.wiring import open_store

    store = open_store(directory / "home")
    pack_id, portfolio_id = f"PP_TR_{name.upper()}", f"tr_{name}"
    cases.import_case(store, scenario, directory / name, pack_id=pack_id, portfolio_id=portfolio_id, seed=seed)
    request = cases.request(scenario, pack_id=pack_id, portfolio_id=portfolio_id)
    ours_time, ours = _median_time(
        lambda: OptimizerAgent(store, home=directory / "home").execute("optimizer.propose_trades", request), repeat)

    def theirs_call() -> dict[str, Any]:
        _clear_their_caches()
        return cases.their_decision(scenario)

    theirs_time, theirs = _median_time(theirs_call, repeat)
    store.close()
    hold = cases.Outcome(np.zeros(len(scenario.tickers)), ())
    our_outcome, their_outcome = cases.our_outcome(scenario, ours), cases.their_outcome(scenario, theirs)
    return {
        "tickers": len(scenario.tickers), "lots": len(scenario.lots), "equity": round(cases.equity(scenario), 2),
        "limits": {"max_tracking_error_pct": 100 * scenario.max_tracking_error,
                   "max_gross_turnover_pct": None if scenario.max_turnover_fraction is None
                   else 100 * scenario.max_turnover_fraction},
        "tax_aversion": cases.tax_aversion(scenario),
        "tracking_error_before_pct": round(100 * cases.tracking_error(scenario, hold), 4),
        "allowances": {"tax": round(cases.one_share_tax(scenario), 2),
                       "tracking_error_pct": round(100 * cases.one_share_tracking_error(scenario), 4)},
        "ours": {**_figures(cases, scenario, our_outcome), "seconds": round(ours_time, 4),
                 "trades": ours["trade_count"], "lots_sold": len(ours["tax"]["lots_sold"]),
                 "reported_estimated_tax": ours["tax"]["totals"]["estimated_tax"],
                 "constraints_met": ours["constraints_met"]},
        "theirs": {**_figures(cases, scenario, their_outcome), "seconds": round(theirs_time, 4),
                   "trades": len(theirs["trades"]), "feasible": theirs["feasible"],
                   "explored_patterns": theirs["explored_patterns"], "search_limited": theirs["search_limited"],
                   # Its own objective's tax: losses at loss_utilization (0.8) of their value.
                   "reported_estimated_tax_current": theirs["estimated_tax_current"],
                   "reported_tracking_error_pct": round(100 * theirs["tracking_error"], 4)},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Our tax-aware rebalance against taxrebalance 0.2.0: realized tax, tracking error, "
                    "gross turnover and solve time on its published example and a synthetic 50 x 150 case.",
        epilog="example: python -m benchmarks.bench_taxrebalance --repeat 5")
    parser.add_argument("--repeat", type=int, default=5, help="timed calls per side and case (default 5)")
    parser.add_argument("--json", type=Path, default=DEFAULT_OUT, help=f"output file (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from tax_rebalancing.scenarios import demonstration

    from tests import taxrebalance_cases as cases

    os.environ.setdefault("OPTIMIZER_LOG_LEVEL", "WARNING")
    out: dict[str, Any] = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "load_before": list(os.getloadavg())},
        "versions": {p: version(p) for p in ("taxrebalance", "cvxpy", "clarabel", "numpy")},
        "repeat": args.repeat,
        "cases": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, scenario, seed in (("published", demonstration(), 11), ("synthetic", cases.synthetic(), 12)):
            out["cases"][name] = run_case(cases, name, scenario, seed, Path(tmp) / name, args.repeat)
    out["machine"]["load_after"] = list(os.getloadavg())
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
    for name, case in out["cases"].items():
        ours, theirs = case["ours"], case["theirs"]
        print(f"{name}: tax ours {ours['realized_tax']:,.2f} theirs {theirs['realized_tax']:,.2f}; "
              f"TE ours {ours['tracking_error_pct']}% theirs {theirs['tracking_error_pct']}%; "
              f"turnover ours {ours['gross_turnover_pct']}% theirs {theirs['gross_turnover_pct']}%; "
              f"time ours {ours['seconds']} s theirs {theirs['seconds']} s")
    print(f"written: {args.json}")
    # The one check, as in the other benchmarks: every limit held in our proposals.
    return 0 if all(case["ours"]["constraints_met"] for case in out["cases"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
