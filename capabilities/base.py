"""How a capability is declared: once, with everything the LLM, the runner and patterns need."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import uuid4

from pydantic import BaseModel, ConfigDict, Field

from capabilities.views import Summary, summarize, view_schema
from services.data.models import check_user_name
from services.data.store import Store


@dataclass(frozen=True)
class RequestContext:
    """Who is asking, under which trace id, and (once known) against which pricing pack.

    ``user=None`` is the local operator (CLI on one's own store) and may use every portfolio;
    a named user may use only the portfolios they own.
    """

    user: str | None = None
    trace_id: str = field(default_factory=lambda: uuid4().hex)
    pricing_pack_id: str | None = None

    def __post_init__(self) -> None:
        if self.user is not None:
            check_user_name(self.user)


@dataclass(frozen=True)
class Services:
    """What handlers may use, injected by the wiring in ``agents``: no module-level state."""

    store: Store
    constraint_defaults: dict[str, Any]
    benchmarks: dict[str, dict[str, float]]


Handler = Callable[[Any, RequestContext, Services], BaseModel]


class Metadata(BaseModel):
    """Attached to every result as ``_metadata``: where it came from and how to reproduce it."""

    model_config = ConfigDict(frozen=True)

    capability: str
    source: str = Field(description="'optimizer:<pricing_pack_id>'.")
    asof: str = Field(description="The pricing pack's date; never the wall clock.")
    ttl: int = Field(description="Seconds the result may be reused.")
    inputs_hash: str = Field(description="SHA-256 of the canonical request and the pack's content hash.")
    pack_content_hash: str
    versions: dict[str, str]
    engine: dict[str, Any] = Field(default_factory=dict, description="Solver, tolerances, seeds.")
    warnings: int
    cached: bool = False


@dataclass(frozen=True)
class Capability:
    """One capability: name, one-sentence description, models, TTL, source and handler."""

    name: str
    description: str
    input_model: type[BaseModel]
    output_model: type[BaseModel]
    handler: Handler
    ttl_seconds: int = 300
    source_template: str = "optimizer:{pricing_pack_id}"
    engine: dict[str, Any] = field(default_factory=dict)
    records_history: bool = False
    summary_model: type[Summary] | None = None
    # Access rules beyond the portfolio's owner (e.g. a stored proposal's), checked before the cache.
    check_access: Callable[[Any, RequestContext, Services], object] | None = None
    # A capability that changes stored portfolios: cached results may be stale after it runs.
    writes: bool = False

    def input_schema(self) -> dict[str, Any]:
        return self.input_model.model_json_schema()

    def output_schema(self) -> dict[str, Any]:
        """The output model's schema plus the ``_metadata`` every result carries."""
        schema = self.output_model.model_json_schema(mode="serialization")
        meta = Metadata.model_json_schema()
        schema.setdefault("$defs", {}).update(meta.pop("$defs", {}))
        schema["$defs"]["Metadata"] = meta
        schema["properties"]["_metadata"] = {"$ref": "#/$defs/Metadata"}
        schema.setdefault("required", []).append("_metadata")
        return schema

    def view(self, full: dict[str, Any], detail: str) -> dict[str, Any]:
        """The result in the view the request asked for (``full`` is returned as it is)."""
        if detail == "summary" and self.summary_model is not None:
            return summarize(self.summary_model, full)
        return full

    def view_output_schema(self) -> dict[str, Any]:
        """The output schema of either view (what a tool may return), an object at its root."""
        if self.summary_model is None:
            return self.output_schema()
        return view_schema(self.summary_model, self.output_schema())

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "input_schema": self.input_schema(),
            "output_schema": self.output_schema(),
            "ttl": self.ttl_seconds,
            "source": self.source_template,
        }
