"""Pattern commands: ``patterns`` (list the shipped ones) and ``graph`` (Mermaid).
"""

from __future__ import annotations

import argparse
import textwrap
from typing import TYPE_CHECKING, Any

from agents.cli.common import agent_for, command, print_json
from agents.cli.report import table

if TYPE_CHECKING:  # the store (SQLAlchemy) is imported when a command runs, not for --help
    from services.data.store import Store


def register(commands: Any) -> None:
    """Add patterns and graph."""
    _add_patterns(commands)
    _add_graph(commands)


def _add_patterns(commands: Any) -> None:
    command(
        commands,
        "patterns",
        summary="list the shipped patterns",
        description="List the shipped patterns (each validated against the registered capabilities): "
        "id, version, steps in order with approval gates in brackets, and description.",
        examples=["optimizer patterns", "optimizer patterns --json"],
        func=_cmd_patterns,
        json_output=True,
    )


def _cmd_patterns(args: argparse.Namespace, store: Store) -> int:
    patterns = agent_for(args, store).patterns()
    if args.json:
        print_json([p.model_dump(mode="json") for p in patterns])
        return 0
    rows = []
    for p in patterns:
        chain = []
        for step in p.steps:
            chain.append(step.id)
            chain += [f"[{g.id}]" for g in p.approvals if g.after == step.id]
        rows.append([p.id, p.version, " > ".join(chain), textwrap.shorten(p.description, 60, placeholder=" ...")])
    print(table(["id", "version", "steps", "description"], rows))
    return 0


def _add_graph(commands: Any) -> None:
    parser = command(
        commands,
        "graph",
        summary="print a pattern's LangGraph graph as a Mermaid flowchart",
        description="Validate a pattern and print the graph it compiles to as Mermaid: one node per "
        "step, one per approval gate, and the outputs node.",
        examples=["optimizer graph policy_rebalance", "optimizer graph ./my_pattern.json > graph.mmd"],
        func=_cmd_graph,
    )
    parser.add_argument("pattern", metavar="PATTERN", help="a shipped pattern's id or a pattern file")


def _cmd_graph(args: argparse.Namespace, store: Store) -> int:
    print(agent_for(args, store).pattern_graph(args.pattern), end="")
    return 0
