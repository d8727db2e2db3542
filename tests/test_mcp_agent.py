"""A scripted LangGraph agent (a fake chat model, no network) holding a conversation with the tools.

It asks for the misspelt policy 'quality_focussed' with a tracking-error limit too tight to meet
(and no turnover limit, under which the smallest relaxation the error names is enough),
and gets there by reading the tool errors: the first lists the valid policy ids, the second is
infeasible and names the smallest relaxation. The same script runs against the LangChain tools
in process and against ``optimizer mcp --tool-names provider-safe`` over stdio through
langchain-mcp-adapters (the setup that option is for: a model API that rejects dots in tool names
sees the MCP tools): one contract, one tool name.
"""

from __future__ import annotations

import difflib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from agent_loop import ScriptedChatModel, tool_calling_agent
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_mcp_adapters.tools import load_mcp_tools
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp_support import PACK, ROOT, cli, seeded_home, server_env

from agents.agent import OptimizerAgent
from services.data.store import Store

TOOL = "optimizer__propose_trades"
ASK = {"portfolio_id": "demo_diversified", "pricing_pack_id": PACK, "policy_id": "quality_focussed",
       "policy": {"max_tracking_error_pct": 0.5, "max_turnover_pct": None}}



def payload(message: BaseMessage) -> dict[str, Any]:
    """The JSON a tool message carries (LangChain tools: a string; MCP tools: text blocks, JSON last)."""
    content = message.content
    text = content if isinstance(content, str) else [b["text"] for b in content if b.get("type") == "text"][-1]
    return json.loads(text)


def script(seen: list[list[BaseMessage]]) -> Iterator[AIMessage]:
    """What the model says; each turn after the first reads the last tool message as an LLM would."""
    args = dict(ASK)
    for turn in range(1, 6):
        yield AIMessage("", tool_calls=[{"id": f"call-{turn}", "name": TOOL, "args": args}])
        reply = seen[-1][-1]
        assert isinstance(reply, ToolMessage)
        result = payload(reply)
        if reply.status != "error":
            yield AIMessage(f"Proposed {result['trade_count']} trades under {result['policy_id']}; tracking "
                            f"error {result['te_before_pct']}% -> {result['te_after_pct']}%.")
            return
        if result["code"] == "not_found":
            valid = result["valid_values"]["policy_id"]
            args = {**args, "policy_id": difflib.get_close_matches(args["policy_id"], valid, n=1)[0]}
        elif result["code"] == "infeasible":
            args = {**args, "policy": {**args["policy"], **result["details"]["smallest_relaxation"]}}
        else:
            raise AssertionError(f"the script cannot fix {result}")
    raise AssertionError("no answer after five turns")



QUESTION = {"messages": [HumanMessage("rebalance demo_diversified with quality_focussed, tracking error under "
                                       "0.5%, any turnover")]}


def check(final: dict[str, Any]) -> None:
    tool_messages = [m for m in final["messages"] if isinstance(m, ToolMessage)]
    assert [m.status for m in tool_messages] == ["error", "error", "success"]
    typo, infeasible, done = (payload(m) for m in tool_messages)
    assert typo["code"] == "not_found" and typo["hint"]
    assert infeasible["code"] == "infeasible" and infeasible["details"]["smallest_relaxation"] == {
        "max_tracking_error_pct": 1.81}
    assert done["detail"] == "summary" and done["policy_id"] == "quality_focused"
    assert done["te_after_pct"] <= 1.81
    assert final["messages"][-1].content == (
        f"Proposed {done['trade_count']} trades under quality_focused; tracking error "
        f"{done['te_before_pct']}% -> {done['te_after_pct']}%.")


def test_the_langchain_tools_recover(module_store: Store, tmp_path: Path) -> None:
    agent = OptimizerAgent(module_store, home=tmp_path / "home")
    seen: list[list[BaseMessage]] = []
    check(tool_calling_agent(ScriptedChatModel(messages=script(seen)), agent.as_langchain_tools(), seen).invoke(QUESTION))


async def _over_mcp(home: Path) -> dict[str, Any]:
    params = StdioServerParameters(command=sys.executable, args=cli("mcp", "--tool-names", "provider-safe")[1:],
                                    cwd=ROOT, env=server_env(home))
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        tools = await load_mcp_tools(session)
        seen: list[list[BaseMessage]] = []
        return await tool_calling_agent(ScriptedChatModel(messages=script(seen)), tools, seen).ainvoke(QUESTION)


@pytest.mark.slow
def test_the_mcp_tools_recover(seeded_db: Path, tmp_path: Path) -> None:
    check(anyio.run(_over_mcp, seeded_home(seeded_db, tmp_path / "home")))
