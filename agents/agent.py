"""``OptimizerAgent``: the plugin an orchestrator loads.

It registers the capabilities explicitly, describes them, executes them by name through the
capability runner (with a result cache), runs patterns as LangGraph graphs with approval gates
that survive a restart, and hands the capabilities to an LLM as LangChain tools.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import uuid4

import structlog

from agents.logging import LEVEL_ENV, configure_logging
from agents.optimization import latest as recorded_optimization
from agents.optimization import optimize as optimize_contract
from agents.optimization import optimize_item as optimize_contract_item
from agents.run_log import LEASE, RunLog, setup
from agents.wiring import checkpointer, open_store, resolve_home
from capabilities.base import Capability, RequestContext, Services
from capabilities.cache import ResultCache
from capabilities.catalog import optimizer_capabilities
from capabilities.registry import CapabilityRegistry
from capabilities.runner import CapabilityRunner, canonical_json
from patterns.loader import (
    load_pattern,
    pattern_source,
    prepare_inputs,
    read_pattern_document,
    shipped_patterns,
)
from patterns.model import Pattern
from services.data.seeds import load_benchmarks, load_constraint_defaults, seed_if_empty
from services.data.store import Store
from services.errors import (
    AuthenticationError,
    ConflictError,
    InputError,
    NotFoundError,
    OptimizerError,
)

# LangChain and LangGraph (about 1 s to import) are imported where patterns and tools use them,
# so capability calls and listings never load them.
if TYPE_CHECKING:
    from langchain_core.tools import BaseTool

    from agents.batch import BatchItem
    from patterns.compiler import CapabilityCaller

RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
RUN_SUMMARY_OUTPUT_CHARS = 600


class OptimizerAgent:
    """Portfolio-optimizer capabilities and patterns over one store.

    ``OptimizerAgent()`` uses the embedded store under ``$OPTIMIZER_HOME`` (seeding demo data into
    an empty one); pass ``store=`` to use another, ``cache=`` for a result cache with another
    clock or size, and ``run_log=`` for a run log with another clock. Pattern runs and their
    LangGraph checkpoints live in the store's database.
    """

    def __init__(
        self,
        store: Store | None = None,
        *,
        home: Path | None = None,
        cache: ResultCache | None = None,
        run_log: RunLog | None = None,
    ):
        if not structlog.is_configured():
            # An application that set structlog up keeps its setup; otherwise the agent's log
            # lines go to stderr, never stdout (stdout carries results and, over MCP, protocol),
            # one line per call (INFO) unless $OPTIMIZER_LOG_LEVEL says otherwise.
            configure_logging(level=os.environ.get(LEVEL_ENV) or "INFO")
        if store is None:
            store = open_store(home)
            seed_if_empty(store)
        self.store = store
        self.home = resolve_home(home)
        self._runs = run_log
        self.registry = CapabilityRegistry()
        for capability in optimizer_capabilities():
            self.registry.register(capability)
        services = Services(
            store=store,
            constraint_defaults=load_constraint_defaults(),
            benchmarks=load_benchmarks(),
        )
        self.runner = CapabilityRunner(
            self.registry, services, cache if cache is not None else ResultCache()
        )
        self._log = structlog.get_logger("optimizer.pattern")

    # --- capabilities ----------------------------------------------------------------------------

    def describe(self) -> list[dict[str, Any]]:
        """Each capability's name, description, input and output JSON Schemas, TTL and source."""
        return [c.describe() for c in self.registry]

    def execute(
        self,
        name: str,
        request: Any,
        ctx: RequestContext | None = None,
        *,
        allow_writes: bool = False,
    ) -> dict[str, Any]:
        """Run capability ``name`` on ``request``; the result carries ``_metadata``.

        A capability that changes a portfolio (``optimizer.book_trades``) runs as a step of a
        pattern, after the approval gate whose recorded decision it books; the CLI, HTTP and
        tools therefore cannot call it directly. Code embedding the agent may, with
        ``allow_writes=True``, and then answers for the decision it passes.

        Raises:
            InputError: ``name`` writes and ``allow_writes`` is false.
        """
        if not allow_writes and name in self.registry and self.registry.get(name).writes:
            raise InputError(
                f"{name} changes a portfolio; it runs only as a step of a pattern after its approval "
                "gate (e.g. `optimizer run drift_rebalance`), not as a direct call",
                details={"field": "capability", "value": name,
                         "callable": [c.name for c in self.tool_capabilities()]},
            )
        return self.runner.run(name, request, ctx or RequestContext())

    def run_batch(
        self,
        requests: Iterable[Any],
        ctx: RequestContext | None = None,
        *,
        scheduler: str | None = None,
        workers: int | None = None,
        on_complete: Callable[[int, bool], None] | None = None,
    ) -> Iterator[BatchItem]:
        """Run many ``optimizer.propose_trades`` requests on Dask; yield their items in input order.

        Each item's ``result`` is byte-identical to ``execute`` on the same request (the result
        cache is not used) and is recorded in the history; a request that fails is an item with
        its ``error``. See ``agents.batch`` for how the work is split and ``services.batch`` for
        the engine.

        Args:
            requests: request payloads (numbered 1, 2, ...) or ``agents.batch.BatchRequest``s.
            ctx: who the batch acts for; every request is checked against it.
            scheduler: address of an existing Dask scheduler; None starts a LocalCluster.
            workers: LocalCluster processes (default: one per core).
            on_complete: called with (line, ok) as each request finishes, in any order.
        """
        from agents.batch import run_batch

        return run_batch(self.runner, requests, ctx or RequestContext(), scheduler=scheduler,
                         workers=workers, worker_setup=configure_logging, on_complete=on_complete)

    def authenticate(self, api_key: str | None) -> RequestContext:
        """The request context of the user an API key belongs to.

        Raises:
            AuthenticationError: no key, or a key that is unknown or revoked (one message for
                all three, so a caller learns nothing about which keys exist).
        """
        user = self.store.user_for_api_key(api_key) if api_key else None
        if user is None:
            raise AuthenticationError(
                "a valid API key is required: send `Authorization: Bearer KEY`; "
                "`optimizer users add NAME` creates one"
            )
        return RequestContext(user=user)

    # --- reads and the optimization service contract (shared by the HTTP and MCP adapters) ----

    def list_packs(self) -> list[dict[str, Any]]:
        """The stored pricing packs, by id (packs are shared by everyone)."""
        return self.store.list_packs()

    def list_portfolios(self, ctx: RequestContext | None = None) -> list[dict[str, Any]]:
        """The portfolios ``ctx``'s user may use (the operator: all), by id."""
        return self.store.list_portfolios(user=(ctx or RequestContext()).user)

    def check_portfolio_access(self, portfolio_id: str, ctx: RequestContext | None = None) -> None:
        """Raise NotFoundError unless ``ctx``'s user may use the portfolio.

        To a named user, someone else's portfolio and a missing one give the same error, which
        lists nothing.
        """
        self.store.check_portfolio_access(portfolio_id, user=(ctx or RequestContext()).user)

    def portfolio_detail(self, portfolio_id: str, ctx: RequestContext | None = None) -> dict[str, Any]:
        """A portfolio the caller may read: cash, shares per symbol, current target, restrictions.

        ``target`` is null when none is set (``optimizer targets set``); prices and weights come
        from ``optimizer.check_drift`` on a pack, not from here.

        Raises:
            NotFoundError: no such portfolio, or someone else's (one message for both).
        """
        portfolio = self.store.get_portfolio(portfolio_id, user=(ctx or RequestContext()).user)
        targets = self.store.list_targets(portfolio.id)
        return {
            "id": portfolio.id,
            "cash": float(portfolio.cash),
            "version": self.store.portfolio_version(portfolio.id),
            "positions": [{"symbol": s, "shares": n} for s, n in portfolio.positions().items()],
            "target": targets[-1] if targets else None,
            "restrictions": self.store.get_restrictions(portfolio.id),
        }

    def portfolio_history(self, portfolio_id: str, ctx: RequestContext | None = None) -> list[dict[str, Any]]:
        """Booked and rejected rebalances of a portfolio the caller may read, oldest first.

        One row per rebalance with the weights before and after (``services.lifecycle.history``).

        Raises:
            NotFoundError: no such portfolio, or someone else's (one message for both).
        """
        from services.lifecycle.history import summary_rows

        self.check_portfolio_access(portfolio_id, ctx)
        return summary_rows(self.store.list_rebalances(portfolio_id))

    def portfolio_preferences(self, portfolio_id: str, ctx: RequestContext | None = None) -> dict[str, Any]:
        """A portfolio's rebalancing preferences (``services.lifecycle.preferences.read``).

        Raises:
            NotFoundError: no such portfolio, or someone else's (one message for both).
        """
        from services.lifecycle import preferences

        return preferences.read(self.store, portfolio_id, user=(ctx or RequestContext()).user)

    def portfolio_preferences_history(
        self, portfolio_id: str, ctx: RequestContext | None = None
    ) -> list[dict[str, Any]]:
        """Every version of a portfolio's rebalancing preferences, oldest first.

        Raises:
            NotFoundError: no such portfolio, or someone else's (one message for both).
        """
        from services.lifecycle import preferences

        return preferences.history(self.store, portfolio_id, user=(ctx or RequestContext()).user)

    def set_portfolio_preferences(
        self, portfolio_id: str, values: Any, ctx: RequestContext | None = None
    ) -> dict[str, Any]:
        """Replace a portfolio's rebalancing preferences with ``values`` (omitted fields: defaults).

        Raises:
            NotFoundError: no such portfolio, or someone else's (one message for both).
            InputError: a bad field, named with its value and what is allowed; nothing is written.
        """
        from services.lifecycle import preferences

        found = preferences.write(self.store, portfolio_id, values, user=(ctx or RequestContext()).user)
        # Proposals read the restrictions from the store, which their cache key does not cover.
        if self.runner.cache is not None:
            self.runner.cache.clear()
        return found

    def portfolio_mix(
        self, portfolio_id: str, pricing_pack_id: str | None = None, ctx: RequestContext | None = None
    ) -> dict[str, Any]:
        """A portfolio's asset-class and sector mix at a pack's closes (default: the latest pack).

        Raises:
            NotFoundError: no such portfolio (or someone else's), or no such pack.
            InputError: the pack does not price a holding.
        """
        from services.analytics.mix import allocation_mix

        portfolio = self.store.get_portfolio(portfolio_id, user=(ctx or RequestContext()).user)
        pack = self.store.get_pack(pricing_pack_id or self.store.latest_pack_id())
        return allocation_mix(pack, portfolio.id, portfolio.positions(), portfolio.cash).model_dump(mode="json")

    def list_policies(self) -> list[dict[str, Any]]:
        """The policy templates, by id."""
        return self.store.list_policies()

    def policy(self, policy_id: str) -> dict[str, Any]:
        """One policy template.

        Raises:
            NotFoundError: no such template; the message lists the valid ids.
        """
        self.store.get_policy_template(policy_id)  # the store's NotFoundError lists the valid ids
        return next(p for p in self.store.list_policies() if p["id"] == policy_id)

    def optimize(self, request: Any, ctx: RequestContext | None = None) -> dict[str, Any]:
        """One optimization in the service contract's terms (see ``agents.optimization``)."""
        return optimize_contract(self, request, ctx or RequestContext())

    def optimize_batch_item(
        self, index: int, request: Any, ctx: RequestContext | None = None
    ) -> dict[str, Any]:
        """One item of a batch: ``{index, result, error}``; a failing item carries its error."""
        return optimize_contract_item(self, index, request, ctx or RequestContext())

    def latest_optimization(
        self, portfolio_id: str, ctx: RequestContext | None = None
    ) -> dict[str, Any]:
        """The last recorded optimization of a portfolio the caller may read."""
        return recorded_optimization(self, portfolio_id, ctx or RequestContext())

    def scenarios(self) -> list[dict[str, Any]]:
        """The stress scenarios optimizer.suggest_hedges accepts: id, name, narrative."""
        from services.hedging.scenarios import load_scenarios

        library = load_scenarios()
        return [
            {"id": i, "name": library.scenarios[i].name, "narrative": library.scenarios[i].narrative}
            for i in library.ids()
        ]

    def regimes(self) -> list[dict[str, Any]]:
        """The macro regimes optimizer.suggest_deleveraging_hedges accepts: regime, narrative, steps."""
        from services.hedging.regimes import load_playbooks

        playbooks = load_playbooks()
        return [
            {"regime": name, "narrative": regime.narrative, "steps": [step.action for step in regime.steps]}
            for name, regime in sorted(playbooks.regimes.items())
        ]

    def warm_up(self) -> None:
        """Load the solver and run the default estimator now (they load lazily, on first use).

        For a long-running process (MCP or HTTP server, batch worker): called once at start, the
        first request is then as fast as the second, apart from estimation caches. riskfolio
        (HRP and risk parity only) and LangGraph (patterns) still load on first use.
        """
        from services.allocation.optimization import warm_up as warm_solver
        from services.estimation.riskfolio_adapter import warm_up as warm_estimators

        warm_estimators()
        warm_solver()

    def tool_capabilities(self) -> list[Capability]:
        """The capabilities offered to a language model as tools: all but those that write.

        Booking trades changes a client's portfolio; a model reaches it only through a pattern
        whose approval gate a person decides, never as a tool it can call on its own.
        """
        return [c for c in self.registry if not c.writes]

    def as_langchain_tools(self, ctx: RequestContext | None = None) -> list[BaseTool]:
        """The capabilities as LangChain tools acting for ``ctx``'s user (see ``agents.tools``)."""
        from agents.tools import langchain_tools

        return langchain_tools(self.tool_capabilities(), self.execute, ctx or RequestContext())

    # --- patterns --------------------------------------------------------------------------------

    def load_pattern(self, name: str | Path) -> tuple[Pattern, dict[str, Any]]:
        """A shipped pattern's id, or a pattern file's path, validated: the pattern and its document."""
        path = pattern_source(name)
        document = read_pattern_document(path)
        return load_pattern(document, self.registry, source=str(name)), document

    def patterns(self) -> list[Pattern]:
        """The shipped patterns, validated against this agent's capabilities."""
        return [self.load_pattern(pattern_id)[0] for pattern_id in shipped_patterns()]

    def pattern_graph(self, name: str | Path) -> str:
        """The compiled graph of a pattern as a Mermaid flowchart."""
        from patterns.compiler import compile_pattern

        pattern, _ = self.load_pattern(name)
        return compile_pattern(pattern, self.runner).get_graph().draw_mermaid()

    def run_pattern(
        self,
        name: str | Path,
        inputs: Any,
        ctx: RequestContext | None = None,
        *,
        run_id: str | None = None,
        call_log: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Run a pattern until it completes, fails, is rejected or waits at an approval gate.

        Args:
            name: a shipped pattern's id or a pattern file's path.
            inputs: the run's inputs, validated against the pattern's inputs schema.
            ctx: who the run acts for; its capability calls are logged under the run id.
            run_id: the run's id (default: a random one); reusing one of ``ctx.user``'s own ids
                is refused, another user's is not (run ids are scoped per user).
            call_log: when given, each capability call is appended to it (record mode).

        Returns:
            The run's report: run_id, pattern, status, inputs, steps, approvals, halted, outputs
            (so far, for a waiting run) and pending_approval (the gate waiting, or null).
        """
        from patterns.compiler import initial_state

        pattern, document = self.load_pattern(name)
        prepared = prepare_inputs(pattern, inputs)
        ctx = ctx or RequestContext()
        run_id = run_id or uuid4().hex
        if not RUN_ID.fullmatch(run_id):
            raise InputError(
                f"run id {run_id!r} is invalid: 1-128 letters, digits or _ . : -, starting "
                "with a letter or digit",
                details={"field": "run_id", "value": run_id},
            )
        lease = uuid4().hex
        thread_id = self.runs.create(run_id, document, ctx.user, prepared, lease)
        return self._drive(
            pattern, (ctx.user, run_id, thread_id), initial_state(prepared), call_log, "run", lease
        )

    def resume_run(
        self,
        run_id: str,
        *,
        approve: bool,
        note: str | None = None,
        ctx: RequestContext | None = None,
        call_log: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Approve or reject the gate a run waits at, and let it go on; returns its new report.

        The run continues as the user who started it; ``ctx.user`` is recorded as the approver.
        One decision per gate: of two concurrent calls, the one whose compare-and-set in the
        database moves the run out of ``waiting_for_approval`` wins; the other gets a conflict
        naming the decision taken. A run orphaned while running (its process died) is first
        continued from its last checkpoint, as ``recover_run`` does.

        Raises:
            NotFoundError: no such run, or it is not ``ctx.user``'s.
            ConflictError: the run is not waiting for approval, or another decision came first.
        """
        from langgraph.types import Command

        ctx = ctx or RequestContext()
        row = self._run_row(run_id, ctx)
        owner = row["user"]
        if self.runs.is_orphaned(row):
            self._recover(row, ctx)
            row = self._reread(row)
        if row["status"] != "waiting_for_approval":
            raise _not_waiting(row)
        gate = row["report"]["pending_approval"]["gate"]
        decision = {"approved": approve, "note": note, "by": ctx.user}
        lease = uuid4().hex
        if not self.runs.claim_decision(owner, run_id, {"gate": gate, **decision}, lease):
            raise _not_waiting(self._reread(row))
        pattern = load_pattern(row["pattern_document"], self.registry, source=f"run {run_id}")
        return self._drive(
            pattern, (owner, run_id, row["thread_id"]), Command(resume=decision), call_log, "resume", lease
        )

    def recover_run(self, run_id: str, ctx: RequestContext | None = None) -> dict[str, Any]:
        """Continue a run orphaned while running (its lease lapsed) from its last checkpoint.

        A decision recorded before the process died is applied again to the gate it was
        meant for; a run with no checkpoint to continue from is marked failed.

        Raises:
            NotFoundError: no such run, or it is not ``ctx.user``'s.
            ConflictError: the run is not orphaned (it ended, waits, or its driver is alive).
        """
        ctx = ctx or RequestContext()
        return self._recover(self._run_row(run_id, ctx), ctx)

    def _recover(self, row: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        """``recover_run`` on a run's row (as ``_run_row`` reads it)."""
        from langgraph.types import Command

        from patterns.compiler import compile_pattern

        owner, run_id = row["user"], row["run_id"]
        lease = uuid4().hex
        if not self.runs.claim_orphan(owner, run_id, lease):
            current = self._reread(row)
            raise ConflictError(
                f"run '{run_id}' is {current['status']}"
                + (" and its process is alive" if current["status"] == "running" else "")
                + "; only a run whose process died while running can be recovered",
                details={"run_id": run_id, "status": current["status"]},
            )
        pattern = load_pattern(row["pattern_document"], self.registry, source=f"run {run_id}")
        config = {"configurable": {"thread_id": row["thread_id"]}}
        with checkpointer(self.store) as saver:
            snapshot = compile_pattern(pattern, self.runner, saver).get_state(config)
        if not snapshot.values:
            error = {
                "code": "orphaned",
                "message": f"run '{run_id}' stopped before its first checkpoint; start it again",
            }
            self.runs.finish(owner, run_id, "failed", lease, error=error)
            return _public(self._reread(row))
        graph_input: Any = None
        decided = row.get("decision")
        pending = [i.value.get("gate") for i in snapshot.interrupts if isinstance(i.value, dict)]
        if decided and decided.get("gate") in pending:
            graph_input = Command(resume={k: decided[k] for k in ("approved", "note", "by")})
        self._drive(pattern, (owner, run_id, row["thread_id"]), graph_input, None, "recover", lease)
        return _public(self._reread(row))

    def recover_runs(self, ctx: RequestContext | None = None) -> list[dict[str, Any]]:
        """Recover every orphaned run ``ctx`` may see; their records, oldest first."""
        ctx = ctx or RequestContext()
        out = []
        for owner, run_id in self.runs.orphans():
            if ctx.user is not None and owner != ctx.user:
                continue
            row = self.runs.get(owner, run_id)
            if row is None:
                continue
            try:
                out.append(self._recover(row, ctx))
            except ConflictError:
                continue  # another process recovered it first
            except OptimizerError:
                out.append(_public(self._reread(row)))
        return out

    def cancel_run(self, run_id: str, ctx: RequestContext | None = None) -> dict[str, Any]:
        """Cancel a run that waits at a gate or is running; its record.

        A driver still working on a cancelled run finds its lease gone and records nothing.

        Raises:
            NotFoundError: no such run, or it is not ``ctx.user``'s.
            ConflictError: the run had already ended.
        """
        ctx = ctx or RequestContext()
        row = self._run_row(run_id, ctx)
        if not self.runs.cancel(row["user"], run_id, ctx.user):
            current = self._reread(row)
            raise ConflictError(
                f"run '{run_id}' is {current['status']}; only a running or waiting run can be "
                "cancelled",
                details={"run_id": run_id, "status": current["status"]},
            )
        return _public(self._reread(row))

    def play_case(self, case: dict[str, Any]) -> dict[str, Any]:
        """Run a golden case (and resume it when it says so); returns its files by relative path.

        ``case`` is a recorded ``case.json``: pattern, inputs, run_id, user and optionally
        ``resume`` with the approval decision (see ``agents.recording``).
        """
        from agents.recording import case_files

        calls: list[dict[str, Any]] = []
        ctx = RequestContext(user=case.get("user"), trace_id=case["run_id"])
        report = self.run_pattern(
            case["pattern"], case["inputs"], ctx, run_id=case["run_id"], call_log=calls
        )
        if "resume" in case:
            decision = case["resume"]
            report = self.resume_run(
                case["run_id"],
                approve=decision["approve"],
                note=decision.get("note"),
                ctx=ctx,
                call_log=calls,
            )
        return case_files(case, calls, report)

    def run_record(self, run_id: str, ctx: RequestContext | None = None) -> dict[str, Any]:
        """A run's record (pattern, status, user, timestamps, inputs, report, error).

        Raises:
            NotFoundError: ``ctx.user`` has no such run (another user's run of that id is never
                seen: run ids are scoped per user).
            InputError: the operator named a run id that several users use and they have none
                of their own by that id.
        """
        return _public(self._run_row(run_id, ctx or RequestContext()))

    def _run_row(self, run_id: str, ctx: RequestContext) -> dict[str, Any]:
        """The run ``run_id`` of ``ctx.user``, with its thread id (see ``run_record``).

        A named user reaches only their own runs. The operator, who may see every run, reaches
        their own run of that id, else the only user's run of that id; several are ambiguous.
        """
        owner = ctx.user
        if owner is None and self.runs.get(None, run_id) is None:
            users = self.runs.users_of(run_id)
            if len(users) > 1:
                raise InputError(
                    f"run id '{run_id}' is used by several users ({', '.join(sorted(map(str, users)))}); "
                    "act as one of them with --user NAME",
                    details={"field": "run_id", "value": run_id, "allowed": sorted(map(str, users))},
                )
            owner = users[0] if users else None
        row = self.runs.get(owner, run_id)
        if row is None:
            raise NotFoundError(
                f"run '{run_id}' not found; `optimizer runs list` shows your runs",
                details={"field": "run_id", "value": run_id},
            )
        return row

    def _reread(self, row: dict[str, Any]) -> dict[str, Any]:
        """The current state of the run ``row`` was read from (its owner's run of that id)."""
        current = self.runs.get(row["user"], row["run_id"])
        assert current is not None, "runs are never deleted"
        return current

    def run_report(self, run_id: str, ctx: RequestContext | None = None) -> dict[str, Any]:
        """A run's latest report (for a run that failed before reporting: its id, pattern, status, error).

        Raises:
            NotFoundError: no such run, or it is not ``ctx.user``'s.
        """
        row = self.run_record(run_id, ctx)
        if row.get("report"):
            return {**row["report"], "status": row["status"]}
        return {
            "run_id": run_id,
            "pattern": {"id": row["pattern_id"], "version": row["pattern_version"]},
            "status": row["status"],
            "error": row.get("error"),
        }

    @staticmethod
    def run_view(report: dict[str, Any], detail: str = "full") -> dict[str, Any]:
        """A run report in the view asked for.

        ``summary`` keeps the status, inputs, approvals, the gate waiting, each step's status (and
        error) and the outputs of at most ``RUN_SUMMARY_OUTPUT_CHARS`` characters each, naming the
        larger ones in ``outputs_omitted``; ``full`` is the report as it is.
        """
        if detail == "full":
            return report
        keep = ("run_id", "pattern", "status", "inputs", "approvals", "halted", "pending_approval", "error")
        out: dict[str, Any] = {"detail": "summary", **{k: report[k] for k in keep if k in report}}
        if "steps" in report:
            out["steps"] = {
                step_id: {k: v for k, v in step.items() if k not in ("request", "output")}
                for step_id, step in report["steps"].items()
            }
        if "outputs" in report:
            outputs = report["outputs"] or {}
            small = {k: v for k, v in outputs.items() if len(canonical_json(v)) <= RUN_SUMMARY_OUTPUT_CHARS}
            out["outputs"] = small
            out["outputs_omitted"] = sorted(set(outputs) - set(small))
        return out

    def list_runs(self, ctx: RequestContext | None = None, limit: int = 20) -> list[dict[str, Any]]:
        """The latest runs first; a named user sees only their own."""
        return self.runs.list(user=(ctx or RequestContext()).user, limit=limit)

    @property
    def runs(self) -> RunLog:
        """The run log on the store's database; its tables are created on first use."""
        if self._runs is None:
            setup(self.store)
            self._runs = RunLog(self.store.engine)
        return self._runs

    @contextmanager
    def _lease_kept(self, owner: str | None, run_id: str, lease: str) -> Iterator[None]:
        """Renew ``lease`` on ``owner``'s run in the background while the body runs."""
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(LEASE.total_seconds() / 3):
                if not self.runs.renew(owner, run_id, lease):
                    return

        keeper = threading.Thread(target=renew, name=f"lease-{run_id}", daemon=True)
        keeper.start()
        try:
            yield
        finally:
            stop.set()
            keeper.join()

    def _drive(
        self,
        pattern: Pattern,
        key: tuple[str | None, str, str],
        graph_input: Any,
        call_log: list[dict[str, Any]] | None,
        phase: str,
        lease: str,
    ) -> dict[str, Any]:
        """Invoke the graph until it ends or interrupts; record and return the report.

        ``key`` is the run's (user, run id, thread id); the run acts as its user.

        Raises:
            ConflictError: the run was cancelled (or taken over) while this call drove it;
                its outcome is not recorded.
        """
        from agents.recording import RecordingCaller
        from patterns.compiler import RunContext, compile_pattern, outputs_of

        caller: CapabilityCaller = (
            self.runner if call_log is None else RecordingCaller(self.runner, call_log, phase)
        )
        user, run_id, thread_id = key
        started = time.perf_counter()
        outcome = "internal_error"
        try:
            with checkpointer(self.store) as saver, self._lease_kept(user, run_id, lease):
                graph = compile_pattern(pattern, caller, saver)
                state = graph.invoke(
                    graph_input,
                    {"configurable": {"thread_id": thread_id}},
                    context=RunContext(user=user, trace_id=run_id),
                )
            interrupts = state.pop("__interrupt__", None)
            status = "waiting_for_approval" if interrupts else state["status"]
            report = {
                "run_id": run_id,
                "pattern": {"id": pattern.id, "version": pattern.version},
                "status": status,
                "inputs": state["inputs"],
                "steps": state["steps"],
                "approvals": state["approvals"],
                "halted": state.get("halted"),
                "outputs": outputs_of(pattern, state) if interrupts else state["outputs"],
                "pending_approval": interrupts[0].value if interrupts else None,
            }
            if not self.runs.finish(user, run_id, status, lease, report=report):
                raise _lost_lease(run_id)
            outcome = status
            return report
        except OptimizerError as err:
            outcome = err.code
            if err.code != "lease_lost":
                self.runs.finish(user, run_id, "failed", lease, error=err.to_dict())
            raise
        except Exception as exc:
            self.runs.finish(
                user,
                run_id,
                "failed",
                lease,
                error={"code": "internal_error", "message": f"{type(exc).__name__}: {exc}"},
            )
            raise
        finally:
            self._log.info(
                "pattern_run",
                pattern=pattern.id,
                version=pattern.version,
                run_id=run_id,
                trace_id=run_id,
                user=user,
                phase=phase,
                outcome=outcome,
                duration_ms=round((time.perf_counter() - started) * 1000, 1),
            )


def _not_waiting(row: dict[str, Any]) -> ConflictError:
    """The conflict for a decision on a run that does not (or no longer) wait at a gate."""
    decided = row.get("decision")
    message = f"run '{row['run_id']}' is {row['status']}, not waiting for approval"
    if decided:
        verdict = "approved" if decided.get("approved") else "rejected"
        by = decided.get("by") or "the operator"
        message += f"; gate '{decided.get('gate')}' was already {verdict} by {by}"
    return ConflictError(
        message + "; nothing to resume",
        details={"run_id": row["run_id"], "status": row["status"], "decision": decided},
    )


def _public(row: dict[str, Any]) -> dict[str, Any]:
    """A run's row as users see it: without the checkpoint thread id (storage detail)."""
    return {k: v for k, v in row.items() if k != "thread_id"}


def _lost_lease(run_id: str) -> ConflictError:
    return ConflictError(
        f"run '{run_id}' was cancelled or taken over while it ran; its outcome was not recorded",
        code="lease_lost",
        details={"run_id": run_id},
    )
