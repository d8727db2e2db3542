"""Run many ``propose_trades`` jobs on Dask distributed, sharing packs and estimates.

How a batch runs:

1. For every job the client works out the symbols ``propose_trades`` will estimate for
   (``estimation_symbols``) and so its estimation key (pack content, symbols, settings).
2. Each distinct pack is scattered to every worker once.
3. A key needed by two or more jobs is estimated once, as its own task; the jobs that need it
   depend on that task, so Dask moves the estimates to a worker at most once and frees them
   when the last of those jobs is done. A key needed once is estimated inside its job.
4. Jobs are submitted in input order (Dask runs earlier submissions first) and handed back as
   they finish, each with its proposal or its error.

A job computes exactly what a single ``propose_trades`` call computes: shared estimates come
from the same ``estimate_for_policy``, and a worker whose shared estimate is missing (or does
not match) estimates for itself. Workers run one task at a time with their BLAS pools limited
(``threadpoolctl``), so two workers on two cores do not fight over threads.
"""

from __future__ import annotations

import gc
import logging
import time
import uuid
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import dask
import structlog
from dask.system import CPU_COUNT
from distributed import Client, Future, LocalCluster, as_completed
from distributed.diagnostics.plugin import WorkerPlugin

from services.allocation.proposal import TradeProposal
from services.allocation.rebalance import Holdings, estimation_symbols, propose_trades
from services.data.models import Lot, PricingPack
from services.data.policy import Policy
from services.errors import InputError, OptimizerError
from services.estimation.cache import EstimateCache, EstimationKey, estimation_key
from services.estimation.estimators import Estimates, estimate_for_policy
from services.tax.wash import WashHistory

_log = structlog.get_logger("optimizer.batch")


@dataclass(frozen=True)
class ProposalJob:
    """One ``propose_trades`` call, less its pack (which goes to each worker once)."""

    holdings: Holdings
    policy: Policy
    ratings: Mapping[str, float]
    named_benchmarks: Mapping[str, Mapping[str, float]]
    cash_flow: Decimal | None = None
    drift_band_pct: float | None = None
    notes: tuple[str, ...] = ()
    frontier_points: int | None = None
    explain_limits: bool = False
    lots: tuple[Lot, ...] | None = None
    wash_history: WashHistory | None = None


@dataclass(frozen=True)
class Outcome:
    """A finished job: its proposal or its error, and the seconds the worker spent on it."""

    proposal: TradeProposal | None
    error: OptimizerError | None
    seconds: float


@dataclass
class BatchStats:
    """What a run shared: packs scattered, estimates computed once for several jobs."""

    jobs: int = 0
    packs: int = 0
    shared_estimates: int = 0
    jobs_on_shared_estimates: int = 0


def compute_proposal(
    pack: PricingPack, job: ProposalJob, shared: tuple[EstimationKey, Estimates] | None
) -> Outcome:
    """Run one job on a worker; errors are returned, not raised (they are the job's result)."""
    started = time.perf_counter()
    cache = EstimateCache({shared[0]: shared[1]}) if shared is not None else None
    try:
        proposal = propose_trades(
            pack, job.holdings, job.policy, dict(job.ratings),
            {name: dict(weights) for name, weights in job.named_benchmarks.items()},
            cash_flow=job.cash_flow, estimates=cache, drift_band_pct=job.drift_band_pct, notes=job.notes,
            frontier_points=job.frontier_points, explain_limits=job.explain_limits, lots=job.lots,
            wash_history=job.wash_history,
        )
        return Outcome(proposal, None, time.perf_counter() - started)
    except OptimizerError as err:
        return Outcome(None, err, time.perf_counter() - started)
    except Exception as exc:  # a bug: logged with its traceback here, reported like the CLI does
        _log.exception("batch_job_failed")
        return Outcome(None, OptimizerError(f"unexpected {type(exc).__name__}: {exc}"),
                       time.perf_counter() - started)


def compute_estimates(
    pack: PricingPack, symbols: tuple[str, ...], policy: Policy
) -> tuple[EstimationKey, Estimates] | None:
    """Estimates shared by several jobs; None when estimation fails (each job then reports why)."""
    try:
        return estimation_key(pack, symbols, policy), estimate_for_policy(pack, list(symbols), policy)
    except OptimizerError:
        return None


class WorkerSetup(WorkerPlugin):
    """Prepares each worker once: the caller's setup (logging), imports, BLAS thread limits."""

    name = "optimizer-batch-worker-setup"

    def __init__(self, blas_threads: int, hook: Callable[[], None] | None):
        self.blas_threads = blas_threads
        self.hook = hook

    def setup(self, worker: Any) -> None:
        # No collections while the imports below create their long-lived objects (frozen after).
        collecting = gc.isenabled()
        gc.disable()
        try:
            if self.hook is not None:
                self.hook()
            from threadpoolctl import threadpool_limits

            from services.allocation.optimization import warm_up as warm_solver
            from services.estimation.riskfolio_adapter import warm_up as warm_estimators

            # cvxpy, Clarabel and the estimators' first-use costs are paid here, while the client
            # is still preparing the requests, not by each worker's first job (3-5 s under load).
            warm_solver()
            warm_estimators()
            # The BLAS libraries those loaded are limited here.
            threadpool_limits(limits=self.blas_threads)
        finally:
            # What start-up made lives until the worker exits: kept out of every later collection
            # and out of the one at exit. Unfrozen, a worker took 2.3 s to stop and, under load,
            # outlived the nanny's 4 s grace and was killed.
            gc.freeze()
            if collecting:
                gc.enable()


