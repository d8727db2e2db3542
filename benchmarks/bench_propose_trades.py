"""Benchmark ``propose_trades`` end to end on synthetic universes, with PyPortfolioOpt as a peer.

Run ``python -m benchmarks.bench_propose_trades --help`` for the flags. Every universe size is
measured in fresh subprocesses, so each figure has its own peak RSS and nothing is shared
between sizes:

* ``ours``: build the universe (not timed), call ``propose_trades`` once (the *first call*,
  which pays riskfolio's import and cvxpy's first use), then ``--repeat`` more times; report
  the median, a per-stage breakdown of the median run, and the process's peak RSS.
* ``peer``: the same problem in ``pypfopt.EfficientFrontier.max_sharpe`` with mu and covariance
  from the engine's own ``services.estimation.estimators.estimate_for_policy``; ``max_sharpe`` +
  ``clean_weights`` timed after a small warm-up solve, median of ``--peer-repeat`` runs. It
  solves continuous weights only (no estimation, no share rounding), so the ratio against our
  end-to-end time flatters the peer; the details also give the ratio to our solve alone.

The universe is a 5-factor model (market + 4 styles) over 757 daily closes, 11 GICS sectors,
a capped cap-like benchmark and a current portfolio that breaks the sector cap and (where the
benchmark allows) the position cap, with most of its active risk inside the limits; see
``build_universe``. Everything is seeded per size, so runs are reproducible.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

SEED = 20261121
CLOSES = 757  # about three years: 756 daily returns, the policy's default lookback
END = "2026-11-20"  # the last close; the pack's asof
PORTFOLIO_VALUE = 100_000_000.0
CASH_FRACTION = 0.02
BENCHMARK_NAME = "SYN_CAP"
MIN_SIZE = 20  # 20 names x 5% is the smallest universe that can be fully invested

# GICS sectors with roughly the S&P 500's constituent counts, so sector sizes are uneven.
GICS_SECTORS: tuple[tuple[str, int], ...] = (
    ("Communication Services", 22), ("Consumer Discretionary", 50), ("Consumer Staples", 37),
    ("Energy", 22), ("Financials", 72), ("Health Care", 60), ("Industrials", 78),
    ("Information Technology", 68), ("Materials", 28), ("Real Estate", 31), ("Utilities", 31),
)
HEAVY_SECTOR = "Information Technology"  # large in the benchmark, over its cap in the portfolio

POLICY_FIELDS: dict[str, Any] = {
    "universe": "pack",
    "method": "max_sharpe",
    "max_single_position_pct": 5.0,
    "max_sector_pct": 25.0,
    "max_tracking_error_pct": 2.0,
    "benchmark": BENCHMARK_NAME,
    "max_turnover_pct": 20.0,
    "covariance_estimator": "ledoit",
}
POSITION_CAP = POLICY_FIELDS["max_single_position_pct"] / 100
SECTOR_CAP = POLICY_FIELDS["max_sector_pct"] / 100
TE_LIMIT = POLICY_FIELDS["max_tracking_error_pct"] / 100
TURNOVER_LIMIT = POLICY_FIELDS["max_turnover_pct"] / 100

# Calibration of the current portfolio (see build_universe).
FEASIBLE_TE_TARGET = 0.017  # ex-ante TE of the trimmed portfolio, under 2% x (1 - largest margin)
FEASIBLE_TURNOVER_MAX = 0.15  # turnover from the current portfolio to its trimmed version
HEAVY_SECTOR_BENCH = 0.22  # the heavy sector's share of the benchmark (when it has room)
HEAVY_SECTOR_WEIGHT = 0.27
CONVICTION_WEIGHTS = (0.056, 0.054)  # before the 2% cash, i.e. 5.49% and 5.29% of value

DEFAULT_SIZES = (50, 200, 500, 1000)
BUSY_SHARE = 0.10  # other processes' CPU use (share of one core) above which timings are flagged
LIBRARIES = ("numpy", "scipy", "pandas", "scikit-learn", "cvxpy", "clarabel", "riskfolio-lib",
             "pyportfolioopt")


# --- synthetic universe --------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Universe:
    """A synthetic pricing pack, benchmark, current holdings and the benchmark policy."""

    n: int
    pack: Any  # services.data.models.PricingPack
    benchmark: dict[str, float]
    holdings: Any  # services.allocation.rebalance.Holdings
    policy: Any  # services.data.policy.Policy
    sector_of: dict[str, str]
    blend: float  # share of the random active tilt kept in the current portfolio
    calibrated: bool  # False: no blend met the feasibility targets (see build_universe)


def build_universe(n: int) -> Universe:
    """A reproducible universe of ``n`` equities (seeded by ``n``) and a $100M portfolio in it.

    Returns are a 5-factor model: market (7%/yr, 16% vol) and four style factors, loadings per
    asset (beta ~ N(1, 0.25)), idiosyncratic vol uniform in 15-35%/yr. Closes are 100 times the
    cumulative product of 1 + return. The benchmark is lognormal "cap" weights with the heavy
    sector scaled up, capped at 5% per name and 25% per sector (so the benchmark itself is
    feasible; at n = 20 it is equal weight).

    The current portfolio starts from the benchmark plus a share ``blend`` of a random tilt,
    then puts 27% in the heavy sector (over the 25% cap) when the benchmark has its full 22%
    there (not at n = 20 or 50, where the 5% name cap leaves it less), lifts two names over the
    5% cap when their benchmark weight is at least 2% (not at n = 1000, where the random tilt
    does not reach 5% either), and holds 2% cash. ``blend`` is the largest value for which the same portfolio
    trimmed back within the caps has ex-ante tracking error (sample covariance) at most 1.7%
    and is at most 15% turnover away: that trimmed portfolio is a feasible point, so the
    policy is feasible by construction, and max_sharpe then pushes against the limits.
    """
    if n < MIN_SIZE:
        raise ValueError(f"n={n}: a 5% position cap needs at least {MIN_SIZE} names to be fully invested")
    import pandas as pd

    from services.allocation.rebalance import Holdings
    from services.data.models import PricingPack, Security
    from services.data.policy import parse_overrides, resolve_policy

    rng = np.random.default_rng([SEED, n])
    returns = _factor_returns(np.random.default_rng(SEED), rng, n)
    closes = 100.0 * np.vstack([np.ones(n), np.cumprod(1.0 + returns, axis=0)])
    sector_idx = rng.permutation(np.repeat(np.arange(len(GICS_SECTORS)), _sector_counts(n)))
    heavy = sector_idx == [name for name, _ in GICS_SECTORS].index(HEAVY_SECTOR)

    cap_like = rng.lognormal(0.0, 1.0, n)
    cap_like /= cap_like.sum()
    heavy_share = min(HEAVY_SECTOR_BENCH, POSITION_CAP * heavy.sum())
    cap_like = np.where(heavy, cap_like * heavy_share / cap_like[heavy].sum(),
                        cap_like * (1 - heavy_share) / cap_like[~heavy].sum())
    bench = _clip_to_caps(cap_like, sector_idx, POSITION_CAP, SECTOR_CAP)
    tilt = bench * rng.lognormal(0.0, 1.0, n)
    tilt /= tilt.sum()
    order = rng.permutation(n)  # tie-break for conviction names (all equal at n = 20)

    cov = np.cov(returns, rowvar=False) * 252  # calibration only; the engine uses Ledoit-Wolf
    calibrated = False
    for blend in np.linspace(1.0, 0.0, 51):
        current = _with_bets(bench + blend * (tilt - bench), bench, sector_idx, heavy, order)
        trimmed = _clip_to_caps(current, sector_idx, POSITION_CAP, SECTOR_CAP)
        te = math.sqrt(max(0.0, (trimmed - bench) @ cov @ (trimmed - bench)))
        turnover = float(np.abs(trimmed - current).sum())
        if te <= FEASIBLE_TE_TARGET and turnover <= FEASIBLE_TURNOVER_MAX:
            calibrated = True
            break

    symbols = [f"SYN{i:04d}" for i in range(n)]
    sectors = [GICS_SECTORS[k][0] for k in sector_idx]
    dates = pd.bdate_range(end=END, periods=CLOSES)
    frame = pd.DataFrame(closes, index=dates, columns=symbols)
    pack = PricingPack(
        f"SYN{n}",
        tuple(Security(s, f"Synthetic {s}", sec, "equity") for s, sec in zip(symbols, sectors, strict=True)),
        frame,
    )
    last = closes[-1]
    shares = np.floor(current * PORTFOLIO_VALUE / last).astype(np.int64)
    cash = Decimal(repr(PORTFOLIO_VALUE - float(shares @ last))).quantize(Decimal("0.01"))
    holdings = Holdings("bench", {s: int(q) for s, q in zip(symbols, shares, strict=True) if q > 0}, cash)
    policy = resolve_policy({}, None, parse_overrides(POLICY_FIELDS), policy_id="benchmark-all-constraints")
    return Universe(
        n=n,
        pack=pack,
        benchmark={s: float(w) for s, w in zip(symbols, bench, strict=True)},
        holdings=holdings,
        policy=policy,
        sector_of=dict(zip(symbols, sectors, strict=True)),
        blend=float(blend),
        calibrated=calibrated,
    )


def _factor_returns(factor_rng: np.random.Generator, rng: np.random.Generator, n: int) -> np.ndarray:
    """Daily simple returns (756 × n): market + 4 style factors plus idiosyncratic noise.

    The factor path comes from ``factor_rng`` (the same three years for every size); loadings
    and idiosyncratic returns from ``rng`` (seeded by size).
    """
    days = CLOSES - 1
    factor_mean = np.array([0.07, 0.01, 0.0, 0.015, -0.005]) / 252
    factor_vol = np.array([0.16, 0.06, 0.05, 0.07, 0.04]) / math.sqrt(252)
    factors = factor_rng.normal(factor_mean, factor_vol, (days, 5))
    loadings = np.column_stack([rng.normal(1.0, 0.25, n).clip(0.3, 2.0), rng.normal(0.0, 0.6, (n, 4))])
    idio = rng.uniform(0.15, 0.35, n) / math.sqrt(252)
    return factors @ loadings.T + rng.normal(0.0, 1.0, (days, n)) * idio


def _sector_counts(n: int) -> np.ndarray:
    """Names per sector in the S&P-like proportions (largest remainder, at least one each)."""
    base = np.array([c for _, c in GICS_SECTORS], dtype=float)
    spare = n - len(base)
    share = base / base.sum() * spare
    counts = np.floor(share).astype(int)
    counts[np.argsort(-(share - counts), kind="stable")[: spare - counts.sum()]] += 1
    return counts + 1


def _clip_to_caps(w: np.ndarray, sector_idx: np.ndarray, cap: float, sector_cap: float) -> np.ndarray:
    """Fully invested weights within the position and sector caps, keeping the shape otherwise:
    the excess over a cap is handed to the names with room, in proportion to their weight."""
    w = np.asarray(w, dtype=float) / float(np.sum(w))
    sectors = int(sector_idx.max()) + 1
    for _ in range(2000):
        w = np.minimum(w, cap)
        totals = np.bincount(sector_idx, w, minlength=sectors)
        w = w * np.where(totals > sector_cap, sector_cap / np.maximum(totals, 1e-300), 1.0)[sector_idx]
        short = 1.0 - float(w.sum())
        if short < 1e-13:
            break
        totals = np.bincount(sector_idx, w, minlength=sectors)
        room = np.minimum(cap - w, (sector_cap - totals)[sector_idx]).clip(min=0.0)
        if room.sum() <= short + 1e-15:  # only one way to be fully invested: fill every room
            w = w + room
            continue
        share = np.where(room > 0, np.maximum(w, 1e-12), 0.0)
        w = w + np.minimum(room, short * share / share.sum())
    if abs(w.sum() - 1.0) > 1e-9:
        raise ValueError("the caps leave less than 100% to invest")
    return w


def _with_bets(w: np.ndarray, bench: np.ndarray, sector_idx: np.ndarray, heavy: np.ndarray,
               order: np.ndarray) -> np.ndarray:
    """``w`` with the heavy-sector and conviction bets, scaled to hold 2% cash."""
    w = w / w.sum()
    if bench[heavy].sum() >= HEAVY_SECTOR_BENCH - 1e-9:
        w = np.where(heavy, w * HEAVY_SECTOR_WEIGHT / w[heavy].sum(), w * (1 - HEAVY_SECTOR_WEIGHT) / w[~heavy].sum())
    # Two conviction names in different non-heavy sectors, among the largest benchmark names.
    ranked = sorted((i for i in order if not heavy[i]), key=lambda i: -bench[i])
    picks: list[int] = []
    for i in ranked:
        if len(picks) == len(CONVICTION_WEIGHTS) or bench[i] < 0.02:
            break
        if all(sector_idx[i] != sector_idx[j] for j in picks):
            picks.append(i)
    if picks:
        rest = ~heavy
        rest[picks] = False
        target = np.array(CONVICTION_WEIGHTS[: len(picks)])
        w = w.copy()
        w[rest] *= (w[rest].sum() + w[picks].sum() - target.sum()) / w[rest].sum()
        w[picks] = target
    return w * (1.0 - CASH_FRACTION)


# --- measuring ours -----------------------------------------------------------------------


class StageClock:
    """Wall time per stage of ``propose_trades``, by wrapping the functions it calls by name.

    The wrappers live only in the benchmark process (nothing on disk changes) and cost a few
    microseconds per call. ``cvxpy.Problem.solve`` is wrapped too, to split a solve into cvxpy's
    compilation and the solver call (Clarabel setup, iterations and result unpacking).
    """

    # (module, function, stage). The estimate is wrapped where it is defined, so any helper that
    # calls it (estimate_for_policy) is covered; the rest where propose_trades looks them up.
    STAGES = (("services.estimation.estimators", "estimate", "estimate"),
              ("services.allocation.rebalance", "risk_setup", "factor"),
              ("services.allocation.rebalance", "solve", "solve"),
              ("services.allocation.rebalance", "round_to_shares", "round"),
              ("services.allocation.rebalance", "_report", "report"))

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.solves: list[dict[str, Any]] = []
        self.last_problem: Any = None
        self.last_allocation: Any = None
        self.last_margin: float | None = None
        self._installed = False
        self.missing: list[str] = []

    def reset(self) -> None:
        self.seconds = {}
        self.solves = []

    def install(self) -> None:
        import importlib

        import cvxpy as cp

        if self._installed:
            return
        for module_name, attr, stage in self.STAGES:
            module = importlib.import_module(module_name)
            if hasattr(module, attr):
                setattr(module, attr, self._timed(getattr(module, attr), stage))
            else:  # the engine was refactored: report the stage as missing rather than as 0 s
                self.missing.append(f"{module_name}.{attr}")
        original_solve = cp.Problem.solve
        clock = self

        def solve(problem: Any, *args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original_solve(problem, *args, **kwargs)
            finally:
                stats = getattr(problem, "solver_stats", None)
                clock.solves.append({
                    "total_s": time.perf_counter() - start,
                    "compile_s": getattr(problem, "compilation_time", None),
                    "solver_s": getattr(problem, "_solve_time", None),
                    "solver_reported_s": getattr(stats, "solve_time", None),
                    "iterations": getattr(stats, "num_iters", None),
                    "status": problem.status,
                })

        cp.Problem.solve = solve
        self._installed = True

    def _timed(self, fn: Callable[..., Any], stage: str) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                result = fn(*args, **kwargs)
            finally:
                self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start
            if stage == "solve":
                self.last_problem, self.last_allocation = args[0], result
                self.last_margin = kwargs.get("te_margin", 0.0)
            return result

        wrapper.__wrapped__ = fn  # type: ignore[attr-defined]
        return wrapper

    def breakdown(self, total: float) -> dict[str, float]:
        """Seconds per stage; ``compile``/``solver`` split ``solve``; ``other`` is the rest."""
        out = {k: self.seconds.get(k, 0.0) for _, _, k in self.STAGES}
        out["compile"] = sum(s["compile_s"] or 0.0 for s in self.solves)
        out["solver"] = sum(s["solver_s"] or 0.0 for s in self.solves)
        out["solver_reported"] = sum(s["solver_reported_s"] or 0.0 for s in self.solves)
        out["solves"] = len(self.solves)
        out["other"] = total - sum(out[k] for _, _, k in self.STAGES)
        return out


def _call_engine(u: Universe, solve: str | None = None) -> Any:
    """``propose_trades`` on the universe; ``solve`` (exact, fast, auto) sets the policy field."""
    from services.allocation.rebalance import propose_trades

    policy = u.policy if solve is None else u.policy.model_copy(update={"solve": solve})
    return propose_trades(u.pack, u.holdings, policy, {}, {BENCHMARK_NAME: u.benchmark})


def _memory_mb(field: str) -> float | None:
    """A field of /proc/self/status (VmHWM = peak RSS, VmRSS = now) in MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _sharpe(mu: np.ndarray, vol: float, w: np.ndarray, rf: float) -> float:
    """The engine's Sharpe: uninvested weight earns the risk-free rate (as in the report)."""
    expected = float(mu @ w) + (1.0 - float(w.sum())) * rf
    return (expected - rf) / vol


