"""The Model Context Protocol server: the agent's tools over stdio or streamable HTTP.

Built on the SDK's low-level ``Server``: the tools' JSON Schemas come from the capability
declarations and pydantic models (``agents.mcp.tools``), and calls go through our own handler so
that the conversation contract holds (``agents.tools``): a fixable error is a tool result with
``isError`` and the ``tool_error`` payload; an internal error is a JSON-RPC error carrying only a
reference id, its traceback goes to the log. Tool names follow the server's ``naming``
(``agents.tools.tool_name``): the capability names by default, ``provider-safe`` on request; the
instructions and error hints name tools as this server offers them.

Over stdio, stdout carries protocol messages and nothing else: ``serve_stdio`` sends every log
(structlog and the standard library's) to stderr and swaps ``sys.stdout`` for stderr while it
serves, so not even a stray ``print`` can corrupt the stream. Over HTTP every request must carry
``Authorization: Bearer KEY`` (a key from ``optimizer users add``), checked by the SDK's bearer
middleware with the agent as token verifier; a session stays bound to the key's user.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable
from typing import Any
from uuid import uuid4

import anyio
import structlog
from mcp import types
from mcp.server.lowlevel import Server
from mcp.shared.exceptions import McpError

from agents.agent import OptimizerAgent
from agents.mcp.tools import ToolSpec, build_tools
from agents.tool_names import ToolNaming, tool_name
from agents.tools import is_fixable, tool_error
from capabilities.base import RequestContext
from capabilities.runner import canonical_json
from services.errors import InputError, OptimizerError

SERVER_NAME = "optimizer-agent"
# The server's instructions; {name} fields are tool names as this server offers them.
INSTRUCTIONS = (
    "Portfolio optimization from immutable pricing packs. Start with {list_portfolios}, "
    "{list_packs} and {list_policies} to find ids; {propose_trades} returns a "
    "proposal_id that {analyze_impact} accepts instead of the trades. Results are summaries unless "
    "you pass detail='full'. A tool error carries code, message, valid_values and a hint: fix the call and "
    "try again."
)
# Result fields worth a sentence in the text part of a tool result, in the order they are shown.
_HEADLINE = (
    "proposal_id", "run_id", "status", "trade_count", "turnover_pct", "estimated_costs", "te_before_pct",
    "te_after_pct", "scenario_loss_before", "hedged_pct", "total_hedge_cost", "regime", "post_concentration_top10",
)

ContextOf = Callable[[], RequestContext]
log = structlog.get_logger("optimizer.mcp")


def build_server(agent: OptimizerAgent, context_of: ContextOf, naming: ToolNaming = "capability") -> Server[Any, Any]:
    """An MCP server offering ``build_tools(agent, naming)``, each call acting for ``context_of()``."""
    specs = build_tools(agent, naming)
    by_name = {spec.name: spec for spec in specs}
    id_lists = [spec.name for spec in specs if spec.lists_ids]
    instructions = INSTRUCTIONS.format_map({
        verb: tool_name(f"optimizer.{verb}", naming=naming)
        for verb in ("list_portfolios", "list_packs", "list_policies", "propose_trades", "analyze_impact")
    })
    server: Server[Any, Any] = Server(SERVER_NAME, version=_version(), instructions=instructions)
    # One call at a time: the agent's cache and stores are shared, and the work is CPU-bound anyway.
    lock = anyio.Lock()

    @server.list_tools()
    async def list_tools() -> list[types.Tool]:
        return [_tool(spec) for spec in specs]

    async def call_tool(request: types.CallToolRequest) -> types.ServerResult:
        name, arguments = request.params.name, request.params.arguments or {}
        spec = by_name.get(name)
        ctx = context_of()
        try:
            if spec is None:
                raise InputError(
                    f"unknown tool '{name}'; tools: {', '.join(sorted(by_name))}",
                    code="unknown_tool", details={"field": "name", "value": name, "allowed": sorted(by_name)},
                )
            async with lock:
                result = await anyio.to_thread.run_sync(spec.call, arguments, ctx)
        except OptimizerError as err:
            if not is_fixable(err):
                raise _internal(name, ctx, err) from err
            log.info("tool_error", tool=name, code=err.code, user=ctx.user, trace_id=ctx.trace_id)
            payload = tool_error(err, id_lists)
            return types.ServerResult(types.CallToolResult(
                content=[types.TextContent(type="text", text=canonical_json(payload))], isError=True,
            ))
        except Exception as exc:
            raise _internal(name, ctx, exc) from exc
        return types.ServerResult(types.CallToolResult(
            content=[types.TextContent(type="text", text=headline(spec, result)),
                     types.TextContent(type="text", text=canonical_json(result))],
            structuredContent=result,
            isError=False,
        ))

    server.request_handlers[types.CallToolRequest] = call_tool
    return server


def headline(spec: ToolSpec, result: dict[str, Any]) -> str:
    """One sentence naming the tool and the result's main figures (the JSON follows it)."""
    figures = [f"{key}={result[key]}" for key in _HEADLINE if result.get(key) is not None]
    # A listing has no figures: say how many of each it holds.
    lists = [] if figures else [f"{len(v)} {k}" for k, v in result.items() if isinstance(v, list)]
    warnings = result.get("warnings") or []
    parts = figures + lists + ([f"{len(warnings)} warning(s)"] if warnings else [])
    return f"{spec.title}: " + (", ".join(parts) if parts else "done") + "."


