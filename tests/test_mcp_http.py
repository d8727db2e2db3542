"""``optimizer mcp --transport http`` on 127.0.0.1, driven by the SDK's streamable HTTP client with API keys."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp_support import PACK, PROPOSE, REBALANCE_INPUTS, http_server, seeded_home

from services.data.store import Store

pytestmark = pytest.mark.slow

INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.fixture
def home(seeded_db: Path, tmp_path: Path) -> Path:
    return seeded_home(seeded_db, tmp_path / "home")


@pytest.fixture
def keys(home: Path) -> dict[str, str]:
    """API keys of alice and bob; alice owns a copy of the demo portfolio, alice_book."""
    store = Store(f"sqlite:///{home / 'optimizer.db'}")
    try:
        demo = store.get_portfolio("demo_diversified")
        store.put_portfolio(dataclasses.replace(demo, id="alice_book", owner="alice"))
        return {user: store.add_user(user) for user in ("alice", "bob")}
    finally:
        store.close()


async def call(client: ClientSession, tool: str, arguments: dict[str, Any]) -> tuple[bool, Any]:
    result = await client.call_tool(tool, arguments)
    return result.isError, json.loads(result.content[0].text) if result.isError else result.structuredContent


async def _conversation(url: str, keys: dict[str, str]) -> None:
    async with (
        httpx.AsyncClient(headers={"Authorization": f"Bearer {keys['alice']}"}, timeout=120) as alice_http,
        streamable_http_client(url, http_client=alice_http) as (read, write, _),
        ClientSession(read, write) as alice,
        httpx.AsyncClient(headers={"Authorization": f"Bearer {keys['bob']}"}, timeout=120) as bob_http,
        streamable_http_client(url, http_client=bob_http) as (bread, bwrite, _),
        ClientSession(bread, bwrite) as bob,
    ):
        await alice.initialize()
        await bob.initialize()
        assert len((await alice.list_tools()).tools) >= 14

        _, alice_sees = await call(alice, "optimizer.list_portfolios", {})
        _, bob_sees = await call(bob, "optimizer.list_portfolios", {})
        assert "alice_book" in {p["id"] for p in alice_sees["portfolios"]}
        assert "alice_book" not in {p["id"] for p in bob_sees["portfolios"]}

        mine = {**PROPOSE, "portfolio_id": "alice_book"}
        failed, proposal = await call(alice, "optimizer.propose_trades", mine)
        assert not failed and proposal["portfolio_id"] == "alice_book"

        # Someone else's portfolio and a missing one: the same error, naming nothing else.
        _, theirs = await call(bob, "optimizer.propose_trades", mine)
        _, missing = await call(bob, "optimizer.propose_trades", {**mine, "portfolio_id": "nobody_book"})
        assert theirs["code"] == missing["code"] == "not_found"
        assert theirs["message"].replace("alice_book", "X") == missing["message"].replace("nobody_book", "X")
        assert theirs["valid_values"] == missing["valid_values"] == {}

        # Someone else's proposal id and a missing one, likewise.
        impact = {"portfolio_id": "demo_diversified", "pricing_pack_id": PACK}
        _, their_proposal = await call(bob, "optimizer.analyze_impact",
                                       {**impact, "portfolio_id": "alice_book", "proposal_id": proposal["proposal_id"]})
        assert their_proposal["code"] == "not_found"
        failed, own = await call(alice, "optimizer.analyze_impact",
                                 {**impact, "portfolio_id": "alice_book", "proposal_id": proposal["proposal_id"]})
        assert not failed and own["portfolio_id"] == "alice_book"

        # Someone else's run and a missing one, likewise; the owner approves hers.
        failed, run = await call(alice, "optimizer.run_pattern", {
            "pattern": "policy_rebalance", "inputs": {**REBALANCE_INPUTS, "portfolio_id": "alice_book"}})
        assert not failed and run["status"] == "waiting_for_approval"
        _, their_run = await call(bob, "optimizer.get_run", {"run_id": run["run_id"]})
        _, no_run = await call(bob, "optimizer.get_run", {"run_id": "no-such-run"})
        assert their_run["message"].replace(run["run_id"], "X") == no_run["message"].replace("no-such-run", "X")
        _, their_approval = await call(bob, "optimizer.approve_run", {"run_id": run["run_id"]})
        assert their_approval["code"] == "not_found"
        failed, done = await call(alice, "optimizer.approve_run", {"run_id": run["run_id"]})
        assert not failed and done["status"] == "completed"
        assert done["approvals"]["approve_trades"]["by"] == "alice"


def test_keys_are_required_and_scope_what_a_user_sees(home: Path, keys: dict[str, str]) -> None:
    with http_server(home) as url:
        for headers in ({}, {"Authorization": "Bearer opt_not-a-key"}, {"Authorization": keys["alice"]}):
            response = httpx.post(url, json=INIT, headers={**HEADERS, **headers}, timeout=30)
            assert response.status_code == 401, headers
        assert httpx.post(url, json=INIT, headers={**HEADERS, "Authorization": f"Bearer {keys['bob']}"},
                          timeout=30).status_code == 200
        anyio.run(_conversation, url, keys)


def test_a_session_stays_with_its_key(home: Path, keys: dict[str, str]) -> None:
    with http_server(home) as url:
        opened = httpx.post(url, json=INIT, headers={**HEADERS, "Authorization": f"Bearer {keys['alice']}"},
                            timeout=30)
        session = opened.headers["mcp-session-id"]
        listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
        hijack = httpx.post(url, json=listing, timeout=30, headers={
            **HEADERS, "Authorization": f"Bearer {keys['bob']}", "mcp-session-id": session,
            "mcp-protocol-version": "2025-06-18"})
        assert hijack.status_code == 404
