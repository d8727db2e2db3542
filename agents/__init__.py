"""Entry points: the OptimizerAgent plugin, the CLI, logging setup and wiring of stores and services.

``from agents import OptimizerAgent`` loads the agent on first use, so that importing the CLI
(a module of this package) does not load the optimizer and LangGraph before a command needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agents.agent import OptimizerAgent

__all__ = ["OptimizerAgent"]


def __getattr__(name: str) -> Any:
    if name == "OptimizerAgent":
        from agents.agent import OptimizerAgent

        return OptimizerAgent
    raise AttributeError(f"module 'agents' has no attribute {name!r}")
