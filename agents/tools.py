"""The capabilities as tools for an LLM, and the conversation contract every tool adapter keeps.

Tool names: see ``agents.tool_names`` (re-exported here).

Views: a tool's ``detail`` defaults to ``summary`` (a few thousand characters); ask for
``full`` for every figure. Validation stays with the capability runner, so a model sees the same
field-by-field messages as every other caller.

Errors: an error a model can fix by changing its call — invalid input, an unknown pack,
portfolio, policy, scenario, regime, proposal or run, an infeasible policy (with its smallest
relaxation), a run not waiting for approval — comes back to it as a tool error carrying
``code``, ``message``, ``details``, ``valid_values`` and a ``hint`` (``tool_error``). Anything
else is an internal error and ends the conversation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.tools import BaseTool, StructuredTool, ToolException

from agents.tool_names import tool_name
from capabilities.base import Capability, RequestContext
from capabilities.runner import canonical_json
from capabilities.views import DETAIL_FIELD
from services.errors import (
    ConflictError,
    DomainError,
    InfeasibleError,
    InputError,
    NotFoundError,
    OptimizerError,
)

TOOL_DETAIL = "summary"

# A hint names the list tools the caller has ("{list_tools}"), or none where it has none.
_HINTS: tuple[tuple[type[OptimizerError], str], ...] = (
    (InputError, "the arguments are invalid; correct them as the message says (valid_values lists "
                 "what is accepted) and call the tool again"),
    (NotFoundError, "that id does not exist or is not yours; use one of valid_values{list_tools} and call again"),
    (InfeasibleError, "the constraints cannot all hold; relax the ones in details.conflicts (at least to "
                      "details.smallest_relaxation where given) through the 'policy' argument, or choose "
                      "another policy, and call again"),
    (ConflictError, "the object is not in the state this call needs; read it again (e.g. get the run) "
                    "and act on its current state"),
    (DomainError, "the request cannot be served as asked; change it as the message says"),
)

Execute = Callable[[str, Any, RequestContext], dict[str, Any]]


def tool_input_schema(capability: Capability) -> dict[str, Any]:
    """The capability's input JSON Schema as a tool offers it: ``detail`` defaults to ``summary``."""
    schema = capability.input_schema()
    if DETAIL_FIELD in schema.get("properties", {}):
        schema["properties"][DETAIL_FIELD] = {**schema["properties"][DETAIL_FIELD], "default": TOOL_DETAIL}
    return schema


def tool_request(capability: Capability, arguments: dict[str, Any]) -> dict[str, Any]:
    """A tool call's arguments as a capability request: the summary view unless asked otherwise."""
    if DETAIL_FIELD in capability.input_model.model_fields and DETAIL_FIELD not in arguments:
        return {**arguments, DETAIL_FIELD: TOOL_DETAIL}
    return dict(arguments)


def is_fixable(err: BaseException) -> bool:
    """True for an error the caller can fix by changing its call (see the module docstring)."""
    return isinstance(err, (InputError, DomainError))


def tool_error(err: OptimizerError, list_tools: Sequence[str] = ()) -> dict[str, Any]:
    """The tool-error payload of a fixable error: code, message, details, valid_values, hint.

    ``list_tools`` are the caller's tools that list valid ids, by the names it sees them under;
    a hint names them, and names no tool when the caller has none (as with the LangChain tools).
    """
    hint = next(h for kind, h in (*_HINTS, (OptimizerError, "")) if isinstance(err, kind))
    found_by = f" or a list tool ({', '.join(list_tools)})" if list_tools else " (if it is empty, ask the user)"
    hint = hint.format(list_tools=found_by)
    return {**err.to_dict(), "valid_values": valid_values(err.details), "hint": hint}


def valid_values(details: dict[str, Any]) -> dict[str, Any]:
    """What is accepted, by field, from an error's details (``allowed``, ``valid``, ``available``)."""
    out: dict[str, Any] = {}
    for item in details.get("errors", []):
        if "allowed" in item:
            out[item["field"]] = item["allowed"]
    for key in ("allowed", "valid", "available"):
        if key in details:
            field = details.get("field") or next(
                (k for k in ("policy_id", "pack_id", "portfolio_id", "scenario_id", "run_id") if k in details),
                "value",
            )
            out[field] = details[key]
    return out


def langchain_tools(
    capabilities: list[Capability], execute: Execute, ctx: RequestContext
) -> list[BaseTool]:
    """One StructuredTool per capability, calling ``execute(name, request, ctx)``.

    A tool's content is the result as canonical JSON; its artifact is the result itself.
    """
    return [_tool(c, execute, ctx) for c in capabilities]


def _tool(capability: Capability, execute: Execute, ctx: RequestContext) -> BaseTool:
    def call(**arguments: Any) -> tuple[str, dict[str, Any]]:
        try:
            result = execute(capability.name, tool_request(capability, arguments), ctx)
        except OptimizerError as err:
            if not is_fixable(err):
                raise
            raise ToolException(canonical_json(tool_error(err))) from err
        return canonical_json(result), result

    return StructuredTool(
        name=tool_name(capability.name, naming="provider-safe"),
        description=capability.description,
        args_schema=tool_input_schema(capability),
        func=call,
        response_format="content_and_artifact",
        handle_tool_error=True,
        metadata={"capability": capability.name, "ttl": capability.ttl_seconds},
    )
