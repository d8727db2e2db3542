"""``optimizer serve``: the HTTP API under uvicorn."""

from __future__ import annotations

import argparse
import copy
import os
from typing import TYPE_CHECKING, Any

from agents.cli.common import command, resume_gc

if TYPE_CHECKING:  # the store (SQLAlchemy) loads when a command runs, not for --help
    from services.data.store import Store


def register(commands: Any) -> None:
    """Add serve."""
    parser = command(
        commands,
        "serve",
        summary="serve the HTTP API (FastAPI under uvicorn)",
        description="Serve the optimizer over HTTP on the store of this home ($OPTIMIZER_HOME, or "
        "$OPTIMIZER_DB_URL for PostgreSQL). Every endpoint but /healthz needs `Authorization: Bearer "
        "KEY`, a key from `optimizer users add NAME`. OpenAPI at /openapi.json, docs at /docs; "
        "the dashboard at / (sign in there with the same key). "
        "Errors are JSON {code, message, details} with 400/401/404/409/413/422; a body over "
        "--max-body-bytes is refused with 413 before it is parsed. Logs go to stderr. Stop with "
        "Ctrl-C (SIGINT) or SIGTERM: requests in flight finish first.",
        examples=[
            "optimizer serve",
            "optimizer serve --host 0.0.0.0 --port 8080 --workers 4",
            "OPTIMIZER_DB_URL=postgresql+psycopg://opt:secret@db/optimizer optimizer serve --workers 4",
            "curl -s -H \"Authorization: Bearer $KEY\" http://127.0.0.1:8000/v1/portfolios",
        ],
        func=_cmd_serve,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to bind (default 8000)")
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes, each with its own agent (default 1)")
    parser.add_argument("--max-body-bytes", type=int, default=None, metavar="N",
                        help="largest request body accepted (default 5 MB = 5242880)")


def _cmd_serve(args: argparse.Namespace, store: Store) -> int:
    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    from agents.http.app import MAX_BODY_ENV
    from agents.wiring import HOME_ENV, resolve_home

    # Workers are separate processes that build the app from the environment.
    os.environ[HOME_ENV] = str(resolve_home(args.home))
    if args.max_body_bytes is not None:
        os.environ[MAX_BODY_ENV] = str(args.max_body_bytes)
    # stdout belongs to results: uvicorn's access log goes to stderr like every other log.
    log_config = copy.deepcopy(LOGGING_CONFIG)
    log_config["handlers"]["access"]["stream"] = "ext://sys.stderr"
    store.close()
    resume_gc()  # a server runs for long: with one worker, the app and its agent live in this process
    uvicorn.run(
        "agents.http.app:create_app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_config=log_config,
    )
    return 0