def worker_ours(n: int, repeat: int, solve: str | None = None) -> dict[str, Any]:
    """Time ``propose_trades`` at size ``n``: one first call, then ``repeat`` timed calls."""
    start = time.perf_counter()
    import services.allocation.rebalance  # noqa: F401  (import cost reported on its own)

    import_s = time.perf_counter() - start
    start = time.perf_counter()
    u = build_universe(n)
    build_s = time.perf_counter() - start
    rss_ready = _memory_mb("VmRSS")

    clock = StageClock()
    clock.install()
    start = time.perf_counter()
    first = _call_engine(u, solve)
    first_s = time.perf_counter() - start
    first_breakdown = clock.breakdown(first_s)
    first_json = first.model_dump_json()

    runs = []
    same = True
    for _ in range(repeat):
        clock.reset()
        start = time.perf_counter()
        result = _call_engine(u, solve)
        seconds = time.perf_counter() - start
        runs.append({"seconds": seconds, "stages": clock.breakdown(seconds), "solves": clock.solves})
        same = same and result.model_dump_json() == first_json
    median = statistics.median(r["seconds"] for r in runs)
    median_run = min(runs, key=lambda r: abs(r["seconds"] - median))

    margin = clock.last_margin or 0.0
    continuous: dict[str, Any] = {}
    p, a = clock.last_problem, clock.last_allocation
    if p is not None and a is not None:  # the allocation the whole-share plan was rounded from
        w = np.asarray(a.weights, dtype=float)
        # Under the full sample covariance whatever the solver used (fast solves a k-factor
        # approximation), so the fast and exact Sharpe ratios compare. Every symbol of the
        # synthetic pack is eligible and the benchmark holds only them, so these are the engine's
        # estimation symbols (Ledoit-Wolf depends on the set).
        from services.estimation.estimators import estimate_for_policy

        cov = estimate_for_policy(u.pack, list(p.symbols), u.policy).cov
        bench = np.array([u.benchmark.get(s, 0.0) for s in p.symbols])
        continuous = {
            "sharpe": _sharpe(p.mu, float(np.sqrt(w @ cov @ w)), w, p.risk_free_rate),
            "te_pct": 100 * float(np.sqrt((w - bench) @ cov @ (w - bench))),
            "turnover_pct": 100 * float(np.abs(w - p.current).sum()),
            "max_weight_pct": 100 * float(w.max()),
            "invested_pct": 100 * float(w.sum()),
        }
    risk = result.estimation.risk if result.estimation is not None else None
    return {
        "n": n,
        "repeat": repeat,
        "solve": solve or "policy",
        "risk": risk.model_dump() if risk is not None else None,
        "import_s": import_s,
        "build_s": build_s,
        "first_call_s": first_s,
        "first_call_stages": first_breakdown,
        "median_s": median,
        "runs_s": [r["seconds"] for r in runs],
        "median_stages": median_run["stages"],
        "median_solves": median_run["solves"],
        "stages_not_measured": clock.missing,
        "rss_ready_mb": rss_ready,
        "peak_rss_self_mb": _memory_mb("VmHWM"),
        "deterministic": same,
        "constraints_met": result.constraints_met,
        "constraints": [c.model_dump() for c in result.constraints],
        "binding": result.binding_constraints,
        "trade_count": result.trade_count,
        "turnover_pct": result.turnover_pct,
        "discretionary_turnover_pct": result.discretionary_turnover_pct,
        "te_before_pct": result.te_before_pct,
        "te_after_pct": result.te_after_pct,
        "sharpe_before": result.before.sharpe,
        "sharpe_rounded": result.after.sharpe,
        "sharpe_continuous": continuous.get("sharpe"),
        "continuous": continuous,
        "te_margin": margin,
        "te_limit_solved": TE_LIMIT * (1.0 - margin),
        "warnings": result.warnings,
        "blend": u.blend,
        "calibrated": u.calibrated,
        "cash": str(u.holdings.cash),
    }


