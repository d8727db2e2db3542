"""``OptimizerAgent``: the plugin an orchestrator loads.

It registers the capabilities explicitly, describes them, executes them by name through the
capability runner (with a result cache), runs patterns as LangGraph graphs with approval gates
that survive a restart, and hands the capabilities to an LLM as LangChain tools.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import uuid4

import structlog
from langchain_core.tools import BaseTool
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.types import Command

from agents.logging import configure_logging
from agents.recording import RecordingCaller, case_files
from agents.run_log import RunLog
from agents.tools import langchain_tools
from agents.wiring import open_store, resolve_home, runs_database
from capabilities.base import RequestContext, Services
from capabilities.cache import ResultCache
from capabilities.catalog import optimizer_capabilities
from capabilities.registry import CapabilityRegistry
from capabilities.runner import CapabilityRunner
from patterns.compiler import (
    CapabilityCaller,
    RunContext,
    compile_pattern,
    initial_state,
    outputs_of,
)
from patterns.loader import (
    load_pattern,
    pattern_source,
    prepare_inputs,
    read_pattern_document,
    shipped_patterns,
)
from patterns.model import Pattern
from services.data.seeds import load_benchmarks, load_constraint_defaults, seed
from services.data.store import Store
from services.errors import (
    AuthenticationError,
    ConflictError,
    InputError,
    NotFoundError,
    OptimizerError,
)

if TYPE_CHECKING:
    from agents.batch import BatchItem

RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


class OptimizerAgent:
    """Portfolio-optimizer capabilities and patterns over one store.

    ``OptimizerAgent()`` uses the embedded store under ``$OPTIMIZER_HOME`` (seeding demo data into
    an empty one); pass ``store=`` to use another, ``cache=`` for a result cache with another
    clock or size, and ``run_log=`` for a run log with another clock. Pattern runs and their
    checkpoints live in ``<home>/runs.db``.
    """

    def __init__(
        self,
        store: Store | None = None,
        *,
        home: Path | None = None,
        cache: ResultCache | None = None,
        run_log: RunLog | None = None,
    ):
        if store is None:
            store = open_store(home)
            if store.is_empty():
                seed(store)
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

    def execute(self, name: str, request: Any, ctx: RequestContext | None = None) -> dict[str, Any]:
        """Run capability ``name`` on ``request``; the result carries ``_metadata``."""
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

    def as_langchain_tools(self, ctx: RequestContext | None = None) -> list[BaseTool]:
        """The capabilities as LangChain tools acting for ``ctx``'s user (see ``agents.tools``)."""
        return langchain_tools(list(self.registry), self.execute, ctx or RequestContext())

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
            run_id: the run's id (default: a random one); reusing an id is refused.
            call_log: when given, each capability call is appended to it (record mode).

        Returns:
            The run's report: run_id, pattern, status, inputs, steps, approvals, halted, outputs
            (so far, for a waiting run) and pending_approval (the gate waiting, or null).
        """
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
        self.runs.create(run_id, document, ctx.user, prepared)
        return self._drive(pattern, run_id, initial_state(prepared), ctx.user, call_log, "run")

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

        Raises:
            NotFoundError: no such run, or it is not ``ctx.user``'s.
            ConflictError: the run is not waiting for approval.
        """
        ctx = ctx or RequestContext()
        row = self.run_record(run_id, ctx)
        if row["status"] != "waiting_for_approval":
            raise ConflictError(
                f"run '{run_id}' is {row['status']}, not waiting for approval; nothing to resume",
                details={"run_id": run_id, "status": row["status"]},
            )
        pattern = load_pattern(row["pattern_document"], self.registry, source=f"run {run_id}")
        decision = {"approved": approve, "note": note, "by": ctx.user}
        return self._drive(
            pattern, run_id, Command(resume=decision), row["user"], call_log, "resume"
        )

    def play_case(self, case: dict[str, Any]) -> dict[str, Any]:
        """Run a golden case (and resume it when it says so); returns its files by relative path.

        ``case`` is a recorded ``case.json``: pattern, inputs, run_id, user and optionally
        ``resume`` with the approval decision (see ``agents.recording``).
        """
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
            NotFoundError: no such run, or it was started by another user (the same error, so
                nothing leaks about other users' runs).
        """
        ctx = ctx or RequestContext()
        row = self.runs.get(run_id)
        if row is None or (ctx.user is not None and row["user"] != ctx.user):
            raise NotFoundError(
                f"run '{run_id}' not found; `optimizer runs list` shows your runs",
                details={"field": "run_id", "value": run_id},
            )
        return row

    def list_runs(self, ctx: RequestContext | None = None, limit: int = 20) -> list[dict[str, Any]]:
        """The latest runs first; a named user sees only their own."""
        return self.runs.list(user=(ctx or RequestContext()).user, limit=limit)

    @property
    def runs(self) -> RunLog:
        """The run log, opened on first use so that plain capability calls never touch it."""
        if self._runs is None:
            self._runs = RunLog(runs_database(self.home))
        return self._runs

    def _drive(
        self,
        pattern: Pattern,
        run_id: str,
        graph_input: Any,
        user: str | None,
        call_log: list[dict[str, Any]] | None,
        phase: str,
    ) -> dict[str, Any]:
        """Invoke the graph until it ends or interrupts; record and return the report."""
        caller: CapabilityCaller = (
            self.runner if call_log is None else RecordingCaller(self.runner, call_log, phase)
        )
        started = time.perf_counter()
        outcome = "internal_error"
        try:
            with SqliteSaver.from_conn_string(str(runs_database(self.home))) as saver:
                graph = compile_pattern(pattern, caller, saver)
                state = graph.invoke(
                    graph_input,
                    {"configurable": {"thread_id": run_id}},
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
            self.runs.update(run_id, status, report=report)
            outcome = status
            return report
        except OptimizerError as err:
            outcome = err.code
            self.runs.update(run_id, "failed", error=err.to_dict())
            raise
        except Exception as exc:
            self.runs.update(
                run_id,
                "failed",
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
