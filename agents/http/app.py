"""The FastAPI application: endpoints mapped one-to-one onto ``OptimizerAgent`` methods.

Nothing here decides anything about portfolios, runs or policies: it authenticates the caller
(``Authorization: Bearer KEY`` → ``agent.authenticate``), hands the request to the agent, and
turns the agent's typed errors into ``{code, message, details}`` with an HTTP status.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Annotated, Any
from uuid import uuid4

import structlog
from fastapi import Body, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agents.agent import OptimizerAgent
from agents.dashboard import mount_dashboard
from agents.optimization import BatchItem, OptimizeRequest, OptimizeResult
from agents.output import pretty_json
from capabilities.base import RequestContext
from patterns.loader import shipped_patterns
from services.errors import (
    AuthenticationError,
    ConflictError,
    DomainError,
    InputError,
    NotFoundError,
    OptimizerError,
)
from services.lifecycle.preferences import RebalancingPreferences

MAX_BODY_ENV = "OPTIMIZER_MAX_BODY_BYTES"
DEFAULT_MAX_BODY_BYTES = 5 * 1024 * 1024
MAX_BATCH_ITEMS = 100

log = structlog.get_logger("optimizer.http")


_bearer = HTTPBearer(auto_error=False, description="An API key from `optimizer users add NAME`.")


def _caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> RequestContext:
    """The request context of the key's user (401 without a valid key)."""
    agent: OptimizerAgent = request.app.state.agent
    ctx = agent.authenticate(credentials.credentials if credentials else None)
    return RequestContext(user=ctx.user, trace_id=request.state.trace_id)


# Module level: with postponed annotations FastAPI resolves them in the module's namespace.
Caller = Annotated[RequestContext, Depends(_caller)]


class CanonicalJSONResponse(JSONResponse):
    """JSON with sorted keys and the CLI's layout (``agents.output.pretty_json``)."""

    def render(self, content: Any) -> bytes:
        return pretty_json(content).encode("utf-8")


class ErrorBody(BaseModel):
    """Every error: a stable code, a message for people, details for programs."""

    code: str
    message: str
    details: dict[str, Any]


class ExecuteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    capability: str = Field(description="Capability name, e.g. optimizer.propose_trades.")
    request: dict[str, Any] = Field(
        description="The capability's request; its schema is the capability's input_schema "
        "(GET /v1/capabilities)."
    )


class RunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pattern: str = Field(description="A shipped pattern's id, e.g. policy_rebalance.")
    inputs: dict[str, Any] = Field(description="The run's inputs, per the pattern's inputs schema.")


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(None, max_length=2000, description="Why, recorded with the decision.")


class Health(BaseModel):
    status: str
    database: str


_STATUS = ((AuthenticationError, 401), (NotFoundError, 404), (ConflictError, 409),
           (InputError, 422), (DomainError, 422))
_ERRORS = {
    status: {"model": ErrorBody, "description": text}
    for status, text in (
        (400, "Malformed JSON"), (401, "No or bad API key"), (404, "Not found (or not yours)"),
        (409, "Conflict"), (413, "Body too large"), (422, "Invalid request"),
        (500, "Internal error, with a reference id"),
    )
}


