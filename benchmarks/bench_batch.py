"""Benchmark ``optimizer batch``: many portfolios on a synthetic 500-asset pack, 1 vs 2 workers.

Run ``python -m benchmarks.bench_batch --help`` for the flags. Setup (not timed): the 500-asset
pack of ``bench_propose_trades.build_universe`` is imported into a fresh store, and ``--count``
propose_trades requests are written as JSON Lines: inline portfolios of 40-60 names drawn from
the pack (seeded), each worth $1M-$10M in whole shares with 1% cash, under one policy
(``universe: holdings``, max Sharpe, 10% position cap, 35% sector cap, 20% turnover limit,
Ledoit-Wolf). With ``--models K`` the portfolios follow K model portfolios (the same names,
different amounts), so estimation is shared; by default every portfolio has its own names,
the worst case for sharing.

Timed: the whole ``optimizer batch`` command, as a user runs it (a fresh process: imports,
starting the LocalCluster, the work, writing the file, stopping the cluster), once per worker
count. Also reported, from the command's structured logs: the span from the first result to
the last (the steady throughput) and the median time a worker spent on one portfolio.

Checked: every line of the output is a result or an error; ``--verify`` results, picked at
random, are recomputed one at a time in this process (``OptimizerAgent.execute``) and must be
byte-identical. The machine's load (``/proc/loadavg``) is recorded before and after each run:
on a shared machine the figures are only as good as that load.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.bench_propose_trades import build_universe, machine

SEED = 20261126
ASSETS = 500
POLICY = {
    "universe": "holdings",
    "method": "max_sharpe",
    "max_single_position_pct": 10.0,
    "max_sector_pct": 35.0,
    "max_turnover_pct": 20.0,
    "covariance_estimator": "ledoit",
}
ROOT = Path(__file__).resolve().parent.parent


def policy_for(universe: str, solve: str | None) -> dict[str, Any]:
    """The benchmark's policy over ``universe`` ('holdings' or 'pack'), with ``solve`` if given."""
    return {**POLICY, "universe": universe, **({"solve": solve} if solve else {})}


def requests(pack: Any, count: int, models: int | None, policy: dict[str, Any] = POLICY) -> list[dict[str, Any]]:
    """``count`` inline-portfolio requests on ``pack`` (seeded); see the module docstring."""
    rng = np.random.default_rng(SEED)
    prices = pack.last_prices()
    symbols = list(pack.symbols)
    sets = [sorted(rng.choice(len(symbols), int(rng.integers(40, 61)), replace=False))
            for _ in range(models or count)]
    out = []
    for k in range(count):
        names = sets[k % len(sets)]
        weights = rng.lognormal(0.0, 0.5, len(names))
        weights = np.minimum(weights / weights.sum(), 0.09)
        value = float(rng.uniform(1e6, 1e7)) * 0.99
        positions = [{"symbol": symbols[i], "shares": int(value * w / weights.sum() / prices[symbols[i]])}
                     for i, w in zip(names, weights, strict=True)]
        out.append({"portfolio": {"positions": positions, "cash": str(Decimal(value / 99).quantize(Decimal("0.01")))},
                    "pricing_pack_id": pack.id, "policy": policy})
    return out


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def run_batch(home: Path, inp: Path, out: Path, workers: int) -> dict[str, Any]:
    """Run the command once; wall time, load, and what its logs say about the work."""
    env = {**os.environ, "OPTIMIZER_HOME": str(home), "OPTIMIZER_LOG_LEVEL": "INFO", "OPTIMIZER_LOG_FORMAT": "json"}
    load_before = loadavg()
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "agents.cli", "batch", "--input", str(inp), "--output", str(out),
                           "--workers", str(workers)], cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"optimizer batch failed ({done.returncode}): {done.stderr[-2000:]}")
    calls = []
    for line in done.stderr.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == "capability_call" and event.get("pack"):
            calls.append(event)
    stamps = sorted(datetime.fromisoformat(c["timestamp"].replace("Z", "+00:00")).timestamp() for c in calls)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    errors: dict[str, int] = {}
    for line in lines:
        if "error" in line:
            errors[line["error"]["code"]] = errors.get(line["error"]["code"], 0) + 1
    span = stamps[-1] - stamps[0] if len(stamps) > 1 else None
    return {
        "workers": workers,
        "count": len(lines),
        "wall_s": round(wall, 2),
        "per_s": round(len(lines) / wall, 2),
        "first_to_last_result_s": None if span is None else round(span, 2),
        "steady_per_s": None if not span else round((len(stamps) - 1) / span, 2),
        "worker_median_ms": round(statistics.median(c["duration_ms"] for c in calls), 1) if calls else None,
        "errors": errors,
        "load_before": load_before,
        "load_after": loadavg(),
        "summary": done.stdout.strip(),
    }


