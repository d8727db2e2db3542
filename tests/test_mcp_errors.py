"""The MCP call handler's two kinds of failure, in process over the SDK's in-memory transport.

A fixable error is a tool result with ``isError`` and the ``tool_error`` payload; an internal one
is a JSON-RPC error that carries a reference id and nothing of the failure, whose traceback goes
to the log under the same reference.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import structlog
from mcp.shared.exceptions import McpError
from mcp.shared.memory import create_connected_server_and_client_session

from agents.agent import OptimizerAgent
from agents.logging import configure_logging
from agents.mcp.server import build_server
from agents.tool_names import ToolNaming
from capabilities.base import RequestContext
from services.data.store import Store

PROPOSE = {"portfolio_id": "demo_diversified", "pricing_pack_id": "PP_2022-12-28", "policy_id": "quality_focused"}


@pytest.fixture
def log() -> Iterator[io.StringIO]:
    """structlog writing JSON lines at INFO into a buffer; reset to structlog's defaults afterwards."""
    buffer = io.StringIO()
    configure_logging(level="INFO", fmt="json", stream=buffer)
    yield buffer
    structlog.reset_defaults()


@pytest.fixture
def agent(module_store: Store, tmp_path: Path) -> OptimizerAgent:
    return OptimizerAgent(module_store, home=tmp_path / "home")


async def _call(agent: OptimizerAgent, name: str, arguments: dict[str, Any], naming: ToolNaming = "capability") -> Any:
    server = build_server(agent, lambda: RequestContext(user="alice"), naming)
    async with create_connected_server_and_client_session(server) as client:
        try:
            return await client.call_tool(name, arguments)
        except McpError as err:  # returned, so it does not leave the task group as an ExceptionGroup
            return err


def test_an_internal_error_ends_the_call_with_a_reference_only(
    agent: OptimizerAgent, monkeypatch: pytest.MonkeyPatch, log: io.StringIO
) -> None:
    def broken(name: str, request: Any, ctx: RequestContext | None = None) -> dict[str, Any]:
        raise RuntimeError("secret portfolio contents")

    monkeypatch.setattr(agent, "execute", broken)
    raised = anyio.run(_call, agent, "optimizer.propose_trades", PROPOSE)
    assert isinstance(raised, McpError)
    error = raised.error
    assert error.message.startswith("internal error (reference ")
    assert "secret" not in error.message and "secret" not in json.dumps(error.data)
    reference = error.data["reference"]
    logged = [json.loads(line) for line in log.getvalue().splitlines()]
    (entry,) = [e for e in logged if e.get("event") == "internal_error"]
    assert entry["reference"] == reference and entry["tool"] == "optimizer.propose_trades"


def test_unknown_tools_and_bad_arguments_are_fixable(agent: OptimizerAgent) -> None:
    # A name in the naming the server does not serve is an unknown tool; the error lists the served ones.
    unknown = anyio.run(_call, agent, "optimizer__propose_trades", PROPOSE)
    payload = json.loads(unknown.content[0].text)
    assert unknown.isError and payload["code"] == "unknown_tool"
    assert "optimizer.propose_trades" in payload["valid_values"]["name"]
    assert not any("__" in name for name in payload["valid_values"]["name"])
    dotted = anyio.run(_call, agent, "optimizer.propose_trades", PROPOSE, "provider-safe")
    payload = json.loads(dotted.content[0].text)
    assert dotted.isError and payload["code"] == "unknown_tool"
    assert "optimizer__propose_trades" in payload["valid_values"]["name"]
    bad = anyio.run(_call, agent, "optimizer.show_policy", {"policy": "quality_focused"})
    assert bad.isError and json.loads(bad.content[0].text)["code"] == "invalid_input"
