"""The capabilities as LangChain tools, driven by a LangGraph tool-calling agent whose chat model is
a scripted fake from langchain_core: no network, no LLM.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_loop import ScriptedChatModel, tool_calling_agent
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage

from agents.agent import OptimizerAgent
from agents.tool_names import TOOL_NAME, TOOL_NAMINGS, capability_name, tool_name
from agents.tools import langchain_tools, tool_input_schema
from capabilities.base import RequestContext
from services.data.store import Store

PACK = "PP_2022-12-28"
PROPOSE = {
    "portfolio_id": "demo_diversified",
    "pricing_pack_id": PACK,
    "policy_id": "quality_focused",
}



@pytest.fixture
def agent(module_store: Store, tmp_path: Path) -> OptimizerAgent:
    return OptimizerAgent(module_store, home=tmp_path / "home")



def script(seen: list[list[BaseMessage]]) -> Iterator[AIMessage]:
    """What the model says, turn by turn; later turns read the tool results as an LLM would."""
    yield AIMessage(
        "", tool_calls=[{"id": "call-1", "name": "optimizer__propose_trades", "args": PROPOSE}]
    )
    proposal = json.loads(seen[-1][-1].content)
    # A malformed call: the trades under a name the capability does not have.
    yield AIMessage(
        "",
        tool_calls=[
            {
                "id": "call-2",
                "name": "optimizer__analyze_impact",
                "args": {
                    "portfolio_id": "demo_diversified",
                    "pricing_pack_id": PACK,
                    "trades": proposal["trades"],
                },
            }
        ],
    )
    error = seen[-1][-1]
    assert isinstance(error, ToolMessage) and error.status == "error"
    assert (
        "proposed_trades" in json.loads(error.content)["message"]
    )  # the message says what is valid
    yield AIMessage(
        "",
        tool_calls=[
            {
                "id": "call-3",
                "name": "optimizer__analyze_impact",
                "args": {
                    "portfolio_id": "demo_diversified",
                    "pricing_pack_id": PACK,
                    "proposed_trades": proposal["trades"],
                },
            }
        ],
    )
    impact = json.loads(seen[-1][-1].content)
    yield AIMessage(
        f"Proposed {proposal['trade_count']} trades; volatility goes from "
        f"{impact['before']['volatility_pct']}% to {impact['after']['volatility_pct']}%."
    )


def uncached(result: dict[str, Any]) -> dict[str, Any]:
    return {**result, "_metadata": {**result["_metadata"], "cached": False}}


def test_tool_names_map_both_ways(agent: OptimizerAgent) -> None:
    tools = agent.as_langchain_tools()
    assert [t.name for t in tools] == [tool_name(c.name, naming="provider-safe") for c in agent.tool_capabilities()]
    # Booking writes a client's portfolio: a model reaches it only through an approval gate.
    assert "optimizer.book_trades" in agent.registry
    assert [c.name for c in agent.registry if c not in agent.tool_capabilities()] == ["optimizer.book_trades"]
    for capability in agent.registry:
        assert capability.input_schema()["properties"]["detail"]["default"] == "full"
    for tool in tools:
        assert TOOL_NAME.fullmatch(tool.name)
        assert capability_name(tool.name) in agent.registry
        capability = agent.registry.get(capability_name(tool.name))
        assert tool.description == capability.description
        assert tool.args_schema == tool_input_schema(capability)
        assert tool.args_schema["properties"]["detail"]["default"] == "summary"
        assert capability.input_schema()["properties"]["detail"]["default"] == "full"
    for naming in TOOL_NAMINGS:
        with pytest.raises(ValueError, match="does not match"):
            tool_name("optimizer.propose trades", naming=naming)
        with pytest.raises(ValueError, match="could not be mapped back"):
            tool_name("optimizer.propose__trades", naming=naming)


def test_one_function_names_tools_in_both_namings() -> None:
    from mcp.shared.tool_name_validation import TOOL_NAME_REGEX

    # The capability naming keeps every name the MCP spec accepts, dots included.
    assert tool_name("optimizer.propose_trades", naming="capability") == "optimizer.propose_trades"
    assert tool_name("optimizer.list_packs", naming="capability") == "optimizer.list_packs"
    long_name = "optimizer." + "x" * 100  # 110 characters: MCP allows 128, providers 64
    assert tool_name(long_name, naming="capability") == long_name
    # Provider-safe: dots become '__'; it must fit the providers' 64 characters.
    assert tool_name("optimizer.propose_trades", naming="provider-safe") == "optimizer__propose_trades"
    with pytest.raises(ValueError, match="does not match"):
        tool_name(long_name, naming="provider-safe")
    # A name the SDK warns about (a trailing dot) gets the provider-safe name instead.
    assert tool_name("optimizer.propose_trades.", naming="capability") == "optimizer__propose_trades__"
    # One MCP refuses outright (a '/') has no provider-safe name either: an error, never a bad name.
    with pytest.raises(ValueError, match="does not match"):
        tool_name("optimizer.propose/trades", naming="capability")
    with pytest.raises(ValueError, match="tool naming 'dotted'"):
        tool_name("optimizer.propose_trades", naming="dotted")  # type: ignore[arg-type]
    for name in ("optimizer.propose_trades", "optimizer.suggest_deleveraging_hedges", "a.b.c-d"):
        capability, safe = (tool_name(name, naming=n) for n in TOOL_NAMINGS)
        assert TOOL_NAME_REGEX.fullmatch(capability) and TOOL_NAME.fullmatch(safe)
        assert capability_name(capability) == capability_name(safe) == name


def test_a_tool_calling_agent_rebalances_the_demo_portfolio(agent: OptimizerAgent) -> None:
    seen: list[list[BaseMessage]] = []
    model = ScriptedChatModel(messages=script(seen))
    graph = tool_calling_agent(model, agent.as_langchain_tools(RequestContext(user="demo")), seen)
    final = graph.invoke(
        {"messages": [HumanMessage("rebalance the demo portfolio with the quality-focused policy")]}
    )

    tool_messages = [m for m in final["messages"] if isinstance(m, ToolMessage)]
    assert [(m.name, m.status) for m in tool_messages] == [
        ("optimizer__propose_trades", "success"),
        ("optimizer__analyze_impact", "error"),
        ("optimizer__analyze_impact", "success"),
    ]
    proposal, error, impact = tool_messages
    # The tool results are the capabilities' real outputs (summaries), content and artifact alike.
    expected_proposal = agent.execute("optimizer.propose_trades", {**PROPOSE, "detail": "summary"})
    assert uncached(proposal.artifact) == uncached(expected_proposal)
    assert json.loads(proposal.content) == proposal.artifact
    expected_impact = agent.execute(
        "optimizer.analyze_impact",
        {
            "portfolio_id": "demo_diversified",
            "pricing_pack_id": PACK,
            "proposed_trades": expected_proposal["trades"],
            "detail": "summary",
        },
    )
    assert uncached(impact.artifact) == uncached(expected_impact)
    assert json.loads(error.content)["code"] == "invalid_input"
    assert final["messages"][-1].content.startswith(
        f"Proposed {expected_proposal['trade_count']} trades"
    )


def test_fixable_errors_are_tool_errors(agent: OptimizerAgent) -> None:
    tools = {t.name: t for t in agent.as_langchain_tools(RequestContext(user="mallory"))}
    call = {"type": "tool_call", "id": "c", "name": "optimizer__propose_trades", "args": PROPOSE}
    # Someone else's portfolio: not found, and nothing listed.
    message = tools["optimizer__propose_trades"].invoke(call)
    assert isinstance(message, ToolMessage) and message.status == "error"
    error = json.loads(message.content)
    assert error["code"] == "not_found" and error["valid_values"] == {}
    # The LangChain tools include no list tools, so the hint names none.
    assert error["hint"] == (
        "that id does not exist or is not yours; use one of valid_values (if it is empty, ask the user) and call again"
    )
    typo = tools["optimizer__propose_trades"].invoke(
        {**call, "args": {**PROPOSE, "portfolio_id": None, "portfolio": {"positions": [], "cash": "1000"},
                          "policy_id": "quality_focussed"}}
    )
    assert json.loads(typo.content)["valid_values"] == {
        "policy_id": ["aggressive_growth", "conservative_income", "quality_focused"]
    }


def test_internal_errors_end_the_conversation(agent: OptimizerAgent) -> None:
    def broken(name: str, request: Any, ctx: RequestContext) -> dict[str, Any]:
        raise RuntimeError("disk on fire")

    (tool, *_) = langchain_tools(list(agent.registry), broken, RequestContext())
    with pytest.raises(RuntimeError, match="disk on fire"):
        tool.invoke({"type": "tool_call", "id": "c", "name": tool.name, "args": PROPOSE})
