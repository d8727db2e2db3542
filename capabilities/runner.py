"""The capability runner: validate, authorize, call, attach ``_metadata``, log one line.

Every caller (CLI, agent, pattern step, LLM tool) goes through ``CapabilityRunner.run``, so input
errors, access rules, metadata and logging are the same whichever way a capability is reached.
"""

from __future__ import annotations

import functools
import hashlib
import json
import platform
import time
import types
import typing
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import structlog
from pydantic import BaseModel, ValidationError

from capabilities.base import Capability, Metadata, RequestContext, Services
from capabilities.cache import ResultCache
from capabilities.registry import CapabilityRegistry
from capabilities.views import DETAIL_FIELD
from services.data.bounds import check_json_value
from services.errors import InputError, OptimizerError

_VERSIONED = ("optimizer-agent", "numpy", "pandas", "cvxpy", "clarabel", "riskfolio-lib", "pydantic")


def canonical_json(data: Any) -> str:
    """Sorted keys, no insignificant whitespace: the form that is hashed and compared."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


@functools.cache
def _installed_versions() -> tuple[tuple[str, str], ...]:
    # Read once per process: looking up seven distributions costs about 12 ms, which a batch
    # would otherwise pay for every result.
    out = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return tuple(out.items())


def library_versions() -> dict[str, str]:
    """The versions recorded in ``_metadata.versions`` (a fresh dict each call)."""
    return dict(_installed_versions())


@dataclass(frozen=True)
class PreparedCall:
    """A validated, authorized call waiting for its result (see ``CapabilityRunner.prepare``)."""

    capability: Capability
    request: BaseModel
    ctx: RequestContext


class CapabilityRunner:
    """Runs registered capabilities against injected services."""

    def __init__(self, registry: CapabilityRegistry, services: Services, cache: ResultCache | None = None):
        self.registry = registry
        self.services = services
        self.cache = cache
        self._log = structlog.get_logger("optimizer.capability")

    def run(self, name: str, payload: Any, ctx: RequestContext) -> dict[str, Any]:
        """Validate ``payload``, check access, call the handler; the result is JSON-ready."""
        started = time.perf_counter()
        outcome, pack_id, cached = "ok", None, False
        try:
            capability = self.registry.get(name)
            request = validate_input(capability, payload)
            pack_id = getattr(request, "pricing_pack_id", None) or ctx.pricing_pack_id
            # Access is checked before the cache is consulted, so a hit never bypasses it.
            self._authorize(request, ctx)
            if capability.check_access is not None:
                capability.check_access(request, ctx, self.services)
            cache = self.cache if pack_id else None
            key = self._inputs_hash(capability, request, pack_id) if cache is not None else None
            # Per caller: a result may rest on what only that caller sees (their own stored ratings).
            slot = key if key is None or ctx.user is None else f"{key}:{ctx.user}"
            if cache is not None and slot is not None and (hit := cache.get(capability.name, slot)) is not None:
                cached = True
                body = hit
            else:
                result = capability.handler(request, ctx, self.services)
                if capability.writes and self.cache is not None:
                    # Results are keyed by request and pack, not by the portfolio's contents.
                    self.cache.clear()
                body = self._with_metadata(capability, request, result)
            # Recorded also on a cache hit: the record is what makes the proposal id this user's.
            recorded = not capability.records_history or self._record(capability, request, body, ctx)
            # The metadata names the pack the result reports; cache only when that is the one hashed
            # (and only a recorded result: a retry should get the chance to record it).
            if not cached and cache is not None and slot is not None and recorded and key == body["_metadata"]["inputs_hash"]:
                cache.put(capability.name, slot, body, capability.ttl_seconds)
            return capability.view(body, getattr(request, DETAIL_FIELD, "full"))
        except OptimizerError as exc:
            outcome = exc.code
            raise
        except Exception:
            outcome = "internal_error"
            raise
        finally:
            self.log_call(name, ctx, pack_id, time.perf_counter() - started, outcome, cached=cached)

    def log_call(self, name: str, ctx: RequestContext, pack_id: str | None, seconds: float, outcome: str,
                 **extra: Any) -> None:
        """The one structured line per call (also for calls whose work ran elsewhere)."""
        self._log.info(
            "capability_call", capability=name, trace_id=ctx.trace_id, user=ctx.user, pack=pack_id,
            duration_ms=round(seconds * 1000, 1), outcome=outcome, **extra,
        )

    def prepare(self, name: str, payload: Any, ctx: RequestContext) -> PreparedCall:
        """Validate and authorize a call without running it: the first half of ``run``.

        For callers that compute the handler's work elsewhere (a batch on a cluster) and then
        finish with ``complete``; the result cache is not consulted.
        """
        capability = self.registry.get(name)
        request = validate_input(capability, payload)
        self._authorize(request, ctx)
        if capability.check_access is not None:
            capability.check_access(request, ctx, self.services)
        return PreparedCall(capability, request, ctx)

    def complete(self, call: PreparedCall, result: BaseModel, *, record: bool = True) -> dict[str, Any]:
        """Attach ``_metadata`` and record history: the second half of ``run``, byte for byte.

        ``record=False`` leaves the history to ``record``, which writes many results at once.
        """
        body = self._with_metadata(call.capability, call.request, result)
        if record and call.capability.records_history:
            self._record(call.capability, call.request, body, call.ctx)
        return body

    def record(self, completed: list[tuple[PreparedCall, dict[str, Any]]]) -> None:
        """Record completed results in the history in one transaction (those whose capability keeps one)."""
        self.services.store.record_proposals([
            self._history_row(call.capability, call.request, body, call.ctx)
            for call, body in completed if call.capability.records_history
        ])

    def _authorize(self, request: BaseModel, ctx: RequestContext) -> None:
        """A stored portfolio is usable by its owner; the local operator (``user=None``) uses any.

        Someone else's portfolio and a missing one give the same error, which lists nothing.
        """
        portfolio_id = getattr(request, "portfolio_id", None)
        if portfolio_id is not None:
            self.services.store.check_portfolio_access(portfolio_id, user=ctx.user)

    def _record(
        self, capability: Capability, request: BaseModel, body: dict[str, Any], ctx: RequestContext
    ) -> bool:
        """Append the result to the store's history; False (and a warning in it) if that failed.

        The result is computed already and worth having; a store that cannot take the record
        (read-only, full) is reported in the result's warnings instead of discarding it.
        """
        try:
            self.services.store.record_proposal(**self._history_row(capability, request, body, ctx))
        except OptimizerError as err:
            self._log.warning("history_not_recorded", capability=capability.name,
                              trace_id=ctx.trace_id, reason=err.code)
            body.setdefault("warnings", []).append(
                f"this result was not recorded in the proposals history ({err.code}): {err.message}"
            )
            body["_metadata"]["warnings"] = len(body["warnings"])
            return False
        return True

    @staticmethod
    def _history_row(
        capability: Capability, request: BaseModel, body: dict[str, Any], ctx: RequestContext
    ) -> dict[str, Any]:
        return {
            "user": ctx.user,
            "capability": capability.name,
            "portfolio_id": getattr(request, "portfolio_id", None),
            "pricing_pack_id": getattr(request, "pricing_pack_id", ""),
            "policy_id": getattr(request, "policy_id", None),
            "inputs_hash": body["_metadata"]["inputs_hash"],
            "result_json": canonical_json(body),
        }

    def _with_metadata(self, capability: Capability, request: BaseModel, result: BaseModel) -> dict[str, Any]:
        body = result.model_dump(mode="json")
        pack_id = body.get("pricing_pack_id") or getattr(request, "pricing_pack_id", "")
        pack = self.services.store.get_pack(pack_id)
        digest = self._inputs_hash(capability, request, pack_id)
        body["_metadata"] = Metadata(
            capability=capability.name,
            source=capability.source_template.format(pricing_pack_id=pack.id),
            asof=pack.asof.isoformat(),
            ttl=capability.ttl_seconds,
            inputs_hash=digest,
            pack_content_hash=pack.content_hash,
            versions=library_versions(),
            engine=capability.engine,
            warnings=len(body.get("warnings", [])),
        ).model_dump(mode="json")
        return body

    def _inputs_hash(self, capability: Capability, request: BaseModel, pack_id: str) -> str:
        """SHA-256 of the capability, the canonical request and the pack's content hash.

        The view selector ``detail`` is not hashed (it does not change the computation); fields
        added after results were first hashed are left out while null (``omit_if_null``).
        """
        pack = self.services.store.get_pack(pack_id)
        hashed = request.model_dump(mode="json", exclude={DETAIL_FIELD})
        # In a policy, null removes a template's limit while an omitted field keeps it: the two
        # dump alike, so the fields set to null are hashed by name (only when there are any, so
        # every other request keeps its hash).
        policy = getattr(request, "policy", None)
        if isinstance(policy, BaseModel):
            removed = sorted(name for name in policy.model_fields_set if getattr(policy, name) is None)
            if removed:
                hashed["policy_fields_set_to_null"] = removed
        return hashlib.sha256(
            canonical_json({"capability": capability.name, "request": hashed, "pack": pack.content_hash}).encode()
        ).hexdigest()


def validate_input(capability: Capability, payload: Any) -> BaseModel:
    """Parse ``payload`` into the capability's input model; errors name field, value and rule."""
    if not isinstance(payload, dict):
        raise InputError(f"{capability.name}: the request must be a JSON object, got {type(payload).__name__}",
                         details={"field": "(root)"})
    check_json_value(payload, kind=f"the {capability.name} request")
    try:
        return capability.input_model.model_validate(payload)
    except ValidationError as exc:
        errors = [_describe(capability.input_model, e) for e in exc.errors()]
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:6])
        raise InputError(f"{capability.name}: invalid request: {summary}", details={"errors": errors}) from exc


def _describe(model: type[BaseModel], error: dict[str, Any]) -> dict[str, Any]:
    loc = [str(p) for p in error["loc"]]
    out: dict[str, Any] = {"field": ".".join(loc) or "(root)", "message": error["msg"]}
    if error["type"] != "missing":
        out["value"] = _jsonable(error.get("input"))
    if error["type"] == "extra_forbidden":
        valid = _fields_at(model, error["loc"][:-1])
        out["message"] = f"unknown field; valid fields: {', '.join(valid)}"
        out["allowed"] = valid
    elif error.get("ctx", {}).get("expected"):
        out["allowed"] = error["ctx"]["expected"]
    return out


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names of the (nested) model that ``loc`` points into."""
    current: Any = model
    for part in loc:
        if isinstance(part, int) or not (isinstance(current, type) and issubclass(current, BaseModel)):
            continue
        info = current.model_fields.get(str(part))
        if info is None:
            break
        current = _model_in(info.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return sorted(current.model_fields)
    return []


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) in (typing.Union, list, tuple):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value, allow_nan=False)
        return value
    except (TypeError, ValueError):
        return str(value)
