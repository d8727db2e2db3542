"""Batches of ``optimizer.propose_trades`` requests: the agent's side of ``services.batch``.

Why the work is split this way: validation, access checks, ``_metadata`` and history belong to
the capability runner, which ``services`` may not import; the Dask engine belongs to
``services.batch``, which knows nothing of requests. So, in this process, each request is
validated and authorized (``CapabilityRunner.prepare``) and resolved against the store
(``capabilities.propose_trades.resolve``); the engine computes the proposals on the cluster; and
each result comes back here for ``CapabilityRunner.complete`` (metadata, history), exactly the
second half of a single call. A batch result is therefore byte-identical to ``optimizer call``
on the same request, and the workers never touch the store.

Results are yielded in input order: one that finishes early waits for those before it. So the
output file is always a prefix of the final one, and ``--resume`` only has to count its lines.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from capabilities.base import RequestContext
from capabilities.propose_trades import resolve
from capabilities.runner import CapabilityRunner, PreparedCall, canonical_json
from services.errors import InputError, OptimizerError

CAPABILITY = "optimizer.propose_trades"
# Results are recorded in the history in groups once yielded: one commit per result would make
# the disk's sync the limit of a batch. A group is at most this many items or this old.
FLUSH_ITEMS = 64
FLUSH_SECONDS = 0.5


@dataclass(frozen=True)
class BatchRequest:
    """One request of a batch: its line number and payload, or why it could not be read."""

    line: int
    payload: Any = None
    error: OptimizerError | None = None


@dataclass(frozen=True)
class BatchItem:
    """One request's outcome: ``result`` (the capability's JSON, with ``_metadata``) or ``error``."""

    line: int
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> str:
        """The item as one line of canonical JSON: ``{"line": n, "result": {...}}`` or ``"error"``."""
        if self.error is not None:
            # Details may hold values json cannot write (as the CLI's error output allows for).
            error = json.loads(json.dumps(self.error, default=str))
            return canonical_json({"line": self.line, "error": error})
        return canonical_json({"line": self.line, "result": self.result})


def run_batch(
    runner: CapabilityRunner,
    requests: Iterable[Any],
    ctx: RequestContext,
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    worker_setup: Callable[[], None] | None = None,
    on_complete: Callable[[int, bool], None] | None = None,
) -> Iterator[BatchItem]:
    """Run ``optimizer.propose_trades`` on every request; yield the items in input order.

    ``requests`` are payloads (numbered 1, 2, ... in order) or ``BatchRequest``s. A request that
    fails (unreadable, invalid, not yours, infeasible) is an item with its error; the others
    go on. ``on_complete(line, ok)`` is called as each request finishes, in any order. The
    results yielded are recorded in the history, a group at a time (``FLUSH_ITEMS``) and when
    the iterator ends or is closed early (an interruption): exactly the items it yielded.
    """
    from services.batch.engine import BatchEngine

    items = [r if isinstance(r, BatchRequest) else BatchRequest(i, r) for i, r in enumerate(requests, 1)]
    lines = [item.line for item in items]
    if len(set(lines)) != len(lines):
        raise InputError("batch: request line numbers must be unique", details={"field": "line"})
    engine = BatchEngine(scheduler=scheduler, workers=workers, worker_setup=worker_setup)
    with ThreadPoolExecutor(max_workers=1) as pool:
        # The cluster starts (workers spawn and import) while the requests are prepared here.
        starting = pool.submit(engine.start) if any(item.error is None for item in items) else None
        try:
            yield from _run(runner, ctx, items, engine, starting, on_complete)
        finally:
            if starting is not None:
                with contextlib.suppress(Exception):  # a failed start has closed itself
                    starting.result()
            engine.close()


def _run(runner: CapabilityRunner, ctx: RequestContext, items: list[BatchRequest], engine: Any,
         starting: Future[None] | None, on_complete: Callable[[int, bool], None] | None) -> Iterator[BatchItem]:
    """Prepare every request here, compute on ``engine``, yield the items in input order."""
    from services.batch.engine import Outcome, ProposalJob

    finished: dict[int, tuple[PreparedCall | None, Outcome]] = {}
    calls: dict[int, PreparedCall] = {}
    jobs = []
    for item in items:
        try:
            if item.error is not None:
                raise item.error
            call = runner.prepare(CAPABILITY, item.payload, ctx)
            inputs = resolve(call.request, runner.services, ctx.user)
        except OptimizerError as err:
            finished[item.line] = (None, Outcome(None, err, 0.0))
            if on_complete is not None:
                on_complete(item.line, False)
            continue
        calls[item.line] = call
        jobs.append((item.line, inputs.pack, ProposalJob(inputs.holdings, inputs.policy, inputs.ratings,
                                                         inputs.benchmarks, inputs.cash_flow,
                                                         inputs.drift_band_pct, inputs.notes,
                                                         inputs.frontier_points, inputs.explain_limits,
                                                         inputs.lots, inputs.wash_history)))

    pending = iter(item.line for item in items)
    wanted = next(pending, None)
    unrecorded: list[tuple[PreparedCall, dict[str, Any]]] = []
    recorded_at = time.monotonic()

    def record() -> None:
        nonlocal recorded_at
        runner.record(unrecorded)
        unrecorded.clear()
        recorded_at = time.monotonic()

    def release() -> Iterator[BatchItem]:
        """The items next in input order, each counted as delivered once it is yielded."""
        nonlocal wanted
        while wanted is not None and wanted in finished:
            call, outcome = finished.pop(wanted)
            item = _item(runner, ctx, wanted, call, outcome)
            if call is not None and item.result is not None:
                unrecorded.append((call, item.result))
            wanted = next(pending, None)
            yield item
            if len(unrecorded) >= FLUSH_ITEMS or time.monotonic() - recorded_at >= FLUSH_SECONDS:
                record()

    try:
        yield from release()
        if jobs:
            assert starting is not None
            starting.result()
            for line, outcome in engine.run(jobs):
                finished[line] = (calls.pop(line), outcome)
                if on_complete is not None:
                    on_complete(line, outcome.error is None)
                yield from release()
    finally:
        record()  # also when the caller stops early: what it was given is in the history


def _item(runner: CapabilityRunner, ctx: RequestContext, line: int, call: PreparedCall | None,
          outcome: Any) -> BatchItem:
    """The finished request as an item with its metadata, as ``run`` makes it (history aside)."""
    pack_id = call.request.pricing_pack_id if call is not None else None
    error = outcome.error
    if error is None and call is not None:
        body = runner.complete(call, outcome.proposal, record=False)
        runner.log_call(CAPABILITY, ctx, pack_id, outcome.seconds, "ok", cached=False, line=line)
        return BatchItem(line, result=body)
    assert error is not None
    runner.log_call(CAPABILITY, ctx, pack_id, outcome.seconds, error.code, cached=False, line=line)
    return BatchItem(line, error=error.to_dict())


# --- files: JSON Lines in, JSON Lines out, resumable -------------------------------------------


def read_requests(path: Path) -> list[BatchRequest]:
    """One request per non-blank line of a JSON Lines file; a line that is not JSON is its error."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise InputError(f"cannot read requests {path}: {reason}", details={"file": str(path)}) from exc
    requests = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            requests.append(BatchRequest(number, json.loads(line, parse_constant=_reject_constant)))
        except json.JSONDecodeError as exc:
            requests.append(BatchRequest(number, error=InputError(
                f"{path.name} line {number} is not valid JSON: {exc.msg} at column {exc.colno}",
                details={"file": str(path), "line": number, "column": exc.colno})))
        except InputError as err:
            requests.append(BatchRequest(number, error=InputError(
                f"{path.name} line {number}: {err.message}", details={"file": str(path), "line": number})))
    return requests


