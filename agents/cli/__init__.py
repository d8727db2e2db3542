"""The ``optimizer`` command line, one module per command group.

- ``data``: seed, packs, portfolios, policies;
- ``call``: call (one capability on a JSON request), capabilities;
- ``patterns``: patterns, graph;
- ``runs``: run, resume, runs;
- ``users``: users add|revoke|list (API keys for HTTP and MCP);
- ``serve``: serve (the HTTP API).

Each group module has ``register(commands)``; each command is a handler ``(args, store) -> int``
registered with ``common.command`` (help text, examples, handler). Human output is aligned plain
text on stdout; ``--json`` prints canonical JSON (sorted keys). Errors go to stderr as one JSON
object, with exit code 2 for input errors, 3 for domain errors and 1 for anything unexpected
(which is also logged with its traceback).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import structlog

from agents.cli import call, data, patterns, runs, serve, users
from agents.cli.common import HelpFormatter, fail
from agents.logging import configure_logging
from agents.wiring import open_store
from services.data.seeds import seed_if_empty
from services.errors import InputError, OptimizerError

log = structlog.get_logger()

GROUPS = (data, call, patterns, runs, users, serve)


def main(argv: list[str] | None = None) -> int:
    """Run one command and return its exit code (``--help`` returns 0, usage errors 2)."""
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
    try:
        store = open_store(args.home)
        try:
            # A fresh home gets the demo data, so every command works out of the box.
            if args.autoseed and seed_if_empty(store):
                log.info("seeding empty store", store=repr(store))
            return int(args.func(args, store))
        finally:
            store.close()
    except OptimizerError as err:
        return fail(err)
    except Exception as exc:
        log.exception("internal_error", command=args.command)
        return fail(OptimizerError(f"unexpected {type(exc).__name__}: {exc}"))


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
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.register(commands)
    return parser