def create_app(agent: OptimizerAgent, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> FastAPI:
    """The application serving ``agent``; bodies over ``max_body_bytes`` get 413 unread."""
    app = FastAPI(
        title="optimizer-agent",
        version="1",
        description="Deterministic, whole-share portfolio optimization. Every endpoint but "
        "/healthz needs `Authorization: Bearer KEY` (keys from `optimizer users add NAME`).",
        default_response_class=CanonicalJSONResponse,
        responses=_ERRORS,  # type: ignore[arg-type]
    )
    app.router.route_class = _AnsweringRoute
    app.state.agent = agent

    @app.get("/healthz", response_model=Health, tags=["service"])
    def healthz() -> dict[str, Any]:
        """Liveness: no key needed."""
        return {"status": "ok", "database": agent.store.engine.dialect.name}

    @app.get("/v1/capabilities", tags=["capabilities"])
    def capabilities(ctx: Caller) -> list[dict[str, Any]]:
        """Each capability's name, description, input and output JSON Schemas, TTL and source."""
        return agent.describe()

    @app.post("/v1/execute", tags=["capabilities"])
    def execute(body: ExecuteRequest, ctx: Caller) -> CanonicalJSONResponse:
        """Run a capability: exactly the bytes `optimizer call` prints for the same request."""
        return CanonicalJSONResponse(agent.execute(body.capability, body.request, ctx))

    @app.post("/api/v1/optimize", response_model=OptimizeResult, tags=["optimization"])
    def optimize(body: OptimizeRequest, ctx: Caller) -> dict[str, Any]:
        """Optimize a stored portfolio; the result is recorded for .../latest."""
        return agent.optimize(body.model_dump(exclude_unset=True), ctx)

    @app.post("/api/v1/optimize/batch", response_model=list[BatchItem], tags=["optimization"])
    def optimize_batch(
        body: Annotated[list[dict[str, Any]], Body(max_length=MAX_BATCH_ITEMS)], ctx: Caller
    ) -> list[dict[str, Any]]:
        """Optimize each request in order; a failing item carries its error, the others go on."""
        return [agent.optimize_batch_item(i, item, ctx) for i, item in enumerate(body)]

    @app.get(
        "/api/v1/optimization/{portfolio_id}/latest",
        response_model=OptimizeResult,
        tags=["optimization"],
    )
    def latest(portfolio_id: str, ctx: Caller) -> dict[str, Any]:
        """The last recorded optimization of a portfolio you own."""
        return agent.latest_optimization(portfolio_id, ctx)

    @app.post("/v1/runs", status_code=201, tags=["runs"])
    def start_run(body: RunRequest, ctx: Caller) -> dict[str, Any]:
        """Run a shipped pattern until it completes, fails or waits at an approval gate."""
        shipped = sorted(shipped_patterns())
        if body.pattern not in shipped:
            raise InputError(
                f"pattern {body.pattern!r} is not a shipped pattern; one of {', '.join(shipped)}",
                details={"field": "pattern", "value": body.pattern, "allowed": shipped},
            )
        return agent.run_pattern(body.pattern, body.inputs, ctx)

    @app.get("/v1/runs", tags=["runs"])
    def list_runs(
        ctx: Caller, limit: Annotated[int, Query(ge=1, le=1000)] = 20
    ) -> list[dict[str, Any]]:
        """Your latest runs first."""
        return agent.list_runs(ctx, limit=limit)

    @app.get("/v1/runs/{run_id}", tags=["runs"])
    def get_run(run_id: str, ctx: Caller) -> dict[str, Any]:
        """One of your runs: status, timestamps, inputs, latest report or error."""
        return agent.run_record(run_id, ctx)

    @app.post("/v1/runs/{run_id}/approve", tags=["runs"])
    def approve(run_id: str, ctx: Caller, body: Decision | None = None) -> dict[str, Any]:
        """Approve the gate your run waits at; 409 if a decision was taken already."""
        return agent.resume_run(run_id, approve=True, note=body.note if body else None, ctx=ctx)

    @app.post("/v1/runs/{run_id}/reject", tags=["runs"])
    def reject(run_id: str, ctx: Caller, body: Decision | None = None) -> dict[str, Any]:
        """Reject the gate your run waits at; 409 if a decision was taken already."""
        return agent.resume_run(run_id, approve=False, note=body.note if body else None, ctx=ctx)

    @app.post("/v1/runs/{run_id}/cancel", tags=["runs"])
    def cancel(run_id: str, ctx: Caller) -> dict[str, Any]:
        """Cancel your run while it runs or waits; 409 if it has ended."""
        return agent.cancel_run(run_id, ctx)

    @app.get("/v1/packs", tags=["data"])
    def packs(ctx: Caller) -> list[dict[str, Any]]:
        """The pricing packs."""
        return agent.list_packs()

    @app.get("/v1/portfolios", tags=["data"])
    def portfolios(ctx: Caller) -> list[dict[str, Any]]:
        """The portfolios you may read."""
        return agent.list_portfolios(ctx)

    @app.get("/v1/portfolios/{portfolio_id}", tags=["data"])
    def portfolio(portfolio_id: str, ctx: Caller) -> dict[str, Any]:
        """One of your portfolios: cash, shares per symbol, current target, restrictions."""
        return agent.portfolio_detail(portfolio_id, ctx)

    @app.get("/v1/portfolios/{portfolio_id}/history", tags=["data"])
    def portfolio_history(portfolio_id: str, ctx: Caller) -> list[dict[str, Any]]:
        """Booked and rejected rebalances of one of your portfolios, with weights before and after."""
        return agent.portfolio_history(portfolio_id, ctx)

    @app.get("/v1/portfolios/{portfolio_id}/preferences", tags=["preferences"])
    def portfolio_preferences(portfolio_id: str, ctx: Caller) -> dict[str, Any]:
        """One of your portfolios' rebalancing preferences (version 0: never set, all defaults)."""
        return agent.portfolio_preferences(portfolio_id, ctx)

    @app.put("/v1/portfolios/{portfolio_id}/preferences", tags=["preferences"],
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                 "schema": RebalancingPreferences.model_json_schema()}}}})
    def put_portfolio_preferences(
        portfolio_id: str, ctx: Caller, body: Annotated[Any, Body()]
    ) -> dict[str, Any]:
        """Replace your portfolio's rebalancing preferences (a new version; omitted fields take their
        defaults). A bad field is a 422 naming the field, the value and what is allowed."""
        return agent.set_portfolio_preferences(portfolio_id, body, ctx)

    @app.get("/v1/portfolios/{portfolio_id}/preferences/history", tags=["preferences"])
    def portfolio_preferences_history(portfolio_id: str, ctx: Caller) -> list[dict[str, Any]]:
        """Every version of your portfolio's rebalancing preferences, oldest first."""
        return agent.portfolio_preferences_history(portfolio_id, ctx)

    @app.get("/v1/portfolios/{portfolio_id}/mix", tags=["data"])
    def portfolio_mix(
        portfolio_id: str, ctx: Caller,
        pricing_pack_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    ) -> dict[str, Any]:
        """One of your portfolios by asset class and by sector, % of value with cash (default: latest pack)."""
        return agent.portfolio_mix(portfolio_id, pricing_pack_id, ctx)

    @app.get("/v1/policies", tags=["data"])
    def policies(ctx: Caller) -> list[dict[str, Any]]:
        """The policy templates."""
        return agent.list_policies()

    @app.get("/v1/policies/{policy_id}", tags=["data"])
    def policy(policy_id: str, ctx: Caller) -> dict[str, Any]:
        """One policy template."""
        return agent.policy(policy_id)

    mount_dashboard(app)
    _install_error_handlers(app)
    app.openapi = _openapi_with_capabilities(app, agent)  # type: ignore[method-assign]
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.add_middleware(TraceId)
    return app