def start_local_cluster(workers: int | None = None) -> LocalCluster:
    """A cluster on this machine: ``workers`` processes (default: the cores), one thread each.

    The active memory manager is off so that packs broadcast to every worker stay there for
    the whole batch instead of being trimmed to one copy between tasks.
    """
    count = CPU_COUNT if workers is None else workers
    if count < 1:
        raise InputError(f"workers: {count} is not a number of processes; give 1 or more",
                         details={"field": "workers", "value": count})
    with dask.config.set({"distributed.scheduler.active-memory-manager.start": False}):
        return LocalCluster(
            n_workers=count, threads_per_worker=1, processes=True, host="127.0.0.1",
            dashboard_address=":0", silence_logs=logging.WARNING,
        )


@dataclass
class BatchEngine:
    """A Dask client on an existing scheduler or on a ``LocalCluster`` it starts and stops.

    Use it as a context manager; ``run`` can be called several times within it.

    Attributes:
        scheduler: address of an existing scheduler (``tcp://HOST:PORT``); None starts a
            LocalCluster with ``workers`` processes.
        workers: LocalCluster processes (default: the cores); ignored with ``scheduler``.
        blas_threads: BLAS threads per worker process.
        worker_setup: run once in each worker before its first job (e.g. logging setup); it
            must be importable there, as must this package.
    """

    scheduler: str | None = None
    workers: int | None = None
    blas_threads: int = 1
    worker_setup: Callable[[], None] | None = None
    stats: BatchStats = field(default_factory=BatchStats)
    _cluster: LocalCluster | None = field(default=None, init=False, repr=False)
    _client: Client | None = field(default=None, init=False, repr=False)

    def __enter__(self) -> BatchEngine:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Start the local cluster (or connect to the scheduler) and set up its workers."""
        if self.scheduler is None:
            self._cluster = start_local_cluster(self.workers)
        try:
            self._client = Client(self._cluster if self._cluster is not None else self.scheduler,
                                  set_as_default=False)
            self._client.register_plugin(WorkerSetup(self.blas_threads, self.worker_setup))
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Disconnect, and stop the local cluster if this engine started it."""
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None

    @property
    def client(self) -> Client:
        if self._client is None:
            raise RuntimeError("BatchEngine is not started: use it as a context manager")
        return self._client

    def run(
        self, jobs: Sequence[tuple[Hashable, PricingPack, ProposalJob]]
    ) -> Iterator[tuple[Hashable, Outcome]]:
        """Submit every ``(id, pack, job)`` and yield ``(id, outcome)`` as each finishes."""
        client = self.client
        token = uuid.uuid4().hex[:12]
        keys = [_estimation_key_or_none(pack, job) for _, pack, job in jobs]
        uses: dict[EstimationKey, int] = {}
        for key in keys:
            if key is not None:
                uses[key] = uses.get(key, 0) + 1

        packs: dict[tuple[str, str], Future] = {}
        shared: dict[EstimationKey, Future] = {}
        futures: dict[Future, Hashable] = {}
        for (job_id, pack, job), key in zip(jobs, keys, strict=True):
            pack_key = (pack.id, pack.content_hash)
            if pack_key not in packs:
                packs[pack_key] = client.scatter(pack, broadcast=True, hash=False)
                self.stats.packs += 1
            estimates = None
            if key is not None and uses[key] > 1:
                if key not in shared:
                    shared[key] = client.submit(
                        compute_estimates, packs[pack_key], key[1], job.policy,
                        key=f"optimizer-estimate-{token}-{len(shared)}", pure=False,
                    )
                    self.stats.shared_estimates += 1
                estimates = shared[key]
                self.stats.jobs_on_shared_estimates += 1
            future = client.submit(compute_proposal, packs[pack_key], job, estimates,
                                   key=f"optimizer-propose-{token}-{len(futures)}", pure=False)
            futures[future] = job_id
            self.stats.jobs += 1
        # The jobs hold their inputs now; dropping ours lets Dask free each estimate after its
        # last job.
        shared.clear()
        try:
            # with_results: results are gathered as tasks finish, not fetched one round trip each.
            for future, outcome in as_completed(list(futures), with_results=True, loop=client.loop):
                yield futures.pop(future), outcome
                future.release()
        finally:
            for future in futures:  # interrupted: stop what has not finished
                future.cancel()
            for future in packs.values():
                future.release()


def _estimation_key_or_none(pack: PricingPack, job: ProposalJob) -> EstimationKey | None:
    """The job's estimation key; None when it estimates nothing or fails first (it says why)."""
    try:
        symbols = estimation_symbols(
            pack, job.holdings, job.policy, dict(job.ratings),
            {name: dict(weights) for name, weights in job.named_benchmarks.items()}, job.cash_flow,
        )
    except OptimizerError:
        return None
    return None if symbols is None else estimation_key(pack, symbols, job.policy)
