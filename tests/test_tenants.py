"""Tenants: alice and bob each own a portfolio, carol owns nothing, and the operator (no user)
owns the store. Through every entry point (CLI, Python API, LangChain tools) a user sees and
changes only their own portfolios and runs; someone else's is indistinguishable from a missing
one, and no output names another user's ids.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import error_of, run
from store_hash import table_hashes

from agents.agent import OptimizerAgent
from agents.wiring import open_store
from capabilities.base import RequestContext
from services.errors import NotFoundError

PACK = "PP_2022-12-28"
USERS = ("alice", "bob", "carol")
OWNED = {"alice": "alice_pf", "bob": "bob_pf"}  # carol owns nothing


@pytest.fixture
def tenants(
    seeded_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> Iterator[Path]:
    """A seeded home where alice and bob have imported one portfolio each, as themselves."""
    positions = tmp_path / "positions.csv"
    positions.write_text("symbol,shares,cost_basis\nAAPL,10,120.50\nMSFT,5,\n", encoding="utf-8")
    for user, portfolio_id in OWNED.items():
        code, _, err = run(capsys, "portfolios", "import", "--id", portfolio_id, "--positions",
                           str(positions), "--cash", "1000", "--user", user)
        assert code == 0, err
    yield positions


def others(user: str | None) -> set[str]:
    """Ids and names that must never appear in ``user``'s output."""
    return {pid for owner, pid in OWNED.items() if owner != user} | (
        {o for o in OWNED if o != user} if user else set()
    )


# --- CLI -----------------------------------------------------------------------------------------