def create_app_from_env() -> FastAPI:
    """The app for ``optimizer serve``: the store from ``$OPTIMIZER_HOME``/``$OPTIMIZER_DB_URL``.

    uvicorn calls this in each worker process (``factory=True``), so each worker has its own
    agent, store engine and cache.
    """
    from agents.logging import configure_logging

    configure_logging()
    limit = int(os.environ.get(MAX_BODY_ENV) or DEFAULT_MAX_BODY_BYTES)
    agent = OptimizerAgent()
    agent.warm_up()  # the solver's imports are paid at start, not by the first request
    return create_app(agent, max_body_bytes=limit)


def _status(err: OptimizerError) -> int:
    return next((status for kind, status in _STATUS if isinstance(err, kind)), 500)


def _error(status: int, code: str, message: str, details: dict[str, Any] | None = None,
           headers: dict[str, str] | None = None) -> CanonicalJSONResponse:
    body = {"code": code, "message": message, "details": details or {}}
    return CanonicalJSONResponse(body, status_code=status, headers=headers)


def _internal(request: Request, exc: BaseException) -> CanonicalJSONResponse:
    reference = getattr(request.state, "trace_id", None) or uuid4().hex
    # The type and the reference only: a traceback's local variables may hold client data.
    log.error("internal_error", reference=reference, error_type=type(exc).__name__,
              path=request.url.path)
    return _error(500, "internal_error",
                  f"internal error; quote reference {reference} to the operator",
                  {"reference": reference})


