"""Replay a recorded MCP session byte for byte (as canonical JSON) against ``optimizer mcp`` over stdio.

``tests/golden/mcp/session.json`` holds the requests a client sent and the responses the server
gave: discovery, a proposal summary, an impact analysis by proposal id, two fixable errors, and a
policy_rebalance run taken to its approval gate and approved. Each request is sent again to a
fresh server on a fresh copy of the demo store and its response must be the same canonical JSON.
``--golden-update=always`` records the session anew (review the diff like code).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mcp_support import PACK, PROPOSE, REBALANCE_INPUTS, RawStdio, seeded_home

from capabilities.runner import canonical_json

pytestmark = pytest.mark.slow

SESSION = Path(__file__).parent / "mcp" / "session.json"


def calls() -> list[tuple[str, dict[str, Any]]]:
    """The session's tool calls after initialization, in order."""
    impact = {"portfolio_id": "demo_diversified", "pricing_pack_id": PACK, "proposal_id": "prop_67a363146502078e"}
    return [
        ("optimizer.list_packs", {}),
        ("optimizer.list_policies", {}),
        ("optimizer.list_scenarios", {}),
        ("optimizer.list_regimes", {}),
        ("optimizer.propose_trades", PROPOSE),
        ("optimizer.analyze_impact", impact),
        ("optimizer.propose_trades", {**PROPOSE, "policy_id": "quality_focussed"}),
        ("optimizer.suggest_hedges", {"portfolio_id": "demo_diversified", "pricing_pack_id": PACK,
                                      "scenario_id": "equity_sell_off"}),
        ("optimizer.suggest_deleveraging_hedges", {"portfolio_id": "demo_diversified", "pricing_pack_id": PACK,
                                                   "regime": "deleveraging"}),
        ("optimizer.run_pattern", {"pattern": "policy_rebalance", "inputs": REBALANCE_INPUTS,
                                   "run_id": "golden-mcp-run"}),
        ("optimizer.approve_run", {"run_id": "golden-mcp-run", "note": "approved in the golden session"}),
    ]


def record(home: Path) -> list[dict[str, Any]]:
    session = RawStdio(home)
    try:
        exchanges = [session.initialize()]
        exchanges += [session.request("tools/call", {"name": name, "arguments": arguments})
                      for name, arguments in calls()]
    finally:
        session.close()
    return [{"request": request, "response": response} for request, response in exchanges]


def test_recorded_mcp_session_replays(seeded_db: Path, tmp_path: Path, golden_update: str) -> None:
    home = seeded_home(seeded_db, tmp_path / "home")
    if golden_update == "always" or (golden_update == "missing" and not SESSION.exists()):
        exchanges = record(home)
        SESSION.write_text(json.dumps({"exchanges": exchanges}, sort_keys=True, indent=2, ensure_ascii=False) + "\n",
                           encoding="utf-8")
        return
    recorded = json.loads(SESSION.read_text(encoding="utf-8"))["exchanges"]
    session = RawStdio(home)
    try:
        for i, exchange in enumerate(recorded):
            request = exchange["request"]
            if request["method"] == "initialize":
                _, response = session.initialize()
            else:
                _, response = session.request(request["method"], request.get("params"))
            assert canonical_json(response) == canonical_json(exchange["response"]), (
                f"exchange {i} ({request['method']} {request.get('params', {}).get('name', '')}) differs:\n"
                f"recorded: {canonical_json(exchange['response'])[:2000]}\nreplayed: {canonical_json(response)[:2000]}"
            )
    finally:
        session.close()