def _tool(spec: ToolSpec) -> types.Tool:
    return types.Tool(
        name=spec.name,
        title=spec.title,
        description=spec.description,
        inputSchema=spec.input_schema,
        outputSchema=spec.output_schema,
        annotations=types.ToolAnnotations(
            title=spec.title, readOnlyHint=spec.read_only, destructiveHint=False, openWorldHint=False,
        ),
    )


def _internal(tool: str, ctx: RequestContext, exc: BaseException) -> McpError:
    """Log an unexpected failure with its traceback; the client gets only a reference id."""
    reference = uuid4().hex[:12]
    log.error("internal_error", tool=tool, reference=reference, user=ctx.user, trace_id=ctx.trace_id,
              error_type=type(exc).__name__, exc_info=exc)
    return McpError(types.ErrorData(
        code=types.INTERNAL_ERROR,
        message=f"internal error (reference {reference}); the server log has the details",
        data={"code": "internal_error", "reference": reference},
    ))


def _version() -> str:
    from importlib.metadata import version

    return version("optimizer-agent")


# --- transports -------------------------------------------------------------------------------------


def serve_stdio(agent: OptimizerAgent, user: str | None, naming: ToolNaming = "capability") -> None:
    """Serve over stdin/stdout until the client closes stdin; every tool acts for ``user``."""
    from mcp.server.stdio import stdio_server

    ctx_user = RequestContext(user=user).user  # validates the name once, up front
    server = build_server(agent, lambda: RequestContext(user=ctx_user), naming)
    protocol_out = sys.stdout
    # Anything else written to stdout (a print, a logger bound to sys.stdout) lands on stderr.
    sys.stdout = sys.stderr
    try:
        async def main() -> None:
            stdout = anyio.wrap_file(io.TextIOWrapper(protocol_out.buffer, encoding="utf-8", write_through=True))
            async with stdio_server(stdout=stdout) as (read_stream, write_stream):
                await server.run(read_stream, write_stream, server.create_initialization_options())

        anyio.run(main)
    finally:
        sys.stdout = protocol_out


def http_app(agent: OptimizerAgent, naming: ToolNaming = "capability") -> Any:
    """The streamable HTTP ASGI app at ``/mcp``: bearer keys required, a session bound to its user."""
    from contextlib import asynccontextmanager

    from mcp.server.auth.middleware.bearer_auth import (
        AuthenticatedUser,
        BearerAuthBackend,
        RequireAuthMiddleware,
    )
    from mcp.server.auth.provider import AccessToken
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.middleware.authentication import AuthenticationMiddleware
    from starlette.routing import Route

    class KeyVerifier:
        """API keys from ``optimizer users add``; the key's user is the token's client and subject."""

        async def verify_token(self, token: str) -> AccessToken | None:
            try:
                ctx = await anyio.to_thread.run_sync(agent.authenticate, token)
            except OptimizerError:
                return None
            return AccessToken(token=token, client_id=str(ctx.user), subject=ctx.user, scopes=[])

    def context_of() -> RequestContext:
        request = server.request_context.request
        user = request.scope.get("user") if request is not None else None
        if not isinstance(user, AuthenticatedUser):  # the middleware lets no such request through
            raise McpError(types.ErrorData(code=types.INVALID_REQUEST, message="authentication required"))
        return RequestContext(user=user.access_token.subject)

    server = build_server(agent, context_of, naming)
    manager = StreamableHTTPSessionManager(app=server)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> Any:
        async with manager.run():
            yield

    return Starlette(
        routes=[Route("/mcp", endpoint=RequireAuthMiddleware(manager.handle_request, required_scopes=[]))],
        middleware=[Middleware(AuthenticationMiddleware, backend=BearerAuthBackend(KeyVerifier()))],
        lifespan=lifespan,
    )


def serve_http(agent: OptimizerAgent, host: str, port: int, naming: ToolNaming = "capability") -> None:
    """Serve streamable HTTP at ``http://HOST:PORT/mcp`` until interrupted."""
    import uvicorn

    uvicorn.run(http_app(agent, naming), host=host, port=port, log_config=None, access_log=False)