def _install_error_handlers(app: FastAPI) -> None:
    async def optimizer_error(request: Request, exc: Exception) -> CanonicalJSONResponse:
        assert isinstance(exc, OptimizerError)
        status = _status(exc)
        if status == 500:
            return _internal(request, exc)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return _error(status, exc.code, exc.message, exc.details, headers)

    async def validation_error(request: Request, exc: Exception) -> CanonicalJSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"], "type": e["type"]}
            for e in exc.errors()
        ]
        if any(e["type"] == "json_invalid" for e in errors):
            return _error(400, "malformed_json", "the request body is not valid JSON",
                          {"errors": errors})
        message = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return _error(422, "invalid_input", f"invalid request: {message}", {"errors": errors})

    async def http_error(request: Request, exc: Exception) -> CanonicalJSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail), headers=exc.headers)

    async def unexpected(request: Request, exc: Exception) -> CanonicalJSONResponse:
        return _internal(request, exc)

    app.add_exception_handler(OptimizerError, optimizer_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)


def _openapi_with_capabilities(app: FastAPI, agent: OptimizerAgent) -> Callable[[], dict[str, Any]]:
    """The OpenAPI document, with /v1/execute's body as one variant per capability.

    The variants are the capabilities' own input models, so the document and the runner
    validate against the same schema.
    """

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description,
                             routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        variants = []
        for capability in agent.registry:
            model = capability.input_model
            body = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(body.pop("$defs", {}))
            components[model.__name__] = body
            variants.append({
                "type": "object",
                "additionalProperties": False,
                "required": ["capability", "request"],
                "properties": {
                    "capability": {"type": "string", "enum": [capability.name]},
                    "request": {"$ref": f"#/components/schemas/{model.__name__}"},
                },
            })
        execute = schema["paths"]["/v1/execute"]["post"]
        execute["requestBody"]["content"]["application/json"]["schema"] = {"oneOf": variants}
        app.openapi_schema = schema
        return schema

    return openapi


class _AnsweringRoute(APIRoute):
    """A route that answers an unexpected exception itself with a 500 and a reference.

    Left to Starlette, the exception would be re-raised after the response and logged by the
    server with its traceback, whose local variables may hold client data.
    """

    def get_route_handler(self) -> Callable[[Request], Any]:
        handler = super().get_route_handler()

        async def answering(request: Request) -> Response:
            try:
                return await handler(request)
            except (OptimizerError, RequestValidationError, StarletteHTTPException):
                raise
            except Exception as exc:
                return _internal(request, exc)

        return answering


class TraceId:
    """Give each request a trace id (the reference quoted by a 500)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope.setdefault("state", {})["trace_id"] = uuid4().hex
        await self.app(scope, receive, send)


class BodyLimit:
    """Answer 413 to a body over ``max_bytes`` before anything parses it.

    A declared Content-Length over the limit is refused unread; a chunked body is read up to
    the limit and refused as soon as it passes it.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        body = pretty_json({
            "code": "payload_too_large",
            "message": f"request body is larger than the limit of {self.max_bytes} bytes",
            "details": {"max_bytes": self.max_bytes},
        }).encode("utf-8")
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
