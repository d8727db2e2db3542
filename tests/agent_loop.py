"""A LangGraph tool-calling agent whose chat model is a scripted fake from langchain_core: the
loop the tool tests drive (no network, no LLM)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import BaseMessage
from langchain_core.tools import BaseTool
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition


class ScriptedChatModel(GenericFakeChatModel):
    """A fake chat model that accepts tools the way a provider's model does (it ignores them)."""

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChatModel:
        return self


def tool_calling_agent(
    model: ScriptedChatModel, tools: list[BaseTool], seen: list[list[BaseMessage]]
) -> Any:
    """The usual LangGraph loop: the model speaks, tools run its calls, until it answers in text.

    ``seen`` receives the messages the model was shown at each turn.
    """
    bound = model.bind_tools(tools)

    def call_model(state: MessagesState) -> dict[str, Any]:
        seen.append(list(state["messages"]))
        return {"messages": [bound.invoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("model", call_model)
    graph.add_node("tools", ToolNode(tools))
    graph.add_edge(START, "model")
    graph.add_conditional_edges("model", tools_condition)
    graph.add_edge("tools", "model")
    return graph.compile()
