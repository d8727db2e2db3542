"""Tool names, for LangChain and MCP alike.

``tool_name`` is the one function that names a tool, for LangChain and MCP alike, in
one of two namings. ``capability``: the capability name itself (``optimizer.propose_trades``)
wherever the MCP SDK and spec accept it (``^[A-Za-z0-9._-]{1,128}$``, and no SDK warning such
as a trailing dot), otherwise the provider-safe name; the MCP server offers these by default.
``provider-safe``: model providers accept only ``^[a-zA-Z0-9_-]{1,64}$``, so a capability's dots
become double underscores (``optimizer__propose_trades``); LangChain tools always use it, and
``optimizer mcp --tool-names provider-safe`` serves it for hosts that pass MCP tool names on to
such a model API. ``capability_name`` maps either form back.
"""

from __future__ import annotations

import re
from typing import Literal

TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_SEPARATOR = "__"
ToolNaming = Literal["capability", "provider-safe"]
TOOL_NAMINGS: tuple[ToolNaming, ...] = ("capability", "provider-safe")


def tool_name(capability_name: str, *, naming: ToolNaming) -> str:
    """The tool name of a capability (or of an ``optimizer.<verb>`` tool) in ``naming``.

    ``capability`` keeps the name when the MCP SDK's validator accepts it without a warning (the
    spec's ``^[A-Za-z0-9._-]{1,128}$``, no leading or trailing dot or dash) and falls back to the
    provider-safe name otherwise; ``provider-safe`` replaces every ``.`` by ``__``
    (``^[a-zA-Z0-9_-]{1,64}$``). Every provider-safe name is a valid MCP name, so a name the spec
    refuses outright has no provider-safe name either.

    Raises:
        ValueError: the name cannot be mapped (too long, other characters, or '__' already in it).
    """
    # A '__' in a capability name would make the two namings ambiguous: refuse it in both.
    if _SEPARATOR in capability_name:
        raise ValueError(
            f"capability name {capability_name!r} contains '{_SEPARATOR}'; it could not be mapped back"
        )
    if naming == "capability":
        # Imported here: only the MCP server names tools this way, and it has the SDK loaded already.
        from mcp.shared.tool_name_validation import validate_tool_name

        verdict = validate_tool_name(capability_name)
        if verdict.is_valid and not verdict.warnings:
            return capability_name
    elif naming != "provider-safe":
        raise ValueError(f"tool naming {naming!r}: must be one of {', '.join(TOOL_NAMINGS)}")
    name = capability_name.replace(".", _SEPARATOR)
    if not TOOL_NAME.fullmatch(name):
        raise ValueError(
            f"capability {capability_name!r} maps to tool name {name!r}, which does not "
            f"match {TOOL_NAME.pattern}"
        )
    return name


def capability_name(name: str) -> str:
    """The capability a tool name stands for, in either naming (the inverse of ``tool_name``)."""
    return name.replace(_SEPARATOR, ".")