# --- the peer: PyPortfolioOpt --------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class PeerData:
    """The problem data the peer gets: the engine's own estimates, current and benchmark weights."""

    symbols: list[str]
    mu: np.ndarray
    cov: np.ndarray
    chol: np.ndarray  # lower Cholesky factor of cov, for the tracking-error cone
    current: np.ndarray
    bench: np.ndarray
    sector_of: dict[str, str]
    rf: float


def peer_data(u: Universe) -> PeerData:
    from services.estimation.estimators import estimate_for_policy

    pol = u.policy
    symbols = sorted(u.pack.symbols)
    est = estimate_for_policy(u.pack, symbols, pol)
    prices = u.pack.last_prices()
    value = sum(q * prices[s] for s, q in u.holdings.positions.items()) + float(u.holdings.cash)
    current = np.array([u.holdings.positions.get(s, 0) * prices[s] / value for s in symbols])
    return PeerData(
        symbols=symbols, mu=est.mu, cov=est.cov, chol=np.linalg.cholesky(est.cov), current=current,
        bench=np.array([u.benchmark.get(s, 0.0) for s in symbols]), sector_of=u.sector_of,
        rf=pol.risk_free_rate,
    )


def peer_solve(d: PeerData, te_limit: float, form: str = "homogeneous") -> tuple[np.ndarray, dict[str, float]]:
    """Max Sharpe in PyPortfolioOpt with the caps, sector caps, turnover and tracking error.

    ``max_sharpe`` solves in y = k·w and rewrites each added constraint ``expr <= c`` as
    ``expr(y) <= c·k``. That is right for the bounds and sector sums but not for constraints
    with a constant inside (``|w - w0|``, ``w - wb``): they would become ``|y - w0| <= 0.2k``.
    ``form="homogeneous"`` writes them with ``cp.sum(w)`` (= 1 before, = k after the rewrite)
    in place of 1, so the rewritten constraints are exactly the intended ones; the tracking
    error is a second-order cone ``‖Lᵀ(w − wb·Σw)‖ ≤ te`` because ``quad_form(...) <= te²``
    would become the non-homogeneous ``quad_form(y − ...) <= te²·k``. ``form="naive"`` writes
    them as one would first try (to show what goes wrong).
    """
    import cvxpy as cp
    import pandas as pd
    from pypfopt import EfficientFrontier

    from services.allocation.optimization import SOLVER, SOLVER_SETTINGS

    start = time.perf_counter()
    ef = EfficientFrontier(pd.Series(d.mu, index=d.symbols), d.cov, weight_bounds=(0, POSITION_CAP),
                           solver=SOLVER, solver_options=dict(SOLVER_SETTINGS))
    sectors = sorted(set(d.sector_of.values()))
    ef.add_sector_constraints(d.sector_of, {}, dict.fromkeys(sectors, SECTOR_CAP))
    lt = d.chol.T
    if form == "homogeneous":
        ef.add_constraint(lambda w: cp.sum(cp.abs(w - d.current * cp.sum(w))) <= TURNOVER_LIMIT)
        ef.add_constraint(lambda w: cp.norm(lt @ (w - d.bench * cp.sum(w)), 2) <= te_limit)
    elif form == "naive":
        ef.add_constraint(lambda w: cp.sum(cp.abs(w - d.current)) <= TURNOVER_LIMIT)
        ef.add_constraint(lambda w: cp.quad_form(w - d.bench, d.cov, assume_PSD=True) <= te_limit**2)
    else:
        raise ValueError(f"unknown peer form {form!r}")
    built = time.perf_counter()
    ef.max_sharpe(risk_free_rate=d.rf)
    solved = time.perf_counter()
    ef.clean_weights()
    end = time.perf_counter()
    opt = ef._opt
    # Timed as asked: max_sharpe + clean_weights; building the model (milliseconds) apart.
    return np.asarray(ef.weights, dtype=float), {
        "seconds": end - built, "build_s": built - start, "max_sharpe_s": solved - built,
        "clean_s": end - solved, "compile_s": opt.compilation_time or 0.0,
        "solver_s": getattr(opt, "_solve_time", None) or 0.0,
        "iterations": opt.solver_stats.num_iters, "status": opt.status,
    }


