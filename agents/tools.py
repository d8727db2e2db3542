"""The capabilities as LangChain tools, for an LLM that calls them in a conversation.

Providers accept tool names matching ``^[a-zA-Z0-9_-]{1,64}$``, so a capability's dots become
double underscores (``optimizer.propose_trades`` ↔ ``optimizer__propose_trades``). Each tool's
argument schema is the capability's input JSON Schema; validation stays with the capability
runner, so the model sees the same field-by-field messages as every other caller.

An input error comes back to the model as an error tool message it can correct. Any other
failure (unknown portfolio, infeasible policy, internal error) is raised: it ends the
conversation, because retrying with other arguments would not fix it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from langchain_core.tools import BaseTool, StructuredTool, ToolException

from capabilities.base import Capability, RequestContext
from capabilities.runner import canonical_json
from services.errors import InputError

TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_SEPARATOR = "__"

Execute = Callable[[str, Any, RequestContext], dict[str, Any]]


def tool_name(capability_name: str) -> str:
    """The provider-safe tool name of a capability.

    Raises:
        ValueError: the name cannot be mapped (too long, other characters, or '__' already in it).
    """
    if _SEPARATOR in capability_name:
        raise ValueError(
            f"capability name {capability_name!r} contains '{_SEPARATOR}'; it could not be mapped back"
        )
    name = capability_name.replace(".", _SEPARATOR)
    if not TOOL_NAME.fullmatch(name):
        raise ValueError(
            f"capability {capability_name!r} maps to tool name {name!r}, which does not "
            f"match {TOOL_NAME.pattern}"
        )
    return name


def capability_name(name: str) -> str:
    """The capability a tool name stands for (the inverse of ``tool_name``)."""
    return name.replace(_SEPARATOR, ".")


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
            result = execute(capability.name, arguments, ctx)
        except InputError as err:
            raise ToolException(
                json.dumps(
                    {
                        **err.to_dict(),
                        "hint": "the arguments are invalid; correct them as the message says "
                        "and call the tool again",
                    },
                    sort_keys=True,
                )
            ) from err
        return canonical_json(result), result

    return StructuredTool(
        name=tool_name(capability.name),
        description=capability.description,
        args_schema=capability.input_schema(),
        func=call,
        response_format="content_and_artifact",
        handle_tool_error=True,
        metadata={"capability": capability.name, "ttl": capability.ttl_seconds},
    )