def test_each_user_lists_only_their_own(tenants: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for user in USERS:
        code, out, _ = run(capsys, "portfolios", "list", "--json", "--user", user)
        assert code == 0
        assert [p["id"] for p in json.loads(out)] == ([OWNED[user]] if user in OWNED else [])
    code, out, _ = run(capsys, "portfolios", "list", "--json")  # the operator sees everything
    assert {"alice_pf", "bob_pf", "demo_diversified"} <= {p["id"] for p in json.loads(out)}


@pytest.mark.parametrize("user", USERS)
def test_someone_elses_portfolio_is_a_missing_one(
    tenants: Path, capsys: pytest.CaptureFixture[str], user: str
) -> None:
    code, out, _ = run(capsys, "portfolios", "show", OWNED.get(user, "demo_quality"), "--user", user)
    assert code == (0 if user in OWNED else 3)
    for victim in sorted(others(user) & set(OWNED.values())):
        code, out, err = run(capsys, "portfolios", "show", victim, "--json", "--user", user)
        code_missing, _, err_missing = run(capsys, "portfolios", "show", "zz_free", "--json", "--user", user)
        assert (code, out) == (3, "") and code_missing == 3
        assert error_of(err) == json.loads(json.dumps(error_of(err_missing)).replace("zz_free", victim))
        assert not any(name in err.replace(victim, "") for name in others(user))


def test_capability_calls_refuse_someone_elses_portfolio(
    tenants: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def call(portfolio_id: str, user: str) -> tuple[int, str, str]:
        request = tmp_path / "request.json"
        request.write_text(json.dumps({"portfolio_id": portfolio_id, "pricing_pack_id": PACK,
                                       "proposed_trades": []}))
        return run(capsys, "call", "optimizer.analyze_impact", "--input", str(request), "--user", user)

    assert call("alice_pf", "alice")[0] == 0
    code, out, err = call("alice_pf", "bob")
    _, _, err_missing = call("zz_free", "bob")
    assert (code, out) == (3, "")
    assert error_of(err) == json.loads(json.dumps(error_of(err_missing)).replace("zz_free", "alice_pf"))
    assert call("bob_pf", "carol")[0] == 3


def test_a_user_cannot_replace_or_take_someone_elses_portfolio(
    tenants: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = open_store()
    before = table_hashes(store)
    attempts = [
        ("--user", "bob", "--replace"),
        ("--user", "bob", "--replace", "--owner", "bob"),
        ("--user", "carol", "--owner", "bob"),
        ("--user", "carol", "--replace", "--owner", "carol"),
    ]
    for extra in attempts:
        code, out, err = run(capsys, "portfolios", "import", "--id", "alice_pf", "--positions",
                             str(tenants), *extra)
        assert code in (2, 3) and out == "", extra
        assert "alice" not in error_of(err)["message"].replace("alice_pf", ""), extra
    assert table_hashes(store) == before  # nothing written
    assert store.get_portfolio("alice_pf").owner == "alice"
    store.close()


def test_blank_users_and_owners_are_input_errors(
    tenants: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv in (
        ("portfolios", "list", "--user", ""),
        ("portfolios", "show", "alice_pf", "--user", "  "),
        ("portfolios", "import", "--id", "x_pf", "--positions", str(tenants), "--owner", ""),
        ("portfolios", "import", "--id", "x_pf", "--positions", str(tenants), "--owner", " alice"),
        ("runs", "list", "--user", ""),
    ):
        code, out, err = run(capsys, *argv)
        assert code == 2 and out == "", argv
        assert error_of(err)["code"] == "invalid_input"
        assert "alice_pf" not in err and "bob_pf" not in err


def test_the_operator_replaces_keeping_the_owner_and_reassigns_on_the_record(
    tenants: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "portfolios", "import", "--id", "alice_pf", "--positions", str(tenants),
               "--cash", "5", "--replace")[0] == 0
    code, out, _ = run(capsys, "portfolios", "show", "alice_pf", "--json", "--user", "alice")
    shown = json.loads(out)
    assert code == 0 and shown["cash"] == "5" and shown["owner"] == "alice"
    assert shown["owner_changes"] == []

    assert run(capsys, "portfolios", "import", "--id", "alice_pf", "--positions", str(tenants),
               "--owner", "bob", "--replace")[0] == 0
    assert run(capsys, "portfolios", "show", "alice_pf", "--user", "alice")[0] == 3
    code, out, _ = run(capsys, "portfolios", "show", "alice_pf", "--json", "--user", "bob")
    changes = json.loads(out)["owner_changes"]
    assert code == 0 and len(changes) == 1
    assert {k: v for k, v in changes[0].items() if k != "changed_at"} == {
        "changed_by": None, "previous_owner": "alice", "new_owner": "bob"
    }


def test_runs_are_their_starters_only(
    tenants: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pattern = tmp_path / "one_step.json"
    pattern.write_text(json.dumps({
        "id": "one_step", "version": "1", "description": "Analyze the caller's own portfolio.",
        "inputs": {"type": "object", "properties": {"portfolio_id": {"type": "string"}},
                   "required": ["portfolio_id"]},
        "steps": [{"id": "impact", "capability": "optimizer.analyze_impact",
                   "args": {"portfolio_id": {"$ref": "inputs.portfolio_id"},
                            "pricing_pack_id": PACK, "proposed_trades": []}}],
        "outputs": {"value": {"$ref": "steps.impact.current_value"}},
    }))
    inputs = tmp_path / "inputs.json"
    inputs.write_text(json.dumps({"portfolio_id": "alice_pf"}))
    code, _, err = run(capsys, "run", str(pattern), "--input", str(inputs), "--user", "alice",
                       "--run-id", "alice-run")
    assert code == 0, err
    # bob running it on alice's portfolio fails at the step, which names nothing of hers
    code, out, _ = run(capsys, "run", str(pattern), "--input", str(inputs), "--user", "bob",
                       "--json", "--run-id", "bob-run")
    report = json.loads(out)
    assert code == 3 and report["steps"]["impact"]["error"]["code"] == "not_found"
    for user in ("bob", "carol"):
        code, _, err = run(capsys, "runs", "show", "alice-run", "--user", user)
        assert code == 3 and error_of(err)["code"] == "not_found"
        code, out, _ = run(capsys, "runs", "list", "--json", "--user", user)
        assert "alice" not in out
    assert json.loads(run(capsys, "runs", "list", "--json", "--user", "carol")[1]) == []


# --- Python API and LangChain tools --------------------------------------------------------------


@pytest.fixture
def agent(tenants: Path) -> Iterator[OptimizerAgent]:
    store = open_store()
    yield OptimizerAgent(store)
    store.close()


def impact(portfolio_id: str) -> dict[str, Any]:
    return {"portfolio_id": portfolio_id, "pricing_pack_id": PACK, "proposed_trades": []}


def test_python_api_tenants(agent: OptimizerAgent) -> None:
    assert agent.execute("optimizer.analyze_impact", impact("alice_pf"), RequestContext(user="alice"))
    for user in ("bob", "carol"):
        ctx = RequestContext(user=user)
        with pytest.raises(NotFoundError) as theirs:
            agent.execute("optimizer.analyze_impact", impact("alice_pf"), ctx)
        with pytest.raises(NotFoundError) as missing:
            agent.execute("optimizer.analyze_impact", impact("zz_free"), ctx)
        assert json.dumps(theirs.value.to_dict()) == json.dumps(missing.value.to_dict()).replace(
            "zz_free", "alice_pf"
        )
        assert [p["id"] for p in agent.store.list_portfolios(user=user)] == (
            [OWNED[user]] if user in OWNED else []
        )
    # The cache never serves alice's result to bob.
    with pytest.raises(NotFoundError):
        agent.execute("optimizer.analyze_impact", impact("alice_pf"), RequestContext(user="bob"))


def tool_output(agent: OptimizerAgent, user: str, portfolio_id: str) -> str:
    """What the model sees from the analyze_impact tool (an error, however it is delivered)."""
    tools = {t.name: t for t in agent.as_langchain_tools(RequestContext(user=user))}
    call = {"name": "optimizer__analyze_impact", "args": impact(portfolio_id), "id": "call-1",
            "type": "tool_call"}
    try:
        return str(tools["optimizer__analyze_impact"].invoke(call).content)
    except NotFoundError as err:
        return json.dumps(err.to_dict(), sort_keys=True)


def test_langchain_tools_tenants(agent: OptimizerAgent) -> None:
    assert json.loads(tool_output(agent, "alice", "alice_pf"))["portfolio_id"] == "alice_pf"
    for user in ("bob", "carol"):
        theirs = tool_output(agent, user, "alice_pf")
        missing = tool_output(agent, user, "zz_free")
        assert theirs == missing.replace("zz_free", "alice_pf")
        assert "bob_pf" not in theirs and '"alice"' not in theirs
