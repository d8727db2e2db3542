"""The summary and full views of a capability result, and the proposal ids summaries carry.

Every capability request takes ``detail``: ``"full"`` (the default for the CLI, the Python API,
HTTP and patterns) returns the result exactly as before; ``"summary"`` returns what a language
model needs to answer and to call the next tool, a few thousand characters at most. The view
does not change the computation, so ``detail`` is left out of the inputs hash: a summary and a
full result of the same request share their ``_metadata.inputs_hash``, their cache entry and
their proposal id.

A summary model is declared next to its capability; its fields are a subset of the full result
(pydantic ignores the rest), so a summary is a projection of the full result, never a second
computation.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.tax.preview import TaxTotals

Detail = Literal["summary", "full"]
DETAIL_FIELD = "detail"
DETAIL_DESCRIPTION = (
    "'full' returns every figure; 'summary' returns what is needed to answer and to call the next "
    "tool (trades, costs, risk before/after, binding constraints, warnings, ids)."
)

PROPOSAL_PREFIX = "prop_"
PROPOSAL_ID = re.compile(r"^prop_[0-9a-f]{16}$")


def proposal_id(inputs_hash: str) -> str:
    """The id of a recorded proposal: ``prop_`` and the first 16 hex digits of its inputs hash.

    Deterministic (the same request on the same pack gives the same id), and readable from a
    full result's ``_metadata.inputs_hash`` as well as from a summary's ``proposal_id``.
    """
    return PROPOSAL_PREFIX + inputs_hash[:16]


class SummaryMetadata(BaseModel):
    """The part of ``_metadata`` a summary keeps: where the result came from and how to find it again."""

    capability: str
    source: str
    inputs_hash: str
    cached: bool = False


class Summary(BaseModel):
    """Base of the summary views: ``detail`` says which view this is."""

    model_config = ConfigDict(populate_by_name=True, frozen=True)

    detail: Literal["summary"] = Field("summary", description="This is the summary view; ask for detail='full' for every figure.")
    metadata: SummaryMetadata = Field(alias="_metadata")


class TaxBrief(BaseModel):
    """The tax totals of a taxable account's result (the lots sold are in the full view)."""

    basis: Literal["estimate"]
    totals: TaxTotals
    short_term_gains_forced: list[str]
    warnings: list[str]


def summarize(summary_model: type[Summary], full: dict[str, Any]) -> dict[str, Any]:
    """The summary view of a full result (a JSON-ready dict with ``_metadata``)."""
    return summary_model.model_validate(full).model_dump(mode="json", by_alias=True)


def view_schema(summary_model: type[Summary], full_schema: dict[str, Any]) -> dict[str, Any]:
    """One object schema accepting either view: the summary or the full result.

    MCP requires an output schema whose root is an object; the two views become the branches of
    an ``anyOf``, each with its own definitions merged into ``$defs`` (summary ones prefixed).
    """
    summary = summary_model.model_json_schema(mode="serialization", by_alias=True)
    full = dict(full_schema)
    defs: dict[str, Any] = dict(full.pop("$defs", {}))
    summary_defs = summary.pop("$defs", {})
    renamed = {name: f"Summary_{name}" for name in summary_defs}
    summary = _rename_refs(summary, renamed)
    for name, definition in summary_defs.items():
        defs[renamed[name]] = _rename_refs(definition, renamed)
    defs["SummaryView"] = summary
    defs["FullView"] = full
    return {
        "type": "object",
        "anyOf": [{"$ref": "#/$defs/SummaryView"}, {"$ref": "#/$defs/FullView"}],
        "$defs": defs,
    }


def _rename_refs(node: Any, renamed: dict[str, str]) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith("#/$defs/"):
                name = value.removeprefix("#/$defs/")
                out[key] = f"#/$defs/{renamed.get(name, name)}"
            else:
                out[key] = _rename_refs(value, renamed)
        return out
    if isinstance(node, list):
        return [_rename_refs(v, renamed) for v in node]
    return node