def peer_checks(d: PeerData, w: np.ndarray) -> dict[str, Any]:
    """Sharpe and constraint values of the peer's weights, computed as the engine reports them."""
    vol = math.sqrt(float(w @ d.cov @ w))
    by_sector: dict[str, float] = {}
    for s, wi in zip(d.symbols, w, strict=True):
        by_sector[d.sector_of[s]] = by_sector.get(d.sector_of[s], 0.0) + wi
    te = math.sqrt(max(0.0, float((w - d.bench) @ d.cov @ (w - d.bench))))
    return {
        "sharpe": _sharpe(d.mu, vol, w, d.rf),
        "te_pct": 100 * te,
        "turnover_pct": 100 * float(np.abs(w - d.current).sum()),
        "max_weight_pct": 100 * float(w.max()),
        "max_sector_pct": 100 * float(max(by_sector.values())),
        "invested_pct": 100 * float(w.sum()),
    }


def worker_peer(n: int, repeat: int, te_limit: float, form: str) -> dict[str, Any]:
    """Time PyPortfolioOpt on the engine's estimates at size ``n`` (after a small warm-up)."""
    u = build_universe(n)
    d = peer_data(u)
    small = PeerData(d.symbols[:MIN_SIZE * 2], d.mu[:MIN_SIZE * 2], d.cov[:MIN_SIZE * 2, :MIN_SIZE * 2],
                     d.chol[:MIN_SIZE * 2, :MIN_SIZE * 2], d.current[:MIN_SIZE * 2],
                     d.bench[:MIN_SIZE * 2], d.sector_of, d.rf)
    with contextlib.suppress(Exception):  # warm-up: first use of cvxpy, Clarabel and pypfopt
        peer_solve(small, 1.0, form)
    runs: list[dict[str, Any]] = []
    out: dict[str, Any] = {"n": n, "form": form, "te_limit": te_limit, "repeat": repeat}
    try:
        for _ in range(repeat):
            w, info = peer_solve(d, te_limit, form)
            runs.append(info)
    except Exception as exc:  # noqa: BLE001  (a failing peer is a result, not a crash)
        out["error"] = f"{type(exc).__name__}: {exc}"[:500]
    out["peak_rss_self_mb"] = _memory_mb("VmHWM")
    if not runs:
        return out
    median = statistics.median(r["seconds"] for r in runs)
    out.update({
        "median_s": median,
        "runs": runs,
        **peer_checks(d, w),
    })
    return out


