"""Whole-process cold start of the CLI: ``--help``, ``packs list``, ``call`` and ``run``.

Each command is started as a fresh ``python -m agents.cli`` process (what a user or an
orchestrator pays per invocation); wall time from the parent, peak RSS from ``os.wait4``. After
one warm-up run per command (the OS file cache, the seeded store), ``--runs`` counted runs are
taken in turn, command by command, and the median reported. ``--vs-root DIR`` runs every command
from another checkout too, alternating A B A B, and reports the per-pair ratio, which holds when
the shared machine's speed drifts. No figure is asserted.

    python -m benchmarks.bench_cold_start --runs 5
    python -m benchmarks.bench_cold_start --runs 5 --vs-root /tmp/base   # a checkout of the base commit
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
REQUEST = {"portfolio_id": "demo_diversified", "pricing_pack_id": "PP_2022-12-28", "policy_id": "quality_focused"}
COMMANDS: dict[str, list[str]] = {
    "--help": ["--help"],
    "packs list": ["packs", "list"],
    "call": ["call", "optimizer.propose_trades", "--input", "{request}"],
    "run": ["run", "policy_rebalance", "--input", "{pattern_input}"],
}
GOALS = {"--help": 0.3, "call": 1.5}


def run_once(root: Path, home: Path, args: list[str], files: dict[str, str]) -> dict[str, float]:
    """One fresh process from ``root``; wall seconds, CPU seconds and peak RSS (MiB)."""
    argv = [sys.executable, "-m", "agents.cli", "--home", str(home), *(a.format(**files) for a in args)]
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{' '.join(argv)} exited with {code} in {root}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mb": usage.ru_maxrss / 1024}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_cold_start", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="counted runs per command (after one warm-up)")
    parser.add_argument("--vs-root", type=Path, default=None, help="another checkout to compare with, pair by pair")
    parser.add_argument("--commands", default=",".join(COMMANDS), help="comma-separated subset of: " + ", ".join(COMMANDS))
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    roots = {"ours": ROOT} | ({"vs": args.vs_root.resolve()} if args.vs_root else {})
    results: dict[str, Any] = {"load_start": os.getloadavg(), "runs": args.runs, "commands": {}}
    with tempfile.TemporaryDirectory() as tmp:
        files = {"request": str(Path(tmp) / "request.json"),
                 "pattern_input": str(ROOT / "patterns" / "examples" / "policy_rebalance.json")}
        Path(files["request"]).write_text(json.dumps(REQUEST))
        for name in args.commands.split(","):
            per_root: dict[str, list[dict[str, float]]] = {k: [] for k in roots}
            homes = {k: Path(tmp) / f"home-{k}" for k in roots}
            for key, root in roots.items():  # warm-up (also seeds each home)
                run_once(root, homes[key], COMMANDS[name], files)
            for _ in range(args.runs):
                for key, root in roots.items():
                    per_root[key].append(run_once(root, homes[key], COMMANDS[name], files))
            entry: dict[str, Any] = {k: {m: statistics.median(r[m] for r in v) for m in ("wall_s", "cpu_s", "peak_rss_mb")}
                                     for k, v in per_root.items()}
            if "vs" in roots:
                entry["ratio_ours_vs"] = statistics.median(
                    a["wall_s"] / b["wall_s"] for a, b in zip(per_root["ours"], per_root["vs"], strict=True))
            results["commands"][name] = entry
            goal = f" (goal <= {GOALS[name]} s)" if name in GOALS else ""
            line = f"{name:>10}: median wall {entry['ours']['wall_s']:.3f} s, cpu {entry['ours']['cpu_s']:.3f} s, " \
                   f"peak RSS {entry['ours']['peak_rss_mb']:.0f} MiB{goal}"
            if "vs" in roots:
                line += f"; vs {entry['vs']['wall_s']:.3f} s, ratio ours/vs {entry['ratio_ours_vs']:.2f}"
            print(line, flush=True)
    results["load_end"] = os.getloadavg()
    print(f"load average (1 min) {results['load_start'][0]:.2f} at start, {results['load_end'][0]:.2f} at end")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
