"""``optimizer mcp`` over stdio, started as a subprocess: the raw stream, and a session driven by the SDK's client."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import anyio
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp_support import PROPOSE, REBALANCE_INPUTS, ROOT, RawStdio, cli, seeded_home, server_env

from capabilities.runner import canonical_json

pytestmark = pytest.mark.slow

# A host that sent every log to stdout, at DEBUG, before handing over to the server.
NOISY_HOST = """
import logging, sys
import structlog
logging.basicConfig(stream=sys.stdout, level=logging.DEBUG, force=True)
structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stdout))
from agents.cli import main
sys.exit(main(["mcp"]))
"""


@pytest.fixture
def home(seeded_db: Path, tmp_path: Path) -> Path:
    return seeded_home(seeded_db, tmp_path / "home")


def test_stdout_carries_nothing_but_protocol(home: Path) -> None:
    session = RawStdio(home, env=server_env(home, OPTIMIZER_LOG_LEVEL="DEBUG"),
                       argv=[sys.executable, "-c", NOISY_HOST])
    session.initialize()
    session.request("tools/list")
    _, ok = session.request("tools/call", {"name": "optimizer.propose_trades", "arguments": PROPOSE})
    _, error = session.request("tools/call", {"name": "optimizer.propose_trades",
                                             "arguments": {**PROPOSE, "policy_id": "quality_focussed"}})
    assert ok["result"]["isError"] is False and error["result"]["isError"] is True
    stderr = session.close()
    assert session.process.returncode == 0, stderr
    # Every byte of stdout is a JSON-RPC message, one a line; the logs went to stderr.
    assert session.stdout_lines and all(line.endswith("\n") for line in session.stdout_lines)
    for line in session.stdout_lines:
        assert json.loads(line)["jsonrpc"] == "2.0"
    assert '"event": "capability_call"' in stderr  # structlog, at DEBUG
    assert "Processing request of type CallToolRequest" in stderr  # the SDK's stdlib logging


async def _session(home: Path) -> None:
    params = StdioServerParameters(command=sys.executable, args=cli("mcp")[1:], cwd=ROOT, env=server_env(home))
    async with stdio_client(params) as (read, write), ClientSession(read, write) as client:
        init = await client.initialize()
        assert init.serverInfo.name == "optimizer-agent" and init.instructions

        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert {"optimizer.propose_trades", "optimizer.analyze_impact", "optimizer.suggest_hedges",
                "optimizer.suggest_deleveraging_hedges", "optimizer.list_packs", "optimizer.list_portfolios",
                "optimizer.list_policies", "optimizer.show_policy", "optimizer.list_scenarios",
                "optimizer.list_regimes", "optimizer.run_pattern", "optimizer.get_run",
                "optimizer.approve_run", "optimizer.reject_run"} <= set(tools)
        read_only = {name for name, t in tools.items() if t.annotations and t.annotations.readOnlyHint}
        assert "optimizer.list_packs" in read_only and "optimizer.get_run" in read_only
        assert "optimizer.run_pattern" not in read_only and "optimizer.approve_run" not in read_only
        hedges = tools["optimizer.suggest_hedges"].inputSchema["properties"]
        assert "equity_selloff" in hedges["scenario_id"]["enum"] and hedges["detail"]["default"] == "summary"
        assert "policy_rebalance" in tools["optimizer.run_pattern"].inputSchema["properties"]["pattern"]["enum"]
        assert all(t.outputSchema and t.outputSchema.get("type") == "object" for t in tools.values())

        packs = await client.call_tool("optimizer.list_packs", {})
        assert packs.structuredContent == {"packs": [{"id": "PP_2022-12-28", "asof": "2022-12-28",
                                                      "n_dates": 757, "n_symbols": 26}]}

        proposal = await client.call_tool("optimizer.propose_trades", PROPOSE)
        assert not proposal.isError
        summary = proposal.structuredContent
        assert summary["detail"] == "summary" and summary["trade_count"] == 9
        # The propose_trades summary budget (tests/test_views.py): 4000 with a cost sentence per binding limit.
        assert len(canonical_json(summary)) <= 4000
        assert proposal.content[0].text.startswith("optimizer.propose_trades: proposal_id=prop_")
        assert json.loads(proposal.content[1].text) == summary

        impact = await client.call_tool("optimizer.analyze_impact", {
            "portfolio_id": "demo_diversified", "pricing_pack_id": "PP_2022-12-28",
            "proposal_id": summary["proposal_id"]})
        assert not impact.isError and impact.structuredContent["estimated_costs"] == summary["estimated_costs"]

        typo = await client.call_tool("optimizer.propose_trades", {**PROPOSE, "policy_id": "quality_focussed"})
        assert typo.isError and typo.structuredContent is None
        error = json.loads(typo.content[0].text)
        assert error["code"] == "not_found" and "quality_focused" in error["valid_values"]["policy_id"]
        assert error["hint"]

        run = await client.call_tool("optimizer.run_pattern", {"pattern": "policy_rebalance",
                                                                "inputs": REBALANCE_INPUTS})
        assert not run.isError
        waiting = run.structuredContent
        assert waiting["status"] == "waiting_for_approval"
        assert waiting["pending_approval"]["gate"] == "approve_trades"
        assert len(canonical_json(waiting)) <= 3000

        again = await client.call_tool("optimizer.get_run", {"run_id": waiting["run_id"]})
        assert again.structuredContent == waiting

        approved = await client.call_tool("optimizer.approve_run", {"run_id": waiting["run_id"], "note": "ok"})
        assert not approved.isError
        assert approved.structuredContent["status"] == "completed"
        assert approved.structuredContent["approvals"]["approve_trades"]["status"] == "approved"

        twice = await client.call_tool("optimizer.approve_run", {"run_id": waiting["run_id"]})
        assert twice.isError and json.loads(twice.content[0].text)["code"] == "conflict"


def test_a_host_session_over_stdio(home: Path) -> None:
    anyio.run(_session, home)