# --- profile ---------------------------------------------------------------------------------


def worker_profile(n: int, top: int) -> dict[str, Any]:
    """cProfile one warm call at size ``n``; print the stage breakdown and the top functions."""
    import cProfile
    import io
    import pstats

    u = build_universe(n)
    _call_engine(u)  # warm-up
    clock = StageClock()
    clock.install()
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    _call_engine(u)
    profiler.disable()
    total = time.perf_counter() - start
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(top)
    stages = clock.breakdown(total)
    print(f"n={n}: one warm call under cProfile took {total:.2f} s")
    print(_format_stages(stages, total))
    print(text.getvalue())
    return {"n": n, "seconds": total, "stages": stages, "solves": clock.solves}


# --- orchestration ---------------------------------------------------------------------------


THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS")


def run_worker(args: list[str], timeout: float, threads: int | None = None) -> dict[str, Any]:
    """Run one worker in a fresh interpreter; add its peak RSS as seen by the parent (wait4).

    ``threads`` caps BLAS/OpenMP/rayon thread pools in the worker (None: library defaults).
    """
    env = dict(os.environ)
    if threads is not None:
        env.update(dict.fromkeys(THREAD_VARIABLES, str(threads)))
    busy_before, wall_before = _busy_cpu_seconds(), time.monotonic()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        result_path = Path(tmp) / "result.json"
        log_path = Path(tmp) / "log.txt"
        cmd = [sys.executable, "-m", "benchmarks.bench_propose_trades", "--result-file", str(result_path), *args]
        with log_path.open("w") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=_project_root(), env=env)
            deadline = time.monotonic() + timeout
            status = rusage = None
            while True:
                pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    proc.returncode = os.waitstatus_to_exitcode(status)
                    break
                if time.monotonic() > deadline:
                    proc.kill()
                    _, status, rusage = os.wait4(proc.pid, 0)
                    proc.returncode = os.waitstatus_to_exitcode(status)
                    return {"error": f"timed out after {timeout:.0f} s"}
                time.sleep(0.02)
        if proc.returncode != 0 or not result_path.exists():
            tail = log_path.read_text()[-1500:]
            return {"error": f"worker exited with {proc.returncode}: {tail.strip().splitlines()[-1] if tail.strip() else ''}",
                    "log_tail": tail}
        result = json.loads(result_path.read_text())
        result["log"] = log_path.read_text()
        result["peak_rss_mb"] = rusage.ru_maxrss / 1024 if rusage is not None else None  # Linux: KiB
        # The 1-minute load average around the worker: the machine is shared, so every figure
        # carries the load it was measured under.
        result["load"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
        busy_after, wall = _busy_cpu_seconds(), time.monotonic() - wall_before
        if busy_before is not None and busy_after is not None and rusage is not None:
            own = rusage.ru_utime + rusage.ru_stime
            result["worker_cpu_s"] = own
            result["wall_s"] = wall
            # CPU time the rest of the machine used meanwhile, as a share of one core.
            result["foreign_cpu_share"] = max(0.0, busy_after - busy_before - own) / wall
        return result


def _busy_cpu_seconds() -> float | None:
    """CPU seconds all processes have spent (user, nice, system, irq, softirq, steal) since boot."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _project_root() -> str:
    return str(Path(__file__).resolve().parent.parent)


def machine() -> dict[str, Any]:
    """CPU, memory, Python and library versions of the machine running the benchmark."""
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    try:
        cpu = Path("/proc/cpuinfo").read_text()
        info["cpu_model"] = next((ln.split(":", 1)[1].strip() for ln in cpu.splitlines() if ln.startswith("model name")), None)
        mem = Path("/proc/meminfo").read_text().splitlines()[0]
        info["memory_gib"] = round(int(mem.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    versions = {}
    for lib in LIBRARIES:
        try:
            versions[lib] = version(lib)
        except PackageNotFoundError:
            versions[lib] = None
    info["versions"] = versions
    info["engine_commit"] = _engine_commit()
    return info


def _engine_commit() -> str | None:
    """The project's git commit, with "+dirty" when services/ has uncommitted changes."""
    root = _project_root()
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "services"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def _fmt(x: Any, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def _format_stages(s: dict[str, float], total: float) -> str:
    keys = ("estimate", "factor", "compile", "solver", "round", "report", "other")
    solve_rest = s["solve"] - s["compile"] - s["solver"]
    parts = [f"{k} {s[k]:.3f}" for k in keys]
    return (f"  stages (s, of {total:.3f}): " + ", ".join(parts)
            + f"; solve() outside cvxpy compile/solver {solve_rest:.3f}; solves {s['solves']}")


def format_tables(rows: list[dict[str, Any]]) -> str:
    """The summary table, then a detail table (trades, turnover, TE, stages) per size."""
    head = (f"{'n':>5} {'ours med s':>10} {'first s':>8} {'peak RSS MiB':>12} {'peer med s':>10} "
            f"{'peer/ours':>9} {'our Sharpe':>10} {'peer Sharpe':>11} {'constraints_met':>15}")
    lines = [head, "-" * len(head)]
    for r in rows:
        o, p = r["ours"], r.get("peer")
        if "error" in o:
            lines.append(f"{r['n']:>5} ours failed: {o['error']}")
            continue
        if p is None:
            peer_s = ratio = peer_sharpe = "-"
        elif "error" in p and "median_s" not in p:
            peer_s, ratio, peer_sharpe = "failed", "-", "-"
        else:
            peer_s, ratio = f"{p['median_s']:.3f}", f"{p['median_s'] / o['median_s']:.1f}x"
            peer_sharpe = f"{p['sharpe']:.4f}"
        lines.append(
            f"{r['n']:>5} {o['median_s']:>10.3f} {o['first_call_s']:>8.2f} {_fmt(o.get('peak_rss_mb'), '.0f'):>12} "
            f"{peer_s:>10} {ratio:>9} {_fmt(o['sharpe_continuous'], '.4f'):>10} {peer_sharpe:>11} "
            f"{o['constraints_met']!s:>15}"
        )
    lines += ["", "Details (ours: whole-share result; Sharpe of continuous weights above, of shares here):"]
    for r in rows:
        o, p = r["ours"], r.get("peer")
        if "error" in o:
            continue
        lines.append(
            f"  n={r['n']}: {o['trade_count']} trades, turnover {o['turnover_pct']:.2f}% (limit 20), "
            f"TE {o['te_before_pct']:.2f}% -> {o['te_after_pct']:.2f}% (limit 2, solved at "
            f"{100 * o['te_limit_solved']:.3f}), Sharpe {o['sharpe_before']:.3f} -> {o['sharpe_rounded']:.3f}, "
            f"deterministic {o['deterministic']}, RSS before first call {o['rss_ready_mb']:.0f} MiB"
        )
        lines.append("    binding: " + _binding_summary(o["binding"]))
        if not o.get("calibrated", True):
            lines.append("    note: the current portfolio missed its calibration targets; feasibility is not "
                         "guaranteed by construction at this size")
        if o.get("warnings"):
            lines.append("    engine warnings: " + "; ".join(o["warnings"]))
        if o.get("stages_not_measured"):
            lines.append("    stages not measured (engine refactored?): " + ", ".join(o["stages_not_measured"]))
        lines.append(_format_stages(o["median_stages"], o["median_s"]))
        if p is not None and "error" in p:
            lines.append(f"    peer failed: {p['error']}")
        if p is not None and "median_s" in p:
            run = p["runs"][0]
            ours_solve = o["median_stages"]["solve"]
            lines.append(
                f"    peer: TE {p['te_pct']:.3f}%, turnover {p['turnover_pct']:.2f}%, max weight "
                f"{p['max_weight_pct']:.2f}%, max sector {p['max_sector_pct']:.2f}%, peak RSS "
                f"{_fmt(p.get('peak_rss_mb'), '.0f')} MiB; cvxpy compile {run['compile_s']:.2f} s, solver "
                f"{run['solver_s']:.2f} s ({run['iterations']} iterations); peer / our solve stage alone "
                f"{p['median_s'] / ours_solve:.1f}x" if ours_solve else ""
            )
    return "\n".join(lines)


def format_modes(rows: list[dict[str, Any]], modes: list[str]) -> str:
    """Solve modes side by side: time, the objective gap to the first mode, the overhead over
    the bare Clarabel solve of our compiled problem(s), memory and the load it ran under."""
    base = modes[0]
    head = (f"{'n':>5} {'solve':>6} {'med s':>7} {'x ' + base:>8} {'Sharpe':>7} {'gap %':>7} {'TE after':>8} "
            f"{'k':>3} {'solves':>6} {'Clarabel s':>10} {'ours/Clarabel':>13} {'peak MiB':>8} {'load':>10}")
    lines = [f"Solve modes (Sharpe of the continuous weights under the full covariance; gap relative to {base}):",
             head, "-" * len(head)]
    for r in rows:
        ref = r["modes"].get(base, {})
        for mode in modes:
            o = r["modes"].get(mode, {})
            if "error" in o:
                lines.append(f"{r['n']:>5} {mode:>6} failed: {o['error']}")
                continue
            speed = ref["median_s"] / o["median_s"] if "median_s" in ref else None
            gap = None
            if ref.get("sharpe_continuous") and o.get("sharpe_continuous") is not None:
                gap = 100 * (ref["sharpe_continuous"] - o["sharpe_continuous"]) / ref["sharpe_continuous"]
            solver = o["median_stages"]["solver"]
            risk = o.get("risk") or {}
            load = o.get("load") or [None, None]
            lines.append(
                f"{r['n']:>5} {mode:>6} {o['median_s']:>7.3f} {_fmt(speed, '.1f'):>8} "
                f"{_fmt(o['sharpe_continuous'], '.4f'):>7} {_fmt(gap, '.3f'):>7} {o['te_after_pct']:>8.3f} "
                f"{_fmt(risk.get('k'), 'd'):>3} {o['median_stages']['solves']:>6} {solver:>10.3f} "
                f"{_fmt(o['median_s'] / solver if solver else None, '.2f'):>13} {_fmt(o.get('peak_rss_mb'), '.0f'):>8} "
                f"{_fmt(load[0], '.2f')}-{_fmt(load[1], '.2f'):>4}"
            )
    return "\n".join(lines)


def _binding_summary(binding: list[str]) -> str:
    """Binding constraints, with the per-name position caps counted rather than listed."""
    positions = [b for b in binding if b.startswith("max_single_position_pct:")]
    rest = [b for b in binding if not b.startswith("max_single_position_pct:")]
    if positions:
        rest.insert(0, f"max_single_position_pct ({len(positions)} name{'s' * (len(positions) != 1)})")
    return ", ".join(rest) or "none"


def _sizes(text: str) -> list[int]:
    sizes = [int(x) for x in text.split(",") if x.strip()]
    if not sizes or min(sizes) < MIN_SIZE:
        raise argparse.ArgumentTypeError(f"sizes must be integers >= {MIN_SIZE}")
    return sizes


def _repeats(text: str) -> list[int]:
    reps = [int(x) for x in text.split(",") if x.strip()]
    if not reps or min(reps) < 1:
        raise argparse.ArgumentTypeError("repeat must be positive integers")
    return reps


def _modes(text: str) -> list[str]:
    modes = [x.strip() for x in text.split(",") if x.strip()]
    if not modes or set(modes) - {"exact", "fast", "auto"}:
        raise argparse.ArgumentTypeError("solve modes are exact, fast, auto")
    return modes


def _per_size(values: list[int], sizes: list[int], what: str) -> list[int]:
    if len(values) == 1:
        return values * len(sizes)
    if len(values) != len(sizes):
        raise SystemExit(f"--{what}: give one number or one per size ({len(sizes)})")
    return values


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_propose_trades",
        description="End-to-end time and peak memory of propose_trades on synthetic universes, "
                    "with PyPortfolioOpt on the same problem as a peer.",
    )
    parser.add_argument("--sizes", type=_sizes, default=list(DEFAULT_SIZES),
                        help="comma-separated universe sizes (default 50,200,500,1000)")
    parser.add_argument("--repeat", type=_repeats, default=[3],
                        help="timed runs after the first call: one number, or one per size (e.g. 3,3,3,2)")
    parser.add_argument("--peer-repeat", type=_repeats, default=None,
                        help="timed peer runs (default: as --repeat)")
    parser.add_argument("--peer", action=argparse.BooleanOptionalAction, default=True,
                        help="also time PyPortfolioOpt on the same problem (default on)")
    parser.add_argument("--peer-form", choices=("homogeneous", "naive"), default="homogeneous",
                        help=argparse.SUPPRESS)
    parser.add_argument("--solve", type=_modes, default=["exact", "fast"],
                        help="solve modes to time at each size, interleaved (default exact,fast)")
    parser.add_argument("--peer-max", type=int, default=1000,
                        help="largest size the peer runs at (default 1000; it took 70-140 s there)")
    parser.add_argument("--threads", type=int, default=None,
                        help="cap BLAS/OpenMP/rayon threads in the workers (default: library defaults)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per worker process")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    parser.add_argument("--profile", type=int, default=None, metavar="N",
                        help="instead: cProfile one warm call at size N and print where time goes")
    parser.add_argument("--top", type=int, default=40, help=argparse.SUPPRESS)
    parser.add_argument("--worker", choices=("ours", "peer", "profile"), help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--te-limit", type=float, default=TE_LIMIT, help=argparse.SUPPRESS)
    parser.add_argument("--result-file", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _worker_main(args: argparse.Namespace) -> None:
    if args.worker == "ours":
        result = worker_ours(args.n, args.repeat[0], args.solve[0] if args.solve else None)
    elif args.worker == "peer":
        result = worker_peer(args.n, args.repeat[0], args.te_limit, args.peer_form)
    else:
        result = worker_profile(args.n, args.top)
    result["peak_rss_self_mb"] = _memory_mb("VmHWM")
    if args.result_file:
        args.result_file.write_text(json.dumps(result, default=float))


@contextlib.contextmanager
def _progress(text: str) -> Iterator[None]:
    print(text, end=" ", flush=True, file=sys.stderr)
    start = time.perf_counter()
    yield
    print(f"({time.perf_counter() - start:.1f} s)", flush=True, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        _worker_main(args)
        return 0
    if args.profile is not None:
        result = run_worker(["--worker", "profile", "--n", str(args.profile), "--top", str(args.top)],
                            args.timeout, args.threads)
        if "error" in result:
            print(result["error"], file=sys.stderr)
            return 1
        print(result["log"])
        return 0
    repeats = _per_size(args.repeat, args.sizes, "repeat")
    peer_repeats = _per_size(args.peer_repeat or args.repeat, args.sizes, "peer-repeat")
    commit_before = _engine_commit()
    rows = []
    for n, rep, peer_rep in zip(args.sizes, repeats, peer_repeats, strict=True):
        modes: dict[str, Any] = {}
        for mode in args.solve:  # interleaved: every mode at this size, then the peer
            with _progress(f"n={n}: ours ({mode}) x{rep + 1}"):
                modes[mode] = run_worker(["--worker", "ours", "--n", str(n), "--repeat", str(rep),
                                          "--solve", mode], args.timeout, args.threads)
            modes[mode].pop("log", None)
        row: dict[str, Any] = {"n": n, "ours": modes[args.solve[0]], "modes": modes}
        ours = row["ours"]
        if args.peer and n <= args.peer_max:
            te_limit = ours.get("te_limit_solved", TE_LIMIT)
            with _progress(f"n={n}: peer x{peer_rep}"):
                row["peer"] = run_worker(["--worker", "peer", "--n", str(n), "--repeat", str(peer_rep),
                                          "--te-limit", repr(te_limit), "--peer-form", args.peer_form],
                                         args.timeout, args.threads)
                row["peer"].pop("log", None)
        rows.append(row)
    info = machine()
    if info["engine_commit"] != commit_before:
        info["engine_commit"] = f"changed during the run: {commit_before} -> {info['engine_commit']}"
    info["threads"] = "library defaults" if args.threads is None else args.threads
    foreign = [w["foreign_cpu_share"] for r in rows for w in [*r["modes"].values(), r.get("peer", {})]
               if "foreign_cpu_share" in w]
    info["max_foreign_cpu_share"] = max(foreign, default=None)
    print(f"propose_trades benchmark, {datetime.now().isoformat(timespec='seconds')}, "
          f"{info.get('cpus')} CPUs ({info.get('cpu_model')}), {info.get('memory_gib')} GiB, "
          f"Python {info['python']}, threads: {info['threads']}, engine {info['engine_commit']}")
    print(format_tables(rows))
    if len(args.solve) > 1:
        print()
        print(format_modes(rows, args.solve))
    if foreign and max(foreign) > BUSY_SHARE:
        print(f"\nWARNING: other processes used up to {max(foreign):.0%} of a core while a worker ran; "
              "they competed for the CPUs, so these timings are not representative.")
    if args.json:
        args.json.write_text(json.dumps({"date": datetime.now().isoformat(timespec="seconds"),
                                         "machine": info, "policy": POLICY_FIELDS, "results": rows},
                                        indent=2, default=float) + "\n")
    failed = [(r["n"], m) for r in rows for m, w in r["modes"].items() if "error" in w or not w.get("constraints_met")]
    if failed:
        print(f"FAILED: constraints not met or engine error at n = {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
