"""MCP tool names over the real CLI: the capability names by default, ``__`` names with
``--tool-names provider-safe``; in both, every listed name can be called, and only listed names.

One ``optimizer mcp`` subprocess per naming, spoken to in raw JSON-RPC over stdio.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mcp.shared.tool_name_validation import TOOL_NAME_REGEX
from mcp_support import PROPOSE, RawStdio, seeded_home

from agents.tool_names import TOOL_NAME, capability_name

pytestmark = pytest.mark.slow

EXPECTED = [
    # optimizer.book_trades is not a tool: it books only after a person's decision at a gate.
    "optimizer.analyze_impact", "optimizer.check_drift", "optimizer.propose_trades",
    "optimizer.suggest_deleveraging_hedges",
    "optimizer.suggest_hedges", "optimizer.list_packs", "optimizer.list_portfolios",
    "optimizer.show_preferences", "optimizer.list_policies", "optimizer.show_policy", "optimizer.list_scenarios", "optimizer.list_regimes",
    "optimizer.list_patterns", "optimizer.list_runs", "optimizer.run_pattern", "optimizer.get_run",
    "optimizer.approve_run", "optimizer.reject_run",
]


@pytest.mark.parametrize(("args", "separator"), [((), "."), (("--tool-names", "provider-safe"), "__")])
def test_tools_list_names_and_calls_by_them(
    seeded_db: Path, tmp_path: Path, args: tuple[str, ...], separator: str
) -> None:
    home = seeded_home(seeded_db, tmp_path / "home")
    session = RawStdio(home, *args)
    try:
        _, init = session.initialize()
        _, listing = session.request("tools/list")
        names = [tool["name"] for tool in listing["result"]["tools"]]
        expected = [name.replace(".", separator) for name in EXPECTED]
        assert names == expected
        assert all(TOOL_NAME_REGEX.fullmatch(name) for name in names)
        if separator == "__":  # what model APIs accept
            assert all(TOOL_NAME.fullmatch(name) for name in names)
        assert [capability_name(name) for name in names] == EXPECTED
        # Whatever names a tool for the model says it the way this server lists it.
        other = ("__" if separator == "." else ".").join(("optimizer", "list_packs"))
        instructions = init["result"]["instructions"]
        assert f"optimizer{separator}list_packs" in instructions and other not in instructions
        descriptions = {t["name"]: t["description"] for t in listing["result"]["tools"]}
        assert f"optimizer{separator}propose_trades" in descriptions[f"optimizer{separator}list_policies"]

        # Calling by the listed name works; the other naming's name is an unknown tool.
        _, packs = session.request("tools/call", {"name": f"optimizer{separator}list_packs", "arguments": {}})
        assert packs["result"]["isError"] is False
        assert [p["id"] for p in packs["result"]["structuredContent"]["packs"]] == ["PP_2022-12-28"]
        _, proposal = session.request("tools/call", {"name": f"optimizer{separator}propose_trades",
                                                     "arguments": PROPOSE})
        assert proposal["result"]["isError"] is False
        assert proposal["result"]["structuredContent"]["trade_count"] == 9
        _, unknown = session.request("tools/call", {"name": other, "arguments": {}})
        error = json.loads(unknown["result"]["content"][0]["text"])
        assert unknown["result"]["isError"] is True and error["code"] == "unknown_tool"
        assert error["valid_values"]["name"] == sorted(expected)

        # An error hint names the list tools as listed here.
        _, typo = session.request("tools/call", {"name": f"optimizer{separator}propose_trades",
                                                 "arguments": {**PROPOSE, "policy_id": "quality_focussed"}})
        hint = json.loads(typo["result"]["content"][0]["text"])["hint"]
        assert f"optimizer{separator}list_policies" in hint and other not in hint
    finally:
        stderr = session.close()
    assert session.process.returncode == 0, stderr
