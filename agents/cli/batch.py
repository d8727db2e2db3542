"""``optimizer batch``: many propose_trades requests from a JSON Lines file, on a Dask cluster."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from agents.cli.common import agent_for, command, fail
from agents.logging import LEVEL_ENV, configure_logging
from services.errors import OptimizerError

if TYPE_CHECKING:  # the store (SQLAlchemy) loads when a command runs, not for --help
    from services.data.store import Store

INTERRUPTED = 130  # the shell's code for a process stopped by Ctrl-C
LOG_EVERY_SECONDS = 10.0


def register(commands: Any) -> None:
    """Add batch."""
    parser = command(
        commands,
        "batch",
        summary="run many propose_trades requests (JSON Lines) on a Dask cluster",
        description="Run optimizer.propose_trades on every line of a JSON Lines file (one request "
        "object per line, as for `optimizer call`; blank lines are skipped) and write one result per "
        "request to the output file, in input order: {\"line\": N, \"result\": {...}} or "
        "{\"line\": N, \"error\": {code, message, details}}. Each result is byte-identical to `optimizer "
        "call` on that request, with _metadata, and is recorded in the history. A line that is not "
        "JSON, is invalid, names a portfolio you may not read, or is infeasible is that line's "
        "error; the other lines go on. Work runs on Dask: by default a local cluster with one "
        "process per core (one BLAS thread each), or an existing cluster with --scheduler (its "
        "workers need this package installed). Each pricing pack is sent to the workers once, and "
        "requests with the same pack, symbols and estimation settings share one estimation. "
        "Results are written as they finish, in input order, so an interrupted batch (Ctrl-C, a "
        "crash) leaves a file that --resume continues without repeating or losing a line. A "
        "progress bar is drawn on a terminal; otherwise progress is logged as JSON lines on "
        "stderr. Exit 0 when the batch ran (item errors are in the file), 2 for an unreadable "
        "input or an output that exists without --resume, 130 when interrupted.",
        examples=[
            "printf '%s\\n' '{\"portfolio_id\": \"demo_diversified\", \"pricing_pack_id\": \"PP_2022-12-28\", "
            "\"policy_id\": \"quality_focused\"}' > requests.jsonl",
            "optimizer batch --input requests.jsonl --output results.jsonl",
            "optimizer batch --input requests.jsonl --output results.jsonl --resume   # after an interruption",
            "optimizer batch --input requests.jsonl --output results.jsonl --workers 1 --user alice",
            "optimizer batch --input requests.jsonl --output results.jsonl --scheduler tcp://10.0.0.5:8786",
        ],
        func=_cmd_batch,
    )
    parser.add_argument("--input", required=True, type=Path, metavar="REQUESTS.jsonl",
                        help="one propose_trades request (a JSON object) per line")
    parser.add_argument("--output", required=True, type=Path, metavar="RESULTS.jsonl",
                        help="results file: one JSON line per request, in input order")
    parser.add_argument("--scheduler", default=None, metavar="tcp://HOST:PORT",
                        help="run on an existing Dask cluster instead of a local one")
    parser.add_argument("--workers", type=_positive, default=None, metavar="N",
                        help="processes of the local cluster (default: one per core)")
    parser.add_argument("--resume", action="store_true",
                        help="continue an existing output file where it stopped")
    parser.add_argument("--user", default=None, help="act as this user (stored portfolios are owner-only)")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of workers; give 1 or more")
    return value


def _cmd_batch(args: argparse.Namespace, store: Store) -> int:
    from agents.batch import open_results, read_requests
    from capabilities.base import RequestContext

    ctx = RequestContext(user=args.user)
    requests = read_requests(args.input)
    output, done = open_results(args.output, requests, resume=args.resume)
    progress = _Progress(len(requests), done, terminal=sys.stderr.isatty())
    written = failed = 0
    try:
        with output:
            items = agent_for(args, store).run_batch(requests[done:], ctx, scheduler=args.scheduler,
                                                     workers=args.workers, on_complete=progress.update)
            for item in items:
                output.write(item.to_json() + "\n")
                output.flush()
                written += 1
                failed += not item.ok
    except KeyboardInterrupt:
        progress.close()
        fail(OptimizerError(
            f"interrupted: {done + written} of {len(requests)} results are in {args.output}; run the same "
            "command with --resume to finish", code="interrupted",
            details={"written": done + written, "total": len(requests), "output": str(args.output)}))
        return INTERRUPTED
    finally:
        progress.close()
    earlier = f"; {done} were there from an earlier run" if done else ""
    print(f"{written} requests run: {written - failed} succeeded, {failed} failed; "
          f"{done + written} of {len(requests)} results in {args.output}{earlier}")
    return 0


class _Progress:
    """A tqdm bar on a terminal; otherwise ``batch_progress`` log lines (INFO unless set lower)."""

    def __init__(self, total: int, done: int, *, terminal: bool):
        self.total, self.done, self.failed, self._initial = total, done, 0, done
        self.started = self.last_log = time.monotonic()
        self._bar: Any = None
        self._log = structlog.get_logger("optimizer.batch")
        if terminal:
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=done, unit="req", file=sys.stderr, dynamic_ncols=True)
        else:
            if os.environ.get(LEVEL_ENV) is None:
                configure_logging(level="INFO")  # progress is the point of these lines
            self._log.info("batch_started", total=total, already_done=done)
        self._closed = False

    def update(self, line: int, ok: bool) -> None:
        self.done += 1
        self.failed += not ok
        if self._bar is not None:
            self._bar.update(1)
            if self.failed:
                self._bar.set_postfix(failed=self.failed, refresh=False)
            return
        now = time.monotonic()
        if self.done == self.total or now - self.last_log >= LOG_EVERY_SECONDS:
            self.last_log = now
            self._log.info("batch_progress", **self._figures(now))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        else:
            self._log.info("batch_finished" if self.done == self.total else "batch_stopped",
                           **self._figures(time.monotonic()))

    def _figures(self, now: float) -> dict[str, Any]:
        elapsed = now - self.started
        rate = (self.done - self._initial) / elapsed if elapsed > 0 else 0.0
        return {"done": self.done, "total": self.total, "failed": self.failed,
                "elapsed_s": round(elapsed, 1), "per_s": round(rate, 2)}
