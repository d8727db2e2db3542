"""The ``mcp`` command: serve the agent's tools to MCP hosts over stdio or streamable HTTP."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from agents.cli.common import agent_for, command
from agents.logging import configure_logging
from agents.tool_names import TOOL_NAMINGS
from services.errors import InputError

if TYPE_CHECKING:  # the store (SQLAlchemy) loads when a command runs, not for --help
    from services.data.store import Store


def register(commands: Any) -> None:
    """Add mcp."""
    parser = command(
        commands,
        "mcp",
        summary="serve the capabilities, discovery and pattern runs to MCP hosts (stdio or HTTP)",
        description="Run a Model Context Protocol server. Over stdio (the default, what desktop hosts "
        "launch) every tool acts for --user (default: the local operator, who sees every portfolio); "
        "stdout carries only protocol messages, logs go to stderr. Over streamable HTTP "
        "(http://HOST:PORT/mcp) every request needs `Authorization: Bearer KEY` with a key from "
        "`optimizer users add NAME`, and acts for that user. Tools: the four capabilities "
        "(summaries unless detail='full'), list packs, portfolios, policies, scenarios, regimes, "
        "patterns and runs, show a policy, run a pattern, get a run, approve or reject a waiting run. "
        "Tools are named by their capability names (optimizer.propose_trades, optimizer.list_packs, ...); "
        "--tool-names provider-safe serves optimizer__propose_trades etc. instead, for hosts that hand "
        "tool names on to a model API that rejects dots (e.g. langchain-mcp-adapters in front of such a model).",
        examples=[
            "optimizer mcp",
            "optimizer mcp --user alice",
            "optimizer mcp --transport http --host 127.0.0.1 --port 8765",
            "optimizer mcp --tool-names provider-safe",
        ],
        func=_cmd_mcp,
    )
    parser.add_argument("--transport", choices=("stdio", "http"), default="stdio",
                        help="stdio (default) or streamable http")
    parser.add_argument("--host", default="127.0.0.1", help="http: address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="http: port to listen on (default 8765)")
    parser.add_argument("--user", default=None,
                        help="stdio: act as this user (only their portfolios, proposals and runs)")
    parser.add_argument("--tool-names", choices=TOOL_NAMINGS, default="capability",
                        help="capability (default): tools named like optimizer.propose_trades; provider-safe: "
                        "optimizer__propose_trades, for model APIs that accept only [a-zA-Z0-9_-] in tool names")


def _cmd_mcp(args: argparse.Namespace, store: Store) -> int:
    from agents.mcp.server import serve_http, serve_stdio

    if args.transport == "http" and args.user is not None:
        raise InputError("--user applies to stdio only: over HTTP the user comes from each request's API key",
                         details={"field": "--user", "value": args.user})
    if not 0 < args.port < 65536:
        raise InputError(f"--port {args.port}: must be 1-65535", details={"field": "--port", "value": args.port})
    configure_logging(stdlib=True)
    agent = agent_for(args, store)
    agent.warm_up()  # the solver's imports are paid at start, not by the first tool call
    if args.transport == "stdio":
        serve_stdio(agent, args.user, args.tool_names)
    else:
        serve_http(agent, args.host, args.port, args.tool_names)
    return 0