def verify(home: Path, reqs: list[dict[str, Any]], out: Path, k: int) -> dict[str, Any]:
    """Recompute ``k`` random lines one at a time in this process; count byte-identical ones."""
    os.environ["OPTIMIZER_HOME"] = str(home)
    from agents.agent import OptimizerAgent
    from agents.logging import configure_logging
    from capabilities.runner import canonical_json
    from services.errors import OptimizerError

    configure_logging(level="WARNING")
    agent = OptimizerAgent()
    lines = out.read_text().splitlines()
    picked = sorted(random.Random(SEED).sample(range(len(lines)), min(k, len(lines))))
    same = 0
    for i in picked:
        line = json.loads(lines[i])
        try:
            single = canonical_json(OptimizerAgent(agent.store).execute("optimizer.propose_trades", reqs[i]))
        except OptimizerError as err:
            single = canonical_json(err.to_dict())
        same += canonical_json(line.get("result", line.get("error"))) == single
    return {"checked": len(picked), "byte_identical": same}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_batch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1000, help="portfolios (default 1000)")
    parser.add_argument("--workers", default="2,1", help="worker counts to run, in order (default 2,1)")
    parser.add_argument("--models", type=int, default=None, help="draw the portfolios from K model portfolios")
    parser.add_argument("--verify", type=int, default=20, help="results recomputed one at a time (default 20)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument("--universe", choices=("holdings", "pack"), default="holdings",
                        help="what each portfolio may hold: its own names (default) or the whole 500-asset pack")
    parser.add_argument("--solve", choices=("exact", "fast", "auto"), default=None,
                        help="the policy's solve mode (default: the engine's auto)")
    args = parser.parse_args(argv)
    policy = policy_for(args.universe, args.solve)

    with tempfile.TemporaryDirectory(prefix="bench_batch_") as tmp:
        home = Path(tmp) / "home"
        os.environ["OPTIMIZER_HOME"] = str(home)
        from agents.wiring import open_store

        universe = build_universe(ASSETS)
        store = open_store(home)
        store.put_pack(universe.pack)
        store.close()
        reqs = requests(universe.pack, args.count, args.models, policy)
        inp = Path(tmp) / "requests.jsonl"
        inp.write_text("".join(json.dumps(r) + "\n" for r in reqs))
        runs, checks = [], []
        for workers in (int(w) for w in args.workers.split(",")):
            out = Path(tmp) / f"results-{workers}.jsonl"
            print(f"running {args.count} portfolios on {workers} worker(s) ...", file=sys.stderr, flush=True)
            runs.append(run_batch(home, inp, out, workers))
            print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
            if args.verify:
                checks.append({"workers": workers, **verify(home, reqs, out, args.verify)})
        report = {"benchmark": "bench_batch", "assets": ASSETS, "count": args.count, "models": args.models,
                  "policy": policy, "runs": runs, "verify": checks, "machine": machine()}
    print(f"{'workers':>7} {'count':>6} {'wall s':>7} {'per s':>6} {'steady/s':>8} {'worker ms':>9} "
          f"{'errors':>6} {'load before':>16}")
    for r in runs:
        print(f"{r['workers']:>7} {r['count']:>6} {r['wall_s']:>7} {r['per_s']:>6} {r['steady_per_s']!s:>8} "
              f"{r['worker_median_ms']!s:>9} {sum(r['errors'].values()):>6} {str(r['load_before']):>16}")
    for c in checks:
        print(f"verified {c['byte_identical']}/{c['checked']} results byte-identical (workers={c['workers']})")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return 0 if all(c["byte_identical"] == c["checked"] for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