def _reject_constant(name: str) -> Any:
    raise InputError(f"contains {name}, which is not a number; use a finite value", details={"value": name})


def open_results(path: Path, requests: list[BatchRequest], *, resume: bool) -> tuple[TextIO, int]:
    """Open the results file for appending; return it and how many requests it already answers.

    Without ``resume`` the file must not exist (results are never overwritten). With it, the
    complete lines already there must answer the first requests, in order; an unfinished last
    line (a write cut short) is removed.
    """
    if not path.exists():
        return path.open("w", encoding="utf-8"), 0
    if not resume:
        raise InputError(f"{path} already exists: pass --resume to continue it, or choose another --output",
                         details={"field": "output", "value": str(path)})
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    done = 0
    for number, raw in enumerate(complete.splitlines(), 1):
        try:
            line = json.loads(raw)["line"]
        except (ValueError, KeyError, TypeError):
            raise InputError(f"{path} line {number} is not a batch result; it cannot be resumed",
                             details={"file": str(path), "line": number}) from None
        if done >= len(requests) or line != requests[done].line:
            expected = requests[done].line if done < len(requests) else "none (the input has no more)"
            raise InputError(
                f"{path} line {number} answers input line {line}, but input line {expected} comes next: "
                "was it written from another input file?",
                details={"file": str(path), "line": number, "answers": line})
        done += 1
    handle = path.open("r+", encoding="utf-8")
    handle.truncate(len(complete))
    handle.seek(0, os.SEEK_END)
    return handle, done
