"""The ``optimizer`` command line, one module per command group.

- ``data``: seed, packs, portfolios, policies;
- ``call``: call (one capability on a JSON request), capabilities;
- ``patterns``: patterns, graph;
- ``runs``: run, resume, runs;
- ``users``: users add|revoke|list (API keys for HTTP and MCP);
- ``serve``: serve (the HTTP API);
- ``mcp``: mcp (the Model Context Protocol server, stdio or streamable HTTP);
- ``lifecycle``: targets set|show, restrictions set|show, history, orders;
- ``preferences``: preferences show|set (a portfolio's rebalancing preferences);
- ``batch``: batch (many propose_trades requests on a Dask cluster);
- ``ratings``: ratings import|list (quality ratings, shared or a user's own).

Each group module has ``register(commands)``; each command is a handler ``(args, store) -> int``
registered with ``common.command`` (help text, examples, handler). Human output is aligned plain
text on stdout; ``--json`` prints canonical JSON (sorted keys). Errors go to stderr as one JSON
object, with exit code 2 for input errors, 3 for domain errors and 1 for anything unexpected
(which is logged once with its type, its frames and a reference id, never local variables, and
reported as one JSON line naming that reference). A closed stdout (``optimizer ... | head``) ends
the command quietly with the exit status of a broken pipe (141, as if killed by SIGPIPE).
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from pathlib import Path
from uuid import uuid4

import structlog

from agents.cli import (
    batch,
    call,
    data,
    lifecycle,
    mcp,
    patterns,
    preferences,
    proposal_report,
    ratings,
    runs,
    serve,
    users,
)
from agents.cli.common import HelpFormatter, fail, pause_gc
from agents.logging import configure_logging
from services.errors import DomainError, InputError, OptimizerError

log = structlog.get_logger()

GROUPS = (data, call, patterns, runs, lifecycle, batch, users, serve, mcp, proposal_report, preferences, ratings)

# What a shell reports for a process killed by SIGPIPE (128 + 13).
BROKEN_PIPE_EXIT = 141
# Environment faults the user can act on (free space, permissions), not bugs.
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT}


def main(argv: list[str] | None = None) -> int:
    """Run one command and return its exit code (``--help`` returns 0, usage errors 2).

    Called without ``argv`` (the ``optimizer`` script, ``python -m agents.cli``), the process runs
    this one command: garbage collection pauses while it imports (``common.pause_gc``).
    """
    if argv is None:
        pause_gc()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    try:
        configure_logging()
    except ValueError as exc:
        configure_logging(level="WARNING", fmt="json")
        return fail(InputError(str(exc)))
    # Imported after parsing, so that --help and usage errors load no store (SQLAlchemy) or data.
    from agents.wiring import configure_threads, open_store

    try:
        configure_threads(args.threads)
    except ValueError as exc:
        return fail(InputError(str(exc), details={"field": "threads"}))

    try:
        store = open_store(args.home)
        try:
            # A fresh home gets the demo data, so every command works out of the box.
            # (Seeding loads pandas: checked first, so that a seeded store never pays for it.)
            if args.autoseed and store.is_empty():
                from services.data.seeds import seed_if_empty

                if seed_if_empty(store):
                    log.info("seeded empty store", store=repr(store))
            code = int(args.func(args, store))
            # Flushed here, so a reader that has gone away is noticed as a broken pipe below
            # rather than at interpreter exit. (The MCP stdio transport closes stdout itself.)
            if not sys.stdout.closed:
                sys.stdout.flush()
            return code
        finally:
            store.close()
    except OptimizerError as err:
        return fail(err)
    except BrokenPipeError:
        return _stdout_closed()
    except OSError as exc:
        if exc.errno not in _ENVIRONMENT_ERRNOS:
            return _internal_error(args, exc)
        return fail(
            DomainError(
                f"cannot write {exc.filename or 'a file'}: {exc.strerror}",
                code="environment_error",
                details={"file": None if exc.filename is None else str(exc.filename),
                         "errno": errno.errorcode.get(exc.errno or 0, str(exc.errno))},
            )
        )
    except Exception as exc:
        return _internal_error(args, exc)


def _internal_error(args: argparse.Namespace, exc: BaseException) -> int:
    """Log the unexpected error once under a fresh reference; tell the user only that reference.

    The message of an unexpected exception may quote data (a portfolio, a request), so it goes
    to the log with the exception's type and frames, not to the user.
    """
    reference = uuid4().hex[:16]
    log.error("internal_error", command=args.command, reference=reference,
              error_type=type(exc).__name__, exc_info=exc)
    return fail(
        OptimizerError(
            f"internal error (reference {reference}): the command failed unexpectedly; the log "
            "line with this reference has the details",
            details={"reference": reference, "type": type(exc).__name__},
        )
    )


def _stdout_closed() -> int:
    """The reader of stdout went away (``| head``): stop quietly, as a SIGPIPE death would.

    Python would report the failed flush of the closed stdout again at exit, so stdout is
    pointed at /dev/null first.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout without a file descriptor (an embedding, a test)
        pass
    return BROKEN_PIPE_EXIT


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every command registered."""
    parser = argparse.ArgumentParser(
        prog="optimizer",
        description="Deterministic, whole-share portfolio optimization from immutable pricing packs. "
        "Data lives in a store under the home directory ($OPTIMIZER_HOME, default ~/.optimizer); "
        "a fresh home is seeded with demo data on first use.",
        epilog="examples:\n  optimizer seed\n  optimizer portfolios list\n  optimizer --home /tmp/opt packs list --json\n"
        "  optimizer run policy_rebalance --input patterns/examples/policy_rebalance.json",
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--home", type=Path, default=None, help="home directory (overrides $OPTIMIZER_HOME)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, metavar="N",
        help="threads per BLAS/OpenMP/solver pool (overrides $OPTIMIZER_THREADS; default 1)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.register(commands)
    return parser

