"""Capability commands: ``call`` (run one capability on a JSON request) and ``capabilities``.
"""

from __future__ import annotations

import argparse
import textwrap
from typing import TYPE_CHECKING, Any

from agents.cli.common import agent_for, command, print_json, read_json
from agents.cli.report import table

if TYPE_CHECKING:  # the store (SQLAlchemy) is imported when a command runs, not for --help
    from services.data.store import Store


def register(commands: Any) -> None:
    """Add call and capabilities."""
    _add_call(commands)
    _add_capabilities(commands)


def _add_call(commands: Any) -> None:
    parser = command(
        commands,
        "call",
        summary="run one capability on a JSON request and print the result",
        description="Validate the JSON request against the capability's input schema, run it, and "
        "print the result as canonical JSON (sorted keys) on stdout, with _metadata (source, asof, "
        "ttl, inputs hash, versions). The same request against the same pack prints the same bytes. "
        "Errors print a JSON object {code, message, details} on stderr: exit 2 for input errors "
        "(fix the request), 3 for domain errors (unknown pack or portfolio, infeasible policy).",
        examples=[
            "optimizer call optimizer.propose_trades --input request.json",
            "echo '{\"portfolio_id\": \"demo_diversified\", \"pricing_pack_id\": \"PP_2022-12-28\", "
            "\"policy_id\": \"quality_focused\"}' | optimizer call optimizer.propose_trades --input -",
            "optimizer call optimizer.propose_trades --schema   # print the input JSON Schema",
        ],
        func=_cmd_call,
    )
    parser.add_argument("capability", help="capability name, e.g. optimizer.propose_trades")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", metavar="FILE", help="request JSON file, or - for stdin")
    source.add_argument("--schema", action="store_true", help="print the input JSON Schema and exit")
    parser.add_argument("--user", default=None, help="act as this user (stored portfolios are owner-only)")


def _cmd_call(args: argparse.Namespace, store: Store) -> int:
    from capabilities.base import RequestContext

    agent = agent_for(args, store)
    if args.schema:
        print_json(agent.registry.get(args.capability).input_schema())
        return 0
    request = read_json(args.input)
    result = agent.execute(args.capability, request, RequestContext(user=args.user))
    print_json(result)
    return 0



def _add_capabilities(commands: Any) -> None:
    command(
        commands,
        "capabilities",
        summary="list the capabilities with their descriptions, TTL and source",
        description="List the capabilities the agent registers. --json prints each with its "
        "description, input and output JSON Schemas, TTL and source template.",
        examples=["optimizer capabilities", "optimizer capabilities --json"],
        func=_cmd_capabilities,
        json_output=True,
    )


def _cmd_capabilities(args: argparse.Namespace, store: Store) -> int:
    described = agent_for(args, store).describe()
    if args.json:
        print_json(described)
        return 0
    rows = [[c["name"], str(c["ttl"]), c["source"], textwrap.shorten(c["description"], 70, placeholder=" ...")]
            for c in described]
    print(table(["name", "ttl", "source", "description"], rows, right={1}))
    return 0
